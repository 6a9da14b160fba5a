"""The cascade contract: ``CascadeChatModel`` and ``CascadeLLM`` make the same decisions and leave the same records.

Every scenario runs on each wing in each call mode (invoke, async invoke, stream, async stream) with a budget
handler attached the host's way, and is checked against one set of expected values: the answer, the streamed
chunks, the attempt outcomes in ``frugal["cascade"]``, the summed usage, the provider calls, the ledger's spend
records (tier in ``CallRecord.tier``) and ``routed`` record, and the ``RouterStats`` counters.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from frugal_chains.errors import CascadeExhaustedError
from frugal_chains.routing import (
    CallableGate,
    GateContext,
    GateResult,
    JsonGate,
    LengthGate,
    LLMJudgeGate,
    LogprobGate,
    RefusalGate,
    RegexGate,
    SelfConsistencyGate,
)
from tests.contract.wings import Observation, Script, Wing, cheap, cost, judge, pieces, routed_extra, strong

STREAMS = ("stream", "astream")


class RateLimitError(Exception):
    """Named like the OpenAI / Anthropic SDKs' rate-limit error (escalates by its class name)."""


def ok(script: Script, tier: str | None, times: int = 1) -> list[tuple[Any, ...]]:
    """The spend record(s) of ``times`` calls of ``script`` recorded under ``tier``."""
    row = (
        "ok",
        script.model,
        tier,
        script.input_tokens,
        script.output_tokens,
        round(cost(script.model, script.input_tokens, script.output_tokens), 12),
        0.0,
    )
    return [row] * times


def routed(tier: str) -> tuple[Any, ...]:
    return ("routed", tier, tier, 0, 0, 0.0, 0.0)


def check_answer(obs: Observation, mode: str, text: str) -> None:
    """The answer, and for streams the chunks shown: the answering tier's own pieces, nothing else."""
    assert obs.error is None, repr(obs.error)
    assert obs.text == text
    if mode in STREAMS:
        assert obs.chunks == pieces(text)
    else:
        assert obs.chunks == []


# -- accepted on the cheap tier -----------------------------------------------------------------------------------
def test_a_passing_answer_is_accepted_on_the_cheap_tier(wing: Wing, mode: str) -> None:
    c, s = cheap("It is 42 ."), strong("Forty-two.")
    target = wing.cascade([c, s], gates=[RegexGate(r"\d")])
    obs = target.ask(mode)
    check_answer(obs, mode, "It is 42 .")
    assert obs.outcomes == ["accepted"]
    assert obs.frugal is not None and obs.frugal["cascade"]["tier"] == "cheap-1"
    assert obs.frugal["cascade"]["escalations"] == 0
    assert obs.calls == {"cheap-1": 1}
    assert obs.usage == (10, 5)
    assert obs.records == [*ok(c, "cheap-1"), routed("cheap-1")]
    assert target.tier_stats() == {"cheap-1": (1, 0, 0, 1)}


def test_without_a_full_answer_gate_the_cheap_tier_streams_live_and_ungated(wing: Wing, mode: str) -> None:
    class StreamSafe:
        name = "stream_safe"
        needs_full_answer = False

        def check(self, ctx: GateContext) -> GateResult:
            return GateResult(gate=self.name, passed="42" in ctx.answer.text)

        async def acheck(self, ctx: GateContext) -> GateResult:
            return self.check(ctx)

    c, s = cheap("I am not sure ."), strong()
    obs = wing.cascade([c, s], gates=[StreamSafe()]).ask(mode)
    if mode in STREAMS:  # live: the chosen tier's answer is shown as it comes, so it is not gated
        check_answer(obs, mode, "I am not sure .")
        assert obs.outcomes == ["accepted"] and obs.calls == {"cheap-1": 1}
    else:
        check_answer(obs, mode, "It is 42 .")
        assert obs.outcomes == ["escalated", "accepted"]


# -- escalation on each gate kind --------------------------------------------------------------------------------
GateCase = tuple[list[Any], Script, Script, int, Script | None, str]
"""gates (a function of the wing's judge model for the judge gate), cheap, strong, cheap calls, judge, gate name"""

