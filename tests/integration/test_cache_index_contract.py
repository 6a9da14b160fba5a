"""The VectorIndex contract: EmbeddedIndex (memory, file) and RedisIndex pass the same tests.

Plus what only a shared file can show: two EmbeddedIndex objects on one SQLite file (two processes) and a
corrupted row.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from frugal_chains.cache import CacheEntry, EmbeddedIndex, VectorIndex
from frugal_chains.errors import ConfigurationError

DIM = 8
TRICKY = [
    "plain",
    "with space, comma|pipe {braces} @at *star ?q -dash",
    "quote\" back\\slash 'single' tab\there\nnewline",
    "ünïcödé — 日本語 🙂",
    "UPPER lower",
    "",
]


def vec(seed: int | list[float]) -> np.ndarray:
    """A unit vector: a fixed random one per int seed, or the given components (padded to DIM)."""
    if isinstance(seed, int):
        v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    else:
        v = np.zeros(DIM, dtype=np.float32)
        v[: len(seed)] = seed
    return (v / np.linalg.norm(v)).astype(np.float32)


def mix(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    v = (1 - t) * a + t * b
    return (v / np.linalg.norm(v)).astype(np.float32)


def entry(partition: str = "p", key: str = "k", answer: str = "A", **kw: Any) -> CacheEntry:
    kw.setdefault("vector", vec(0))
    return CacheEntry(
        partition=partition, exact_key=key, question=f"q {key}", normalized=f"q {key}", answer=answer, **kw
    )


@dataclass
class Backend:
    kind: str
    index: Any
    make: Callable[[], Any]
    """Another index object on the same storage (another process); closed by the fixture."""

    def after(self, t: float) -> float:
        """A ``now`` later than ``t`` that every part of the backend agrees on (Redis expires keys on its own
        clock: wait for it)."""
        if self.kind == "redis":
            while time.time() < t + 0.05:
                time.sleep(0.05)
            return time.time()
        return t + 0.05


def _backend(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    made: list[Any] = []

    if kind == "memory":

        def make() -> Any:
            return EmbeddedIndex(":memory:")

        first = make()  # a second ":memory:" index is another cache, so make() is only used for files/Redis
    elif kind == "file":

        def make() -> Any:
            idx = EmbeddedIndex(tmp_path / "cache.sqlite")
            made.append(idx)
            return idx

        first = make()
    else:
        from frugal_chains.cache.redis_index import RedisIndex

        url = request.getfixturevalue("redis_url")

        def make() -> Any:
            idx = RedisIndex(url, name="contract")
            made.append(idx)
            return idx

        first = make()
    made.append(first)
    try:
        yield Backend(kind, first, make)
    finally:
        for idx in made:
            idx.close()


@pytest.fixture(params=["memory", "file", pytest.param("redis", marks=pytest.mark.redis)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    yield from _backend(request.param, request, tmp_path)


async def aclose(index: Any) -> None:
    if hasattr(index, "aclose"):
        await index.aclose()


def ids(hits: list[Any]) -> list[str]:
    return [h.entry.id for h in hits]


# -- basics --------------------------------------------------------------------------------------------------
def test_is_a_vector_index(backend: Backend) -> None:
    assert isinstance(backend.index, VectorIndex)


def test_add_get_exact_and_replace(backend: Backend) -> None:
    idx = backend.index
    now = time.time()
    first = entry(answer="first", tags=("t1",), model="m", cost_usd=0.25, meta={"usage": {"input_tokens": 3}})
    idx.add(first)
    got = idx.get_exact("p", "k", now)
    assert got is not None
    assert (got.id, got.answer, got.tags, got.model, got.cost_usd, dict(got.meta)) == (
        first.id,
        "first",
        ("t1",),
        "m",
        0.25,
        {"usage": {"input_tokens": 3}},
    )
    assert got.vector is not None and np.allclose(got.vector, first.vector)
    assert idx.get_exact("p", "other", now) is None
    assert idx.get_exact("other", "k", now) is None
    second = entry(answer="second")
    idx.add(second)  # same partition and exact key: replaces
    got = idx.get_exact("p", "k", now)
    assert got is not None and (got.id, got.answer) == (second.id, "second")
    assert idx.count() == 1
    assert ids(idx.search("p", vec(0), 5, 0.5, now)) == [second.id]
    assert idx.delete([first.id]) == 0  # the replaced entry is gone already
    assert idx.get_exact("p", "k", now) is not None


def test_entry_without_vector_is_exact_only(backend: Backend) -> None:
    idx = backend.index
    now = time.time()
    idx.add(entry(key="novec", vector=None, tags=("t",)))
    got = idx.get_exact("p", "novec", now)
    assert got is not None and got.vector is None
    idx.add(entry(key="vec"))
    assert [h.entry.exact_key for h in idx.search("p", vec(0), 5, -1.0, now)] == ["vec"]
    assert idx.invalidate(tag="t") == 1
    assert idx.get_exact("p", "novec", now) is None


def test_search_before_any_entry_is_empty(backend: Backend) -> None:
    assert backend.index.search("p", vec(0), 3, 0.0, time.time()) == []
    assert backend.index.get_exact("p", "k", time.time()) is None
    assert backend.index.count() == 0


def test_search_is_confined_to_the_partition(backend: Backend) -> None:
    idx = backend.index
    now = time.time()
    a = entry("tenant-a", "k", "A")
    b = entry("tenant-b", "k", "B")
    idx.add(a)
    idx.add(b)
    assert ids(idx.search("tenant-a", vec(0), 5, 0.0, now)) == [a.id]
    assert ids(idx.search("tenant-b", vec(0), 5, 0.0, now)) == [b.id]
    assert idx.search("tenant-c", vec(0), 5, 0.0, now) == []
    got = idx.get_exact("tenant-b", "k", now)
    assert got is not None and got.answer == "B"


def test_top_k_best_first_and_min_similarity(backend: Backend) -> None:
    idx = backend.index
    now = time.time()
    base, other = vec([1.0]), vec([0.0, 1.0])
    sims = {}
    for i, t in enumerate([0.0, 0.2, 0.4, 0.6, 0.8, 1.0]):
        v = mix(base, other, t)
        e = entry(key=f"k{i}", vector=v)
        idx.add(e)
        sims[e.exact_key] = float(v @ base)
    idx.add(entry("elsewhere", "x", vector=base))
    hits = idx.search("p", base, 3, -1.0, now)
    assert [h.entry.exact_key for h in hits] == ["k0", "k1", "k2"]
    for h in hits:
        assert h.similarity == pytest.approx(sims[h.entry.exact_key], abs=1e-4)
    assert [h.similarity for h in hits] == sorted((h.similarity for h in hits), reverse=True)
    hits = idx.search("p", base, 10, 0.7, now)
    assert [h.entry.exact_key for h in hits] == [
        k for k, s in sorted(sims.items(), key=lambda x: -x[1]) if s >= 0.7
    ]
    assert len(hits) == 3  # 1.0, 0.97, 0.83; 0.55, 0.24 and 0.0 are below
    assert idx.search("p", other * -1, 10, 0.99, now) == []


def test_tricky_partition_key_and_tag_values(backend: Backend) -> None:
    idx = backend.index
    now = time.time()
    entries = [
        entry(p, p + "/key", f"answer {i}", vector=vec(i), tags=(p, "common")) for i, p in enumerate(TRICKY)
    ]
    for e in entries:
        idx.add(e)
    for i, p in enumerate(TRICKY):
        got = idx.get_exact(p, p + "/key", now)
        assert got is not None and got.answer == f"answer {i}" and got.partition == p
        assert ids(idx.search(p, vec(i), 5, -1.0, now)) == [entries[i].id]
    # a tag is matched whole and exactly: no prefix, case or separator games
    assert idx.invalidate(tag="with space") == 0
    assert idx.invalidate(tag="upper lower") == 0
    assert idx.invalidate(tag="comma|pipe") == 0
    assert idx.invalidate(tag=TRICKY[1]) == 1
    assert idx.get_exact(TRICKY[1], TRICKY[1] + "/key", now) is None
    assert idx.invalidate(tag="UPPER lower") == 1
    assert idx.invalidate(tag="common") == len(TRICKY) - 2
    assert idx.count() == 0


# -- lifetime ------------------------------------------------------------------------------------------------
def test_ttl_expiry(backend: Backend) -> None:
    idx = backend.index
    t0 = time.time()
    short = entry(key="short", vector=vec(1), expires_at=t0 + 0.5)
    long = entry(key="long", vector=vec(1), expires_at=t0 + 3600)
    forever = entry(key="forever", vector=vec(1))
    gone = entry(key="gone", vector=vec(1), expires_at=t0 - 1)  # already expired when added
    for e in (short, long, forever, gone):
        idx.add(e)
    assert idx.get_exact("p", "short", t0) is not None
    assert idx.get_exact("p", "gone", t0) is None
    assert set(ids(idx.search("p", vec(1), 10, 0.5, t0))) == {short.id, long.id, forever.id}
    later = backend.after(t0 + 0.5)
    assert idx.get_exact("p", "short", later) is None
    assert idx.get_exact("p", "long", later) is not None
    assert set(ids(idx.search("p", vec(1), 10, 0.5, later))) == {long.id, forever.id}
    # a reader whose clock is ahead never serves an entry it thinks expired
    far = t0 + 7200
    assert idx.get_exact("p", "long", far) is None
    assert ids(idx.search("p", vec(1), 10, 0.5, far)) == [forever.id]


def test_invalidate_by_tag_and_delete(backend: Backend) -> None:
    idx = backend.index
    now = time.time()
    kb3 = [entry(key=f"a{i}", vector=vec(i), tags=("kb-v3", f"doc{i}")) for i in range(5)]
    kb4 = [entry(key=f"b{i}", vector=vec(i), tags=("kb-v4",)) for i in range(3)]
    for e in kb3 + kb4:
        idx.add(e)
    assert idx.invalidate(tag="kb-v3") == 5
    assert idx.invalidate(tag="kb-v3") == 0
    assert idx.invalidate(tag="doc1") == 0
    assert idx.count() == 3
    assert all(idx.get_exact("p", e.exact_key, now) is None for e in kb3)
    assert set(ids(idx.search("p", vec(0), 20, -1.0, now))) == {e.id for e in kb4}
    assert idx.delete([kb4[0].id, kb4[1].id, "no-such-id"]) == 2
    assert idx.delete([]) == 0
    assert ids(idx.search("p", vec(0), 20, -1.0, now)) == [kb4[2].id]
    assert idx.get_exact("p", "b0", now) is None


def test_invalidate_survives_a_retag(backend: Backend) -> None:
    idx = backend.index
    now = time.time()
    idx.add(entry(key="k", tags=("old",)))
    idx.add(entry(key="k", answer="new", tags=("new",)))  # re-added without the tag
    assert idx.invalidate(tag="old") == 0
    got = idx.get_exact("p", "k", now)
    assert got is not None and got.answer == "new"


def test_lru_eviction_keeps_the_touched_entry(backend: Backend) -> None:
    idx = backend.index
    now = time.time()
    a, b, c, d = (entry(key=k, vector=vec(i)) for i, k in enumerate("abcd"))
    for e in (a, b, c):
        idx.add(e, max_entries=3)
    assert idx.count() == 3
    idx.touch(a.id, now)  # a is now the most recently used; b the least
    idx.add(d, max_entries=3)
    assert idx.count() == 3
    assert idx.get_exact("p", "b", now) is None
    assert {k for k in "acd" if idx.get_exact("p", k, now) is not None} == set("acd")
    assert b.id not in ids(idx.search("p", vec(1), 10, -1.0, now))
    idx.touch("no-such-id", now)  # harmless
    idx.add(entry(key="e", vector=vec(5)), max_entries=2)
    assert idx.count() == 2
    assert {k for k in "acde" if idx.get_exact("p", k, now) is not None} == {"d", "e"}


def test_count_and_clear(backend: Backend) -> None:
    idx = backend.index
    now = time.time()
    for i in range(7):
        idx.add(entry(partition=f"p{i % 2}", key=f"k{i}", vector=vec(i), tags=("t",)))
    assert idx.count() == 7
    idx.clear()
    assert idx.count() == 0
    assert idx.get_exact("p0", "k0", now) is None
    assert idx.search("p0", vec(0), 5, -1.0, now) == []
    assert idx.invalidate(tag="t") == 0
    fresh = entry(partition="p0", key="k0", vector=vec(0))
    idx.add(fresh)  # usable after clear
    assert ids(idx.search("p0", vec(0), 5, 0.5, now)) == [fresh.id]


def test_dimension_mismatch_raises(backend: Backend) -> None:
    idx = backend.index
    idx.add(entry())
    assert idx.dim == DIM
    with pytest.raises(ConfigurationError) as e:
        idx.add(entry(key="other", vector=np.ones(DIM + 1, dtype=np.float32)))
    assert e.value.field == "embedder"
    with pytest.raises(ConfigurationError) as e:
        idx.search("p", np.ones(DIM - 1, dtype=np.float32), 3, 0.0, time.time())
    assert e.value.field == "embedder"
    assert idx.count() == 1


# -- async and concurrency -----------------------------------------------------------------------------------
async def test_sync_and_async_agree(backend: Backend) -> None:
    idx = backend.index
    now = time.time()
    try:
        for i in range(12):
            e = entry(partition=f"p{i % 3}", key=f"k{i}", vector=vec(i), tags=(f"t{i % 4}",))
            if i % 2:
                idx.add(e)
            else:
                await idx.aadd(e)
        for p in ("p0", "p1", "p2", "nope"):
            for s in range(4):
                sync_hits = idx.search(p, vec(s), 3, 0.0, now)
                async_hits = await idx.asearch(p, vec(s), 3, 0.0, now)
                assert ids(sync_hits) == ids(async_hits)
                assert [h.similarity for h in sync_hits] == pytest.approx([h.similarity for h in async_hits])
        for i in range(12):
            a = idx.get_exact(f"p{i % 3}", f"k{i}", now)
            b = await idx.aget_exact(f"p{i % 3}", f"k{i}", now)
            assert a is not None and b is not None and (a.id, a.answer, a.tags) == (b.id, b.answer, b.tags)
        assert await idx.ainvalidate(tag="t0") == 3
        assert idx.invalidate(tag="t0") == 0
        victim = idx.get_exact("p1", "k1", now)
        assert victim is not None
        assert await idx.adelete([victim.id]) == 1
        assert idx.get_exact("p1", "k1", now) is None
        await idx.atouch("no-such-id", now)
        assert idx.count() == 8
        await idx.aclear()
        assert idx.count() == 0
        assert await idx.asearch("p0", vec(0), 3, -1.0, now) == []
    finally:
        await aclose(idx)


async def test_async_lru_and_ttl(backend: Backend) -> None:
    idx = backend.index
    now = time.time()
    try:
        a, b, c = (entry(key=k, vector=vec(i)) for i, k in enumerate("abc"))
        await idx.aadd(a, max_entries=2)
        await idx.aadd(b, max_entries=2)
        await idx.atouch(a.id, now)
        await idx.aadd(c, max_entries=2)
        assert await idx.aget_exact("p", "b", now) is None
        assert (await idx.aget_exact("p", "a", now)) is not None
        await idx.aadd(entry(key="old", vector=vec(9), expires_at=now - 1))
        assert await idx.aget_exact("p", "old", now) is None
        assert "old" not in [h.entry.exact_key for h in await idx.asearch("p", vec(9), 5, -1.0, now)]
    finally:
        await aclose(idx)


def test_concurrent_writers_threads(backend: Backend) -> None:
    idx = backend.index
    now = time.time()
    todo = [entry(partition=f"p{i % 5}", key=f"k{i}", vector=vec(i), tags=("bulk",)) for i in range(50)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(idx.add, todo))
    assert idx.count() == 50
    for e in todo:
        got = idx.get_exact(e.partition, e.exact_key, now)
        assert got is not None and got.id == e.id
    assert len(idx.search("p0", vec(0), 20, -1.0, now)) == 10
    assert idx.invalidate(tag="bulk") == 50


async def test_concurrent_writers_asyncio(backend: Backend) -> None:
    idx = backend.index
    now = time.time()
    todo = [entry(partition=f"p{i % 5}", key=f"k{i}", vector=vec(i)) for i in range(50)]
    try:
        await asyncio.gather(*(idx.aadd(e) for e in todo))
        assert idx.count() == 50
        found = await asyncio.gather(*(idx.aget_exact(e.partition, e.exact_key, now) for e in todo))
        assert [f.id if f else None for f in found] == [e.id for e in todo]
        hits = await asyncio.gather(*(idx.asearch(f"p{i}", vec(i), 20, -1.0, now) for i in range(5)))
        assert [len(h) for h in hits] == [10] * 5
    finally:
        await aclose(idx)


def test_concurrent_writers_of_one_key_leave_one_entry(backend: Backend) -> None:
    idx = backend.index
    now = time.time()
    todo = [entry(key="same", answer=f"v{i}", vector=vec(i)) for i in range(30)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(idx.add, todo))
    assert idx.count() == 1
    got = idx.get_exact("p", "same", now)
    assert got is not None
    assert ids(idx.search("p", vec(0), 50, -1.0, now)) == [got.id]
    assert idx.delete([e.id for e in todo]) == 1
    assert idx.count() == 0


# -- several processes on one store --------------------------------------------------------------------------
@pytest.fixture(params=["file", pytest.param("redis", marks=pytest.mark.redis)])
def shared(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Backends several processes can share (a ':memory:' index belongs to one object)."""
    yield from _backend(request.param, request, tmp_path)


