"""HitGuard rules, the pair model, bypass policies and verifiers."""

from __future__ import annotations

import pytest

from frugal_chains.cache.guard import (
    DEFAULT_THRESHOLD,
    FEATURE_NAMES,
    BypassPolicy,
    CallableVerifier,
    GuardVerdict,
    HitGuard,
    PairModel,
    Verifier,
    bypass_reason,
    pair_features,
)
from frugal_chains.errors import ConfigurationError

RULES = HitGuard(model=False)


@pytest.mark.parametrize(
    ("a", "b", "reason_prefix"),
    [
        ("How do I enable 2FA?", "How do I disable 2FA?", "opposite"),
        ("How do I buy bitcoin?", "How do I sell bitcoin?", "opposite"),
        ("Is it legal to record a call?", "Is it illegal to record a call?", "opposite"),
        ("How to increase my credit limit", "How to decrease my credit limit", "opposite"),
        ("Who is the CEO of Apple?", "Who is the CEO of Google?", "entity"),
        ("Is Python faster than Java?", "Is Rust faster than Java?", "entity"),
        ("Convert 5 km to miles", "Convert 10 km to miles", "number"),
        ("What is 1,000 times 3?", "What is 1,000 times 4?", "number"),
        ("How do I lose two kilos?", "How do I lose three kilos?", "number"),
        ("What happened in March 2020?", "What happened in April 2020?", "date"),
        ("What is on TV on Monday?", "What is on TV on Friday?", "date"),
        ("How far is 10 km?", "How far is 10 miles?", "unit"),
        ("Convert $50 to yen", "Convert €50 to yen", "unit"),
        ("Is coffee bad for you?", "Is coffee not bad for you?", "negation"),
        ("Why can't I sleep at night?", "Why can I sleep at night?", "negation"),
        ("Flights from Paris to London", "Flights from London to Paris", "direction"),
    ],
)
def test_rules_reject_answer_changing_differences(a: str, b: str, reason_prefix: str) -> None:
    for x, y in ((a, b), (b, a)):
        verdict = RULES.check(x, y)
        assert not verdict.ok
        assert verdict.reason is not None and verdict.reason.startswith(reason_prefix)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("What is your return policy?", "How do I return an item?"),
        ("How can I reset my password?", "how do i reset my password"),
        ("What is the capital of France?", "What's the capital city of France?"),
        ("How do I lose weight fast?", "What is the fastest way to lose weight?"),
        ("Convert 1,000 dollars to euros", "convert 1000 USD to EUR"),
        ("Who is the CEO of Apple?", "who's the ceo of apple inc"),
        ("Why can't I sleep?", "Why am I not able to sleep?"),
    ],
)
def test_paraphrases_pass(a: str, b: str) -> None:
    assert HitGuard().check(a, b, similarity=0.9).ok, HitGuard().check(a, b, similarity=0.9)
    assert RULES.check(b, a).ok


def test_identical_text_always_passes() -> None:
    assert HitGuard().check("Is 17 prime?", "Is 17 prime?", similarity=1.0) == GuardVerdict(ok=True)


def test_rules_can_be_switched_off() -> None:
    assert HitGuard(model=False, opposites=False).check("enable 2FA", "disable 2FA").ok
    assert HitGuard(model=False, numbers=False).check("Convert 5 km", "Convert 10 km").ok
    assert HitGuard(model=False, negation=False).check("Is it safe?", "Is it not safe?").ok


def test_model_rejects_low_probability_and_needs_similarity() -> None:
    strict = HitGuard(model_cutoff=1.0)
    a, b = "How do I learn Python?", "What is the best way to learn Python programming?"
    assert strict.check(a, b, similarity=0.9).reason is not None
    assert strict.check(a, b, similarity=0.9).reason.startswith("model")  # type: ignore[union-attr]
    # without a similarity only the rules run
    assert strict.check(a, b).ok
    lax = HitGuard(model_cutoff=0.0)
    assert lax.check(a, b, similarity=0.9).ok


