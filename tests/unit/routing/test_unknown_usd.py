"""The cascade engine's USD for a model with no price: ``None`` (unknown), never $0, and so every sum it is in."""

from __future__ import annotations

import asyncio
import logging

import pytest

from frugal_chains import Price, Usage
from frugal_chains.accounting import PriceBook, SQLiteLedger
from frugal_chains.routing import Cascade, GateContext, GateResult, TierAnswer, TierSpec

MSGS = [{"role": "user", "content": "6 x 7?"}]
USAGE = Usage(input_tokens=1000, output_tokens=100)
SMALL, LARGE = "house-small-1", "house-large-1"  # in no price map
GPT = Price(input=2.5, output=10.0)


class Digit:
    """Passes answers with a digit; reports a call of its own (50 input tokens) on ``model`` (``None``: on the
    judged tier's model)."""

    name = "digit"
    needs_full_answer = True

    def __init__(self, model: str | None = None) -> None:
        self.model = model

    def check(self, ctx: GateContext) -> GateResult:
        passed = any(c.isdigit() for c in ctx.answer.text)
        return GateResult(gate=self.name, passed=passed, usage=Usage(input_tokens=50), model=self.model)

    async def acheck(self, ctx: GateContext) -> GateResult:
        return self.check(ctx)


def call(*texts: str):  # type: ignore[no-untyped-def]
    return lambda i: TierAnswer(text=texts[i], usage=USAGE)


def test_unpriced_tiers_have_no_usd_in_attempts_result_metadata_and_ledger() -> None:
    ledger = SQLiteLedger()
    engine = Cascade(
        [TierSpec(name="small", model=SMALL), TierSpec(name="large", model=LARGE)],
        gates=[Digit(SMALL)],
        ledger=ledger,
    )
    result = engine.run(MSGS, call("not sure", "42"))
    assert [a.outcome for a in result.attempts] == ["escalated", "accepted"]
    assert [a.cost_usd for a in result.attempts] == [None, None]
    assert result.cost_usd is None
    meta = result.metadata(engine.tier_names)
    assert meta["cost_usd"] is None and [a["cost_usd"] for a in meta["attempts"]] == [None, None]
    (record,) = ledger.records()
    assert record.outcome == "routed" and record.extra["cascade_cost_usd"] is None


def test_one_unpriced_part_makes_the_sum_unknown_not_a_partial_sum() -> None:
    engine = Cascade(
        [TierSpec(name="small", model=SMALL), TierSpec(name="big", model="gpt-4o", price=GPT)],
        gates=[Digit()],
    )
    result = asyncio.run(engine.arun(MSGS, lambda i: _async(TierAnswer(text=["x", "42"][i], usage=USAGE))))
    assert result.attempts[0].cost_usd is None
    assert result.attempts[1].cost_usd == pytest.approx(GPT.cost(USAGE))
    assert result.cost_usd is None


def test_an_unpriced_judge_makes_the_attempt_unknown() -> None:
    tiers = [TierSpec(name="a", model="a", price=GPT), TierSpec(name="b", model="b", price=GPT)]
    result = Cascade(tiers, gates=[Digit("house-judge-1")]).run(MSGS, call("no", "42"))
    assert result.attempts[0].cost_usd is None and result.attempts[1].cost_usd == pytest.approx(
        GPT.cost(USAGE)
    )
    priced = Cascade(tiers, gates=[Digit("house-judge-1")], prices={"house-judge-1": GPT})
    first = priced.run(MSGS, call("no", "42")).attempts[0]
    assert first.cost_usd == pytest.approx(GPT.cost(USAGE) + GPT.cost(Usage(input_tokens=50)))


def test_a_gate_call_without_a_model_is_priced_as_its_tier() -> None:
    tiers = [TierSpec(name="a", model=SMALL, price=GPT), TierSpec(name="b", model=LARGE, price=GPT)]
    first = Cascade(tiers, gates=[Digit(None)]).run(MSGS, call("no", "42")).attempts[0]
    assert first.cost_usd == pytest.approx(GPT.cost(USAGE) + GPT.cost(Usage(input_tokens=50)))


def test_a_tier_price_or_a_fallback_price_still_prices_an_unknown_model() -> None:
    bare = Cascade([TierSpec(name="s", model=SMALL), TierSpec(name="l", model=LARGE)])
    assert bare.run(MSGS, call("1", "2")).cost_usd is None  # without either: unknown
    spec = Cascade([TierSpec(name="s", model=SMALL, price=GPT), TierSpec(name="l", model=LARGE, price=GPT)])
    assert spec.run(MSGS, call("1", "2")).cost_usd == pytest.approx(GPT.cost(USAGE))
    fallback = Cascade(
        [TierSpec(name="s", model=SMALL), TierSpec(name="l", model=LARGE)],
        prices=PriceBook(unknown_model="warn", fallback_price=GPT),
    )
    assert fallback.cost(0, USAGE) == pytest.approx(GPT.cost(USAGE))
    assert fallback.run(MSGS, call("1", "2")).cost_usd == pytest.approx(GPT.cost(USAGE))


def test_no_usage_costs_nothing_and_no_warning_claims_zero(caplog: pytest.LogCaptureFixture) -> None:
    engine = Cascade([TierSpec(name="s", model=SMALL), TierSpec(name="l", model=LARGE)])
    assert engine.cost(0, None) == 0.0
    with caplog.at_level(logging.INFO):
        result = engine.run(
            MSGS, lambda i: TierAnswer(text="1")
        )  # no usage reported: nothing spent, nothing unknown
        assert result.cost_usd == 0.0
        assert engine.cost(0, USAGE) is None
    assert "$0" not in caplog.text


def test_cost_aware_routing_still_prices_unknown_tiers_at_the_fallback() -> None:
    from frugal_chains.routing import RoutingPolicy

    engine = Cascade(
        [TierSpec(name="s", model=SMALL), TierSpec(name="l", model=LARGE)],
        scorer=_Fixed(0.9),
        policy=RoutingPolicy(thresholds=(0.5,), cost_aware=True),
    )
    assert engine.tier_price(0) == Price(input=0.0, output=0.0)  # routing weighs prices, unchanged
    assert engine.route(MSGS).start in (0, 1)
    assert engine.cost(0, USAGE) is None  # what the call cost is still unknown


class _Fixed:
    name = "fixed"

    def __init__(self, value: float) -> None:
        self.value = value

    def score(self, messages: object) -> float:
        return self.value

    async def ascore(self, messages: object) -> float:
        return self.value


async def _async(answer: TierAnswer) -> TierAnswer:
    return answer
