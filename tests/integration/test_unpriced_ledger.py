"""Records of a model with no price through every ledger (SQLite in memory, in a file, and Redis): a token budget
reserves and commits them in tokens, their USD is stored and read back as ``None`` (unknown), summaries leave it out
of the USD sums and count it apart."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from frugal_chains import Budget, BudgetExceededError, Price, SQLiteLedger, Usage
from frugal_chains.accounting import SpendLedger
from frugal_chains.budget import BudgetGuard

UNPRICED = "house-llm-7b"
MSGS = [{"role": "user", "content": "hello"}]


@pytest.fixture(
    params=[
        pytest.param("sqlite-memory", id="sqlite-memory"),
        pytest.param("sqlite-file", id="sqlite-file"),
        pytest.param("redis", id="redis", marks=pytest.mark.redis),
    ]
)
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SpendLedger]:
    led: SpendLedger
    if request.param == "redis":
        from frugal_chains.accounting.redis import RedisLedger

        led = RedisLedger(request.getfixturevalue("redis_url"), prefix=f"unpriced{id(tmp_path)}:")
    else:
        led = SQLiteLedger(":memory:" if request.param == "sqlite-memory" else tmp_path / "ledger.db")
    try:
        yield led
    finally:
        led.close()


def test_unpriced_calls_are_counted_in_tokens_and_recorded_with_unknown_usd(ledger: SpendLedger) -> None:
    budget = Budget(max_tokens=1_250, scope="global")
    guard = BudgetGuard([budget], ledger=ledger, prices={"m": Price(input=1.0, output=1.0)})
    plan = guard.plan(MSGS, model=UNPRICED, max_output_tokens=100, input_tokens=20)
    guard.commit(guard.reserve(plan), Usage(input_tokens=20, output_tokens=100))
    priced = guard.plan(MSGS, model="m", max_output_tokens=10, input_tokens=10)
    guard.commit(guard.reserve(priced), Usage(input_tokens=1_000, output_tokens=0))  # $0.001, overshoots

    async def again() -> None:
        await guard.acommit(await guard.areserve(plan), Usage(input_tokens=10, output_tokens=30))
        with pytest.raises(BudgetExceededError):
            await guard.areserve(plan)  # 1,160 spent + 120 worst case > 1,250

    asyncio.run(again())
    (refusal,) = [r for r in ledger.records() if r.outcome == "refused"]  # nothing spent: $0, known
    assert (refusal.cost_usd, refusal.extra["refused"]["requested_usd"]) == (0.0, None)
    assert refusal.extra["refused"]["requested_tokens"] == 120
    records = sorted(
        (r for r in ledger.records() if r.outcome != "refused"), key=lambda r: r.usage.output_tokens
    )
    assert [(r.model, r.cost_usd, r.reserved_usd, r.overshoot_usd, r.price_known) for r in records] == [
        ("m", pytest.approx(0.001), pytest.approx(20e-6), pytest.approx(0.001 - 20e-6), True),
        (UNPRICED, None, None, None, False),
        (UNPRICED, None, None, None, False),
    ]
    assert [r.overshoot_tokens for r in records] == [980, 0, 0]
    rows = {row.key: row for row in ledger.summary("model")}
    assert (rows[UNPRICED].calls, rows[UNPRICED].cost_usd, rows[UNPRICED].unpriced) == (2, 0.0, 2)
    assert rows[UNPRICED].refused == 1  # a refusal is no unpriced call
    assert (rows["m"].cost_usd, rows["m"].unpriced) == (pytest.approx(0.001), 0)
    spent = guard.spent(budget)
    assert (spent.committed_tokens, spent.reserved_tokens, spent.committed_nano) == (1_160, 0, 1_000_000)


def test_an_unpriced_cache_hit_keeps_its_saving_unknown(ledger: SpendLedger) -> None:
    guard = BudgetGuard([Budget(max_tokens=1_000, scope="global")], ledger=ledger)
    res = guard.reserve(guard.plan(MSGS, model=UNPRICED, max_output_tokens=10, input_tokens=5))
    guard.cache_hit(res, Usage(input_tokens=5, output_tokens=5))
    (hit,) = ledger.records()
    assert (hit.outcome, hit.cost_usd, hit.saved_usd) == ("cache_hit", 0.0, None)
    assert ledger.summary("outcome")[0].unpriced == 1
