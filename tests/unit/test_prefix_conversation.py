"""``cache_conversation=True``: one more marker closes the conversation so far (multi-turn chats, agent loops)."""

from __future__ import annotations

from typing import Any

import pytest

from frugal_chains import ConfigurationError
from frugal_chains.prefix import PrefixFormatter

POLICY = "You are Acme Air's agent. " + "Follow the booking policy to the letter. " * 200


def agent_turn() -> list[dict[str, Any]]:
    return [
        {"role": "system", "content": POLICY + " Today is 2026-12-07."},
        {"role": "user", "content": "Book me a flight to Oslo."},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "search", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "found 3 flights"},
    ]


def marks(plan: Any) -> list[tuple[int, int]]:
    found = []
    for i, m in enumerate(plan.messages):
        content = m.get("content")
        if isinstance(content, list):
            found += [(i, k) for k, p in enumerate(content) if isinstance(p, dict) and "cache_control" in p]
    return found


def test_off_by_default_and_on_it_closes_the_last_message_with_a_5_minute_marker() -> None:
    assert marks(PrefixFormatter(model="claude-sonnet-4-5").plan(agent_turn())) == [(0, 0)]
    plan = PrefixFormatter(model="claude-sonnet-4-5", cache_conversation=True).plan(agent_turn())
    assert marks(plan) == [(0, 0), (3, 0)]
    last = plan.messages[-1]
    assert last["tool_call_id"] == "c1" and last["content"][0]["text"] == "found 3 flights"
    assert last["content"][0]["cache_control"] == {"type": "ephemeral"}
    system_bp, conversation_bp = plan.report.breakpoints
    assert not system_bp.conversation and conversation_bp.conversation and conversation_bp.ttl == "5m"
    # the report's cacheable part is what a new conversation reuses: the stable prefix, not this history
    assert plan.report.cacheable_tokens == system_bp.prefix_tokens < conversation_bp.prefix_tokens


def test_the_next_turn_starts_with_the_bytes_the_marker_closed() -> None:
    fmt = PrefixFormatter(model="claude-sonnet-4-5", cache_conversation=True)
    first = fmt.plan(agent_turn())
    reply = {"role": "assistant", "content": "Flight AB12 at 9:00 suits you?"}
    second = fmt.plan([*agent_turn(), reply, {"role": "user", "content": "Yes, book it."}])
    # the second request's messages up to the first request's marked message are the same, marker aside

    def plain(m: dict[str, Any]) -> dict[str, Any]:
        content = m["content"]
        return (
            {**m, "content": content[0]["text"]} if m["role"] == "tool" and isinstance(content, list) else m
        )

    assert [plain(m) for m in first.messages] == [plain(m) for m in second.messages[:4]]
    assert marks(second)[-1] == (len(second.messages) - 1, 0)


def test_no_marker_without_an_assistant_turn_a_free_slot_or_the_minimum() -> None:
    fmt = PrefixFormatter(model="claude-sonnet-4-5", cache_conversation=True)
    assert marks(fmt.plan(agent_turn()[:2])) == [(0, 0)]  # a first question: nothing to reuse next turn
    short = [{"role": "system", "content": "Be brief."}, *agent_turn()[1:]]
    assert marks(fmt.plan(short)) == []  # below Sonnet's 1,024-token minimum
    crowded = agent_turn()
    crowded[1] = {
        "role": "user",
        "content": [
            {"type": "text", "text": f"part {i}", "cache_control": {"type": "ephemeral"}} for i in range(4)
        ],
    }
    plan = fmt.plan(crowded)
    assert len(plan.report.breakpoints) == 4 and not any(b.conversation for b in plan.report.breakpoints)
    assert all(mi != len(plan.messages) - 1 for mi, _ in marks(plan))


def test_planning_twice_adds_nothing_and_openai_gets_no_marker() -> None:
    fmt = PrefixFormatter(model="claude-sonnet-4-5", cache_conversation=True)
    plan = fmt.plan(agent_turn())
    assert fmt.plan(plan.messages).messages == plan.messages
    assert marks(PrefixFormatter(model="gpt-4o", cache_conversation=True).plan(agent_turn())) == []


def test_bad_value_names_the_field() -> None:
    with pytest.raises(ConfigurationError) as err:
        PrefixFormatter(model="claude-sonnet-4-5", cache_conversation="yes")  # type: ignore[arg-type]
    assert err.value.field == "cache_conversation"


def test_a_long_conversation_is_closed_even_when_the_preamble_is_below_the_minimum() -> None:
    history = [
        {"role": "system", "content": "You are Acme Air's agent."},
        {"role": "user", "content": "Summarise these rules. " + "Rule: bags up to 23 kg fly free. " * 600},
        {"role": "assistant", "content": "Bags up to 23 kg fly free."},
        {"role": "user", "content": "And for infants?"},
    ]
    plan = PrefixFormatter(model="claude-haiku-4-5", cache_conversation=True).plan(history)  # minimum 4,096
    assert [b.conversation for b in plan.report.breakpoints] == [True]
    assert plan.report.breakpoints[0].prefix_tokens >= 4096 and plan.report.cacheable_tokens == 0
    assert marks(plan) == [(3, 0)]


def test_no_conversation_marker_when_caching_is_not_worth_it() -> None:
    fmt = PrefixFormatter(model="claude-sonnet-4-5", cache_conversation=True, calls_per_hour=0.01)
    assert marks(fmt.plan(agent_turn())) == []
