"""BudgetGuard writes a ``refused`` record for every refusal, sync and async; a ledger that cannot take it does not
stop the refusal; a warn-only budget refuses nothing and records no refusal."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from frugal_chains import Budget, BudgetExceededError, Price, SQLiteLedger
from frugal_chains.accounting import Attribution
from frugal_chains.budget import BudgetGuard
from frugal_chains.errors import LedgerUnavailableError

PRICES = {"m": Price(input=1.0, output=2.0)}


def plan(guard: BudgetGuard) -> Any:
    return guard.plan(
        [],
        model="m",
        max_output_tokens=100,
        input_tokens=50,
        attribution=Attribution(user_id="u1", feature="f"),
    )


@pytest.mark.parametrize("run_async", [False, True], ids=["reserve", "areserve"])
def test_every_refusal_is_recorded(run_async: bool) -> None:
    budget = Budget(max_usd=1e-6, scope="user", name="tiny")
    guard = BudgetGuard([budget], prices=PRICES)
    p = plan(guard)
    with pytest.raises(BudgetExceededError) as e:
        asyncio.run(guard.areserve(p)) if run_async else guard.reserve(p)
    (rec,) = guard.ledger.records()
    assert rec.outcome == "refused" and rec.cost_usd == 0.0 and rec.usage.total_tokens == 0
    assert rec.attribution.user_id == "u1" and rec.model == "m"
    assert rec.extra["refused"]["requested_usd"] == pytest.approx(e.value.requested)
    assert rec.extra["refused"]["requested_tokens"] == 150
    assert rec.extra["refused"]["scope_key"] == "u1" and rec.extra["refused"]["name"] == "tiny"
    assert guard.spent(budget, rec.attribution).total_nano == 0


class NoRecords(SQLiteLedger):
    def add_record(self, record: Any) -> None:
        raise LedgerUnavailableError("down")

    async def aadd_record(self, record: Any) -> None:
        raise RuntimeError("a broken backend")


@pytest.mark.parametrize("run_async", [False, True], ids=["reserve", "areserve"])
def test_a_refusal_is_raised_even_if_it_cannot_be_recorded(run_async: bool) -> None:
    guard = BudgetGuard([Budget(max_usd=1e-6, scope="global")], prices=PRICES, ledger=NoRecords())
    with pytest.raises(BudgetExceededError):
        asyncio.run(guard.areserve(plan(guard))) if run_async else guard.reserve(plan(guard))
    assert guard.ledger.records() == []


def test_a_warn_only_budget_records_no_refusal() -> None:
    alerts: list[Any] = []
    guard = BudgetGuard(
        [Budget(max_usd=1e-6, scope="global", on_exceed="warn")], prices=PRICES, on_alert=alerts.append
    )
    guard.release(guard.reserve(plan(guard)))
    assert guard.ledger.records() == [] and alerts
