"""Dynamic-span detectors: dates, times, ids, emails; one span per datetime; linear time on hostile input."""

from __future__ import annotations

import pytest

from frugal_chains import ConfigurationError
from frugal_chains.prefix import DEFAULT_DETECTORS, find_dynamic_spans
from frugal_chains.prefix.spans import classify_value


def spans(text: str, detect: tuple[str, ...] = DEFAULT_DETECTORS) -> list[tuple[str, str]]:
    return [(s.kind, s.text) for s in find_dynamic_spans(text, detect)]


@pytest.mark.parametrize(
    "value",
    [
        "2026-12-07",
        "2026/12/07",
        "December 7, 2026",
        "Dec 7 2026",
        "Dec. 7th, 2026",
        "7 Dec 2026",
        "7th of December, 2026",
        "12/07/2026",
        "07.12.2026",
        "12/07/26",
        "Monday, December 7, 2026",
        "Mon, 7 Dec 2026",
    ],
)
def test_dates_in_many_formats(value: str) -> None:
    assert spans(f"Today is {value}. Be kind.") == [("date", value)]


@pytest.mark.parametrize(
    "value",
    [
        "2024-05-15 15:00:00 EST",
        "2026-12-07T14:32:00Z",
        "2026-12-07T14:32:00.123+01:00",
        "December 7, 2026 at 2:30 PM",
        "7 Dec 2026, 14:32 UTC",
    ],
)
def test_a_date_with_its_time_is_one_span(value: str) -> None:
    assert spans(f"The current time is {value}.") == [("date", value)]


@pytest.mark.parametrize(
    "value", ["14:32", "14:32:05", "2:30 PM", "2 pm", "3 p.m.", "09:00 UTC", "9:15 -05:00"]
)
def test_times(value: str) -> None:
    assert spans(f"It is {value} now.") == [("time", value)]


def test_ids_and_emails() -> None:
    text = (
        "Request req_8f3a9c2d1e, trace-4bf92f3577b34da6, session 123e4567-e89b-12d3-a456-426614174000, "
        "token a8f3e9b2c4d1f0e7, write to ops.team+bot@example.co.uk."
    )
    assert spans(text) == [
        ("request_id", "req_8f3a9c2d1e"),
        ("request_id", "trace-4bf92f3577b34da6"),
        ("uuid", "123e4567-e89b-12d3-a456-426614174000"),
        ("request_id", "a8f3e9b2c4d1f0e7"),
        ("email", "ops.team+bot@example.co.uk"),
    ]


@pytest.mark.parametrize(
    "text",
    [
        "Use version 2.5.1 of the API.",
        "Refunds within 30 days; up to 100 USD.",
        "Our 2024 policy applies to internationalization.",  # a year alone, a long word
        "Call gpt-4o-mini for summaries.",
        "Customer support is open on weekdays.",
        "Ratio 1:2 in the recipe.",
        "Return base64encoded data in iso8601format.",
    ],
)
def test_stable_text_has_no_spans(text: str) -> None:
    assert spans(text) == []


@pytest.mark.parametrize("value", ["ORD1234567890", "20240515150000", "a8f3e9b2c4d1", "7Fq2xP9kL3mZ"])
def test_bare_ids(value: str) -> None:
    assert spans(f"Order {value} is open.") == [("request_id", value)]


def test_detectors_can_be_chosen() -> None:
    text = "On 2026-12-07 write to a@b.io"
    assert spans(text, ("email",)) == [("email", "a@b.io")]
    assert spans(text, ()) == []
    with pytest.raises(ConfigurationError) as err:
        find_dynamic_spans(text, ("dates",))
    assert err.value.field == "detect"


def test_spans_do_not_overlap_and_carry_offsets() -> None:
    text = "Mail alice@example.com on 2026-12-07 at 10:00."
    found = find_dynamic_spans(text)
    assert [text[s.start : s.end] for s in found] == [s.text for s in found]
    assert [s.kind for s in found] == ["email", "date"]


def test_linear_time_on_hostile_input() -> None:
    # long runs that almost match: each detector must scan them once (no quadratic backtracking)
    hostile = "a" * 200_000 + " " + "1" * 100_000 + " " + "x.x" * 50_000 + " " + "12:" * 50_000
    assert isinstance(find_dynamic_spans(hostile), list)


def test_classify_value() -> None:
    assert classify_value("2026-12-07") == "date"
    assert classify_value("14:32") == "time"
    assert classify_value("Alice Smith") == "name"
    assert classify_value("bob@example.com") == "email"
