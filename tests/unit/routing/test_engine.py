"""The framework-free cascade engine, routing policy and statistics."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from frugal_chains import CascadeExhaustedError, ConfigurationError, Price, Usage
from frugal_chains.accounting import SQLiteLedger
from frugal_chains.errors import BudgetExceededError
from frugal_chains.routing import (
    Cascade,
    GateContext,
    GateResult,
    RouterStats,
    RoutingPolicy,
    TierAnswer,
    TierSpec,
    default_escalates,
    escalation_rates,
)

TIERS = [
    TierSpec(name="cheap", model="cheap-model", price=Price(input=0.1, output=0.4)),
    TierSpec(name="mid", model="mid-model", price=Price(input=1.0, output=4.0)),
    TierSpec(name="strong", model="strong-model", price=Price(input=5.0, output=15.0)),
]
MSGS = [{"role": "user", "content": "q"}]


class Gate:
    """Passes answers that contain ``word``; counts its calls."""

    needs_full_answer = True

    def __init__(self, word: str, name: str = "word") -> None:
        self.word, self.name, self.calls = word, name, 0

    def check(self, ctx: GateContext) -> GateResult:
        self.calls += 1
        return GateResult(gate=self.name, passed=self.word in ctx.answer.text)

    async def acheck(self, ctx: GateContext) -> GateResult:
        return self.check(ctx)


class Fixed:
    name = "fixed"

    def __init__(self, value: float) -> None:
        self.value = value

    def score(self, messages: Any) -> float:
        return self.value

    async def ascore(self, messages: Any) -> float:
        return self.value


def answers(*texts: str) -> Any:
    calls: list[int] = []

    def call(i: int) -> TierAnswer:
        calls.append(i)
        return TierAnswer(text=texts[i], usage=Usage(input_tokens=1000, output_tokens=100))

    call.calls = calls  # type: ignore[attr-defined]
    return call


def test_escalates_through_three_tiers_and_prices_each_attempt() -> None:
    gate = Gate("ok")
    engine = Cascade(TIERS, gates=[gate])
    call = answers("bad", "bad", "whatever")
    result = engine.run(MSGS, call)
    assert result.tier == "strong" and call.calls == [0, 1, 2]
    assert [a.outcome for a in result.attempts] == ["escalated", "escalated", "accepted"]
    assert gate.calls == 2  # the strongest tier is not gated
    expected = sum(t.price.cost(Usage(input_tokens=1000, output_tokens=100)) for t in TIERS)  # type: ignore[union-attr]
    assert result.cost_usd == pytest.approx(expected)
    assert result.usage.input_tokens == 3000
    meta = result.metadata(engine.tier_names)
    assert meta["escalations"] == 2 and meta["start_tier"] == "cheap" and meta["tier"] == "strong"


def test_scorer_and_thresholds_pick_the_start() -> None:
    policy = RoutingPolicy(thresholds=(0.3, 0.8))
    for score, start in ((0.1, 0), (0.5, 1), (0.9, 2)):
        engine = Cascade(TIERS, scorer=Fixed(score), policy=policy)
        call = answers("a", "b", "c")
        assert engine.run(MSGS, call).tier_index == start
        assert call.calls == [start]


def test_default_thresholds_when_a_scorer_is_given() -> None:
    assert Cascade(TIERS, scorer=Fixed(0.6)).policy.thresholds == (0.5, 0.75)
    assert Cascade(TIERS).policy.thresholds is None


def test_cost_aware_policy_keeps_long_prompts_lower() -> None:
    prices = [t.price for t in TIERS[:2]]
    policy = RoutingPolicy(thresholds=(0.5,), cost_aware=True, reference_tokens=1000)
    assert policy.start_tier(0.6, n_tiers=2, prompt_tokens=500, prices=prices) == 1  # type: ignore[arg-type]
    assert policy.start_tier(0.6, n_tiers=2, prompt_tokens=20_000, prices=prices) == 0  # type: ignore[arg-type]
    assert RoutingPolicy(thresholds=(0.5,)).start_tier(0.6, n_tiers=2, prompt_tokens=20_000) == 1


def test_errors_escalate_or_propagate() -> None:
    engine = Cascade(TIERS[:2])

    def flaky(i: int) -> TierAnswer:
        if i == 0:
            raise TimeoutError("slow")
        return TierAnswer(text="ok")

    result = engine.run(MSGS, flaky)
    assert [a.outcome for a in result.attempts] == ["error", "accepted"]

    def bug(i: int) -> TierAnswer:
        raise KeyError("bug")

    with pytest.raises(KeyError):
        engine.run(MSGS, bug)

    def down(i: int) -> TierAnswer:
        raise ConnectionError("down")

    with pytest.raises(CascadeExhaustedError) as info:
        engine.run(MSGS, down)
    assert len(info.value.attempts) == 2 and isinstance(info.value.__cause__, ConnectionError)


def test_default_escalates() -> None:
    from langchain_core.exceptions import ContextOverflowError, ModelAuthenticationError, ModelRateLimitError

    class RateLimitError(Exception):
        pass

    class Http(Exception):
        status_code = 503

    assert default_escalates(ModelRateLimitError("429"))
    assert default_escalates(ContextOverflowError("too long"))
    assert default_escalates(RateLimitError())
    assert default_escalates(Http())
    assert not default_escalates(ModelAuthenticationError("key"))
    assert not default_escalates(BudgetExceededError.__new__(BudgetExceededError))
    assert not default_escalates(KeyboardInterrupt())


def test_structured_output_must_parse_even_on_the_last_tier() -> None:
    engine = Cascade(TIERS[:2])
    result = engine.run(
        MSGS,
        lambda i: TierAnswer(
            text="", parse_error=ValueError("bad") if i == 0 else None, parsed={"a": 1} if i else None
        ),
        structured=True,
    )
    assert result.tier == "mid" and result.attempts[0].gates[0].gate == "structured_output"
    with pytest.raises(CascadeExhaustedError) as info:
        engine.run(MSGS, lambda i: TierAnswer(text="", parse_error=ValueError("bad")), structured=True)
    assert [a.outcome for a in info.value.attempts] == ["escalated", "exhausted"]


def _exhausted(*errors: BaseException | None) -> CascadeExhaustedError:
    """An inner cascade's exhaustion: one attempt per error (``None``: structured output that did not parse)."""
    from frugal_chains.routing import Attempt

    return CascadeExhaustedError(
        [
            Attempt(
                tier=f"inner-{i}",
                tier_index=i,
                model="m",
                outcome="error" if e is not None else ("exhausted" if i == len(errors) - 1 else "escalated"),
                error=e,
                gates=() if e is not None else (GateResult(gate="structured_output", passed=False),),
            )
            for i, e in enumerate(errors)
        ]
    )


