"""A call committed at exactly what it reserved (an interrupted call settled at its worst case) is no overshoot,
whatever the float rounding of its USD: no record flag, no alert, nothing in the summary's overshoot columns."""

from __future__ import annotations

import pytest

from frugal_chains import Budget
from frugal_chains.budget import Alert, BudgetGuard


@pytest.mark.parametrize("words", range(1, 60))
def test_a_worst_case_commit_is_no_overshoot(words: int) -> None:
    alerts: list[Alert] = []
    guard = BudgetGuard([Budget(max_usd=10.0, scope="global")], on_alert=alerts.append)
    plan = guard.plan(
        [{"role": "user", "content": "word " * words}],
        model="gpt-4o-mini",
        provider="openai",
        max_output_tokens=300,
    )
    res = guard.reserve(plan)
    assert res is not None
    record = guard.commit(res, guard.worst_usage(res), usage_estimated=True)
    assert (record.overshoot_usd, record.overshoot_tokens) == (0.0, 0)
    assert [a.kind for a in alerts if a.kind == "overshoot"] == []
    (row,) = guard.ledger.summary("model")
    assert (row.overshoots, row.overshoot_usd) == (0, 0.0)


def test_a_real_overshoot_is_still_reported_in_usd() -> None:
    alerts: list[Alert] = []
    guard = BudgetGuard([Budget(max_usd=10.0, scope="global")], on_alert=alerts.append)
    plan = guard.plan(
        [{"role": "user", "content": "hi"}], model="gpt-4o-mini", provider="openai", max_output_tokens=10
    )
    res = guard.reserve(plan)
    assert res is not None
    worst = guard.worst_usage(res)
    record = guard.commit(res, worst.__class__(input_tokens=worst.input_tokens, output_tokens=1_000))
    assert record.overshoot_tokens == 990 and record.overshoot_usd == pytest.approx(990 * 0.6e-6, rel=1e-3)
    assert [a.kind for a in alerts] == ["overshoot"]