def test_model_probability_rises_with_similarity() -> None:
    m = PairModel.default()
    a, b = "How do I get a refund?", "How can I request a refund for my purchase?"
    assert m.score(a, b, 0.95) > m.score(a, b, 0.75)
    assert len(pair_features(a, b, 0.9)) == len(FEATURE_NAMES)


def test_pair_model_json_round_trip_and_errors() -> None:
    m = PairModel.default()
    again = PairModel.from_json(m.to_json())
    assert again.weights == m.weights and again.cutoff == m.cutoff
    with pytest.raises(ConfigurationError) as e:
        PairModel.from_json("{not json")
    assert e.value.field == "model"
    with pytest.raises(ConfigurationError):
        PairModel.from_json('{"features": ["x"], "weights": [1], "bias": 0, "mean": [0], "scale": [1]}')
    with pytest.raises(ConfigurationError) as e:
        PairModel(weights=(1.0,), bias=0.0, mean=(0.0,), scale=(1.0,))
    assert e.value.field == "weights"


def test_bad_guard_arguments() -> None:
    with pytest.raises(ConfigurationError) as e:
        HitGuard(model="yes")  # type: ignore[arg-type]
    assert e.value.field == "model"
    with pytest.raises(ConfigurationError) as e:
        HitGuard(model_cutoff=2.0)
    assert e.value.field == "model_cutoff"


def test_default_threshold_is_a_similarity() -> None:
    assert 0.5 < DEFAULT_THRESHOLD < 1.0


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("What is the weather today?", "time-sensitive"),
        ("What is the latest iPhone?", "time-sensitive"),
        ("Who is the current president of France?", "time-sensitive"),
        ("What is the bitcoin price right now?", "time-sensitive"),
        ("Where is my order?", "user-specific"),
        ("What is my account balance?", "user-specific"),
        ("Why was my card declined?", "user-specific"),
        ("Translate this into French", "context-dependent"),
        ("What is the song in this video?", "context-dependent"),
        ("Can you fix this code?", "context-dependent"),
        ("Summarize the above in two lines", "context-dependent"),
        ("What does this mean?", "context-dependent"),
    ],
)
def test_bypass_reasons(text: str, reason: str) -> None:
    assert bypass_reason(text) == reason


@pytest.mark.parametrize(
    "text",
    [
        "How do I learn Python?",
        "What is the capital of France?",
        "How do I return an item?",
        "Why is the sky blue?",
    ],
)
def test_no_bypass_for_ordinary_questions(text: str) -> None:
    assert bypass_reason(text) is None


def test_bypass_policy_is_configurable() -> None:
    faq = BypassPolicy(user_specific=False)
    assert faq.reason("Why was my card declined?") is None
    assert faq.reason("What is the exchange rate today?") == "time-sensitive"
    assert bypass_reason("Why was my card declined?", faq) is None
    assert BypassPolicy(context_dependent=False).reason("Translate this into French") is None
    assert BypassPolicy(time_sensitive=False).reason("What is the latest iPhone?") is None


def test_callable_verifier_sync_and_protocol() -> None:
    v = CallableVerifier(lambda q, c, s: s >= 0.95)
    assert isinstance(v, Verifier)
    assert v.verify("a", "b", 0.97) and not v.verify("a", "b", 0.9)
    with pytest.raises(ConfigurationError) as e:
        CallableVerifier("nope")  # type: ignore[arg-type]
    assert e.value.field == "fn"


async def test_callable_verifier_async() -> None:
    seen: list[str] = []

    async def judge(q: str, c: str, s: float) -> bool:
        seen.append(q)
        return q.lower() == c.lower()

    v = CallableVerifier(lambda q, c, s: False, judge)
    assert await v.averify("Hi", "hi", 0.99)
    assert seen == ["Hi"]
    # without an async function the sync one runs in a thread
    assert not await CallableVerifier(lambda q, c, s: False).averify("a", "a", 1.0)