@pytest.mark.parametrize(
    "inner",
    [
        pytest.param(lambda: _exhausted(TimeoutError("slow"), ConnectionError("down")), id="errors"),
        pytest.param(lambda: _exhausted(None, None), id="structured-output-never-parsed"),
        pytest.param(lambda: _exhausted(TimeoutError("slow"), None), id="mixed"),
        pytest.param(lambda: _exhausted(_exhausted(TimeoutError("slow")), None), id="two-deep"),
    ],
)
def test_an_exhausted_nested_cascade_escalates(inner: Any) -> None:
    """A nested cascade that gave up escalates when every error that exhausted it escalates; an answer that never
    parsed counts as escalating (the next tier may parse), as a plain tier's does."""
    engine = Cascade(TIERS[:2])
    error = inner()
    assert engine.escalates(error)

    def call(i: int) -> TierAnswer:
        if i == 0:
            raise error
        return TierAnswer(text="ok")

    result = engine.run(MSGS, call)
    assert [a.outcome for a in result.attempts] == ["error", "accepted"]
    assert result.attempts[0].error is error


async def test_an_exhausted_nested_cascade_escalates_async() -> None:
    engine = Cascade(TIERS[:2])

    async def call(i: int) -> TierAnswer:
        if i == 0:
            raise _exhausted(TimeoutError("slow"), TimeoutError("slow"))
        return TierAnswer(text="ok")

    result = await engine.arun(MSGS, call)
    assert [a.outcome for a in result.attempts] == ["error", "accepted"]


def test_a_nested_cascade_exhausted_by_an_error_this_cascade_does_not_escalate_on_propagates() -> None:
    only_timeouts = Cascade(TIERS[:2], escalate_on=lambda e: isinstance(e, TimeoutError))
    inner = _exhausted(TimeoutError("slow"), ConnectionError("down"))
    assert not only_timeouts.escalates(inner)
    assert not only_timeouts.escalates(_exhausted(_exhausted(ConnectionError("down"))))
    assert only_timeouts.escalates(_exhausted(TimeoutError("slow"), None))

    def call(i: int) -> TierAnswer:
        raise inner

    with pytest.raises(CascadeExhaustedError) as info:
        only_timeouts.run(MSGS, call)
    assert info.value is inner  # raised as it is: the outer cascade recorded no attempt


def test_a_raising_gate_counts_as_failed() -> None:
    class Broken:
        name, needs_full_answer = "broken", True

        def check(self, ctx: GateContext) -> GateResult:
            raise RuntimeError("boom")

        async def acheck(self, ctx: GateContext) -> GateResult:
            raise RuntimeError("boom")

    engine = Cascade(TIERS[:2], gates=[Broken()])
    assert engine.run(MSGS, answers("a", "b")).tier == "mid"
    assert asyncio.run(engine.arun(MSGS, _async(answers("a", "b")))).tier == "mid"


def _async(call: Any) -> Any:
    async def acall(i: int) -> TierAnswer:
        return call(i)

    return acall


