"""The output reservation of calls with no cap of their own: the percentile estimator, the assumed caps, and how the
guard uses them (plan, refusal advice, overshoot record and alert, summary)."""

from __future__ import annotations

import pickle
import threading
from typing import Any

import pytest

from frugal_chains import Attribution, Budget, BudgetExceededError, ConfigurationError, Price, Usage
from frugal_chains.budget import Alert, BudgetGuard, ObservedOutput
from frugal_chains.budget.output_caps import OutputCaps

PRICES = {"m": Price(input=1.0, output=10.0, max_output_tokens=10_000)}
MSGS = [{"role": "user", "content": "hello"}]


def guard(*budgets: Budget, **kw: Any) -> BudgetGuard:
    return BudgetGuard(budgets, prices=PRICES, **kw)


def faq() -> Attribution:
    return Attribution(feature="faq")


# -- the estimator -----------------------------------------------------------------------------------------------
def test_no_estimate_before_min_samples_then_the_nearest_rank_percentile() -> None:
    observed = ObservedOutput(percentile=90, min_samples=10)
    for n in range(1, 10):
        observed.observe("m", "faq", n * 10)
        assert observed.estimate("m", "faq") is None
    observed.observe("m", "faq", 100)
    assert observed.estimate("m", "faq") == 90  # the 9th of 10 sorted values
    observed.observe("m", "faq", 1_000)
    assert observed.estimate("m", "faq") == 100  # ceil(0.9 * 11) = 10th value: refreshed after observe


def test_p99_of_a_long_tail_and_p100_is_the_maximum() -> None:
    p99, p100 = ObservedOutput(percentile=99, min_samples=1), ObservedOutput(percentile=100, min_samples=1)
    for n in [*([200] * 98), 900, 5_000]:
        p99.observe("m", None, n)
        p100.observe("m", None, n)
    assert p99.estimate("m", None) == 900
    assert p100.estimate("m", None) == 5_000


def test_series_are_per_model_and_feature() -> None:
    observed = ObservedOutput(min_samples=1)
    observed.observe("m", "faq", 10)
    observed.observe("m", "summarize", 500)
    observed.observe("other", "faq", 70)
    assert observed.estimate("m", "faq") == 10
    assert observed.estimate("m", "summarize") == 500
    assert observed.estimate("other", "faq") == 70
    assert observed.estimate("m", None) is None
    assert observed.snapshot() == {
        ("m", "faq"): (1, 10),
        ("m", "summarize"): (1, 500),
        ("other", "faq"): (1, 70),
    }


def test_memory_is_bounded_by_window_and_max_series() -> None:
    observed = ObservedOutput(percentile=100, min_samples=2, window=3, max_series=2)
    for n in (1_000, 1_000, 1_000, 10, 10, 10):
        observed.observe("m", None, n)
    assert observed.samples("m", None) == 3
    assert observed.estimate("m", None) == 10  # the old large values left the window
    observed.observe("a", None, 1)
    observed.estimate("m", None)  # (reading does not reorder)
    observed.observe("b", None, 1)  # a third series: the least recently fed one ("m") goes
    assert observed.samples("m", None) == 0
    assert (observed.samples("a", None), observed.samples("b", None)) == (1, 1)


def test_concurrent_observations_are_all_counted() -> None:
    observed = ObservedOutput(percentile=100, min_samples=1, window=100_000)

    def feed(k: int) -> None:
        for i in range(1_000):
            observed.observe("m", None, k * 1_000 + i)
            observed.estimate("m", None)

    threads = [threading.Thread(target=feed, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert observed.samples("m", None) == 8_000
    assert observed.estimate("m", None) == 7_999


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"percentile": 0}, "percentile"),
        ({"percentile": 101}, "percentile"),
        ({"percentile": "p99"}, "percentile"),
        ({"min_samples": 0}, "min_samples"),
        ({"min_samples": True}, "min_samples"),
        ({"min_samples": 10, "window": 5}, "window"),
        ({"max_series": 0}, "max_series"),
    ],
)
def test_bad_estimator_settings_name_the_field(kw: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigurationError) as e:
        ObservedOutput(**kw)
    assert e.value.field == field