def test_second_process_sees_adds_deletes_and_invalidations(shared: Backend) -> None:
    one, two = shared.index, shared.make()
    now = time.time()
    a = entry(key="a", vector=vec(1), tags=("kb",))
    b = entry(key="b", vector=vec(2))
    one.add(a)
    one.add(b)
    got = two.get_exact("p", "a", now)
    assert got is not None and got.id == a.id
    assert set(ids(two.search("p", vec(1), 5, -1.0, now))) == {a.id, b.id}
    assert one.invalidate(tag="kb") == 1
    assert two.get_exact("p", "a", now) is None
    assert a.id not in ids(two.search("p", vec(1), 5, -1.0, now))
    assert one.delete([b.id]) == 1
    assert two.search("p", vec(2), 5, -1.0, now) == []
    assert two.get_exact("p", "b", now) is None
    replaced = entry(key="c", answer="one")
    one.add(replaced)
    assert two.get_exact("p", "c", now) is not None
    newer = entry(key="c", answer="two")
    two.add(newer)
    got = one.get_exact("p", "c", now)
    assert got is not None and got.answer == "two"
    assert ids(one.search("p", vec(0), 5, 0.5, now)) == [newer.id]


def test_file_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    first = EmbeddedIndex(path)
    e = entry(tags=("t",))
    first.add(e)
    first.close()
    again = EmbeddedIndex(path)
    try:
        assert again.dim == DIM
        got = again.get_exact("p", "k", time.time())
        assert got is not None and got.id == e.id
        assert ids(again.search("p", vec(0), 3, 0.5, time.time())) == [e.id]
    finally:
        again.close()