def test_samples_and_judge_usage_are_priced_into_the_attempt() -> None:
    class Consistent:
        name, needs_full_answer = "sc", True

        def check(self, ctx: GateContext) -> GateResult:
            assert ctx.sample is not None
            more = ctx.sample(2)
            return GateResult(
                gate="sc",
                passed=all(m.text == ctx.answer.text for m in more),
                usage=Usage(input_tokens=10),
                model="cheap-model",
            )

        async def acheck(self, ctx: GateContext) -> GateResult:
            return self.check(ctx)

    engine = Cascade(TIERS[:2], gates=[Consistent()])
    one = Usage(input_tokens=1000, output_tokens=100)
    result = engine.run(
        MSGS,
        lambda i: TierAnswer(text="x", usage=one),
        sampler=lambda i: lambda n: [TierAnswer(text="x", usage=one) for _ in range(n)],
    )
    assert result.tier == "cheap"
    assert result.usage.input_tokens == 3010
    assert result.cost_usd == pytest.approx(
        TIERS[0].price.cost(Usage(input_tokens=3010, output_tokens=300))  # type: ignore[union-attr]
    )  # the gate's call on cheap-model is priced by that tier's own price


def test_ledger_gets_one_routed_record_and_summary_skips_it() -> None:
    ledger = SQLiteLedger()
    engine = Cascade(TIERS[:2], gates=[Gate("ok")], ledger=ledger)
    engine.run(MSGS, answers("bad", "ok"))
    engine.run(MSGS, answers("ok", "ok"))
    records = ledger.records()
    assert [r.outcome for r in records] == ["routed", "routed"]
    assert ledger.summary("model") == []
    rates = escalation_rates(records)
    assert rates["cheap"].attempts == 2 and rates["cheap"].escalations == 1
    assert rates["cheap"].escalation_rate == 0.5 and rates["mid"].accepted == 1


def test_stats_are_thread_safe_and_alert_once_per_crossing() -> None:
    alerts: list[Any] = []
    stats = RouterStats(alert_threshold=0.3, window=10, min_samples=10, on_alert=alerts.append)

    def work() -> None:
        for _ in range(500):
            stats.record_attempt("cheap", "escalated")

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert stats.tier("cheap").attempts == 2000 and len(alerts) == 1
    for _ in range(10):
        stats.record_attempt("cheap", "accepted")
    for _ in range(10):
        stats.record_attempt("cheap", "escalated")
    assert len(alerts) == 2


def test_a_raising_alert_hook_does_not_break_requests() -> None:
    def hook(alert: Any) -> None:
        raise RuntimeError("pager down")

    stats = RouterStats(min_samples=1, on_alert=hook)
    stats.record_attempt("cheap", "escalated")
    assert stats.tier("cheap").escalations == 1


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: Cascade(TIERS[:1]), "tiers"),
        (lambda: Cascade([TIERS[0], "gpt-4o"]), "tiers"),  # type: ignore[list-item]
        (lambda: Cascade([TIERS[0], TIERS[0]]), "tier_names"),
        (lambda: Cascade(TIERS, scorer=object()), "scorer"),  # type: ignore[arg-type]
        (lambda: Cascade(TIERS, gates=[object()]), "gates"),  # type: ignore[list-item]
        (lambda: Cascade(TIERS, policy=RoutingPolicy(thresholds=(0.5,))), "thresholds"),
        (lambda: RoutingPolicy(thresholds=(1.2,)), "thresholds"),
        (lambda: RoutingPolicy(thresholds=(-0.1,)), "thresholds"),
        (lambda: RoutingPolicy(thresholds=(0.8, 0.2)), "thresholds"),
        (lambda: RouterStats(alert_threshold=2), "alert_threshold"),
        (lambda: RouterStats(window=0), "window"),
        (lambda: TierSpec(name="", model="m"), "tier_names"),
    ],
)
def test_bad_input(build: Any, field: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        build()
    assert info.value.field == field


def test_a_budget_refusal_inside_a_gate_propagates() -> None:
    class Judge:
        name, needs_full_answer = "judge", True

        def check(self, ctx: GateContext) -> GateResult:
            raise BudgetExceededError.__new__(BudgetExceededError)

        async def acheck(self, ctx: GateContext) -> GateResult:
            return self.check(ctx)

    engine = Cascade(TIERS[:2], gates=[Judge()])
    call = answers("a", "b")
    with pytest.raises(BudgetExceededError):
        engine.run(MSGS, call)
    assert call.calls == [0]
    with pytest.raises(BudgetExceededError):
        asyncio.run(engine.arun(MSGS, _async(answers("a", "b"))))


def test_router_stats_print_their_counts() -> None:
    """``print(frugal.router_stats)`` (docs/llama_index.md lists it) shows each tier's counts, not an address."""
    stats = RouterStats(min_samples=100)
    stats.record_start("cheap")
    stats.record_attempt("cheap", "escalated")
    stats.record_attempt("strong", "accepted")
    text = repr(stats)
    assert "object at" not in text
    assert "tier='cheap'" in text and "escalations=1" in text and "tier='strong'" in text
