"""AnswerCache over RedisIndex against a real Redis 8 (search module): hits, tenants, outages, corrupted rows,
and what is specific to Redis (key layout, native TTL, eviction bookkeeping, existing indexes, clients)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import redis

from frugal_chains.cache import AnswerCache, CacheEntry, CacheRequest, cache_scope
from frugal_chains.cache.redis_index import RedisIndex
from frugal_chains.errors import ConfigurationError
from frugal_chains.testing.fake_embeddings import HashEmbeddings
from tests.redis_server import RedisServer, free_port

pytestmark = pytest.mark.redis

QUESTION = "How do I reset a password?"
PARAPHRASE = "How can I reset a password?"


def q(text: str) -> CacheRequest:
    return CacheRequest.from_prompt(text)


def make_cache(index: RedisIndex, **kw: Any) -> AnswerCache:
    # the fake embedder shares words, not meaning: a low threshold lets a paraphrase with shared words through
    kw.setdefault("threshold", 0.5)
    kw.setdefault("outage_backoff", 0)  # these tests restart the server and expect the next call to try it
    return AnswerCache(index=index, embedder=HashEmbeddings(), **kw)


def vec(seed: int, dim: int = 8) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return (v / np.linalg.norm(v)).astype(np.float32)


def entry(key: str = "k", partition: str = "p", **kw: Any) -> CacheEntry:
    kw.setdefault("vector", vec(0))
    return CacheEntry(
        partition=partition, exact_key=key, question=key, normalized=key, answer=f"answer {key}", **kw
    )


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def index(redis_url: str, redis_server: RedisServer) -> Iterator[RedisIndex]:
    idx = RedisIndex(redis_url)
    try:
        yield idx
    finally:
        if not redis_server.running:
            redis_server.start()
        idx.close()


def entry_keys(raw: redis.Redis, name: str = "frugal_cache") -> list[bytes]:
    return sorted(raw.scan_iter(match=f"{name}:e:*"))


def warnings_in(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


# -- end to end ----------------------------------------------------------------------------------------------
def test_exact_semantic_hit_and_miss(index: RedisIndex) -> None:
    cache = make_cache(index)
    assert cache.lookup(q(QUESTION)) is None
    cache.update(q(QUESTION), "Settings > Security", model="m", cost_usd=0.002)
    exact = cache.lookup(q("  how do i RESET a password "))
    assert exact is not None and (exact.answer, exact.tier, exact.saved_usd) == (
        "Settings > Security",
        "exact",
        0.002,
    )
    semantic = cache.lookup(q(PARAPHRASE))
    assert semantic is not None and semantic.tier == "semantic" and 0.5 <= semantic.similarity < 1.0
    assert cache.lookup(q("Which pizza toppings are best?")) is None
    s = cache.stats
    assert (s.hits_exact, s.hits_semantic, s.misses, s.errors, s.updates) == (1, 1, 2, 0, 1)
    assert len(cache) == 1


async def test_async_hit_and_miss(index: RedisIndex) -> None:
    cache = make_cache(index)
    try:
        assert await cache.alookup(q(QUESTION)) is None
        await cache.aupdate(q(QUESTION), "Settings > Security")
        exact = await cache.alookup(q(QUESTION))
        assert exact is not None and exact.tier == "exact"
        semantic = await cache.alookup(q(PARAPHRASE))
        assert semantic is not None and semantic.tier == "semantic"
        assert await cache.alookup(q("Which pizza toppings are best?")) is None
        sync = cache.lookup(q(PARAPHRASE))  # the sync path sees the same entry and similarity
        assert sync is not None and sync.similarity == pytest.approx(semantic.similarity)
    finally:
        await index.aclose()


def test_tenants_are_isolated_and_processes_share(redis_url: str, index: RedisIndex) -> None:
    cache = make_cache(index)
    with cache_scope(tenant_id="acme"):
        cache.update(q(QUESTION), "acme answer")
    with cache_scope(tenant_id="globex"):
        assert cache.lookup(q(QUESTION)) is None
        assert cache.lookup(q(PARAPHRASE)) is None
        cache.update(q(QUESTION), "globex answer")
    other = RedisIndex(redis_url)  # another process on the same Redis
    try:
        cache2 = make_cache(other)
        with cache_scope(tenant_id="acme"):
            hit = cache2.lookup(q(PARAPHRASE))
            assert hit is not None and hit.answer == "acme answer"
        with cache_scope(tenant_id="globex"):
            hit = cache2.lookup(q(QUESTION))
            assert hit is not None and hit.answer == "globex answer"
        with cache_scope(tenant_id="initech"):
            assert cache2.lookup(q(QUESTION)) is None
    finally:
        other.close()


def test_invalidate_and_ttl_through_the_cache(index: RedisIndex, raw: redis.Redis) -> None:
    cache = make_cache(index, ttl=60)
    with cache_scope(tags=["kb-v3"]):
        cache.update(q(QUESTION), "old docs")
    cache.update(q("What is the refund window?"), "30 days")
    [key1, key2] = entry_keys(raw)
    for key in (key1, key2):  # native TTL on the entry and on its id key
        assert 0 < raw.pttl(key) <= 60_000
        eid = raw.hget(key, "eid")
        assert eid is not None and 0 < raw.pttl(b"frugal_cache:id:" + eid) <= 60_000
    assert cache.invalidate(tag="kb-v3") == 1
    assert cache.lookup(q(QUESTION)) is None
    assert cache.lookup(q(PARAPHRASE)) is None
    assert cache.lookup(q("What is the refund window?")) is not None


# -- outages -------------------------------------------------------------------------------------------------
def test_unreachable_redis_fails_open_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    idx = RedisIndex(f"redis://127.0.0.1:{free_port()}/0", dim=64, socket_timeout=0.5)  # no error at init
    try:
        cache = make_cache(idx)
        assert cache.lookup(q(QUESTION)) is None
        cache.update(q(QUESTION), "dropped")
        assert cache.lookup(q(PARAPHRASE)) is None
        with pytest.raises(redis.ConnectionError):
            idx.count()  # the index itself raises: AnswerCache is what fails open
    finally:
        idx.close()
    logged = warnings_in(caplog)
    assert len(logged) == 1, logged
    assert "failed" in logged[0] and "ConnectionError" in logged[0]
    assert cache.stats.errors == 3 and cache.stats.updates == 0 and cache.stats.misses == 2


async def test_unreachable_redis_fails_open_async(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    idx = RedisIndex(f"redis://127.0.0.1:{free_port()}/0", socket_timeout=0.5)
    try:
        cache = make_cache(idx)
        assert await cache.alookup(q(QUESTION)) is None
        await cache.aupdate(q(QUESTION), "dropped")
        assert await cache.alookup(q(QUESTION)) is None
    finally:
        await idx.aclose()
    assert len(warnings_in(caplog)) == 1
    assert cache.stats.errors == 3


def test_outage_mid_way_then_recovery(
    index: RedisIndex, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    cache = make_cache(index)
    cache.update(q(QUESTION), "Settings > Security")
    assert cache.lookup(q(PARAPHRASE)) is not None
    caplog.set_level(logging.WARNING)
    redis_server.stop()  # comes back empty
    try:
        assert cache.lookup(q(QUESTION)) is None
        assert cache.lookup(q(PARAPHRASE)) is None
        cache.update(q("What is the refund window?"), "30 days")
        logged = warnings_in(caplog)
        assert len(logged) == 1 and "failed" in logged[0], logged
    finally:
        redis_server.start()
    # back, empty (the search index is gone too): the same objects work again
    assert cache.lookup(q(QUESTION)) is None
    assert "answers again" in warnings_in(caplog)[-1]
    cache.update(q(QUESTION), "after the outage")
    hit = cache.lookup(q(QUESTION))
    assert hit is not None and hit.answer == "after the outage"
    # the semantic tier notices the lost search index, creates it again and then finds the entry
    deadline = time.monotonic() + 10
    semantic = cache.lookup(q(PARAPHRASE))
    while semantic is None and time.monotonic() < deadline:
        time.sleep(0.05)
        semantic = cache.lookup(q(PARAPHRASE))
    assert semantic is not None and semantic.answer == "after the outage"


async def test_outage_mid_way_async(
    index: RedisIndex, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    cache = make_cache(index)
    try:
        await cache.aupdate(q(QUESTION), "Settings > Security")
        assert await cache.alookup(q(QUESTION)) is not None
        caplog.set_level(logging.WARNING)
        redis_server.stop(keep_data=True)
        try:
            assert await cache.alookup(q(PARAPHRASE)) is None
            await cache.aupdate(q("What is the refund window?"), "30 days")
            assert len(warnings_in(caplog)) == 1
        finally:
            redis_server.start()
        # the data was kept: the semantic tier answers again (once Redis has re-indexed what it loaded)
        deadline = time.monotonic() + 10
        hit = await cache.alookup(q(PARAPHRASE))
        while hit is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            hit = await cache.alookup(q(PARAPHRASE))
        assert hit is not None and hit.answer == "Settings > Security"
    finally:
        await index.aclose()


# -- corrupted rows ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("field", "garbage"),
    [
        ("data", b"{not json"),
        ("data", b'{"id": "x"}'),
        ("data", b"\xff\xfe not utf-8"),
        (
            "data",
            b'{"id": "x", "partition": "p", "exact_key": "k", "question": "q", "normalized": "q", "answer": 1}',
        ),
        ("vector", b"abc"),
        ("eid", b"someone-else"),
    ],
)
def test_corrupted_entry_is_skipped_and_deleted(
    index: RedisIndex, raw: redis.Redis, caplog: pytest.LogCaptureFixture, field: str, garbage: bytes
) -> None:
    cache = make_cache(index)
    cache.update(q(QUESTION), "Settings > Security")
    [key] = entry_keys(raw)
    raw.hset(key, field, garbage)
    caplog.set_level(logging.WARNING)
    assert cache.lookup(q(QUESTION)) is None
    assert not raw.exists(key)
    assert any("corrupted" in m for m in warnings_in(caplog))
    assert cache.stats.errors == 0  # a bad row is not an outage
    assert len(cache) == 0


def test_corrupted_entry_found_by_search_is_skipped_and_deleted(
    index: RedisIndex, raw: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    cache = make_cache(index)
    cache.update(q(QUESTION), "Settings > Security")
    cache.update(q("How can I reset a password quickly?"), "Use the reset link")
    keys = entry_keys(raw)
    bad = next(k for k in keys if b"Settings" in (raw.hget(k, "data") or b""))
    raw.hset(bad, "data", b"garbage")
    caplog.set_level(logging.WARNING)
    hit = cache.lookup(q(PARAPHRASE))  # the exact tier misses; the search finds both rows
    assert hit is None or hit.answer == "Use the reset link"
    assert not raw.exists(bad)
    assert any("corrupted" in m for m in warnings_in(caplog))


async def test_corrupted_entry_async(index: RedisIndex, raw: redis.Redis) -> None:
    cache = make_cache(index)
    try:
        await cache.aupdate(q(QUESTION), "Settings > Security")
        [key] = entry_keys(raw)
        raw.hset(key, "data", b"[]")
        assert await cache.alookup(q(QUESTION)) is None
        assert not raw.exists(key)
        await cache.aupdate(q(QUESTION), "fresh")
        raw.hset(entry_keys(raw)[0], "data", b"{")
        assert await cache.alookup(q(PARAPHRASE)) is None  # found by the search this time
        assert entry_keys(raw) == []
    finally:
        await index.aclose()


# -- Redis specifics -----------------------------------------------------------------------------------------
def test_key_layout_and_bookkeeping(index: RedisIndex, raw: redis.Redis) -> None:
    e1 = entry(expires_at=time.time() + 30, tags=("a", "b"))
    index.add(e1)
    [key] = entry_keys(raw)
    assert raw.hget(key, "eid") == e1.id.encode()
    assert raw.get(f"frugal_cache:id:{e1.id}") == key
    assert raw.zrange("frugal_cache:lru", 0, -1) == [key]
    assert raw.zscore("frugal_cache:exp", key) == pytest.approx(e1.expires_at)
    e2 = entry()  # same partition and key, new id, no TTL
    index.add(e2)
    assert entry_keys(raw) == [key]  # replaced in place
    assert raw.pttl(key) == -1 and raw.zscore("frugal_cache:exp", key) is None
    assert raw.get(f"frugal_cache:id:{e1.id}") is None and raw.get(f"frugal_cache:id:{e2.id}") == key
    assert index.delete([e2.id]) == 1
    assert sorted(raw.scan_iter(match="frugal_cache:*")) == [b"frugal_cache:clock"]


def test_expired_entries_never_count_towards_max_entries(index: RedisIndex, raw: redis.Redis) -> None:
    live = [entry(f"live{i}", vector=vec(i)) for i in range(3)]
    index.add(live[0], max_entries=3)
    index.add(live[1], max_entries=3)
    past = time.time() - 1
    for i in range(3):  # expired on arrival, and more recent than the live ones in the lru zset
        index.add(entry(f"old{i}", expires_at=past))
    assert raw.zcard("frugal_cache:lru") == 5  # Redis dropped the keys; the zset lists them until purged
    index.add(live[2], max_entries=3)
    now = time.time()
    assert all(index.get_exact("p", e.exact_key, now) is not None for e in live)  # no live entry evicted
    assert raw.zcard("frugal_cache:lru") == 3 and raw.zcard("frugal_cache:exp") == 0
    assert index.count() == 3


def test_lru_uses_the_server_counter_not_client_clocks(index: RedisIndex) -> None:
    a, b, c = entry("a"), entry("b"), entry("c")
    index.add(a, max_entries=2)
    index.add(b, max_entries=2)
    index.touch(a.id, 0.0)  # a client with a wrong clock still marks a as the most recent use
    index.add(c, max_entries=2)
    now = time.time()
    assert index.get_exact("p", "b", now) is None
    assert index.get_exact("p", "a", now) is not None


def test_invalidate_pages_through_many_entries(index: RedisIndex) -> None:
    for i in range(1234):
        index.add(entry(f"k{i}", vector=vec(i % 7), tags=("bulk",) if i % 100 else ("bulk", "hundreds")))
    index.add(entry("untagged"))
    assert index.count() == 1235
    assert index.invalidate(tag="hundreds") == 13
    assert index.invalidate(tag="bulk") == 1221
    assert index.count() == 1


async def test_async_invalidate_pages_through_many_entries(index: RedisIndex) -> None:
    try:
        for start in range(0, 700, 100):
            await asyncio.gather(
                *(index.aadd(entry(f"k{i}", tags=("bulk",))) for i in range(start, start + 100))
            )
        assert await index.acount() == 700
        assert await index.ainvalidate(tag="bulk") == 700
        assert await index.acount() == 0
    finally:
        await index.aclose()


def test_existing_index_sets_the_dimension(redis_url: str, index: RedisIndex) -> None:
    index.add(entry())
    assert index.dim == 8
    with pytest.raises(ConfigurationError) as e:
        RedisIndex(redis_url, dim=16)
    assert e.value.field == "embedder" and "8" in str(e.value) and "16" in str(e.value)
    learner = RedisIndex(redis_url)
    try:
        assert learner.dim is None
        assert len(learner.search("p", vec(0), 3, 0.5, time.time())) == 1
        assert learner.dim == 8
        with pytest.raises(ConfigurationError):
            learner.add(entry("x", vector=vec(1, dim=16)))
    finally:
        learner.close()
    fresh = RedisIndex(redis_url)
    try:  # the first vector's size is checked against the index, before anything is written
        with pytest.raises(ConfigurationError) as e:
            fresh.add(entry("y", vector=vec(1, dim=16)))
        assert e.value.field == "embedder"
        assert fresh.get_exact("p", "y", time.time()) is None
    finally:
        fresh.close()
    third = RedisIndex(redis_url)
    try:
        with pytest.raises(ConfigurationError):  # AnswerCache lets a configuration error through
            make_cache(third).update(q(QUESTION), "x")  # HashEmbeddings() gives 64 dimensions
    finally:
        third.close()


def test_dimension_given_creates_the_index_at_once(redis_url: str, raw: redis.Redis) -> None:
    idx = RedisIndex(redis_url, name="eager", dim=4)
    try:
        assert "eager" in [x.decode() for x in raw.execute_command("FT._LIST")]
        assert idx.search("p", np.ones(4, dtype=np.float32), 3, 0.0, time.time()) == []
    finally:
        idx.close()


def test_a_foreign_index_of_that_name_is_refused(redis_url: str, raw: redis.Redis) -> None:
    raw.execute_command(
        "FT.CREATE", "theirs", "ON", "HASH", "PREFIX", "1", "theirs:", "SCHEMA", "title", "TEXT"
    )
    idx = RedisIndex(redis_url, name="theirs")
    try:
        with pytest.raises(ConfigurationError) as e:
            idx.add(entry())
        assert e.value.field == "name"
    finally:
        idx.close()


def test_names_keep_caches_apart(redis_url: str) -> None:
    one, two = RedisIndex(redis_url, name="one"), RedisIndex(redis_url, name="two.v2")
    try:
        one.add(entry(tags=("t",)))
        two.add(entry(tags=("t",)))
        one.clear()
        assert (one.count(), two.count()) == (0, 1)
        assert one.search("p", vec(0), 3, 0.0, time.time()) == []
        assert len(two.search("p", vec(0), 3, 0.0, time.time())) == 1
        assert one.invalidate(tag="t") == 0 and two.invalidate(tag="t") == 1
    finally:
        one.close()
        two.close()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": "has space"}, "name"),
        ({"name": "a:b"}, "name"),
        ({"name": ""}, "name"),
        ({"dim": 0}, "dim"),
        ({"dim": True}, "dim"),
        ({"socket_timeout": 0}, "socket_timeout"),
        ({"url": 42}, "url"),
        ({"url": "http://nope"}, "url"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], field: str) -> None:
    kwargs.setdefault("url", "redis://127.0.0.1:1/0")
    with pytest.raises(ConfigurationError) as e:
        RedisIndex(**kwargs)
    assert e.value.field == field


def test_bad_call_arguments(index: RedisIndex) -> None:
    with pytest.raises(ConfigurationError) as e:
        index.add(entry(), max_entries=0)
    assert e.value.field == "max_entries"
    with pytest.raises(ConfigurationError) as e:
        index.search("p", vec(0), 0, 0.5, time.time())
    assert e.value.field == "k"
    with pytest.raises(ConfigurationError) as e:
        index.delete("an-id")
    assert e.value.field == "ids"
    with pytest.raises(ConfigurationError) as e:
        index.invalidate(tag="")
    assert e.value.field == "tag"


@pytest.mark.parametrize("kwargs", [{"decode_responses": True}, {"protocol": 3}])
def test_an_unusable_client_is_refused(redis_url: str, kwargs: dict[str, Any]) -> None:
    client = redis.Redis.from_url(redis_url, **kwargs)
    try:
        with pytest.raises(ConfigurationError) as e:
            RedisIndex(client=client)
        assert e.value.field == "client"
    finally:
        client.close()


async def test_clients_passed_in_are_used_and_left_open(redis_url: str) -> None:
    import redis.asyncio

    client = redis.Redis.from_url(redis_url)
    aclient = redis.asyncio.Redis.from_url(redis_url)
    try:
        idx = RedisIndex(client=client, async_client=aclient)
        e = entry()
        idx.add(e)
        assert (await idx.aget_exact("p", "k", time.time())) is not None
        assert len(await idx.asearch("p", vec(0), 3, 0.5, time.time())) == 1
        await idx.aclose()
        assert client.ping() and await aclient.ping()
        sync_only = RedisIndex(client=client)  # async methods run the sync client in a thread
        assert len(await sync_only.asearch("p", vec(0), 3, 0.5, time.time())) == 1
        assert await sync_only.adelete([e.id]) == 1
        sync_only.close()
        assert client.ping()
    finally:
        client.close()
        await aclient.aclose()


def test_closed_index_raises_and_the_cache_fails_open(index: RedisIndex) -> None:
    cache = make_cache(index)
    index.close()
    with pytest.raises(RuntimeError):
        index.get_exact("p", "k", time.time())
    assert cache.lookup(q(QUESTION)) is None
    assert cache.stats.errors == 1