# -- assumed caps and precedence -----------------------------------------------------------------------------------
def test_a_features_cap_wins_over_the_models_over_any_models() -> None:
    caps = OutputCaps({"m": 1_000, "feature:summarize": 400, "*": 2_000})
    assert caps.cap_for("m", "summarize", 10_000) == (400, "assumed")
    assert caps.cap_for("m", "faq", 10_000) == (1_000, "assumed")
    assert caps.cap_for("other", None, 10_000) == (2_000, "assumed")
    assert caps.cap_for("other", None, 500) == (500, "assumed")  # never above the model's own limit
    assert caps.cap_for("unpriced", None, None) == (2_000, "assumed")
    assert OutputCaps().cap_for("m", None, 10_000) == (10_000, "model_limit")
    assert OutputCaps().cap_for("m", None, None) == (None, "none")


def test_the_observed_estimate_wins_over_the_assumed_cap_once_it_applies() -> None:
    observed = ObservedOutput(min_samples=2)
    caps = OutputCaps({"m": 1_000}, observed)
    observed.observe("m", None, 3_000)
    assert caps.cap_for("m", None, 10_000) == (1_000, "assumed")  # one sample: not yet
    observed.observe("m", None, 3_000)
    assert caps.cap_for("m", None, 10_000) == (3_000, "observed")
    assert caps.cap_for("m", None, 2_500) == (2_500, "observed")  # never above the model's limit


@pytest.mark.parametrize(
    "bad",
    [["m", 10], {"m": 0}, {"m": -5}, {"m": 1.5}, {"m": True}, {"": 10}, {"feature:": 10}, {3: 10}],
)
def test_bad_assumed_caps_name_the_field(bad: Any) -> None:
    with pytest.raises(ConfigurationError) as e:
        BudgetGuard(assume_max_output=bad)
    assert e.value.field == "assume_max_output"


def test_a_bad_observed_output_names_the_field() -> None:
    with pytest.raises(ConfigurationError) as e:
        BudgetGuard(observed_output={"percentile": 99})  # type: ignore[arg-type]
    assert e.value.field == "observed_output"
    assert isinstance(BudgetGuard(observed_output=True).output_caps.observed, ObservedOutput)
    assert BudgetGuard(observed_output=False).output_caps.observed is None


# -- the guard ---------------------------------------------------------------------------------------------------
def test_plan_says_where_the_output_cap_came_from() -> None:
    g = guard(assume_max_output={"feature:faq": 300})
    assert (g.plan(MSGS, model="m").max_output_tokens, g.plan(MSGS, model="m").cap_source) == (
        10_000,
        "model_limit",
    )
    plan = g.plan(MSGS, model="m", attribution=faq(), choices=2)
    assert (plan.max_output_tokens, plan.cap_source, plan.choices) == (600, "assumed", 2)
    own = g.plan(MSGS, model="m", attribution=faq(), max_output_tokens=50)
    assert (own.max_output_tokens, own.cap_source) == (50, "max_tokens")  # the call's own cap wins


def test_an_assumed_cap_makes_a_model_without_a_known_limit_usable() -> None:
    g = BudgetGuard([Budget(max_tokens=10_000)], prices={"x": Price(input=1, output=1)})
    with pytest.raises(ConfigurationError, match="assume_max_output"):
        g.plan(MSGS, model="x")
    g2 = BudgetGuard(
        [Budget(max_tokens=10_000)], prices={"x": Price(input=1, output=1)}, assume_max_output={"*": 64}
    )
    assert g2.plan(MSGS, model="x").max_output_tokens == 64


def test_only_whole_answers_of_uncapped_calls_feed_the_estimate() -> None:
    observed = ObservedOutput(min_samples=1)
    g = guard(observed_output=observed)

    def call(usage: Usage, *, cap: int | None = None, choices: int = 1, **kw: Any) -> None:
        res = g.reserve(g.plan(MSGS, model="m", attribution=faq(), max_output_tokens=cap, choices=choices))
        g.commit(res, usage, **kw)

    call(Usage(input_tokens=5, output_tokens=10), cap=50)  # capped by its own max_tokens
    call(Usage(input_tokens=5, output_tokens=20), usage_estimated=True)  # no provider usage
    call(Usage(input_tokens=5, output_tokens=30), extra={"interrupted": "GeneratorExit"})
    call(Usage(input_tokens=5, output_tokens=40), extra={"error": "APIError"})
    assert observed.samples("m", "faq") == 0
    call(Usage(input_tokens=5, output_tokens=300), choices=3)  # three answers: 100 each
    assert (observed.samples("m", "faq"), observed.estimate("m", "faq")) == (1, 100)
    g.cache_hit(g.reserve(g.plan(MSGS, model="m", attribution=faq())), Usage(output_tokens=9_000))
    assert observed.samples("m", "faq") == 1  # a cache hit is no provider answer


