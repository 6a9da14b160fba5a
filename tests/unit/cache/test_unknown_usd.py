"""The cache's saving for an answer of a model with no price: unknown (``None``), never $0; stats sum known
savings only; entries written by earlier versions still read."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest

from frugal_chains import Price
from frugal_chains.accounting import PriceBook, SQLiteLedger, Usage
from frugal_chains.cache import AnswerCache, CacheEntry, CacheRequest, EmbeddedIndex
from frugal_chains.testing.fake_embeddings import HashEmbeddings

UNPRICED = "house-small-1"  # in no price map
USAGE = Usage(input_tokens=1000, output_tokens=500)
GPT4O = 1000 * 2.5e-6 + 500 * 10e-6  # gpt-4o: $2.50 / $10 per million


def q(text: str) -> CacheRequest:
    return CacheRequest.from_prompt(text)


def test_a_hit_on_an_unpriced_answer_saves_an_unknown_amount() -> None:
    ledger = SQLiteLedger()
    cache = AnswerCache(embedder=HashEmbeddings(), ledger=ledger)
    cache.update(q("What is your return policy?"), "30 days", model=UNPRICED, usage=USAGE)
    cache.update(q("Do you ship to Canada?"), "Yes", model="gpt-4o", usage=USAGE)
    hit = cache.lookup(q("what is your return policy"))
    assert hit is not None and hit.entry.cost_usd is None and hit.saved_usd is None
    priced = cache.lookup(q("do you ship to canada"))
    assert priced is not None and priced.saved_usd == pytest.approx(GPT4O)
    unknown, known = ledger.records()
    assert (unknown.outcome, unknown.model, unknown.cost_usd, unknown.saved_usd) == (
        "cache_hit",
        UNPRICED,
        0.0,
        None,
    )
    assert known.saved_usd == pytest.approx(GPT4O)
    assert (unknown.price_known, known.price_known) == (False, True)
    assert cache.stats.hits == 2 and cache.stats.saved_usd == pytest.approx(GPT4O)  # known savings only


def test_async_hits_on_an_unpriced_answer_add_nothing_to_the_savings() -> None:
    ledger = SQLiteLedger()
    cache = AnswerCache(embedder=HashEmbeddings(), ledger=ledger)

    async def run() -> None:
        await cache.aupdate(q("What is your return policy?"), "30 days", model=UNPRICED, usage=USAGE)
        hit = await cache.alookup(q("What is your return policy?"))
        assert hit is not None and hit.saved_usd is None

    asyncio.run(run())
    assert [r.saved_usd for r in ledger.records()] == [None]
    assert cache.stats.hits == 1 and cache.stats.saved_usd == 0.0
    assert cache.stats.to_dict()["saved_usd"] == 0.0


def test_a_given_cost_or_a_fallback_price_prices_the_unknown_model() -> None:
    cache = AnswerCache(embedder=HashEmbeddings())
    cache.update(q("a?"), "A", model=UNPRICED, usage=USAGE)
    cache.update(q("b?"), "B", model=UNPRICED, usage=USAGE, cost_usd=0.25)
    a, b = cache.lookup(q("a?")), cache.lookup(q("b?"))
    assert a is not None and b is not None and (a.saved_usd, b.saved_usd) == (None, 0.25)
    fallback = AnswerCache(
        embedder=HashEmbeddings(),
        prices=PriceBook(unknown_model="warn", fallback_price=Price(input=1, output=1)),
    )
    fallback.update(q("c?"), "C", model=UNPRICED, usage=USAGE)
    c = fallback.lookup(q("c?"))
    assert c is not None and c.saved_usd == pytest.approx(1500 / 1e6)


def test_entry_json_keeps_unknown_apart_from_zero_and_reads_old_entries() -> None:
    e = CacheEntry(partition="p", exact_key="k", question="Q?", normalized="q", answer="A", cost_usd=None)
    assert json.loads(e.to_json())["cost_usd"] is None
    assert CacheEntry.from_json(e.to_json()).cost_usd is None
    old = json.loads(e.to_json())
    old["cost_usd"] = 0.0  # what earlier versions wrote for an unpriced model
    assert CacheEntry.from_json(json.dumps(old)).cost_usd == 0.0
    del old["cost_usd"]
    assert CacheEntry.from_json(json.dumps(old)).cost_usd == 0.0


def test_an_embedded_file_with_old_and_new_entries_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    cache = AnswerCache(embedder=HashEmbeddings(), index=EmbeddedIndex(path))
    for question in ("old zero?", "old missing?", "new unknown?"):
        cache.update(q(question), question.upper(), model=UNPRICED, usage=USAGE)
    cache.index.close()
    db = sqlite3.connect(path)
    for entry_id, data in db.execute("SELECT id, data FROM cache_entries").fetchall():
        d = json.loads(data)
        if d["question"] == "old zero?":
            d["cost_usd"] = 0.0
        elif d["question"] == "old missing?":
            del d["cost_usd"]
        db.execute("UPDATE cache_entries SET data = ? WHERE id = ?", (json.dumps(d), entry_id))
    db.commit()
    db.close()
    again = AnswerCache(embedder=HashEmbeddings(), index=EmbeddedIndex(path))
    saved = {}
    for question in ("old zero?", "old missing?", "new unknown?"):
        hit = again.lookup(q(question))
        assert hit is not None and hit.answer == question.upper()
        saved[question] = hit.saved_usd
    assert saved == {"old zero?": 0.0, "old missing?": 0.0, "new unknown?": None}
    assert again.stats.saved_usd == 0.0 and again.stats.corrupted == 0
