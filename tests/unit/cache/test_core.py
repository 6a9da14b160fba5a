"""AnswerCache: tiers, partitions, guard, policies, TTL, invalidation, fail-open, accounting, concurrency."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from frugal_chains import ConfigurationError, attribute
from frugal_chains.accounting import SQLiteLedger, Usage
from frugal_chains.cache import (
    AnswerCache,
    CacheRequest,
    EmbeddedIndex,
    GuardVerdict,
    cache_scope,
)
from frugal_chains.testing.fake_embeddings import HashEmbeddings


def q(text: str, **kw: Any) -> CacheRequest:
    return CacheRequest.from_prompt(text, **kw)


def chat(*turns: tuple[str, str], llm_string: str = "m") -> CacheRequest:
    return CacheRequest.from_messages([{"role": r, "content": c} for r, c in turns], llm_string=llm_string)


@pytest.fixture
def cache() -> AnswerCache:
    # The fake embedder shares words, not meaning: a low threshold lets paraphrases with shared words through,
    # so the guard's decisions are what these tests see.
    return AnswerCache(embedder=HashEmbeddings(), threshold=0.5)


def test_exact_hit_ignores_case_whitespace_and_punctuation(cache: AnswerCache) -> None:
    cache.update(q("What is the capital of France?"), "Paris")
    hit = cache.lookup(q("  what is the CAPITAL of france "))
    assert hit is not None and hit.answer == "Paris" and hit.tier == "exact"
    assert cache.stats.hits_exact == 1


def test_semantic_hit_and_unrelated_miss(cache: AnswerCache) -> None:
    cache.update(q("How do I reset the password?"), "Settings > Security")
    hit = cache.lookup(q("How can I reset the password?"))
    assert hit is not None and hit.tier == "semantic" and 0.5 <= hit.similarity < 1.0
    assert cache.lookup(q("Which pizza toppings are best?")) is None
    s = cache.stats
    assert (s.hits_semantic, s.misses) == (1, 1)


@pytest.mark.parametrize(
    ("stored", "asked"),
    [
        ("How do I enable two-factor authentication?", "How do I disable two-factor authentication?"),
        ("Who is the CEO of Apple?", "Who is the CEO of Google?"),
        ("Is coffee bad for you?", "Is coffee not bad for you?"),
        ("Convert 5 km to miles", "Convert 10 km to miles"),
        ("Should I buy Tesla shares?", "Should I sell Tesla shares?"),
    ],
)
def test_guard_rejects_answer_changing_differences(cache: AnswerCache, stored: str, asked: str) -> None:
    cache.update(q(stored), "an answer to the stored question")
    assert cache.lookup(q(asked)) is None
    assert cache.stats.guard_rejections >= 1


def test_exact_tier_still_tells_ids_apart(cache: AnswerCache) -> None:
    # normalisation masks long ids (<id>), but an id decides the answer: never served across ids
    cache.update(q("Status of order 12345678901?"), "shipped")
    assert cache.lookup(q("status of order 98765432109")) is None
    assert cache.lookup(q("STATUS of order 12345678901")) is not None


def test_multi_turn_isolation(cache: AnswerCache) -> None:
    a = chat(("user", "Tell me about Python."), ("assistant", "A language."), ("user", "How old is it?"))
    b = chat(
        ("user", "Tell me about the Eiffel Tower."), ("assistant", "A tower."), ("user", "How old is it?")
    )
    cache.update(a, "35 years")
    assert cache.lookup(b) is None
    assert cache.lookup(a) is not None


def test_system_prompt_and_model_isolation(cache: AnswerCache) -> None:
    base = (("system", "Answer in French."), ("user", "What is the capital of Italy?"))
    cache.update(chat(*base), "Rome")
    assert cache.lookup(chat(("system", "Answer in German."), base[1])) is None
    assert cache.lookup(chat(*base, llm_string="other-model")) is None
    assert cache.lookup(chat(*base)) is not None


def test_tenant_isolation_from_scope_and_attribution(cache: AnswerCache) -> None:
    with cache_scope(tenant_id="acme"):
        cache.update(q("What is your return policy?"), "30 days")
        assert cache.lookup(q("What is your return policy?")) is not None
    with cache_scope(tenant_id="globex"):
        assert cache.lookup(q("What is your return policy?")) is None
    assert cache.lookup(q("What is your return policy?")) is None  # no tenant at all: another partition
    with attribute(tenant_id="acme"):  # the spend attribution's tenant scopes the cache too
        assert cache.lookup(q("What is your return policy?")) is not None


def test_bypass_scope_neither_reads_nor_writes(cache: AnswerCache) -> None:
    with cache_scope(bypass=True):
        cache.update(q("What is 2+2?"), "4")
    assert cache.lookup(q("What is 2+2?")) is None
    cache.update(q("What is 2+2?"), "4")
    with cache_scope(bypass=True):
        assert cache.lookup(q("What is 2+2?")) is None


def test_time_sensitive_questions_skip_the_semantic_tier(cache: AnswerCache) -> None:
    cache.update(q("What is the latest news about Tesla today?"), "old news")
    # identical question: exact tier (same partition, same words) still answers
    assert cache.lookup(q("What is the latest news about Tesla today?")) is not None
    assert cache.lookup(q("What's the latest news about Tesla today?")) is None
    assert cache.stats.bypassed >= 1


def test_ttl_expiry() -> None:
    cache = AnswerCache(embedder=HashEmbeddings(), ttl=60)
    cache.update(q("What is the boiling point of water?"), "100 C")
    entry = cache.lookup(q("What is the boiling point of water?"))
    assert entry is not None and entry.entry.expires_at is not None
    index = cache.index
    assert isinstance(index, EmbeddedIndex)
    future = entry.entry.expires_at + 1
    assert index.get_exact(entry.entry.partition, entry.entry.exact_key, future) is None
    cache.update(q("How tall is Mount Everest?"), "8849 m", ttl=0.001)
    import time

    time.sleep(0.01)
    assert cache.lookup(q("How tall is Mount Everest?")) is None


def test_invalidate_by_tag_and_version() -> None:
    cache = AnswerCache(embedder=HashEmbeddings(), version="kb-v3", tags=["faq"])
    with cache_scope(tags=["kb-v3"]):
        cache.update(q("How do I open an account?"), "Online, in 5 minutes.")
    cache.update(q("Where are you based?"), "Berlin")
    assert cache.invalidate(tag="kb-v3") == 1
    assert cache.lookup(q("How do I open an account?")) is None
    assert cache.lookup(q("Where are you based?")) is not None
    newer = AnswerCache(index=cache.index, embedder=HashEmbeddings(), version="kb-v4")
    assert newer.lookup(q("Where are you based?")) is None  # another version: another partition
    assert cache.invalidate(tag="faq") == 1
    assert len(cache) == 0


def test_size_bound_evicts_least_recently_used() -> None:
    cache = AnswerCache(embedder=HashEmbeddings(), max_entries=3, semantic=False)
    for i in range(3):
        cache.update(q(f"question number {i}"), str(i))
    assert cache.lookup(q("question number 0")) is not None  # touch 0: now 1 is the oldest
    cache.update(q("question number 3"), "3")
    assert len(cache) == 3
    assert cache.lookup(q("question number 1")) is None
    assert cache.lookup(q("question number 0")) is not None


def test_corrupted_answer_is_deleted_not_served(cache: AnswerCache) -> None:
    cache.update(q("What is the speed of light?"), "not json at all")

    def decode(text: str) -> object:
        import json

        return json.loads(text)

    assert cache.lookup(q("What is the speed of light?"), decode=decode) is None
    assert cache.stats.corrupted == 1
    assert len(cache) == 0


class _Broken:
    dim = 64

    def __getattr__(self, name: str) -> Any:
        def fail(*a: Any, **k: Any) -> Any:
            raise ConnectionError("backend down")

        async def afail(*a: Any, **k: Any) -> Any:
            raise ConnectionError("backend down")

        sync = {"add", "get_exact", "search", "touch", "delete", "invalidate", "count", "clear", "close"}
        return afail if name not in sync else fail


def test_backend_outage_fails_open_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    cache = AnswerCache(index=_Broken(), embedder=HashEmbeddings())  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="frugal_chains.cache"):
        for _ in range(3):
            assert cache.lookup(q("What is your return policy?")) is None
            cache.update(q("What is your return policy?"), "30 days")
    warnings = [r for r in caplog.records if "fail" in r.getMessage()]
    assert len(warnings) == 1
    assert cache.stats.errors == 6 and cache.stats.updates == 0


async def test_async_outage_fails_open() -> None:
    cache = AnswerCache(index=_Broken(), embedder=HashEmbeddings())  # type: ignore[arg-type]
    assert await cache.alookup(q("What is your return policy?")) is None
    await cache.aupdate(q("What is your return policy?"), "30 days")
    assert cache.stats.errors == 2


class _FailingEmbedder:
    name = "failing"
    dim = 8

    def embed(self, texts: Sequence[str]) -> Any:
        raise RuntimeError("model crashed")

    async def aembed(self, texts: Sequence[str]) -> Any:
        raise RuntimeError("model crashed")


def test_a_failing_embedder_still_leaves_the_exact_tier() -> None:
    cache = AnswerCache(embedder=_FailingEmbedder())
    cache.update(q("What is 2+2?"), "4")  # the embedding failed: stored for the exact tier only
    hit = cache.lookup(q("What is 2+2?"))
    assert hit is not None and hit.tier == "exact" and hit.entry.vector is None
    assert cache.lookup(q("What is two plus two?")) is None  # the semantic tier is backing off: a miss
    assert cache.stats.errors == 2 and cache.stats.updates == 1


async def test_async_paths_agree_with_sync(cache: AnswerCache) -> None:
    await cache.aupdate(q("How do I reset the password?"), "Settings")
    a = await cache.alookup(q("How can I reset the password?"))
    s = cache.lookup(q("How can I reset the password?"))
    assert a is not None and s is not None
    assert (a.answer, a.tier, round(a.similarity, 5)) == (s.answer, s.tier, round(s.similarity, 5))
    assert await cache.alookup(q("How do I enable dark mode?")) is None


def test_hit_records_saving_in_the_ledger() -> None:
    ledger = SQLiteLedger(":memory:")
    cache = AnswerCache(embedder=HashEmbeddings(), ledger=ledger)
    cache.update(
        q("What is your return policy?"),
        "30 days",
        model="gpt-4o",
        usage=Usage(input_tokens=1000, output_tokens=500),
    )
    with attribute(feature="faq", user_id="u1"):
        hit = cache.lookup(q("what is your return policy"))
    assert hit is not None
    expected = 1000 * 2.5e-6 + 500 * 10e-6  # gpt-4o: $2.50 / $10 per million
    assert hit.saved_usd == pytest.approx(expected)
    (rec,) = ledger.records()
    assert rec.outcome == "cache_hit" and rec.cost_usd == 0.0
    assert rec.saved_usd == pytest.approx(expected)
    assert rec.attribution.feature == "faq" and rec.model == "gpt-4o"
    assert cache.stats.saved_usd == pytest.approx(expected)


def test_verifier_hook_can_veto() -> None:
    calls: list[tuple[str, str]] = []

    class No:
        def verify(self, query: str, cached: str, similarity: float) -> bool:
            calls.append((query, cached))
            return False

        async def averify(self, query: str, cached: str, similarity: float) -> bool:
            return self.verify(query, cached, similarity)

    cache = AnswerCache(embedder=HashEmbeddings(), threshold=0.5, verifier=No())
    cache.update(q("How do I reset the password?"), "Settings")
    assert cache.lookup(q("How can I reset the password?")) is None
    assert calls == [("How can I reset the password?", "How do I reset the password?")]
    assert cache.lookup(q("how do i reset the password")) is not None  # exact hits need no verifier


def test_custom_guard_and_no_bypass() -> None:
    class Strict:
        def check(self, query: str, cached: str) -> GuardVerdict:
            return GuardVerdict(ok=False, reason="never")

    cache = AnswerCache(embedder=HashEmbeddings(), threshold=0.5, guard=Strict(), bypass=False)
    cache.update(q("How do I reset the password?"), "Settings")
    assert cache.lookup(q("How can I reset the password?")) is None
    assert cache.stats.guard_rejections == 1


def test_concurrent_writers_threads() -> None:
    cache = AnswerCache(embedder=HashEmbeddings())
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(20):
                cache.update(q(f"worker {n} question {i}"), f"{n}-{i}")
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(cache) == 100
    hit = cache.lookup(q("worker 3 question 7"))
    assert hit is not None and hit.answer == "3-7"


async def test_concurrent_writers_tasks() -> None:
    cache = AnswerCache(embedder=HashEmbeddings(), path=":memory:")
    await asyncio.gather(*(cache.aupdate(q(f"task question {i}"), str(i)) for i in range(50)))
    assert len(cache) == 50
    found = await asyncio.gather(*(cache.alookup(q(f"task question {i}")) for i in range(50)))
    assert [f.answer if f else None for f in found] == [str(i) for i in range(50)]


def test_persisted_file_survives_restart(tmp_path: Any) -> None:
    path = tmp_path / "cache.sqlite"
    first = AnswerCache(embedder=HashEmbeddings(), path=path)
    first.update(q("How do I reset the password?"), "Settings")
    first.close()
    second = AnswerCache(embedder=HashEmbeddings(), path=path, threshold=0.5)
    hit = second.lookup(q("How can I reset the password?"))
    assert hit is not None and hit.answer == "Settings"


def test_non_user_last_message_is_exact_only(cache: AnswerCache) -> None:
    msgs = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"id": "1", "type": "function", "function": {"name": "w", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "1", "content": "Sunny"},
    ]
    req = CacheRequest.from_messages(msgs)
    assert not req.semantic
    cache.update(req, "It is sunny.")
    assert cache.lookup(CacheRequest.from_messages(msgs)) is not None
    other = [*msgs[:2], {"role": "tool", "tool_call_id": "1", "content": "SUNNY"}]
    assert cache.lookup(CacheRequest.from_messages(other)) is None  # byte-exact for tool results


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"threshold": 1.5}, "threshold"),
        ({"threshold": 0}, "threshold"),
        ({"k": 0}, "k"),
        ({"ttl": -1}, "ttl"),
        ({"max_entries": 0}, "max_entries"),
        ({"tags": "kb"}, "tags"),
        ({"index": object()}, "index"),
        ({"path": ":memory:", "index": EmbeddedIndex()}, "path"),
        ({"verifier": object()}, "verifier"),
        ({"bypass": 3}, "bypass"),
    ],
)
def test_bad_configuration_names_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigurationError) as e:
        AnswerCache(embedder=HashEmbeddings(), **kwargs)
    assert e.value.field == field


def test_bad_requests_name_the_field() -> None:
    with pytest.raises(ConfigurationError) as e:
        CacheRequest.from_messages("hello")  # type: ignore[arg-type]
    assert e.value.field == "messages"
    with pytest.raises(ConfigurationError) as e:
        CacheRequest.from_messages([{"content": "no role"}])
    assert e.value.field == "messages"
    with pytest.raises(ConfigurationError) as e:
        AnswerCache(embedder=HashEmbeddings()).update(q("x"), b"bytes")  # type: ignore[arg-type]
    assert e.value.field == "answer"


def test_changing_the_embedder_dimension_is_a_configuration_error() -> None:
    index = EmbeddedIndex()
    AnswerCache(index=index, embedder=HashEmbeddings(dim=64)).update(q("What is 2+2?"), "4")
    with pytest.raises(ConfigurationError) as e:
        AnswerCache(index=index, embedder=HashEmbeddings(dim=32)).update(q("What is 3+3?"), "6")
    assert e.value.field == "embedder"


def test_vectors_are_stored_normalised_float32(cache: AnswerCache) -> None:
    cache.update(q("How do I reset the password?"), "Settings")
    hit = cache.lookup(q("How do I reset the password?"))
    assert hit is not None and hit.entry.vector is not None
    v = np.asarray(hit.entry.vector)
    assert v.dtype == np.float32 and abs(float(np.linalg.norm(v)) - 1.0) < 1e-5


def test_prices_mapping_prices_a_self_hosted_model() -> None:
    from frugal_chains import Price

    cache = AnswerCache(embedder=HashEmbeddings(), prices={"my-llama": Price(input=1.0, output=2.0)})
    cache.update(q("What is 2+2?"), "4", model="my-llama", usage=Usage(input_tokens=1000, output_tokens=1000))
    hit = cache.lookup(q("What is 2+2?"))
    assert hit is not None and hit.saved_usd == pytest.approx(0.003)


@pytest.mark.parametrize(
    ("stored", "asked"),
    [
        ("What day of the week was 2024-05-01 10:00:00?", "What day of the week was 1999-12-31 10:00:00?"),
        ("Convert 10:22:33 UTC to PST", "Convert 18:05:00 UTC to PST"),
        ("What does grep -i do?", "What does grep -I do?"),
        ("What does `ls -L` do", "What does `ls -l` do"),
    ],
)
def test_exact_tier_never_decides_on_normalisation_alone(cache: AnswerCache, stored: str, asked: str) -> None:
    cache.update(q(stored), "answer to the stored question")
    assert cache.lookup(q(asked)) is None


def test_failing_verifier_or_bypass_is_a_miss_not_a_crash(caplog: pytest.LogCaptureFixture) -> None:
    from frugal_chains.cache.guard import CallableVerifier

    def judge(query: str, cached: str, similarity: float) -> bool:
        raise TimeoutError("LLM judge timed out")

    cache = AnswerCache(embedder=HashEmbeddings(), threshold=0.5, verifier=CallableVerifier(judge))
    cache.update(q("How do I reset the password?"), "Settings")
    with caplog.at_level(logging.WARNING, logger="frugal_chains.cache"):
        assert cache.lookup(q("How can I reset the password?")) is None
    assert cache.stats.errors == 1 and "verifier" in caplog.text

    def broken(text: str) -> str | None:
        raise RuntimeError("bad regex")

    other = AnswerCache(embedder=HashEmbeddings(), threshold=0.5, bypass=broken)
    with cache_scope(user_id="u1"):  # a failing policy counts as user-specific: only a user's own cache works
        other.update(q("How do I reset the password?"), "Settings")
        assert other.lookup(q("How do I reset the password?")) is not None  # exact tier still works
        assert other.lookup(q("How can I reset the password?")) is None  # a failing policy bypasses
    assert other.stats.errors >= 1


def test_user_specific_questions_need_a_user_scope(cache: AnswerCache) -> None:
    cache.update(q("What is my account balance?"), "Alice: $1,234")
    assert cache.lookup(q("What is my account balance?")) is None  # nobody's answer is served to anybody
    assert len(cache) == 0
    with cache_scope(user_id="alice"):
        cache.update(q("What is my account balance?"), "Alice: $1,234")
        assert cache.lookup(q("What is my account balance?")) is not None
    with cache_scope(user_id="bob"):
        assert cache.lookup(q("What is my account balance?")) is None


async def test_failing_async_verifier_is_a_miss() -> None:
    class Slow:
        def verify(self, query: str, cached: str, similarity: float) -> bool:
            raise TimeoutError

        async def averify(self, query: str, cached: str, similarity: float) -> bool:
            raise TimeoutError

    cache = AnswerCache(embedder=HashEmbeddings(), threshold=0.5, verifier=Slow())
    await cache.aupdate(q("How do I reset the password?"), "Settings")
    assert await cache.alookup(q("How can I reset the password?")) is None
    assert cache.stats.errors == 1


def test_vectors_of_another_embedder_are_never_compared() -> None:
    class Renamed(HashEmbeddings):
        @property
        def name(self) -> str:
            return "another-model"

    index = EmbeddedIndex()
    AnswerCache(index=index, embedder=HashEmbeddings(), threshold=0.5).update(
        q("How do I reset the password?"), "Settings"
    )
    other = AnswerCache(index=index, embedder=Renamed(), threshold=0.5)
    assert other.lookup(q("How can I reset the password?")) is None  # same size, other vector space
    assert other.lookup(q("How do I reset the password?")) is not None  # the exact tier needs no vectors


def test_scope_keys_do_not_collide() -> None:
    from frugal_chains.cache import CacheScope

    a = CacheScope(tenant_id="acme|user=x")
    b = CacheScope(tenant_id="acme", user_id="x|user=")
    assert a.key() != b.key()


def test_user_specific_is_checked_even_when_another_reason_comes_first(cache: AnswerCache) -> None:
    # "current" makes it time-sensitive, "my account" user-specific: still never served across users
    cache.update(q("What is my current account balance?"), "Alice: $1,234")
    assert cache.lookup(q("What is my current account balance?")) is None
    assert len(cache) == 0


def test_failing_bypass_policy_never_shares_across_users() -> None:
    def broken(text: str) -> str | None:
        raise RuntimeError("bad regex")

    cache = AnswerCache(embedder=HashEmbeddings(), bypass=broken)
    cache.update(q("Why was my card declined?"), "Alice's card: fraud hold")
    assert cache.lookup(q("Why was my card declined?")) is None
    with cache_scope(user_id="alice"):
        cache.update(q("Why was my card declined?"), "Alice's card: fraud hold")
        assert cache.lookup(q("Why was my card declined?")) is not None


def test_faq_mode_caches_my_questions_for_everybody() -> None:
    from frugal_chains.cache.guard import BypassPolicy

    cache = AnswerCache(embedder=HashEmbeddings(), bypass=BypassPolicy(user_specific=False).reason)
    cache.update(q("My card has not arrived yet"), "Cards arrive within 7 days.")
    assert cache.lookup(q("My card has not arrived yet")) is not None


def test_a_different_size_row_is_ignored_not_deleted(tmp_path: Any) -> None:
    import sqlite3

    from frugal_chains.cache import CacheEntry

    path = tmp_path / "c.sqlite"
    a, b = EmbeddedIndex(path, dim=4), EmbeddedIndex(path)
    assert b.dim == 4  # the size given to the first opener is recorded in the file
    with pytest.raises(ConfigurationError):
        EmbeddedIndex(path, dim=3)
    v = np.ones(4, dtype=np.float32) / 2
    b.add(CacheEntry(partition="p", exact_key="k", question="q", normalized="q", answer="a", vector=v))
    assert a.get_exact("p", "k", 0.0) is not None
    with pytest.raises(ValueError):
        a.add(
            CacheEntry(
                partition="p", exact_key="n", question="q", normalized="q", answer="a", vector=v * np.nan
            )
        )
    a.clear()
    assert sqlite3.connect(path).execute("select count(*) from cache_meta where key='dim'").fetchone()[0] == 0
