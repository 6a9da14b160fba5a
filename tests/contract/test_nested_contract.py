"""Nested cascades: a cascade used as a tier of another one, on both wings and in every call mode.

An inner cascade whose every tier fails with an error that escalates (all rate-limited) raises
``CascadeExhaustedError``; for the outer cascade that is an escalating error like any other: it tries its next
tier. Each call is recorded once: the failed calls leave no spend (their reservations are released), the answering
tier one spend record, and each cascade one ``routed`` record of its own attempts.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Sequence

import pytest

from frugal_chains import SQLiteLedger
from frugal_chains.errors import CascadeExhaustedError
from frugal_chains.routing import QualityGate, RegexGate, RouterStats
from tests.contract.wings import (
    PRICES,
    LangChainWing,
    LlamaIndexWing,
    Observation,
    Script,
    Target,
    Wing,
    cheap,
    cost,
    pieces,
    routed_extra,
    strong,
)


class RateLimitError(Exception):
    """Named like the OpenAI / Anthropic SDKs' rate-limit error (escalates by its class name)."""


def rate_limited() -> BaseException:
    return RateLimitError("429 slow down")


def nested(
    wing: Wing,
    inner: Sequence[Script],
    rest: Sequence[Script],
    *,
    gates: Sequence[QualityGate] = (),
    escalate_on: Callable[[BaseException], bool] | None = None,
    inner_gates: Sequence[QualityGate] = (),
) -> tuple[Target, RouterStats]:
    """An outer cascade ``[inner cascade over inner, *rest]`` (tiers named ``inner``, then each model's name); both
    cascades write to one ledger. ``gates`` are the outer cascade's, ``inner_gates`` the inner's. Returns the target
    (the outer cascade) and the inner cascade's stats."""
    ledger, tally = SQLiteLedger(), collections.Counter[str]()
    inner_stats, outer_stats = RouterStats(), RouterStats()
    inner_names = [f"inner-{i}" for i in range(len(inner))]
    outer_names = ["inner", *(s.model for s in rest)]
    if isinstance(wing, LangChainWing):
        from frugal_chains.langchain import CascadeChatModel

        handler = wing._handler((), ledger)
        inner_model = CascadeChatModel(
            tiers=[wing._fake(s, tally) for s in inner],
            tier_names=inner_names,
            gates=list(inner_gates),
            stats=inner_stats,
            ledger=ledger,
            prices=PRICES,
            name="inner",
        )
        outer = CascadeChatModel(
            tiers=[inner_model, *(wing._fake(s, tally) for s in rest)],
            tier_names=outer_names,
            gates=list(gates),
            stats=outer_stats,
            ledger=ledger,
            prices=PRICES,
            escalate_on=escalate_on,
            name="outer",
        )
        return Target(wing, outer, handler, ledger, tally, outer_stats), inner_stats
    assert isinstance(wing, LlamaIndexWing)
    from frugal_chains.llama_index import CascadeLLM

    handler, manager = wing._manager((), ledger)
    inner_llm = CascadeLLM(
        tiers=[wing._fake(s, tally, manager) for s in inner],
        tier_names=inner_names,
        gates=list(inner_gates),
        stats=inner_stats,
        ledger=ledger,
        prices=PRICES,
        name="inner",
        callback_manager=manager,
    )
    outer_llm = CascadeLLM(
        tiers=[inner_llm, *(wing._fake(s, tally, manager) for s in rest)],
        tier_names=outer_names,
        gates=list(gates),
        stats=outer_stats,
        ledger=ledger,
        prices=PRICES,
        escalate_on=escalate_on,
        name="outer",
        callback_manager=manager,
    )
    return Target(wing, outer_llm, handler, ledger, tally, outer_stats, api=wing.api), inner_stats


def stats_of(stats: RouterStats) -> dict[str, tuple[int, int, int, int]]:
    return {n: (s.attempts, s.escalations, s.errors, s.accepted) for n, s in stats.snapshot().items()}


def check_strong_answer(obs: Observation, mode: str, s: Script) -> None:
    assert obs.error is None, repr(obs.error)
    assert obs.text == "It is 42 ."
    assert obs.chunks == (pieces("It is 42 .") if mode in ("stream", "astream") else [])
    assert obs.usage == (s.input_tokens, s.output_tokens)


@pytest.mark.parametrize("buffered", [False, True], ids=["no-gate", "regex-gate"])
def test_an_inner_cascade_exhausted_by_rate_limits_escalates_to_the_outer_next_tier(
    wing: Wing, mode: str, buffered: bool
) -> None:
    s = strong()
    target, inner_stats = nested(
        wing,
        [cheap(error=rate_limited), cheap(error=rate_limited)],
        [s],
        gates=[RegexGate(r"\d")] if buffered else [],
    )
    obs = target.ask(mode)
    check_strong_answer(obs, mode, s)
    assert obs.outcomes == ["error", "accepted"]
    assert obs.frugal is not None
    assert "CascadeExhaustedError" in obs.frugal["cascade"]["attempts"][0]["error"]
    assert obs.frugal["cascade"]["tier"] == "strong-1"
    # each provider call made once: both inner tiers, then the outer's strong tier
    assert obs.calls == {"cheap-1": 2, "strong-1": 1}
    # recorded once each: no spend for the failed calls, one spend record for the answer, one routed record per
    # cascade (the inner's written when it gave up, the outer's when it answered)
    spend = (
        "ok",
        "strong-1",
        "strong-1",
        s.input_tokens,
        s.output_tokens,
        round(cost("strong-1", s.input_tokens, s.output_tokens), 12),
        0.0,
    )
    assert obs.records == [
        ("routed", "cheap-1", "inner-1", 0, 0, 0.0, 0.0),
        spend,
        ("routed", "strong-1", "strong-1", 0, 0, 0.0, 0.0),
    ]
    inner_record, outer_record = routed_extra(target.ledger)
    assert inner_record["cascade"] == "inner" and outer_record["cascade"] == "outer"
    assert inner_record["attempts"] == [
        {"tier": "inner-0", "model": "cheap-1", "outcome": "error", "error": "RateLimitError"},
        {"tier": "inner-1", "model": "cheap-1", "outcome": "error", "error": "RateLimitError"},
    ]
    assert [(a["tier"], a["outcome"], a.get("error")) for a in outer_record["attempts"]] == [
        ("inner", "error", "CascadeExhaustedError"),
        ("strong-1", "accepted", None),
    ]
    assert stats_of(inner_stats) == {"inner-0": (1, 0, 1, 0), "inner-1": (1, 0, 1, 0)}
    assert target.tier_stats() == {"inner": (1, 0, 1, 0), "strong-1": (1, 0, 0, 1)}


