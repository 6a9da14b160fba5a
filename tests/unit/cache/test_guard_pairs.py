"""The hit guard on hand-written development pairs (``tests/data/guard_pairs.jsonl``): every look-alike of the
audience / order / comparative / scope classes is rejected by its own class rule and by the whole default guard, and
every support-style paraphrase still passes the rules."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from frugal_chains.cache.guard import HitGuard
from frugal_chains.cache.guard.lexical import (
    WORD_CLASSES,
    _parse_word_classes,
    class_difference,
    class_values,
    parse_question,
)

PAIRS_FILE = Path(__file__).resolve().parents[2] / "data" / "guard_pairs.jsonl"
PAIRS: list[dict[str, Any]] = [
    json.loads(line) for line in PAIRS_FILE.read_text("utf-8").splitlines() if line
]
ADVERSARIAL = [p for p in PAIRS if not p["same"]]
PARAPHRASES = [p for p in PAIRS if p["same"]]
CLASS_FLAG = {"audience": "audience", "order": "order", "comparative": "comparatives", "scope": "scope"}
OTHER_RULES = dict.fromkeys(
    ("numbers", "dates", "units", "negation", "opposites", "entities", "direction", *CLASS_FLAG.values()),
    False,
)


def _id(p: dict[str, Any]) -> str:
    return f"{p['class']}: {p['a']} | {p['b']}"


def only(cls: str) -> HitGuard:
    """A guard with one word-class rule on and every other rule and the model off."""
    return HitGuard(model=False, **{**OTHER_RULES, CLASS_FLAG[cls]: True})


def test_the_development_set_covers_every_class() -> None:
    per_class = {c: sum(p["class"] == c for p in ADVERSARIAL) for c in WORD_CLASSES}
    assert set(p["class"] for p in ADVERSARIAL) == set(WORD_CLASSES)
    assert min(per_class.values()) >= 10, per_class
    assert len(PARAPHRASES) >= 40


@pytest.mark.parametrize("pair", ADVERSARIAL, ids=_id)
def test_each_look_alike_is_rejected_by_its_class_rule(pair: dict[str, Any]) -> None:
    for query, cached in ((pair["b"], pair["a"]), (pair["a"], pair["b"])):
        verdict = only(pair["class"]).check_rules(query, cached)
        assert not verdict.ok and verdict.reason is not None
        assert verdict.reason.startswith(f"{pair['class']}:"), verdict.reason


@pytest.mark.parametrize("pair", ADVERSARIAL, ids=_id)
def test_each_look_alike_is_rejected_by_the_default_guard_even_at_high_similarity(
    pair: dict[str, Any],
) -> None:
    guard = HitGuard()
    assert not guard.check(pair["b"], pair["a"], similarity=0.99).ok
    assert not guard.check(pair["a"], pair["b"], similarity=0.99).ok


@pytest.mark.parametrize("pair", PARAPHRASES, ids=_id)
def test_each_support_paraphrase_passes_the_rules(pair: dict[str, Any]) -> None:
    # Every one of them passed the rules before the word classes existed too: the classes lose none.
    rules = HitGuard(model=False)
    assert rules.check_rules(pair["b"], pair["a"]).ok, rules.check_rules(pair["b"], pair["a"])
    assert rules.check_rules(pair["a"], pair["b"]).ok


@pytest.mark.parametrize(
    ("a", "b", "similarity", "reason"),
    [
        (
            "What is the maximum daily dose of paracetamol for children?",
            "What is the maximum daily dose of paracetamol for adults?",
            0.927,
            "audience: child/adult",
        ),
        ("sort ascending", "sort descending", 0.946, "order: ascending/descending"),
    ],
)
def test_the_reported_wrong_hits_are_rejected_at_their_measured_similarity(
    a: str, b: str, similarity: float, reason: str
) -> None:
    assert HitGuard().check(a, b, similarity=similarity).reason == reason


def test_each_class_can_be_switched_off() -> None:
    children = "What is the maximum daily dose of paracetamol for children?"
    adults = "What is the maximum daily dose of paracetamol for adults?"
    assert HitGuard(model=False, audience=False).check_rules(children, adults).ok
    assert HitGuard(model=False, order=False).check_rules("sort ascending", "sort descending").ok
    assert (
        HitGuard(model=False, comparatives=False)
        .check_rules("Which plan is cheaper?", "Which plan is pricier?")
        .ok
    )
    assert HitGuard(model=False, scope=False).check_rules("Is it free online?", "Is it free in store?").ok
    assert "audience" in repr(HitGuard()) and "audience" not in repr(HitGuard(audience=False))


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        # one-sided groups: an age or pregnancy audience, domestic / international
        ("Ibuprofen dose for kids?", "Ibuprofen dose?", "audience: child/-"),
        ("Can I take aspirin while pregnant?", "Can I take aspirin?", "audience: pregnant/-"),
        (
            "How long does shipping take?",
            "How long does international shipping take?",
            "scope: -/international",
        ),
        # two-sided groups stay quiet when only one side names a value
        ("What is the best way to learn Python?", "How do I learn Python?", None),
        ("How do I buy gift cards online?", "How do I buy gift cards?", None),
        # a side naming one more value is not a swap
        ("What are the best and worst phones?", "What are the worst phones?", None),
        # same value, other words: the longest phrase wins ("more expensive" is not "more")
        ("Which option is more expensive?", "Which option is pricier?", None),
        ("How do I sort alphabetically?", "How do I sort in reverse order?", "order: ascending/descending"),
        # roles named in the other order
        (
            "What if the guest cancels on the host?",
            "What if the host cancels on the guest?",
            "audience: guest,host/host,guest",
        ),
        # phrases that shadow their words
        ("How do I top up my card?", "Why is the bottom of the card bent?", None),
        ("How do I contact customer service?", "How do I contact the merchant?", None),
    ],
)
def test_class_difference(a: str, b: str, expected: str | None) -> None:
    assert class_difference(parse_question(a), parse_question(b), set(WORD_CLASSES)) == expected


def test_class_values_reads_phrases() -> None:
    assert class_values("Can I pick it up in store or online?") == {
        "scope channel": frozenset({"in store", "online"})
    }
    assert class_values("Is there a free tier?") == {"scope tier": frozenset({"free"})}
    assert class_values("What is the weather like?") == {}


def test_the_word_class_file_is_checked() -> None:
    with pytest.raises(ValueError, match="listed twice"):
        _parse_word_classes("[order a]\nup: up\ndown: up\n")
    with pytest.raises(ValueError, match="bad group header"):
        _parse_word_classes("[colour a]\nred: red\n")
    with pytest.raises(ValueError, match="under a"):
        _parse_word_classes("red: red\n")
    table = _parse_word_classes("# note\n[scope a one-sided]\nx: foo bar, baz\n-: foo bar qux\n")
    assert table.groups[0].one_sided and table.longest == 3 and table.phrases[("foo", "bar", "qux")] is None