@pytest.mark.parametrize("garbage", ["{not json", '{"id": "x"}', "[1, 2]", '{"answer": 3}'])
def test_corrupted_sqlite_row_is_skipped_and_deleted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, garbage: str
) -> None:
    path = tmp_path / "c.sqlite"
    writer = EmbeddedIndex(path)
    bad, good = entry(key="bad", vector=vec(1)), entry(key="good", vector=vec(1))
    writer.add(bad)
    writer.add(good)
    writer.close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE cache_entries SET data = ? WHERE id = ?", (garbage, bad.id))
    caplog.set_level(logging.WARNING, logger="frugal_chains.cache")
    reader = EmbeddedIndex(path)
    try:
        now = time.time()
        assert reader.get_exact("p", "bad", now) is None
        assert ids(reader.search("p", vec(1), 5, -1.0, now)) == [good.id]
        assert any("corrupted" in r.getMessage() for r in caplog.records)
    finally:
        reader.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT COUNT(*) FROM cache_entries WHERE id = ?", (bad.id,)).fetchone()[0] == 0


def test_replace_keeps_vector_optional(backend: Backend) -> None:
    # a re-add without a vector leaves no stale vector behind
    idx = backend.index
    now = time.time()
    idx.add(entry(key="k", vector=vec(3)))
    idx.add(replace(entry(key="k", answer="exact only"), vector=None))
    assert idx.search("p", vec(3), 5, -1.0, now) == []
    got = idx.get_exact("p", "k", now)
    assert got is not None and got.answer == "exact only" and got.vector is None
