"""AnswerCache.probe / serve_pin (what a budget asks for a call it refused) and BudgetGuard.reserve_unless_cached."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from frugal_chains import Budget, BudgetExceededError, ConfigurationError, Price, SQLiteLedger, attribute
from frugal_chains.budget import BudgetGuard
from frugal_chains.cache import AnswerCache, CachePin, CacheRequest, cache_scope
from frugal_chains.testing.fake_embeddings import HashEmbeddings

QUESTION = "How long is the refund window for shoes?"
PARAPHRASE = "how long is the refund window for shoes please"


def q(text: str) -> CacheRequest:
    return CacheRequest.from_prompt(text, llm_string="m")


@pytest.fixture
def cache() -> AnswerCache:
    c = AnswerCache(embedder=HashEmbeddings(), threshold=0.6, ledger=SQLiteLedger())
    c.update(q(QUESTION), json.dumps("30 days."), cost_usd=0.01)
    return c


def test_a_probe_finds_what_a_lookup_would_serve_without_serving_it(cache: AnswerCache) -> None:
    pin = cache.probe(q(PARAPHRASE), decode=json.loads)
    assert isinstance(pin, CachePin)
    assert (pin.result.tier, pin.value) == ("semantic", "30 days.")
    assert cache.stats.hits == 0 and cache.stats.saved_usd == 0.0
    assert cache.ledger is not None and cache.ledger.records() == []  # nothing recorded yet


def test_serving_a_pin_counts_and_records_one_hit(cache: AnswerCache) -> None:
    pin = cache.probe(q(QUESTION), decode=json.loads)
    assert pin is not None
    with attribute(user_id="u1"):
        served = cache.serve_pin(pin, q(QUESTION))
    assert served is not None and served[1] == "30 days."
    assert cache.stats.hits == 1 and cache.stats.saved_usd == pytest.approx(0.01)
    assert cache.ledger is not None
    assert [(r.outcome, r.cost_usd, r.attribution.user_id) for r in cache.ledger.records()] == [
        ("cache_hit", 0.0, "u1")
    ]


def test_a_pin_is_served_even_after_its_entry_left_the_index(cache: AnswerCache) -> None:
    pin = cache.probe(q(QUESTION), decode=json.loads)
    assert pin is not None
    cache.clear()
    served = cache.serve_pin(pin, q(QUESTION))
    assert served is not None and served[1] == "30 days."


def test_a_pin_serves_only_the_request_it_was_probed_for(cache: AnswerCache) -> None:
    pin = cache.probe(q(QUESTION))
    assert pin is not None
    assert cache.serve_pin(pin, q(PARAPHRASE)) is None  # another question
    assert cache.serve_pin(pin, CacheRequest.from_prompt(QUESTION, llm_string="other-model")) is None
    with cache_scope(tenant_id="globex"):
        assert cache.serve_pin(pin, q(QUESTION)) is None  # another tenant
    assert cache.stats.hits == 0
    with pytest.raises(ConfigurationError):
        cache.serve_pin("not a pin", q(QUESTION))  # type: ignore[arg-type]


def test_a_probe_keeps_every_lookup_check(cache: AnswerCache) -> None:
    with cache_scope(tenant_id="globex"):
        assert cache.probe(q(QUESTION)) is None  # the entry is in the unscoped partition
    assert cache.probe(q("Is there no refund window for shoes?")) is None  # the guard rejects a negation
    with cache_scope(bypass=True):
        assert cache.probe(q(QUESTION)) is None
    assert cache.stats.hits == 0


def test_a_probe_that_finds_nothing_counts_a_miss(cache: AnswerCache) -> None:
    assert cache.probe(q("Which countries do you ship to?")) is None
    assert cache.stats.misses == 1


def test_a_probe_skips_and_deletes_an_entry_that_does_not_decode(cache: AnswerCache) -> None:
    def broken(text: str) -> Any:
        raise ValueError("corrupt")

    assert cache.probe(q(QUESTION), decode=broken) is None
    assert cache.stats.corrupted == 1 and len(cache) == 0


def test_async_probe_and_serve(cache: AnswerCache) -> None:
    async def run() -> Any:
        pin = await cache.aprobe(q(PARAPHRASE), decode=json.loads)
        assert pin is not None and cache.stats.hits == 0
        assert await cache.aserve_pin(pin, q(QUESTION)) is None
        return await cache.aserve_pin(pin, q(PARAPHRASE))

    served = asyncio.run(run())
    assert served is not None and served[1] == "30 days."
    assert cache.stats.hits_semantic == 1


# -- the guard's decision ---------------------------------------------------------------------------------------
def guard(limit: float) -> BudgetGuard:
    return BudgetGuard(
        [Budget(max_usd=limit, scope="global")],
        prices={"m": Price(input=1.0, output=1.0, max_output_tokens=100)},
    )


def test_a_call_within_budget_is_reserved_and_the_cache_never_asked() -> None:
    g = guard(1.0)
    asked: list[BudgetExceededError] = []
    res = g.reserve_unless_cached(g.plan([], model="m", input_tokens=10), lambda e: asked.append(e) is None)
    assert res is not None and res.nano > 0
    assert asked == []


def test_a_refused_call_goes_ahead_unreserved_only_when_a_cache_holds_its_answer() -> None:
    g = guard(1e-9)
    plan = g.plan([], model="m", input_tokens=10)
    asked: list[BudgetExceededError] = []

    def held(refusal: BudgetExceededError) -> bool:
        asked.append(refusal)
        return True

    assert g.reserve_unless_cached(plan, held) is None
    assert len(asked) == 1 and asked[0].limit == 1e-9
    with pytest.raises(BudgetExceededError):
        g.reserve_unless_cached(plan, lambda refusal: False)
    counter = g.spent(g.budgets[0])
    assert (counter.committed_nano, counter.reserved_nano) == (0, 0)