GATE_CASES: dict[str, GateCase] = {
    "regex": ([RegexGate(r"\d")], cheap("I am not sure ."), strong(), 1, None, "regex"),
    "refusal": ([RefusalGate()], cheap("Sorry, I can't help with that."), strong(), 1, None, "refusal"),
    "length": ([LengthGate(min_chars=5)], cheap("42"), strong(), 1, None, "length"),
    "json": ([JsonGate()], cheap("not json at all"), strong('{"answer": 42}'), 1, None, "json"),
    "logprob": (
        [LogprobGate(min_mean_prob=0.7)],
        cheap("It is 42 .", logprobs=(-3.0, -2.5, -2.0)),
        strong(),
        1,
        None,
        "logprob",
    ),
    "self_consistency": (
        [SelfConsistencyGate(n=3)],
        cheap("#### 18", "#### 20", "#### 21"),
        strong("#### 18"),
        3,
        None,
        "self_consistency",
    ),
    "judge": ([lambda model: LLMJudgeGate(model)], cheap("It is 42 ."), strong(), 1, judge(), "judge"),
    "callable": (
        [CallableGate(lambda ctx: "42" in ctx.answer.text, name="says_42")],
        cheap("I am not sure ."),
        strong(),
        1,
        None,
        "says_42",
    ),
}


@pytest.mark.parametrize("case", list(GATE_CASES), ids=list(GATE_CASES))
def test_a_failed_gate_escalates(wing: Wing, mode: str, case: str) -> None:
    gates, c, s, cheap_calls, j, gate = GATE_CASES[case]
    target = wing.cascade([c, s], gates=gates, judge=j)
    obs = target.ask(mode)
    # buffered: the cheap tier's rejected answer is never shown, only the strong tier's chunks
    check_answer(obs, mode, s.answers[0])
    assert obs.outcomes == ["escalated", "accepted"]
    assert obs.frugal is not None
    info = obs.frugal["cascade"]
    assert (info["tier"], info["start_tier"], info["escalations"]) == ("strong-1", "cheap-1", 1)
    assert [g["gate"] for g in info["attempts"][0]["gates"]][-1] == gate
    assert not info["attempts"][0]["gates"][-1]["passed"]
    calls = {"cheap-1": cheap_calls, "strong-1": 1}
    judged = 0
    if j is not None:
        calls["judge-1"] = 1
        judged = 1
    assert obs.calls == calls
    # every provider call once, under its tier (the judge's call is checked in the judge test below)
    spend = [r for r in obs.spend if r[1] != "judge-1"]
    assert spend == [*ok(c, "cheap-1", cheap_calls), *ok(s, "strong-1")]
    assert len(obs.spend) == len(spend) + judged
    assert obs.routed == [routed("strong-1")]
    # the summed usage and cost: every call the cascade made (samples and the judge's call included)
    spent = obs.spend
    assert obs.usage == (sum(r[3] for r in spent), sum(r[4] for r in spent))
    assert info["cost_usd"] == pytest.approx(sum(r[5] for r in spent))
    assert routed_extra(target.ledger)[0]["attempts"] == [
        {"tier": "cheap-1", "model": "cheap-1", "outcome": "escalated", "gate": gate},
        {"tier": "strong-1", "model": "strong-1", "outcome": "accepted"},
    ]
    assert target.tier_stats() == {"cheap-1": (1, 1, 0, 0), "strong-1": (1, 0, 0, 1)}


def test_a_judges_call_is_spent_under_the_tier_it_judges(wing: Wing, mode: str) -> None:
    j = judge()
    obs = wing.cascade([cheap(), strong()], gates=[lambda model: LLMJudgeGate(model)], judge=j).ask(mode)
    assert obs.error is None
    assert [r for r in obs.spend if r[1] == "judge-1"] == ok(j, "cheap-1")


