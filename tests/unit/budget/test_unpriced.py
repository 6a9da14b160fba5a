"""A model with no price under token budgets: reserved and committed in tokens, its USD unknown (``None``), never
refused for want of a price unless a USD budget needs one."""

from __future__ import annotations

import asyncio
import logging

import pytest

from frugal_chains import Budget, BudgetExceededError, Price, UnknownModelPriceError, Usage
from frugal_chains.accounting import PriceBook
from frugal_chains.budget import BudgetGuard

UNPRICED = "house-llm-7b"  # in no price map
PRICED = {"m": Price(input=1.0, output=1.0)}
MSGS = [{"role": "user", "content": "hello"}]
TOKENS = Budget(max_tokens=1000, scope="global")


def test_a_token_budget_needs_no_price() -> None:
    guard = BudgetGuard([TOKENS])  # no prices=, no unknown_model=
    plan = guard.plan(MSGS, model=UNPRICED, max_output_tokens=100, input_tokens=20)
    assert (plan.price, plan.price_known, plan.worst_usd, plan.worst_tokens) == (None, False, None, 120)
    res = guard.reserve(plan)
    assert (res.nano, res.tokens) == (0, 120)
    assert guard.spent(TOKENS).reserved_tokens == 120
    record = guard.commit(res, Usage(input_tokens=18, output_tokens=40))
    assert record.cost_usd is None and record.reserved_usd is None and record.overshoot_usd is None
    assert record.price_known is False and record.overshoot_tokens == 0
    spent = guard.spent(TOKENS)
    assert (spent.committed_tokens, spent.reserved_tokens, spent.committed_nano) == (58, 0, 0)
    assert guard.ledger.records()[0].cost_usd is None


def test_the_token_limit_still_refuses_an_unpriced_model() -> None:
    guard = BudgetGuard([Budget(max_tokens=300, scope="global")])
    plan = guard.plan(MSGS, model=UNPRICED, max_output_tokens=100, input_tokens=20)
    guard.commit(guard.reserve(plan), Usage(input_tokens=20, output_tokens=100))
    guard.commit(guard.reserve(plan), Usage(input_tokens=20, output_tokens=100))
    with pytest.raises(BudgetExceededError) as e:
        guard.reserve(plan)  # 240 committed + 120 worst case > 300
    assert (e.value.unit, e.value.spent, e.value.requested, e.value.limit) == ("tokens", 240.0, 120.0, 300.0)


def test_only_a_usd_budget_needs_the_price() -> None:
    guard = BudgetGuard([TOKENS, Budget(max_tokens=500, scope="user")])
    assert guard.plan(MSGS, model=UNPRICED, max_output_tokens=10).price is None
    for usd in (Budget(max_usd=1.0, scope="global"), Budget(max_usd=1.0, scope="user", on_exceed="warn")):
        mixed = BudgetGuard([TOKENS, usd])
        with pytest.raises(UnknownModelPriceError):
            mixed.plan(MSGS, model=UNPRICED, max_output_tokens=10)
    # with unknown_model="warn" the USD budget lets it through at $0, and the record still says unknown
    warned = BudgetGuard([TOKENS, Budget(max_usd=1.0, scope="global")], unknown_model="warn")
    record = warned.commit(
        warned.reserve(warned.plan(MSGS, model=UNPRICED, max_output_tokens=10, input_tokens=5)),
        Usage(input_tokens=5, output_tokens=5),
    )
    assert record.cost_usd is None and record.price_known is False


def test_no_budget_records_an_unpriced_model_instead_of_refusing_it() -> None:
    guard = BudgetGuard()
    record = guard.commit(
        guard.reserve(guard.plan(MSGS, model=UNPRICED, max_output_tokens=10, input_tokens=5)),
        Usage(input_tokens=5, output_tokens=3),
    )
    assert (record.cost_usd, record.usage.total_tokens, record.price_known) == (None, 8, False)


def test_unknown_model_warn_under_token_budgets_records_unknown_not_zero() -> None:
    guard = BudgetGuard([TOKENS], unknown_model="warn")
    res = guard.reserve(guard.plan(MSGS, model=UNPRICED, max_output_tokens=10, input_tokens=5))
    assert guard.commit(res, Usage(input_tokens=5, output_tokens=5)).cost_usd is None


