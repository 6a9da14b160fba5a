"""Output caps under a hostile review: the refusal's advice only where a cap would help, and the estimator shared,
not copied."""

from __future__ import annotations

import copy
import pickle
from typing import Any

import pytest

from frugal_chains import Budget, BudgetExceededError, Price, Usage
from frugal_chains.budget import BudgetGuard, ObservedOutput

PRICES = {"m": Price(input=1.0, output=10.0, max_output_tokens=10_000)}
MSGS = [{"role": "user", "content": "hello"}]


def test_a_refusal_of_a_spent_budget_does_not_advise_an_output_cap() -> None:
    g = BudgetGuard([Budget(max_usd=0.05, scope="global")], prices=PRICES)
    res = g.reserve(g.plan(MSGS, model="m", max_output_tokens=1_000, input_tokens=10))
    g.commit(res, Usage(input_tokens=10, output_tokens=5_000))  # an overshoot spends the whole budget
    with pytest.raises(BudgetExceededError) as e:
        g.reserve(g.plan(MSGS, model="m"))  # no cap: 10,000 output tokens, but no cap would fit now
    assert e.value.advice is None
    assert "assume_max_output" not in str(e.value)
    assert "Raise the limit" in str(e.value)


def test_a_refusal_whose_prompt_alone_is_over_the_tokens_left_does_not_advise_an_output_cap() -> None:
    g = BudgetGuard([Budget(max_tokens=5_000, scope="global")], prices=PRICES)
    with pytest.raises(BudgetExceededError) as e:
        g.reserve(g.plan(MSGS, model="m", input_tokens=6_000))
    assert e.value.advice is None
    with pytest.raises(BudgetExceededError) as room:
        g.reserve(g.plan(MSGS, model="m", input_tokens=100))  # a smaller cap would fit: the advice stays
    assert room.value.advice is not None and "assume_max_output" in str(room.value)


def test_an_observed_output_is_shared_by_copies_and_refuses_pickling_by_name() -> None:
    observed = ObservedOutput(min_samples=1)
    assert copy.deepcopy(observed) is observed and copy.copy(observed) is observed
    with pytest.raises(TypeError, match="ObservedOutput cannot be pickled"):
        pickle.dumps(observed)


def test_an_estimated_output_past_an_enforced_cap_is_no_overshoot() -> None:
    # the provider reported no usage: the output is counted with our tokenizer, which may count more tokens than
    # the provider's, whose max_tokens cut the answer; the prompt's margin absorbs that, as before
    alerts: list[Any] = []
    g = BudgetGuard([Budget(max_usd=1.0, scope="global")], prices=PRICES, on_alert=alerts.append)
    res = g.reserve(g.plan(MSGS, model="m", max_output_tokens=10, input_tokens=1_000))
    record = g.commit(res, Usage(input_tokens=900, output_tokens=14), usage_estimated=True)
    assert record.overshoot_tokens == 0 and not alerts


def test_an_estimated_output_past_an_assumed_cap_is_an_overshoot() -> None:
    alerts: list[Any] = []
    g = BudgetGuard(
        [Budget(max_usd=1.0, scope="global")],
        prices=PRICES,
        assume_max_output={"m": 10},
        on_alert=alerts.append,
    )
    res = g.reserve(g.plan(MSGS, model="m", input_tokens=1_000))
    record = g.commit(res, Usage(input_tokens=900, output_tokens=14), usage_estimated=True)
    assert record.overshoot_tokens == 4 and [a.kind for a in alerts] == ["overshoot"]


def test_a_reported_output_past_an_enforced_cap_is_an_overshoot() -> None:
    g = BudgetGuard([Budget(max_usd=1.0, scope="global")], prices=PRICES, on_alert=lambda alert: None)
    res = g.reserve(g.plan(MSGS, model="m", max_output_tokens=10, input_tokens=1_000))
    assert g.commit(res, Usage(input_tokens=900, output_tokens=14)).overshoot_tokens == 4
