"""The cache's storage failing: a corrupted SQLite file, a file that cannot be opened, corruption found while
running, a backend that keeps failing (back-off), and inputs no store can encode (lone surrogates) or tell apart
(empty and punctuation-only questions)."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from frugal_chains import ConfigurationError
from frugal_chains.cache import AnswerCache, CacheEntry, CacheRequest, EmbeddedIndex, bypass_reason
from frugal_chains.cache import embedded as embedded_mod
from frugal_chains.cache.guard import BypassPolicy
from frugal_chains.cache.normalize import normalize
from frugal_chains.testing.fake_embeddings import HashEmbeddings

QUESTION = "What is the capital of France?"


def q(text: str) -> CacheRequest:
    return CacheRequest.from_prompt(text)


def warnings_in(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir())


# -- a corrupted file at open --------------------------------------------------------------------------------
SQLITE_HEADER = b"SQLite format 3\x00"


def real_cache_file(path: Path) -> bytearray:
    """A cache file with 50 entries (about 37 pages), checkpointed: its bytes."""
    cache = AnswerCache(embedder=HashEmbeddings(), path=path)
    for i in range(50):
        cache.update(q(f"question number {i} about things"), "x" * 500)
    cache.close()
    for side in ("-wal", "-shm"):
        assert not Path(f"{path}{side}").exists()  # checkpointed on close
    data = bytearray(path.read_bytes())
    assert data.startswith(SQLITE_HEADER) and len(data) > 8 * 4096
    return data


def malformed(path: Path) -> bytes:
    """A real cache file whose pages after the first were overwritten (SQLite: "database disk image is
    malformed")."""
    data = real_cache_file(path)
    for i in range(4096, len(data), 7):
        data[i] = 0xAB
    path.write_bytes(bytes(data))
    return bytes(data)


def truncated(path: Path) -> bytes:
    """A real cache file cut in the middle (a copy or a disk that stopped half way): "malformed"."""
    data = bytes(real_cache_file(path)[: 5 * 4096 + 100])
    path.write_bytes(data)
    return data


def garbage_after_the_header(path: Path) -> bytes:
    """A SQLite header and nothing SQLite can read after it (SQLite: "file is not a database")."""
    data = SQLITE_HEADER + b"\xab" * 8000
    path.write_bytes(data)
    return data


def zero_filled(path: Path) -> bytes:
    """Only zero bytes: what a crash (power loss before the data reached the disk) can leave of a file."""
    data = bytes(len(real_cache_file(path)))
    path.write_bytes(data)
    return data


@pytest.mark.parametrize("damage", [malformed, truncated, garbage_after_the_header, zero_filled])
def test_a_corrupted_file_is_moved_aside_and_the_cache_starts_empty(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: Any
) -> None:
    from frugal_chains.langchain import SemanticCache

    path = tmp_path / "cache.sqlite"
    bad = damage(path)
    with caplog.at_level(logging.WARNING, logger="frugal_chains"):
        cache = SemanticCache(
            embedder=HashEmbeddings(), path=str(path)
        )  # raised sqlite3.DatabaseError before
        core = cache.core
        assert core.lookup(q(QUESTION)) is None
        core.update(q(QUESTION), "Paris")
        hit = core.lookup(q(QUESTION))
    assert hit is not None and hit.answer == "Paris"
    logged = warnings_in(caplog)
    assert len(logged) == 1 and "corrupted" in logged[0] and "moved it to" in logged[0], logged
    moved = core.index.moved_aside  # type: ignore[attr-defined]
    assert moved is not None and Path(moved).name.startswith("cache.sqlite.corrupt-")
    assert Path(moved).read_bytes() == bad  # kept for inspection, untouched
    assert core.stats.errors == 0
    cache.close()
    reopened = AnswerCache(embedder=HashEmbeddings(), path=path)  # the fresh file persists as usual
    assert reopened.lookup(q(QUESTION)) is not None
    assert reopened.index.moved_aside is None  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "content",
    [
        b'[tool.app]\nname = "my app"\ntoken_file = "~/.secrets"\n',  # a config file (a typo in path=)
        b'{"settings": {"theme": "dark"}}',
        b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4,
        b"SQLite",  # shorter than a header
        b"SQLite format 2\x00" + bytes(4096),  # not SQLite 3's header
        bytes(64) + b"data after zero bytes",  # zeros, then data: not a crashed file
    ],
)
@pytest.mark.parametrize("through", ["AnswerCache", "EmbeddedIndex"])
def test_a_file_that_is_not_sqlite_is_a_configuration_error_and_left_untouched(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes, through: str
) -> None:
    path = tmp_path / "settings.toml"
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="frugal_chains"), pytest.raises(ConfigurationError) as e:
        if through == "AnswerCache":
            AnswerCache(embedder=HashEmbeddings(), path=path)
        else:
            EmbeddedIndex(path)
    message = str(e.value)
    assert e.value.field == "path" and str(path) in message
    assert "not a frugal-chains cache file" in message and "choose another path or delete it" in message
    assert siblings(path) == ["settings.toml"] and path.read_bytes() == content  # not moved, not written
    assert warnings_in(caplog) == []