def test_a_fallback_price_is_used_when_given() -> None:
    book = PriceBook(fallback_price=Price(input=1.0, output=1.0))
    guard = BudgetGuard([TOKENS], prices=book)
    res = guard.reserve(guard.plan(MSGS, model=UNPRICED, max_output_tokens=10, input_tokens=10))
    record = guard.commit(res, Usage(input_tokens=1_000, output_tokens=0))
    assert record.price_known is False and record.cost_usd == pytest.approx(0.001)


def test_a_token_overshoot_on_an_unpriced_model_is_flagged(caplog: pytest.LogCaptureFixture) -> None:
    guard = BudgetGuard([TOKENS])
    res = guard.reserve(guard.plan(MSGS, model=UNPRICED, max_output_tokens=10, input_tokens=10))
    with caplog.at_level(logging.WARNING, logger="frugal_chains.budget"):
        record = guard.commit(res, Usage(input_tokens=10, output_tokens=500))
    assert record.overshoot_tokens == 490 and record.overshoot_usd is None
    assert "490 more than the 20 reserved" in caplog.text and "USD unknown" in caplog.text
    assert guard.spent(TOKENS).committed_tokens == 510  # committed in full


def test_a_token_overshoot_is_recorded_for_priced_models_too(caplog: pytest.LogCaptureFixture) -> None:
    guard = BudgetGuard([TOKENS], prices=PRICED)
    res = guard.reserve(guard.plan(MSGS, model="m", max_output_tokens=10, input_tokens=10))
    with caplog.at_level(logging.WARNING, logger="frugal_chains.budget"):
        record = guard.commit(res, Usage(input_tokens=10, output_tokens=30))
    assert record.overshoot_tokens == 20 and record.overshoot_usd == pytest.approx(20e-6)
    assert "20 more than the 20 reserved" in caplog.text
    within = guard.commit(
        guard.reserve(guard.plan(MSGS, model="m", max_output_tokens=10, input_tokens=10)),
        Usage(input_tokens=10, output_tokens=10),
    )
    assert (within.overshoot_tokens, within.overshoot_usd) == (0, 0.0)


def test_interrupted_and_cache_hit_calls_of_an_unpriced_model() -> None:
    guard = BudgetGuard([TOKENS])
    plan = guard.plan(MSGS, model=UNPRICED, max_output_tokens=50, input_tokens=10)
    res = guard.reserve(plan)
    assert guard.worst_usage(res) == Usage(input_tokens=10, output_tokens=50)
    record = guard.commit(res, guard.worst_usage(res), usage_estimated=True)
    assert (record.cost_usd, record.overshoot_tokens) == (None, 0)
    hit = guard.cache_hit(guard.reserve(plan), Usage(input_tokens=10, output_tokens=5))
    assert (
        hit is not None and hit.cost_usd == 0.0 and hit.saved_usd is None
    )  # a hit is free; what it saved, unknown
    assert guard.spent(TOKENS).reserved_tokens == 0


def test_async_paths_match() -> None:
    async def run() -> None:
        guard = BudgetGuard([Budget(max_tokens=100, scope="global")])
        plan = guard.plan(MSGS, model=UNPRICED, max_output_tokens=40, input_tokens=10)
        record = await guard.acommit(await guard.areserve(plan), Usage(input_tokens=10, output_tokens=30))
        assert record.cost_usd is None
        with pytest.raises(BudgetExceededError):
            await guard.areserve(plan)  # 40 + 50 fits, then 40 + 50 + 50 does not
            await guard.areserve(plan)

    asyncio.run(run())


def test_pricebook_lookup() -> None:
    book = PriceBook(PRICED)
    assert book.lookup("m") == (PRICED["m"], True)
    assert book.lookup(UNPRICED, required=False) == (None, False)
    with pytest.raises(UnknownModelPriceError):
        book.lookup(UNPRICED)
    assert PriceBook(unknown_model="warn").lookup(UNPRICED) == (None, False)
    fallback = Price(input=3.0, output=3.0)
    assert PriceBook(fallback_price=fallback).lookup(UNPRICED, required=False) == (fallback, False)