# -- provider errors ---------------------------------------------------------------------------------------------
ESCALATING: dict[str, Callable[[], BaseException]] = {
    "TimeoutError": lambda: TimeoutError("read timeout"),
    "ConnectionError": lambda: ConnectionError("connection reset"),
    "RateLimitError": lambda: RateLimitError("429 slow down"),
}


@pytest.mark.parametrize("buffered", [False, True], ids=["no-gate", "regex-gate"])
@pytest.mark.parametrize("error", list(ESCALATING), ids=list(ESCALATING))
def test_a_provider_error_escalates(wing: Wing, mode: str, error: str, buffered: bool) -> None:
    c, s = cheap(error=ESCALATING[error]), strong()
    target = wing.cascade([c, s], gates=[RegexGate(r"\d")] if buffered else [])
    obs = target.ask(mode)
    check_answer(obs, mode, "It is 42 .")
    assert obs.outcomes == ["error", "accepted"]
    assert obs.frugal is not None and error in obs.frugal["cascade"]["attempts"][0]["error"]
    assert obs.calls == {"cheap-1": 1, "strong-1": 1}
    assert obs.usage == (20, 8)
    # the failed call was released (no spend record), the strong one committed under its tier
    assert obs.records == [*ok(s, "strong-1"), routed("strong-1")]
    assert routed_extra(target.ledger)[0]["attempts"] == [
        {"tier": "cheap-1", "model": "cheap-1", "outcome": "error", "error": error},
        {"tier": "strong-1", "model": "strong-1", "outcome": "accepted"},
    ]
    assert target.tier_stats() == {"cheap-1": (1, 0, 1, 0), "strong-1": (1, 0, 0, 1)}


@pytest.mark.parametrize("buffered", [False, True], ids=["no-gate", "regex-gate"])
def test_an_error_that_does_not_escalate_is_raised_and_no_attempt_is_recorded(
    wing: Wing, mode: str, buffered: bool
) -> None:
    """The drift this pins: LlamaIndex ``stream_complete``/``stream_chat`` once recorded a bug as an attempt."""
    target = wing.cascade(
        [cheap(error=lambda: ValueError("bug")), strong()], gates=[RegexGate(r"\d")] if buffered else []
    )
    obs = target.ask(mode)
    assert type(obs.error) is ValueError and str(obs.error) == "bug"
    assert obs.calls == {"cheap-1": 1}  # the strong tier is never tried
    assert obs.records == []  # no routed record, no spend
    assert target.tier_stats() == {}  # no attempt counted for any tier


def test_an_error_that_does_not_escalate_after_an_escalation_keeps_only_the_real_attempt(
    wing: Wing, mode: str
) -> None:
    c = cheap("I am not sure .")
    target = wing.cascade([c, strong(error=lambda: ValueError("bug"))], gates=[RegexGate(r"\d")])
    obs = target.ask(mode)
    assert type(obs.error) is ValueError
    assert obs.calls == {"cheap-1": 1, "strong-1": 1}
    assert obs.records == [*ok(c, "cheap-1"), routed("cheap-1")]
    assert [a["outcome"] for a in routed_extra(target.ledger)[0]["attempts"]] == ["escalated"]
    assert target.tier_stats() == {"cheap-1": (1, 1, 0, 0)}


def test_every_tier_erroring_raises_cascade_exhausted_with_every_attempt(wing: Wing, mode: str) -> None:
    target = wing.cascade(
        [cheap(error=ESCALATING["RateLimitError"]), strong(error=ESCALATING["TimeoutError"])],
        gates=[RegexGate(r"\d")],
    )
    obs = target.ask(mode)
    assert isinstance(obs.error, CascadeExhaustedError)
    assert [(a.tier, a.outcome, type(a.error).__name__) for a in obs.error.attempts] == [
        ("cheap-1", "error", "RateLimitError"),
        ("strong-1", "error", "TimeoutError"),
    ]
    assert obs.chunks == []
    assert obs.calls == {"cheap-1": 1, "strong-1": 1}
    assert obs.records == [routed("strong-1")]  # both reservations released, the routing recorded
    assert target.tier_stats() == {"cheap-1": (1, 0, 1, 0), "strong-1": (1, 0, 1, 0)}
