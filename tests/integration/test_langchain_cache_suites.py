"""SemanticCache against a real Redis 8 (LangChain's standard cache suites, chat models, CachedChatModel) and with
the real default embedder (offline MiniLM)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from langchain_core.caches import BaseCache
from langchain_tests.integration_tests.cache import AsyncCacheTestSuite, SyncCacheTestSuite

from frugal_chains import SQLiteLedger
from frugal_chains.cache import cache_scope
from frugal_chains.langchain.budget import TokenBudgetHandler
from frugal_chains.langchain.cache import SemanticCache
from frugal_chains.langchain.cached_model import CachedChatModel
from frugal_chains.metadata import cache_status
from frugal_chains.testing import FakeUsageChatModel
from frugal_chains.testing.fake_embeddings import HashEmbeddings

QUESTION = "How long is the refund window for shoes?"
PARAPHRASE = "how long is the refund window for shoes please"


def redis_cache(url: str, name: str | None = None, **kwargs: Any) -> SemanticCache:
    kwargs.setdefault("embedder", HashEmbeddings())
    return SemanticCache.from_redis(url, name=name or f"t{uuid.uuid4().hex[:12]}", **kwargs)


def model(cache: BaseCache | None = None, **kwargs: Any) -> FakeUsageChatModel:
    kwargs.setdefault("responses", [f"answer {i} with a few words" for i in range(20)])
    return FakeUsageChatModel(cache=cache, **kwargs)


def is_hit(message: Any) -> bool:
    return bool(cache_status(message.response_metadata) == "hit")


# -- LangChain's standard suites on Redis ----------------------------------------------------------------------
@pytest.mark.redis
class TestRedisSemanticCacheSyncSuite(SyncCacheTestSuite):
    @pytest.fixture
    def cache(self, redis_url: str) -> Iterator[BaseCache]:
        cache = redis_cache(redis_url)
        try:
            yield cache
        finally:
            cache.close()


@pytest.mark.redis
class TestRedisSemanticCacheAsyncSuite(AsyncCacheTestSuite):
    @pytest.fixture
    async def cache(self, redis_url: str) -> AsyncIterator[BaseCache]:
        cache = redis_cache(redis_url)
        try:
            yield cache
        finally:
            cache.close()


@pytest.fixture
def rcache(redis_url: str) -> Iterator[SemanticCache]:
    cache = redis_cache(redis_url, threshold=0.6)
    try:
        yield cache
    finally:
        cache.close()


# -- chat models on Redis --------------------------------------------------------------------------------------
@pytest.mark.redis
def test_chat_model_exact_and_semantic_hits(rcache: SemanticCache) -> None:
    m = model(rcache)
    first = m.invoke(QUESTION)
    exact = m.invoke(QUESTION.upper())
    similar = m.invoke(PARAPHRASE)
    assert first.content == exact.content == similar.content == "answer 0 with a few words"
    assert exact.response_metadata["frugal"]["cache"]["tier"] == "exact"
    assert similar.response_metadata["frugal"]["cache"]["tier"] == "semantic"
    assert not is_hit(m.invoke("Is there no refund window for shoes?"))  # the guard rejects a negation


@pytest.mark.redis
def test_two_processes_share_entries_through_redis(redis_url: str) -> None:
    name = f"shared{uuid.uuid4().hex[:8]}"
    writer, reader = redis_cache(redis_url, name), redis_cache(redis_url, name)
    other = redis_cache(redis_url)
    try:
        model(writer).invoke(QUESTION)
        assert is_hit(model(reader, responses=["not this"]).invoke(QUESTION))
        assert not is_hit(model(other).invoke(QUESTION))  # another name: another cache
    finally:
        for c in (writer, reader, other):
            c.close()


@pytest.mark.redis
async def test_async_tenants_and_invalidation(rcache: SemanticCache) -> None:
    m = model(rcache)
    with cache_scope(tenant_id="acme", tags=["kb-v3"]):
        await m.ainvoke(QUESTION)
        assert is_hit(await m.ainvoke(PARAPHRASE))
    with cache_scope(tenant_id="globex"):
        assert not is_hit(await m.ainvoke(QUESTION))
    assert await rcache.ainvalidate(tag="kb-v3") == 1
    with cache_scope(tenant_id="acme"):
        assert not is_hit(await m.ainvoke(QUESTION))


@pytest.mark.redis
def test_cached_chat_model_streams_from_redis_and_budgets(redis_url: str) -> None:
    ledger = SQLiteLedger(":memory:")
    handler = TokenBudgetHandler(ledger=ledger)
    cache = redis_cache(redis_url, ledger=ledger)
    try:
        m = CachedChatModel(model=model(), cache=cache)
        config: Any = {"callbacks": [handler]}
        streamed = "".join(str(c.content) for c in m.stream(QUESTION, config=config))
        replay = list(m.stream(QUESTION, config=config))
        assert len(replay) > 1 and "".join(str(c.content) for c in replay) == streamed
        assert is_hit(replay[-1])
        outcomes = sorted(r.outcome for r in ledger.records())
        assert outcomes == ["cache_hit", "ok"]
        (hit,) = [r for r in ledger.records() if r.outcome == "cache_hit"]
        assert hit.saved_usd > 0
    finally:
        cache.close()


# -- the real default embedder ---------------------------------------------------------------------------------
def test_default_semantic_cache_with_the_offline_embedder() -> None:
    cache = SemanticCache()  # in-memory index, MiniLM, default threshold and guard
    m = model(cache)
    m.invoke("What is your return policy?")
    hit = m.invoke("Can you explain your return policy?")
    assert is_hit(hit) and hit.response_metadata["frugal"]["cache"]["tier"] == "semantic"
    m.invoke("Do you ship to Canada?")
    assert not is_hit(m.invoke("Do you ship to Mexico?"))
    assert cache.stats.hits == 1