def test_an_empty_file_becomes_a_cache(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    path.touch()
    cache = AnswerCache(embedder=HashEmbeddings(), path=path)
    cache.update(q(QUESTION), "Paris")
    assert cache.index.moved_aside is None  # type: ignore[attr-defined]
    cache.close()
    assert path.read_bytes().startswith(SQLITE_HEADER)


def test_a_file_replaced_by_a_foreign_one_before_it_is_moved_aside_is_left_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "cache.sqlite"
    garbage_after_the_header(path)
    real_open = EmbeddedIndex._open

    def open_then_replace(self: EmbeddedIndex, dim: int | None) -> None:
        try:
            real_open(self, dim)
        finally:
            path.write_bytes(b"somebody else's notes")  # written in place: same file, other content

    monkeypatch.setattr(EmbeddedIndex, "_open", open_then_replace)
    with pytest.raises(ConfigurationError) as e:
        EmbeddedIndex(path)
    assert e.value.field == "path" and "not a frugal-chains cache file" in str(e.value)
    assert siblings(path) == ["cache.sqlite"] and path.read_bytes() == b"somebody else's notes"


def test_a_second_corrupted_file_gets_its_own_name(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    moved = []
    for _ in range(2):
        garbage_after_the_header(path)
        index = EmbeddedIndex(path)
        moved.append(index.moved_aside)
        index.close()
    assert moved[0] != moved[1] and all(m is not None and Path(m).exists() for m in moved)


def test_a_folder_is_a_configuration_error_and_is_left_alone(tmp_path: Path) -> None:
    folder = tmp_path / "a-folder"
    folder.mkdir()
    with pytest.raises(ConfigurationError) as e:
        EmbeddedIndex(folder)
    assert e.value.field == "path" and str(folder) in str(e.value)
    assert folder.is_dir() and siblings(folder) == ["a-folder"]


def test_a_path_under_a_file_is_a_configuration_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigurationError) as e:
        AnswerCache(embedder=HashEmbeddings(), path=tmp_path / "file" / "cache.sqlite")
    assert e.value.field == "path"


def test_a_locked_file_is_a_configuration_error_not_corruption(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(embedded_mod, "_OPEN_TIMEOUT_S", 0.2)
    path = tmp_path / "cache.sqlite"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")  # another program holds the file
    before = path.read_bytes()
    try:
        with pytest.raises(ConfigurationError) as e:
            EmbeddedIndex(path)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert e.value.field == "path" and "locked" in str(e.value)
    assert siblings(path) == ["cache.sqlite"] and path.read_bytes() == before  # not moved aside


# -- corruption found while running ----------------------------------------------------------------------------
class _DamagedDb:
    """A SQLite connection whose file was damaged under it: every statement fails like SQLite does."""

    def __init__(self) -> None:
        self.statements = 0

    def execute(self, *a: Any, **k: Any) -> Any:
        self.statements += 1
        raise sqlite3.DatabaseError("database disk image is malformed")

    executemany = executescript = execute

    def close(self) -> None:
        pass


def test_corruption_while_running_fails_open_once_and_is_not_retried_at_every_call(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "cache.sqlite"
    cache = AnswerCache(embedder=HashEmbeddings(), path=path, outage_backoff=timedelta(minutes=5))
    cache.update(q(QUESTION), "Paris")
    damaged = _DamagedDb()
    cache.index._db = damaged  # type: ignore[attr-defined]
    with caplog.at_level(logging.WARNING, logger="frugal_chains"):
        for _ in range(5):
            assert cache.lookup(q(QUESTION)) is None  # a miss, not an exception
            cache.update(q("What is the capital of Spain?"), "Madrid")  # dropped
    assert damaged.statements == 1  # tried once, then skipped for the back-off window
    logged = warnings_in(caplog)
    assert len(logged) == 1 and "malformed" in logged[0], logged
    stats = cache.stats
    assert (stats.hits, stats.misses, stats.updates - 1, stats.errors) == (0, 5, 0, 10)
    assert siblings(path)[0] == "cache.sqlite" and not any("corrupt" in n for n in siblings(path))


# -- back-off --------------------------------------------------------------------------------------------------
class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class _HungIndex:
    """Wraps an index; while ``hung``, every call fails like a Redis that never answers (a socket timeout)."""

    def __init__(self) -> None:
        self.inner = EmbeddedIndex()
        self.hung = True
        self.attempts = 0

    @property
    def dim(self) -> int | None:
        return self.inner.dim

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.inner, name)
        if not callable(target):
            return target

        def call(*a: Any, **k: Any) -> Any:
            self.attempts += 1
            if self.hung:
                raise TimeoutError("Timeout reading from 127.0.0.1:6379")
            return target(*a, **k)

        async def acall(*a: Any, **k: Any) -> Any:
            self.attempts += 1
            if self.hung:
                raise TimeoutError("Timeout reading from 127.0.0.1:6379")
            return await target(*a, **k)

        return acall if asyncio.iscoroutinefunction(target) else call


def set_clock(cache: AnswerCache, clock: _Clock) -> None:
    """The back-offs' time source (monotonic seconds): the index's and the semantic path's."""
    cache._index_outage.backoff.clock = cache._semantic_outage.backoff.clock = clock


def hung_cache(**kw: Any) -> tuple[AnswerCache, _HungIndex, _Clock]:
    index = _HungIndex()
    cache = AnswerCache(index=index, embedder=HashEmbeddings(), **kw)  # type: ignore[arg-type]
    clock = _Clock()
    set_clock(cache, clock)
    return cache, index, clock


def test_a_hung_backend_costs_one_attempt_per_window_not_one_per_call(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cache, index, clock = hung_cache()
    with caplog.at_level(logging.WARNING, logger="frugal_chains"):
        for _ in range(10):
            assert cache.lookup(q(QUESTION)) is None
            cache.update(q(QUESTION), "Paris")
        assert index.attempts == 1  # one timeout, then plain misses and dropped updates at once
        clock.now += 1.01  # the first window (1 s) is over: one call probes, still hung
        for _ in range(10):
            assert cache.lookup(q(QUESTION)) is None
        assert index.attempts == 2
        clock.now += 1.5  # the window doubled (2 s): still skipped
        assert cache.lookup(q(QUESTION)) is None
        assert index.attempts == 2
        clock.now += 0.6
        index.hung = False  # the backend is back
        cache.update(q(QUESTION), "Paris")  # the probe succeeds: stored
        hit = cache.lookup(q(QUESTION))
    assert hit is not None and hit.answer == "Paris"
    assert index.attempts > 3  # every call reaches the backend again
    logged = warnings_in(caplog)
    assert len(logged) == 2 and "TimeoutError" in logged[0] and "answers again" in logged[1], logged
    assert cache.stats.errors == 10 + 10 + 10 + 1  # every call that failed open is counted


async def test_async_calls_back_off_too() -> None:
    cache, index, clock = hung_cache()
    for _ in range(10):
        assert await cache.alookup(q(QUESTION)) is None
        await cache.aupdate(q(QUESTION), "Paris")
    assert index.attempts == 1
    clock.now += 1.01
    index.hung = False
    await cache.aupdate(q(QUESTION), "Paris")
    hit = await cache.alookup(q(QUESTION))
    assert hit is not None and hit.answer == "Paris"


def test_the_window_grows_up_to_a_cap() -> None:
    cache, index, clock = hung_cache()
    cache.lookup(q(QUESTION))
    windows = []
    for _ in range(10):
        before = index.attempts
        waited = 0.0
        while index.attempts == before:
            clock.now += 0.5
            waited += 0.5
            cache.lookup(q(QUESTION))
        windows.append(waited)
    assert windows[:6] == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0]
    assert windows[6:] == [60.0] * 4


def test_zero_backoff_tries_the_backend_at_every_call() -> None:
    cache, index, _clock = hung_cache(outage_backoff=0)
    for _ in range(3):
        cache.lookup(q(QUESTION))
    assert index.attempts == 3


@pytest.mark.parametrize("bad", [-1, timedelta(seconds=-1), "1s", True, float("inf")])
def test_bad_outage_backoff_names_the_field(bad: Any) -> None:
    with pytest.raises(ConfigurationError) as e:
        AnswerCache(embedder=HashEmbeddings(), outage_backoff=bad)
    assert e.value.field == "outage_backoff"


# -- the semantic path backs off on its own -------------------------------------------------------------------
class _FlakyEmbedder:
    """Fails like a remote embedding API that is down (a 503) while ``down``; counts its calls."""

    name = "flaky"
    dim = 64

    def __init__(self) -> None:
        self._fake = HashEmbeddings()
        self.down = False
        self.calls = 0

    def embed(self, texts: Sequence[str]) -> Any:
        self.calls += 1
        if self.down:
            raise ConnectionError("embedding API 503")
        return self._fake.embed(texts)

    async def aembed(self, texts: Sequence[str]) -> Any:
        return self.embed(texts)


class _HungSearch:
    """An index whose vector search hangs (a socket timeout) while its exact get and put work; counts searches."""

    def __init__(self) -> None:
        self.inner = EmbeddedIndex()
        self.hung = True
        self.searches = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def search(self, *a: Any, **k: Any) -> Any:
        self.searches += 1
        if self.hung:
            raise TimeoutError("Timeout reading from 127.0.0.1:6379")
        return self.inner.search(*a, **k)

    async def asearch(self, *a: Any, **k: Any) -> Any:
        return self.search(*a, **k)


PARAPHRASE = "What's the capital city of France?"


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_failing_embedder_leaves_the_exact_tier_serving_and_storing(
    caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    embedder = _FlakyEmbedder()
    cache = AnswerCache(embedder=embedder, threshold=0.5, guard=False)
    clock = _Clock()
    set_clock(cache, clock)

    def lookup(text: str) -> Any:
        return cache.lookup(q(text)) if mode == "sync" else asyncio.run(cache.alookup(q(text)))

    def update(text: str, answer: str) -> None:
        cache.update(q(text), answer) if mode == "sync" else asyncio.run(cache.aupdate(q(text), answer))

    update(QUESTION, "Paris")
    embedder.down = True
    with caplog.at_level(logging.WARNING, logger="frugal_chains"):
        assert lookup(PARAPHRASE) is None  # the semantic tier fails open
        calls = embedder.calls
        for _ in range(20):  # repeats of a cached question: the exact tier never needed the embedder
            hit = lookup(QUESTION)
            assert hit is not None and hit.tier == "exact"
            assert lookup(f"{PARAPHRASE} (again)") is None  # skipped, no embedder call
        assert embedder.calls == calls  # still inside the first 1 s window
        update("What is the capital of Spain?", "Madrid")  # stored for the exact tier, without a vector
        spain = lookup("What is the capital of Spain?")
        assert spain is not None and spain.tier == "exact" and spain.entry.vector is None
        assert embedder.calls == calls  # an update does not probe the semantic path
        windows = []
        for _ in range(4):  # the window grows while the embedder stays down: exact hits never end the outage
            before, waited = embedder.calls, 0.0
            while embedder.calls == before:
                clock.now += 0.5
                waited += 0.5
                assert lookup(QUESTION) is not None
                lookup(PARAPHRASE)
            windows.append(waited)
        assert windows == [1.0, 2.0, 4.0, 8.0]
        embedder.down = False
        clock.now += 16.0
        semantic = lookup(PARAPHRASE)  # the probe succeeds: the outage is over
        assert lookup(PARAPHRASE) is not None  # and the next one is tried at once
    assert semantic is not None and semantic.tier == "semantic" and semantic.answer == "Paris"
    logged = warnings_in(caplog)
    assert len(logged) == 2, logged  # one when it failed, one when it was back: no flapping
    assert "semantic" in logged[0] and "ConnectionError" in logged[0] and "exact tier" in logged[0]
    assert "semantic" in logged[1] and "answers again" in logged[1]
    stats = cache.stats
    assert stats.hits_exact >= 21 + 1 and stats.updates == 2


def test_a_hung_vector_search_leaves_the_exact_tier_and_updates_do_not_end_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    index = _HungSearch()
    cache = AnswerCache(index=index, embedder=HashEmbeddings(), threshold=0.5, guard=False)  # type: ignore[arg-type]
    clock = _Clock()
    set_clock(cache, clock)
    cache.update(q(QUESTION), "Paris")
    with caplog.at_level(logging.WARNING, logger="frugal_chains"):
        for i in range(10):
            hit = cache.lookup(q(QUESTION))
            assert hit is not None and hit.tier == "exact"
            assert cache.lookup(q(PARAPHRASE)) is None
            cache.update(q(f"What is the capital of country number {i}?"), f"City {i}")
        assert index.searches == 1  # one timeout, then the semantic tier is skipped
        clock.now += 1.01  # the window closes; an update's successful write must not end the outage
        cache.update(q("What is the capital of Spain?"), "Madrid")
        assert cache.lookup(q(PARAPHRASE)) is None  # this lookup probes: still hung
        assert index.searches == 2
        clock.now += 1.5  # the window doubled
        assert cache.lookup(q(PARAPHRASE)) is None and index.searches == 2
        index.hung = False
        clock.now += 0.6
        semantic = cache.lookup(q(PARAPHRASE))
    assert semantic is not None and semantic.answer == "Paris"
    assert len(cache) == 12 and cache.stats.updates == 12  # every update was stored
    spain = cache.lookup(q("What is the capital of Spain?"))
    assert spain is not None and spain.entry.vector is None  # stored during the outage: exact tier only
    logged = warnings_in(caplog)
    assert len(logged) == 2 and "TimeoutError" in logged[0] and "answers again" in logged[1], logged


def test_an_index_failure_after_a_semantic_outage_is_its_own_outage(caplog: pytest.LogCaptureFixture) -> None:
    embedder = _FlakyEmbedder()
    index = _HungIndex()
    index.hung = False
    cache = AnswerCache(index=index, embedder=embedder)  # type: ignore[arg-type]
    clock = _Clock()
    set_clock(cache, clock)
    with caplog.at_level(logging.WARNING, logger="frugal_chains"):
        embedder.down = True
        assert cache.lookup(q(QUESTION)) is None  # the semantic path fails
        index.hung = True
        assert cache.lookup(q(QUESTION)) is None  # now the index too
        attempts = index.attempts
        cache.update(q(QUESTION), "Paris")  # dropped: the index backs off
        assert index.attempts == attempts
        index.hung = False
        clock.now += 1.01
        cache.update(q(QUESTION), "Paris")  # the index is back; the semantic path still backs off
        hit = cache.lookup(q(QUESTION))
    assert hit is not None and hit.tier == "exact"
    logged = warnings_in(caplog)
    assert len(logged) == 3, logged
    assert (
        "semantic" in logged[0]
        and "cache index failed" in logged[1]
        and "cache index answers again" in logged[2]
    )


# -- lone surrogates -------------------------------------------------------------------------------------------
class _Utf8Embedder:
    """Sends texts out as UTF-8, like every remote embedding API (and MiniLM's tokenizer refuses them too)."""

    name = "utf8-fake"
    dim = 64

    def __init__(self) -> None:
        self._fake = HashEmbeddings()

    def embed(self, texts: Sequence[str]) -> Any:
        return self._fake.embed([t.encode("utf-8").decode() for t in texts])

    async def aembed(self, texts: Sequence[str]) -> Any:
        return self.embed(texts)


@pytest.mark.parametrize("where", ["memory", "file"])
def test_a_lone_surrogate_is_cached_like_any_text(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, where: str
) -> None:
    path = tmp_path / "cache.sqlite" if where == "file" else None
    cache = AnswerCache(embedder=_Utf8Embedder(), path=path, threshold=0.5, guard=False)
    question = "What is the capital of France \ud800?"
    with caplog.at_level(logging.WARNING, logger="frugal_chains"):
        assert cache.lookup(q(question)) is None
        cache.update(q(question), "Paris \udc00")
        exact = cache.lookup(q(question))
        semantic = cache.lookup(q("What is the capital of France \ud800 please?"))
    assert exact is not None and exact.answer == "Paris \udc00" and exact.entry.question == question
    assert semantic is not None and semantic.tier == "semantic"
    assert cache.stats.errors == 0 and warnings_in(caplog) == []
    if path is not None:
        cache.close()
        again = AnswerCache(embedder=_Utf8Embedder(), path=path).lookup(q(question))
        assert again is not None and again.answer == "Paris \udc00"  # read back from the file as written


async def test_a_lone_surrogate_async() -> None:
    cache = AnswerCache(embedder=_Utf8Embedder())
    await cache.aupdate(q("Hello \ud83d"), "Hi")
    hit = await cache.alookup(q("Hello \ud83d"))
    assert hit is not None and hit.answer == "Hi" and cache.stats.errors == 0


def test_surrogates_become_replacement_characters_only_where_text_must_encode() -> None:
    assert normalize("Hello \ud800 World?") == "hello \ufffd world"
    entry = CacheEntry(
        partition="p", exact_key="k", question="a\ud800b", normalized="a\ufffdb", answer="\udfff"
    )
    text = entry.to_json()
    text.encode("utf-8")  # valid UTF-8 for SQLite and Redis
    back = CacheEntry.from_json(text)
    assert (back.question, back.answer) == ("a\ud800b", "\udfff")  # the raw texts are kept exactly
    assert "é" in CacheEntry(partition="p", exact_key="k", question="é", normalized="é", answer="").to_json()


# -- empty and punctuation-only questions ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "bypass", [None, False, BypassPolicy(time_sensitive=False, user_specific=False).reason]
)
def test_empty_and_punctuation_only_questions_are_neither_served_nor_stored(bypass: Any) -> None:
    cache = AnswerCache(embedder=HashEmbeddings(), bypass=bypass)
    for text in ("", "?", "...", " ?! ", "\u3002", "\u00bf?"):
        cache.update(q(text), "an answer to nothing")
        assert cache.lookup(q(text)) is None
    assert len(cache) == 0 and cache.stats.updates == 0
    assert cache.stats.bypassed == 6 and cache.stats.misses == 6


def test_empty_is_a_bypass_reason_and_other_scripts_have_content() -> None:
    assert bypass_reason("") == bypass_reason("?!") == "empty"
    assert q("?").blank and q("").blank and not q("Why?").blank
    for text in ("\u00bfD\u00f3nde?", "\u4f60\u597d\uff1f", "\u0645\u0631\u062d\u0628\u0627\u061f", "42?"):
        assert not q(text).blank and bypass_reason(text) != "empty"


def test_a_chat_turn_with_only_an_image_is_still_matched_exactly() -> None:
    cache = AnswerCache(embedder=HashEmbeddings())
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    request = CacheRequest.from_messages([{"role": "user", "content": [image]}], llm_string="m")
    assert not request.blank
    cache.update(request, "a cat")
    hit = cache.lookup(CacheRequest.from_messages([{"role": "user", "content": [image]}], llm_string="m"))
    assert hit is not None and hit.answer == "a cat"
    empty = CacheRequest.from_messages([{"role": "user", "content": ""}], llm_string="m")
    assert empty.blank and cache.lookup(empty) is None


def test_the_corrupt_file_name_keeps_the_original_name_as_prefix(tmp_path: Path) -> None:
    path = tmp_path / "my.cache"
    garbage_after_the_header(path)
    index = EmbeddedIndex(str(path))
    names = siblings(path)
    assert "my.cache" in names and any(n.startswith("my.cache.corrupt-") for n in names)
    assert os.path.samefile(index.path, path)
