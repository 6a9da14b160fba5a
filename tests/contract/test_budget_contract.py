"""The budget contract: both ``TokenBudgetHandler`` s reserve before the call, commit what the provider reported
(one record per provider call, the cascade tier in ``CallRecord.tier``), refuse before any spend, and release on a
provider error, whatever the call mode and whether the call is bare, cascaded or streamed."""

from __future__ import annotations

from typing import Any

import pytest

from frugal_chains import Budget
from frugal_chains.errors import BudgetExceededError
from frugal_chains.routing import RegexGate
from tests.contract.test_cascade_contract import ESCALATING, ok, routed
from tests.contract.wings import Target, Wing, cheap, strong

ROOMY = Budget(max_usd=1.0, scope="global")
TINY = Budget(max_usd=1e-9, scope="global")
"""Smaller than any call's worst case: every call is refused."""


def spent(target: Target, budget: Budget) -> tuple[int, int]:
    """(committed, still reserved) nano-USD of ``budget``."""
    counter = target.handler.core.spent(budget)
    return counter.committed_nano, counter.reserved_nano


def test_a_call_is_reserved_then_committed_once(wing: Wing, mode: str) -> None:
    c = cheap("It is 42 .")
    target = wing.plain(c, budgets=[ROOMY])
    obs = target.ask(mode)
    assert obs.error is None and obs.text == "It is 42 ."
    assert obs.records == ok(c, None)  # outside a cascade: no tier
    committed, reserved = spent(target, ROOMY)
    assert reserved == 0
    assert committed == pytest.approx(obs.records[0][5] * 1e9, abs=1)


def test_a_cascade_commits_each_provider_call_under_its_tier(wing: Wing, mode: str) -> None:
    c, s = cheap("I am not sure ."), strong()
    target = wing.cascade([c, s], gates=[RegexGate(r"\d")], budgets=[ROOMY])
    obs = target.ask(mode)
    assert obs.error is None
    assert obs.records == [*ok(c, "cheap-1"), *ok(s, "strong-1"), routed("strong-1")]
    committed, reserved = spent(target, ROOMY)
    assert reserved == 0
    assert obs.frugal is not None
    assert committed / 1e9 == pytest.approx(
        obs.frugal["cascade"]["cost_usd"]
    )  # the cascade's own run: uncounted


def test_a_refused_budget_raises_before_any_spend(wing: Wing, mode: str) -> None:
    target = wing.plain(cheap(), budgets=[TINY])
    obs = target.ask(mode)
    assert isinstance(obs.error, BudgetExceededError)
    assert obs.calls == {}  # the provider was never reached
    assert obs.chunks == []
    assert obs.records == []
    assert spent(target, TINY) == (0, 0)


def test_a_refused_budget_inside_a_cascade_stops_it_and_never_escalates(wing: Wing, mode: str) -> None:
    target = wing.cascade([cheap(), strong()], gates=[RegexGate(r"\d")], budgets=[TINY])
    obs = target.ask(mode)
    assert type(obs.error) is BudgetExceededError  # not CascadeExhaustedError: a refusal is no provider error
    assert obs.calls == {}
    assert obs.chunks == []
    assert obs.records == []  # no spend, no routed record
    assert target.tier_stats() == {}
    assert spent(target, TINY) == (0, 0)


@pytest.mark.parametrize("error", list(ESCALATING), ids=list(ESCALATING))
def test_a_provider_error_releases_the_reservation(wing: Wing, mode: str, error: str) -> None:
    target = wing.plain(cheap(error=ESCALATING[error]), budgets=[ROOMY])
    obs = target.ask(mode)
    assert type(obs.error).__name__ == error
    assert obs.calls == {"cheap-1": 1}
    assert obs.records == []
    assert spent(target, ROOMY) == (0, 0)


def test_a_provider_error_in_a_cascade_releases_that_tiers_reservation(wing: Wing, mode: str) -> None:
    s = strong()
    target = wing.cascade([cheap(error=ESCALATING["TimeoutError"]), s], budgets=[ROOMY])
    obs = target.ask(mode)
    assert obs.error is None and obs.outcomes == ["error", "accepted"]
    assert obs.records == [*ok(s, "strong-1"), routed("strong-1")]
    committed, reserved = spent(target, ROOMY)
    assert reserved == 0 and committed / 1e9 == pytest.approx(obs.records[0][5])


def test_a_budget_that_allows_the_cheap_tier_only_stops_the_escalation(wing: Wing, mode: str) -> None:
    """Room for the cheap call's worst case but not for the strong one's: the cheap answer is paid, the escalation
    is refused (raised, not swallowed), and the routing records the attempt that was made."""
    c = cheap("I am not sure .")
    room = Budget(max_usd=0.0009, scope="global")  # cheap worst case ~0.0005 USD, strong ~0.008 USD
    target = wing.cascade([c, strong()], gates=[RegexGate(r"\d")], budgets=[room])
    obs = target.ask(mode)
    assert isinstance(obs.error, BudgetExceededError)
    assert obs.calls == {"cheap-1": 1}
    rows: list[Any] = obs.records
    assert rows == [*ok(c, "cheap-1"), routed("cheap-1")]
    assert target.tier_stats() == {"cheap-1": (1, 1, 0, 0)}
    assert spent(target, room)[1] == 0
