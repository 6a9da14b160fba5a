"""normalize(): the exact key and the embedded text."""

from __future__ import annotations

import pytest

from frugal_chains.cache.normalize import normalize, volatile_spans


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  What  is the \uff23\uff25\uff2f of Apple?? ", "what is the ceo of apple"),
        ("How do I\u00a0reset\tmy password?!", "how do i reset my password"),
        ("Straße", "strasse"),
        ("Why?!…", "why"),
        ("", ""),
        ("   ?? ", ""),
    ],
)
def test_folding_whitespace_and_trailing_punctuation(raw: str, expected: str) -> None:
    assert normalize(raw) == expected


def test_volatile_spans_become_placeholders() -> None:
    a = normalize("Summarise ticket 3f2a9c1e-8b7d-4c2e-9f1a-0b1c2d3e4f5a sent 2024-05-01T10:22:33Z")
    b = normalize("Summarise ticket 0b1c2d3e-0000-4c2e-9f1a-3f2a9c1e8b7d sent 2025-01-07 08:00:01")
    assert a == b == "summarise ticket <id> sent <ts>"
    assert normalize("request deadbeefcafe12345678 failed") == "request <id> failed"
    assert normalize("order 12345678901 at 10:22:33") == "order <id> at <ts>"


def test_numbers_that_decide_the_answer_are_kept() -> None:
    assert normalize("Is 17 prime?") != normalize("Is 19 prime?")
    assert normalize("What happened on 2001-09-11?") == "what happened on 2001-09-11"
    assert normalize("Convert 1,000,000 USD to EUR") == "convert 1,000,000 usd to eur"
    assert normalize("What is 5:30 in 24h time") == "what is 5:30 in 24h time"
    # a short hex-looking word is not an id
    assert normalize("What is a deadbeef value") == "what is a deadbeef value"


def test_mask_volatile_off_keeps_everything() -> None:
    assert normalize("at 2024-05-01T10:00:00Z", mask_volatile=False) == "at 2024-05-01t10:00:00z"


def test_volatile_spans_lists_what_is_replaced() -> None:
    assert volatile_spans("id 3f2a9c1e-8b7d-4c2e-9f1a-0b1c2d3e4f5a, no others") == [
        "3f2a9c1e-8b7d-4c2e-9f1a-0b1c2d3e4f5a"
    ]
    assert volatile_spans("How are you?") == []
