"""Output caps when the model sets none: both wings' ``TokenBudgetHandler`` reserve the model's whole output limit by
default, an assumed cap (``assume_max_output``) or the observed output of recent calls (``observed_output``) when
given, the call's own ``max_tokens`` over both; an overshoot is recorded, summed and alerted; a refusal at the whole
output limit names the options. Every call mode, bare and cascaded."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from frugal_chains import Budget, BudgetExceededError, Price, attribute
from frugal_chains.budget import Alert, ObservedOutput
from frugal_chains.routing import RegexGate
from tests.contract.wings import PRICES, Script, Target, Wing, handler_options

GPT_4O = Price(input=2.5, output=10.0, max_output_tokens=16_384)
"""gpt-4o's list price: its whole output limit costs $0.16384."""
GPT_4O_MINI = Price(input=0.15, output=0.6, max_output_tokens=16_384)
OPTIONS_PRICES = {**PRICES, "gpt-4o": GPT_4O, "gpt-4o-mini": GPT_4O_MINI}
TASK = Budget(max_usd=0.02, scope="task")
ROOMY = Budget(max_usd=10.0, scope="global")


def big(*answers: str, **kw: Any) -> Script:
    """A gpt-4o-priced fake with no ``max_tokens``: each answer costs $0.00303 (12 in, 300 out)."""
    kw.setdefault("input_tokens", 12)
    kw.setdefault("output_tokens", 300)
    kw.setdefault("max_tokens", None)
    return Script("gpt-4o", answers or ("It is 42 .",), **kw)


def mini(*answers: str, **kw: Any) -> Script:
    kw.setdefault("max_tokens", None)
    return Script("gpt-4o-mini", answers or ("It is 42 .",), **kw)


def build(make: Callable[[], Target], **options: Any) -> Target:
    with handler_options(prices=OPTIONS_PRICES, **options):
        return make()


def one_task(**attribution: Any) -> Callable[[], contextlib.AbstractContextManager[Any]]:
    """Every call in the same task (and feature, if given), as one agent run's calls are."""

    @contextlib.contextmanager
    def around() -> Iterator[None]:
        with attribute(task_id="agent-run-1", **attribution):
            yield

    return around


def test_by_default_a_call_reserves_the_whole_output_limit_and_the_refusal_names_the_options(
    wing: Wing, mode: str
) -> None:
    target = build(lambda: wing.plain(big(), budgets=[TASK]))
    obs = target.ask(mode, around=one_task())
    assert isinstance(obs.error, BudgetExceededError)
    assert obs.error.requested > 0.16  # 16,384 output tokens at $10 per million
    assert obs.calls == {} and obs.records == []  # nothing spent
    message = str(obs.error)
    assert "max_tokens" in message and "assume_max_output" in message and "observed_output" in message
    assert "16,384 tokens" in message


def test_an_assumed_cap_lets_several_calls_of_one_task_through(wing: Wing, mode: str) -> None:
    target = build(lambda: wing.plain(big(), budgets=[TASK]), assume_max_output={"gpt-4o": 1024})
    answered = [target.ask(mode, around=one_task()) for _ in range(5)]
    assert [o.error is None for o in answered] == [True, True, True, True, False]
    # each reserved ~$0.0103 (1,024 output tokens) and committed $0.00303: the 5th could pass $0.02
    refused = answered[4].error
    assert isinstance(refused, BudgetExceededError)
    assert refused.requested == pytest.approx(0.01024, abs=2e-4)
    assert refused.spent == pytest.approx(4 * 0.00303)
    assert "assume_max_output" not in str(refused)  # the reservation was the assumed cap, not the whole limit
    records = target.ledger.records()
    assert [r.outcome for r in records] == ["ok"] * 4 + ["refused"]  # the 5th is refused and recorded
    assert all(r.reserved_usd == pytest.approx(0.01024, abs=2e-4) for r in records[:4])
    assert all(r.overshoot_tokens == 0 for r in records)


def test_the_calls_own_max_tokens_wins_over_the_assumed_and_observed_caps(wing: Wing, mode: str) -> None:
    observed = ObservedOutput(min_samples=1)
    observed.observe("gpt-4o", None, 5_000)
    target = build(
        lambda: wing.plain(big(max_tokens=400), budgets=[TASK]),
        assume_max_output={"gpt-4o": 1024},
        observed_output=observed,
    )
    obs = target.ask(mode, around=one_task())
    assert obs.error is None, repr(obs.error)
    (record,) = target.ledger.records()
    assert record.reserved_usd == pytest.approx(0.004, abs=2e-4)  # 400 output tokens at $10 per million
    assert observed.samples("gpt-4o", None) == 1  # a capped call is not fed to the estimate


def test_the_observed_percentile_applies_after_min_samples(wing: Wing, mode: str) -> None:
    observed = ObservedOutput(percentile=99, min_samples=3)
    target = build(lambda: wing.plain(big(), budgets=[ROOMY]), observed_output=observed)
    for _ in range(4):
        obs = target.ask(mode, around=one_task(feature="faq"))
        assert obs.error is None, repr(obs.error)
    reserved = [r.reserved_usd for r in target.ledger.records()]
    assert all(r is not None and r > 0.16 for r in reserved[:3])  # the whole limit until 3 calls were seen
    assert reserved[3] == pytest.approx(0.003, abs=2e-4)  # then p99 of what they used: 300 tokens
    assert observed.samples("gpt-4o", "faq") == 4
    assert observed.estimate("gpt-4o", "faq") == 300
    assert observed.samples("gpt-4o", None) == 0  # per model and feature


def test_an_overshoot_is_recorded_summed_and_alerted(wing: Wing, mode: str) -> None:
    alerts: list[Alert] = []
    target = build(
        lambda: wing.plain(big(output_tokens=300), budgets=[ROOMY]),
        assume_max_output={"feature:summarize": 100},
        on_alert=alerts.append,
    )
    obs = target.ask(mode, around=one_task(feature="summarize"))
    assert obs.error is None, repr(obs.error)
    (record,) = target.ledger.records()
    assert record.overshoot_tokens >= 200  # 300 output tokens, 100 reserved for them
    assert record.overshoot_usd is not None and record.overshoot_usd > 0.0015
    (alert,) = [a for a in alerts if a.kind == "overshoot"]
    assert alert.record is not None and alert.record.id == record.id
    assert "assume_max_output" in alert.message
    (row,) = target.ledger.summary("feature")
    assert (row.key, row.overshoots, row.overshoot_tokens) == ("summarize", 1, record.overshoot_tokens)
    assert row.overshoot_usd == pytest.approx(record.overshoot_usd)


def test_a_cascade_escalation_under_a_task_budget(wing: Wing, mode: str) -> None:
    def make() -> Target:
        return wing.cascade([mini("I am not sure ."), big()], gates=[RegexGate(r"\d")], budgets=[TASK])

    default = build(make)
    refused = default.ask(mode)
    assert isinstance(refused.error, BudgetExceededError) and refused.error.model == "gpt-4o"
    assert refused.calls == {"gpt-4o-mini": 1}  # the cheap tier was paid, the escalation refused
    assert "assume_max_output" in str(refused.error)

    capped = build(make, assume_max_output={"gpt-4o": 1024})
    obs = capped.ask(mode)
    assert obs.error is None, repr(obs.error)
    assert obs.text == "It is 42 ."
    assert [(r[0], r[1]) for r in obs.spend] == [("ok", "gpt-4o-mini"), ("ok", "gpt-4o")]