def test_a_refusal_at_the_whole_output_limit_names_the_options_and_pickles() -> None:
    observed = ObservedOutput(min_samples=20)
    g = guard(Budget(max_usd=0.05, scope="global"), observed_output=observed)
    with pytest.raises(BudgetExceededError) as e:
        g.reserve(g.plan(MSGS, model="m", attribution=faq()))  # 10,000 output tokens: $0.10
    message = str(e.value)
    for name in ("max_tokens", "assume_max_output", "observed_output", "10,000 tokens", "0 of the 20 calls"):
        assert name in message, name
    assert e.value.advice is not None
    assert str(pickle.loads(pickle.dumps(e.value))) == message
    with pytest.raises(BudgetExceededError) as capped:
        g.reserve(g.plan(MSGS, model="m", max_output_tokens=6_000))
    assert "assume_max_output" not in str(capped.value)
    assert "Raise the limit or lower the model's max_tokens" in str(capped.value)


def test_an_overshoot_of_an_assumed_cap_is_recorded_alerted_and_summed() -> None:
    alerts: list[Alert] = []
    g = guard(assume_max_output={"m": 100}, on_alert=alerts.append)
    res = g.reserve(g.plan(MSGS, model="m", input_tokens=5_000, attribution=faq()))
    # the prompt came in far under its estimate, so the total (tokens and USD) stays within the reservation; the
    # output did not
    record = g.commit(res, Usage(input_tokens=1_000, output_tokens=250))
    assert record.overshoot_tokens == 150 and record.overshoot_usd == 0.0
    (alert,) = alerts
    assert (alert.kind, alert.unit, alert.spent, alert.limit, alert.record) == (
        "overshoot",
        "tokens",
        250.0,
        100.0,
        record,
    )
    assert "150 more than the 100 reserved for its output" in alert.message
    assert "assume_max_output" in alert.message
    within = g.commit(g.reserve(g.plan(MSGS, model="m", attribution=faq())), Usage(output_tokens=100))
    assert within.overshoot_tokens == 0 and len(alerts) == 1
    over_usd = g.commit(g.reserve(g.plan(MSGS, model="m", attribution=faq())), Usage(output_tokens=400))
    assert over_usd.overshoot_usd is not None and over_usd.overshoot_usd > 0
    assert alerts[-1].unit == "usd" and alerts[-1].spent == over_usd.cost_usd
    (row,) = g.ledger.summary("feature")
    assert (row.calls, row.overshoots, row.overshoot_tokens) == (3, 2, 150 + over_usd.overshoot_tokens)
    assert row.overshoot_usd == pytest.approx(over_usd.overshoot_usd)


def test_a_nested_budget_scope_keeps_the_enclosing_caps() -> None:
    from frugal_chains.langchain import budget_scope

    observed = ObservedOutput()
    with (
        budget_scope(prices=PRICES, assume_max_output={"m": 10}, observed_output=observed),
        budget_scope([Budget(max_tokens=1_000)]) as inner,
    ):
        assert inner.core.output_caps.assumed == {"m": 10}
        assert inner.core.output_caps.observed is observed


@pytest.mark.parametrize("wing", ["langchain", "llama_index"])
def test_both_handlers_take_and_validate_the_options(wing: str) -> None:
    if wing == "langchain":
        from frugal_chains.langchain import TokenBudgetHandler
    else:
        from frugal_chains.llama_index import TokenBudgetHandler  # type: ignore[assignment]
    handler = TokenBudgetHandler(assume_max_output={"gpt-4o": 1024}, observed_output=True)
    assert handler.core.output_caps.assumed == {"gpt-4o": 1024}
    with pytest.raises(ConfigurationError) as e:
        TokenBudgetHandler(assume_max_output={"gpt-4o": "1024"})  # type: ignore[dict-item]
    assert e.value.field == "assume_max_output"
