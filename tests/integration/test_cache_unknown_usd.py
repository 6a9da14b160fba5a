"""An answer of a model with no price saves an unknown amount, in every index (memory, SQLite file, Redis):
its entry stores ``cost_usd=None``, its hits record ``saved_usd=None`` and add nothing to ``stats.saved_usd``;
entries written by earlier versions (``cost_usd`` 0.0 or absent) still read."""

from __future__ import annotations

import asyncio
import json

import pytest
import redis

from frugal_chains.accounting import SQLiteLedger, Usage
from frugal_chains.cache import AnswerCache, CacheRequest
from frugal_chains.cache.redis_index import RedisIndex
from frugal_chains.testing.fake_embeddings import HashEmbeddings
from tests.integration.test_cache_index_contract import Backend, backend  # noqa: F401 (the fixture)

UNPRICED = "house-small-1"  # in no price map
USAGE = Usage(input_tokens=1000, output_tokens=500)
GPT4O = 1000 * 2.5e-6 + 500 * 10e-6


def q(text: str) -> CacheRequest:
    return CacheRequest.from_prompt(text)


def test_an_unpriced_answer_is_stored_and_served_with_an_unknown_saving(backend: Backend) -> None:  # noqa: F811
    ledger = SQLiteLedger()
    writer = AnswerCache(index=backend.index, embedder=HashEmbeddings(), ledger=ledger)
    writer.update(q("What is your return policy?"), "30 days", model=UNPRICED, usage=USAGE)
    writer.update(q("Do you ship to Canada?"), "Yes", model="gpt-4o", usage=USAGE)
    reader_index = backend.index if backend.kind == "memory" else backend.make()  # another process
    reader = AnswerCache(index=reader_index, embedder=HashEmbeddings(), ledger=ledger)
    hit = reader.lookup(q("What is your return policy?"))
    assert (
        hit is not None and hit.answer == "30 days" and hit.entry.cost_usd is None and hit.saved_usd is None
    )

    async def other() -> float | None:
        found = await reader.alookup(q("Do you ship to Canada?"))
        assert found is not None
        return found.saved_usd

    assert asyncio.run(other()) == pytest.approx(GPT4O)
    unknown, known = ledger.records()
    assert (unknown.outcome, unknown.model, unknown.saved_usd) == ("cache_hit", UNPRICED, None)
    assert known.saved_usd == pytest.approx(GPT4O)
    assert reader.stats.hits == 2 and reader.stats.saved_usd == pytest.approx(GPT4O)  # known savings only


@pytest.mark.redis
def test_redis_rows_written_by_earlier_versions_still_read(redis_url: str) -> None:
    index = RedisIndex(redis_url, name="unknown_usd")
    raw = redis.Redis.from_url(redis_url)
    try:
        cache = AnswerCache(index=index, embedder=HashEmbeddings())
        questions = ("old zero?", "old missing?", "new unknown?")
        for question in questions:
            cache.update(q(question), question.upper(), model=UNPRICED, usage=USAGE)
        for key in raw.scan_iter(match="unknown_usd:e:*"):
            d = json.loads(raw.hget(key, "data"))  # type: ignore[arg-type]
            if d["question"] == "old zero?":
                d["cost_usd"] = 0.0  # what earlier versions wrote for an unpriced model
            elif d["question"] == "old missing?":
                del d["cost_usd"]
            raw.hset(key, "data", json.dumps(d))
        saved = {}
        for question in questions:
            hit = cache.lookup(q(question))
            assert hit is not None and hit.answer == question.upper()
            saved[question] = hit.saved_usd
        assert saved == {"old zero?": 0.0, "old missing?": 0.0, "new unknown?": None}
        assert cache.stats.corrupted == 0 and cache.stats.saved_usd == 0.0
    finally:
        index.clear()
        index.close()
        raw.close()
