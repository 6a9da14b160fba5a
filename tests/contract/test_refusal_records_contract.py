"""The refusal-record contract: when a budget refuses a call, both ``TokenBudgetHandler`` s leave one ledger record
with ``outcome="refused"``: which budget refused it, what the call asked for, who asked (the scope key and the
attribution) and the model, at $0 and no tokens. It is counted in ``summary(...).refused`` and never as spend, and
the refusal is raised even when the ledger cannot record it, whatever the call mode."""

from __future__ import annotations

from typing import Any

import pytest

from frugal_chains import Budget, attribute
from frugal_chains.errors import BudgetExceededError, LedgerUnavailableError
from tests.contract.wings import Target, Wing, cheap

PER_USER = Budget(max_usd=1e-9, scope="user", window="day", name="per user per day")
"""Smaller than any call's worst case: every call of a user is refused."""


def who() -> Any:
    return attribute(feature="faq", user_id="u1", tenant_id="acme")


def test_a_refused_call_leaves_one_refused_record(wing: Wing, mode: str) -> None:
    target = wing.plain(cheap(), budgets=[PER_USER])
    obs = target.ask(mode, around=who)
    err = obs.error
    assert isinstance(err, BudgetExceededError)
    assert obs.calls == {} and obs.records == []  # nothing reached the provider, nothing spent
    (rec,) = obs.refusals
    assert rec.outcome == "refused" and rec.model == "cheap-1"
    assert rec.cost_usd == 0.0 and rec.usage.total_tokens == 0 and rec.saved_usd == 0.0
    a = rec.attribution
    assert (a.feature, a.user_id, a.tenant_id) == ("faq", "u1", "acme")
    refused = rec.extra["refused"]
    assert refused["name"] == "per user per day" and refused["budget"] == PER_USER.describe()
    assert (refused["scope"], refused["window"], refused["scope_key"]) == ("user", "day", "u1")
    assert refused["unit"] == "usd" and refused["limit"] == pytest.approx(1e-9)
    assert refused["requested_usd"] == pytest.approx(err.requested, rel=1e-6)
    assert refused["requested_tokens"] > 0


def test_refusals_are_counted_in_summaries_and_never_as_spend(wing: Wing, mode: str) -> None:
    limit = Budget(max_tokens=400, scope="user")  # one call's worst case fits, a second one does not
    target = wing.plain(cheap(output_tokens=200), budgets=[limit])
    first = target.ask(mode, around=who)
    assert first.error is None, repr(first.error)
    second = target.ask(mode, around=who)
    assert isinstance(second.error, BudgetExceededError) and len(second.refusals) == 1
    assert second.refusals[0].extra["refused"]["unit"] == "tokens"
    assert second.refusals[0].extra["refused"]["requested_tokens"] == second.error.requested
    by_outcome = {r.key: r for r in target.ledger.summary("outcome")}
    assert set(by_outcome) == {"ok", "refused"}
    assert by_outcome["refused"].refused == 1 and by_outcome["refused"].calls == 0
    assert by_outcome["refused"].cost_usd == 0.0 and by_outcome["refused"].input_tokens == 0
    (user,) = target.ledger.summary("user")
    assert (user.key, user.calls, user.refused) == ("u1", 1, 1)
    (ok,) = first.spend
    assert user.cost_usd == pytest.approx(ok[5]) and user.output_tokens == ok[4]
    counter = target.handler.core.spent(limit, second.refusals[0].attribution)
    assert (counter.committed_tokens, counter.reserved_tokens) == (ok[3] + ok[4], 0)


def test_the_refusal_is_raised_when_the_ledger_cannot_record_it(
    wing: Wing, mode: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    target: Target = wing.plain(cheap(), budgets=[PER_USER])

    def down(*args: Any, **kwargs: Any) -> None:
        raise LedgerUnavailableError("the ledger is down")

    async def adown(*args: Any, **kwargs: Any) -> None:
        down()

    monkeypatch.setattr(target.ledger, "add_record", down)
    monkeypatch.setattr(target.ledger, "aadd_record", adown)
    obs = target.ask(mode, around=who)
    assert isinstance(obs.error, BudgetExceededError)
    assert obs.calls == {} and obs.refusals == [] and obs.records == []
    assert "could not record a refused call" in caplog.text
