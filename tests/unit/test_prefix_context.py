"""The request context block: rendered byte-stable, parsed back exactly."""

from __future__ import annotations

from frugal_chains.prefix import CONTEXT_HEADER, ContextValue, split_context_block
from frugal_chains.prefix.context import placeholder, render_context_block


def test_round_trip_with_awkward_values() -> None:
    values = [
        ContextValue("date", "2026-12-07", "date"),
        ContextValue("user_name", "Alice\nSmith", "name"),
        ContextValue("note", ' "quoted" ', "name"),
        ContextValue("request id", "req_8f3a9c2d1e", "request_id"),
    ]
    block = render_context_block(values)
    assert block.splitlines()[0] == CONTEXT_HEADER
    assert len(block.splitlines()) == 1 + len(values)  # one line per value
    text = "Stable instructions.\n\n" + block
    stable, parsed = split_context_block(text)
    assert stable == "Stable instructions."
    assert parsed == values


def test_block_in_front_of_a_turn_comes_out_exactly() -> None:
    block = render_context_block([ContextValue("email", "a@b.io", "email")])
    question = "Where is my order?\n"
    stable, parsed = split_context_block(block + "\n\n" + question)
    assert stable == question and parsed == [ContextValue("email", "a@b.io", "email")]


def test_same_values_same_bytes() -> None:
    a = render_context_block([ContextValue("date", "2026-12-07", "date")])
    b = render_context_block([ContextValue("date", "2026-12-07", "date")])
    assert a == b and render_context_block([]) == ""


def test_kinds_from_labels_and_values() -> None:
    block = "\n".join(
        [CONTEXT_HEADER, "- date 2: 2026-12-08", "- time: 10:00", "- request id: r1", "- today: 2026-01-01"]
    )
    _, parsed = split_context_block(block)
    assert [v.kind for v in parsed] == ["date", "time", "request_id", "date"]


def test_text_without_a_block_is_unchanged() -> None:
    text = "No block here.\n\n- date: not a block"
    assert split_context_block(text) == (text, [])
    mentioned = f"Quote: {CONTEXT_HEADER} inline"  # not at a line start: not a block
    assert split_context_block(mentioned) == (mentioned, [])
    block = render_context_block([ContextValue("date", "2026-12-07", "date")])
    assert split_context_block(mentioned + "\n\n" + block) == (
        mentioned,
        [ContextValue("date", "2026-12-07", "date")],
    )


def test_placeholder_is_stable() -> None:
    assert placeholder("date 2") == "[see request context: date 2]"


def test_records_take_the_spec_field_order() -> None:
    from frugal_chains.prefix import Breakpoint, ChurnSpan, DynamicSpan, PrefixReport

    assert Breakpoint(0, 1, False, 2048, "1h").where() == "message 0, part 1"
    assert ChurnSpan(0, "Bob", "Carol", 2).seen == 2
    assert DynamicSpan("date", "2026-12-07", "date", "detected", 0).label == "date"
    report = PrefixReport("openai", "gpt-4o", 2000, 1024)
    assert report.cacheable_share == 0.512 and report.to_dict()["model"] == "gpt-4o"