def test_when_every_outer_tier_fails_the_outer_raises_with_the_inner_error_as_one_attempt(
    wing: Wing, mode: str
) -> None:
    c = cheap(error=rate_limited)
    target, _ = nested(wing, [c, c], [strong(error=rate_limited)], gates=[RegexGate(r"\d")])
    obs = target.ask(mode)
    assert isinstance(obs.error, CascadeExhaustedError)
    assert [(a.tier, a.outcome) for a in obs.error.attempts] == [("inner", "error"), ("strong-1", "error")]
    inner_error = obs.error.attempts[0].error
    assert isinstance(inner_error, CascadeExhaustedError)
    assert [(a.tier, type(a.error).__name__) for a in inner_error.attempts] == [
        ("inner-0", "RateLimitError"),
        ("inner-1", "RateLimitError"),
    ]
    assert obs.chunks == []
    assert obs.calls == {"cheap-1": 2, "strong-1": 1}
    # no spend (every reservation released), one routed record per cascade
    assert [(r[0], r[2]) for r in obs.records] == [("routed", "inner-1"), ("routed", "strong-1")]
    assert target.tier_stats() == {"inner": (1, 0, 1, 0), "strong-1": (1, 0, 1, 0)}


def test_an_inner_cascade_exhausted_by_errors_the_outer_does_not_escalate_on_is_raised(
    wing: Wing, mode: str
) -> None:
    """The outer cascade's ``escalate_on`` decides about the errors that exhausted the inner one."""
    target, _ = nested(
        wing,
        [cheap(error=rate_limited), cheap(error=lambda: TimeoutError("slow"))],
        [strong()],
        escalate_on=lambda e: isinstance(e, TimeoutError),
    )
    obs = target.ask(mode)
    assert isinstance(obs.error, CascadeExhaustedError)
    assert [a.tier for a in obs.error.attempts] == ["inner-0", "inner-1"]  # the inner's own error
    assert obs.calls == {"cheap-1": 2}  # the outer's strong tier is never tried
    assert target.tier_stats() == {}  # the outer recorded no attempt


def test_a_gated_inner_cascade_escalates_inside_and_the_answer_carries_the_outer_cascade_metadata(
    wing: Wing, mode: str
) -> None:
    """Both cascades gated: the inner one rejects its cheap answer and escalates to its strong tier, the outer one
    accepts the inner cascade's answer. In every mode (streams included: the inner cascade's stream ends with its
    own metadata, which the outer one's replaces) the answer carries the outer cascade's ``frugal["cascade"]``
    and the usage of both provider calls, each counted once."""
    c, s = cheap("I do not know ."), strong()
    target, inner_stats = nested(
        wing, [c, s], [strong("It is 43 .")], gates=[RegexGate(r"\d")], inner_gates=[RegexGate(r"\d")]
    )
    obs = target.ask(mode)
    assert obs.error is None, repr(obs.error)
    assert obs.text == "It is 42 ."
    assert obs.chunks == (pieces("It is 42 .") if mode in ("stream", "astream") else [])
    assert obs.frugal is not None
    cascade = obs.frugal["cascade"]
    assert (cascade["tier"], cascade["escalations"]) == ("inner", 0)  # the outer cascade's, not the inner's
    assert [(a["tier"], a["outcome"]) for a in cascade["attempts"]] == [("inner", "accepted")]
    both = (c.input_tokens + s.input_tokens, c.output_tokens + s.output_tokens)
    assert cascade["attempts"][0]["usage"] == {"input_tokens": both[0], "output_tokens": both[1]}
    assert obs.usage == both
    assert obs.calls == {"cheap-1": 1, "strong-1": 1}
    assert obs.spend == [
        ("ok", "cheap-1", "inner-0", c.input_tokens, c.output_tokens, round(cost("cheap-1", 10, 5), 12), 0.0),
        (
            "ok",
            "strong-1",
            "inner-1",
            s.input_tokens,
            s.output_tokens,
            round(cost("strong-1", 20, 8), 12),
            0.0,
        ),
    ]
    inner_record, outer_record = routed_extra(target.ledger)
    assert [(a["tier"], a["outcome"]) for a in inner_record["attempts"]] == [
        ("inner-0", "escalated"),
        ("inner-1", "accepted"),
    ]
    assert [(a["tier"], a["outcome"]) for a in outer_record["attempts"]] == [("inner", "accepted")]
    assert stats_of(inner_stats) == {"inner-0": (1, 1, 0, 0), "inner-1": (1, 0, 0, 1)}
    assert target.tier_stats() == {"inner": (1, 0, 0, 1)}
