"""Refusal records and spend reports on the Redis ledger: a refusal is stored and counted like on SQLite, and
``frugal-chains report --ledger redis://...`` reads it."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from frugal_chains import Budget, BudgetExceededError, Price
from frugal_chains.accounting import Attribution, CallRecord, Usage, spend_report
from frugal_chains.accounting.redis import RedisLedger
from frugal_chains.budget import BudgetGuard
from frugal_chains.cli import main

pytestmark = pytest.mark.redis


@pytest.fixture
def ledger(redis_url: str) -> Iterator[RedisLedger]:
    led = RedisLedger(redis_url)
    try:
        yield led
    finally:
        led.close()


def test_a_refusal_is_a_record_counted_in_summary_and_report(
    ledger: RedisLedger, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    budget = Budget(max_tokens=200, scope="user", name="per user")
    guard = BudgetGuard([budget], ledger=ledger, prices={"m": Price(input=1.0, output=2.0)})
    who = Attribution(feature="faq", user_id="u1")
    plan = guard.plan([], model="m", max_output_tokens=100, input_tokens=50, attribution=who)
    guard.commit(guard.reserve(plan), Usage(input_tokens=50, output_tokens=80))
    with pytest.raises(BudgetExceededError):
        guard.reserve(plan)
    ledger.add_record(
        CallRecord(model="m", usage=Usage(input_tokens=50), cost_usd=0.0, saved_usd=5e-05, outcome="cache_hit",
                   attribution=who)
    )  # fmt: skip
    by_outcome = {r.key: r for r in ledger.summary("outcome")}
    assert by_outcome["refused"].refused == 1 and by_outcome["refused"].cost_usd == 0.0
    (refusal,) = [r for r in ledger.records() if r.outcome == "refused"]
    assert refusal.extra["refused"]["scope_key"] == "u1" and refusal.extra["refused"]["name"] == "per user"
    assert guard.spent(budget, who).committed_tokens == 130  # the refusal is no spend

    (row,) = spend_report(ledger, by=["feature", "user"]).rows
    assert (row.key, row.calls, row.cache_hits, row.refused) == (("faq", "u1"), 1, 1, 1)
    assert row.cost_usd == pytest.approx((50 * 1.0 + 80 * 2.0) / 1e6)

    assert main(["report", "--ledger", redis_url, "--by", "user", "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["rows"] == [{"user": "u1", **row.figures()}]
    assert main(["report", "--ledger", redis_url, "--prefix", "other:", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == []  # another ledger on the same server
