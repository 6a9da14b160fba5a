"""The prefix planner: a byte-stable prefix, every moved value still in the request, valid breakpoints."""

from __future__ import annotations

import copy
import json
import threading
from typing import Any

import pytest

from frugal_chains import ConfigurationError, Price, PriceBook
from frugal_chains.prefix import (
    CONTEXT_HEADER,
    PrefixFormatter,
    PrefixPlan,
    ProviderRules,
    split_context_block,
)

POLICY = "".join(f"Rule {i}: answer politely and follow the refund policy section {i}. " for i in range(120))
"""A stable system prompt of about 2,000 tokens."""


def system(date: str = "2026-12-07", rid: str = "req_8f3a9c2d1e77", email: str = "alice@example.com") -> str:
    return f"{POLICY}\nToday is {date}. Request id: {rid}. Reply-to: {email}."


def conversation(question: str = "Where is my parcel?") -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": question},
    ]


def stable_text(plan: PrefixPlan) -> str:
    content = plan.messages[0]["content"]
    if isinstance(content, str):
        return split_context_block(content)[0]
    return "".join(p["text"] for p in content if not p["text"].startswith(CONTEXT_HEADER))


def request_text(plan: PrefixPlan) -> str:
    return json.dumps(plan.messages, ensure_ascii=False)


def markers(plan: PrefixPlan) -> list[Any]:
    found = [t["cache_control"] for t in plan.tools or [] if "cache_control" in t]
    for m in plan.messages:
        if isinstance(m.get("content"), list):
            found += [p["cache_control"] for p in m["content"] if "cache_control" in p]
    return found


CALLS = [
    ("2026-12-07", "req_8f3a9c2d1e77", "alice@example.com", "Where is my parcel?"),
    ("December 8, 2026", "req_00aa11bb22cc", "bob@example.org", "Can I get a refund?"),
    ("09/12/2026", "req_ffee99887766", "carol@example.net", "Change my address."),
]


@pytest.mark.parametrize("model", ["claude-sonnet-4-5", "gpt-4o", "gemini-2.5-flash", "hosted_vllm/llama"])
def test_stable_prefix_is_byte_identical_and_values_travel(model: str) -> None:
    fmt = PrefixFormatter(model=model)
    plans = [
        fmt.plan([{"role": "system", "content": system(d, r, e)}, *conversation(q)]) for d, r, e, q in CALLS
    ]
    assert len({stable_text(p) for p in plans}) == 1
    assert len({p.prefix_hash for p in plans}) == 1
    for (d, r, e, q), plan in zip(CALLS, plans, strict=True):
        text = request_text(plan)
        for value in (d, r, e, q):
            assert json.dumps(value)[1:-1] in text
        assert [s.text for s in plan.report.dynamic_spans] == [d, r, e]
        assert {v.value for v in plan.context} == {d, r, e}
        assert plan.changed
    if model.startswith("gpt"):
        assert len({p.params["prompt_cache_key"] for p in plans}) == 1


def test_anthropic_system_gets_a_stable_part_with_the_marker_and_a_context_part() -> None:
    plan = PrefixFormatter(model="claude-sonnet-4-5", ttl="5m").plan(
        [{"role": "system", "content": system()}, *conversation()]
    )
    stable, block = plan.messages[0]["content"]
    assert stable["cache_control"] == {"type": "ephemeral"}
    assert "cache_control" not in block and block["text"].startswith(CONTEXT_HEADER)
    assert "[see request context: date]" in stable["text"] and "2026-12-07" not in stable["text"]
    assert plan.messages[1:] == conversation()
    report = plan.report
    assert len(report.breakpoints) == 1 and report.breakpoints[0].prefix_tokens >= 1024
    assert report.cacheable_tokens == report.breakpoints[0].prefix_tokens
    assert 0 < report.cacheable_share < 1
    assert report.cost_per_call_usd is not None and report.cost_per_call_uncached_usd is not None
    assert report.cost_per_call_usd < report.cost_per_call_uncached_usd
    assert plan.params == {}


def test_openai_appends_the_block_to_the_system_string_and_sets_a_key() -> None:
    plan = PrefixFormatter(model="gpt-4o").plan([{"role": "system", "content": system()}, *conversation()])
    content = plan.messages[0]["content"]
    assert isinstance(content, str)
    stable, values = split_context_block(content)
    assert content == stable + "\n\n" + split_context_block("\n" + content[len(stable) + 2 :])[0] or values
    assert [v.label for v in values] == ["date", "request id", "email"]
    assert plan.params["prompt_cache_key"].startswith("fc-")
    assert markers(plan) == [] and plan.report.breakpoints == ()
    assert plan.report.cacheable_tokens >= 1024 and plan.report.ttl is None


def test_prompt_cache_key_follows_prefix_and_scope() -> None:
    fmt = PrefixFormatter(model="gpt-4o-mini", scope="tenant-a")
    msgs = [{"role": "system", "content": system()}, *conversation()]
    a = fmt.plan(msgs).params["prompt_cache_key"]
    assert fmt.plan(msgs, scope="tenant-b").params["prompt_cache_key"] != a
    other = [{"role": "system", "content": "Different instructions. " + system()}, *conversation()]
    assert fmt.plan(other).params["prompt_cache_key"] != a
    assert fmt.plan(msgs).params["prompt_cache_key"] == a


def test_vllm_has_no_markers_no_key_and_no_price() -> None:
    plan = PrefixFormatter(model="my-llama", provider="vllm").plan(
        [{"role": "system", "content": system()}, *conversation()]
    )
    assert markers(plan) == [] and plan.params == {}
    assert plan.report.cost_per_call_usd is None and plan.report.cost_per_call_uncached_usd is None
    assert plan.report.cacheable_tokens > 1000


def test_input_is_never_mutated() -> None:
    tools = [{"type": "function", "function": {"name": f"tool_{i}", "description": POLICY}} for i in range(2)]
    msgs = [
        {"role": "system", "content": [{"type": "text", "text": system()}]},
        {"role": "user", "name": "example_1", "content": "Example question 2026-01-01"},
        {"role": "assistant", "name": "example_1", "content": "Example answer"},
        *conversation(),
    ]
    before_msgs, before_tools = copy.deepcopy(msgs), copy.deepcopy(tools)
    for model in ("claude-sonnet-4-5", "gpt-4o"):
        plan = PrefixFormatter(model=model).plan(msgs, tools=tools, dynamic={"user": "Alice"})
        assert msgs == before_msgs and tools == before_tools
        plan.messages[0]["content"] = "x"  # the plan owns its copies
        assert msgs == before_msgs


@pytest.mark.parametrize("model", ["claude-sonnet-4-5", "gpt-4o", "gemini-2.5-flash"])
def test_planning_twice_changes_nothing(model: str) -> None:
    fmt = PrefixFormatter(model=model)
    tools = [{"type": "function", "function": {"name": "lookup", "description": "Look up an order."}}]
    layouts = [
        [{"role": "system", "content": system()}, *conversation()],
        [
            {"role": "system", "content": system()},
            {"role": "user", "name": "document", "content": POLICY},
            {"role": "user", "name": "example_1", "content": "Q?"},
            {"role": "assistant", "name": "example_1", "content": "A."},
            *conversation(),
        ],
    ]
    for msgs in layouts:
        first = fmt.plan(msgs, tools=tools)
        second = fmt.plan(first.messages, tools=first.tools)
        assert second.messages == first.messages
        assert second.tools == first.tools
        assert second.prefix_hash == first.prefix_hash
        assert second.context == first.context
        assert not second.changed
        assert request_text(second).count(CONTEXT_HEADER) == 1
        assert len(markers(second)) == len(markers(first)) <= 4


def test_examples_and_documents_order_and_block_in_the_first_user_turn() -> None:
    msgs = [
        {"role": "user", "name": "document", "content": "Doc A " + POLICY},
        {"role": "system", "content": "You are helpful. Today is 2026-12-07."},
        {"role": "user", "name": "example_1", "content": "Example Q"},
        {"role": "assistant", "name": "example_1", "content": "Example A"},
        {"role": "user", "name": "document", "content": "Doc B"},
        {"role": "user", "example": True, "content": "Example Q2"},
        {"role": "assistant", "example": True, "content": "Example A2"},
        *conversation(),
    ]
    plan = PrefixFormatter(model="gpt-4o").plan(msgs)
    contents = [m["content"] for m in plan.messages]
    assert contents[:7] == [
        "You are helpful. Today is [see request context: date].",
        "Example Q",
        "Example A",
        "Example Q2",
        "Example A2",
        "Doc A " + POLICY,
        "Doc B",
    ]
    first_turn = contents[7]
    assert first_turn.startswith(CONTEXT_HEADER) and first_turn.endswith("\n\nHi")
    assert split_context_block(first_turn) == ("Hi", list(plan.context))
    assert plan.messages[8:] == conversation()[1:]


def test_anthropic_breakpoints_at_segment_ends_including_the_last_tool() -> None:
    tools = [
        {"type": "function", "function": {"name": f"tool_{i}", "description": POLICY[:3000]}}
        for i in range(3)
    ]
    msgs = [
        {"role": "system", "content": system()},
        {"role": "user", "name": "example_1", "content": "Example Q " + POLICY},
        {"role": "assistant", "name": "example_1", "content": "Example A"},
        {"role": "user", "name": "document", "content": "Document " + POLICY},
        *conversation(),
    ]
    plan = PrefixFormatter(model="claude-sonnet-4-5").plan(msgs, tools=tools)
    assert plan.tools is not None and "cache_control" in plan.tools[-1]
    assert all("cache_control" not in t for t in plan.tools[:-1])
    bps = plan.report.breakpoints
    assert len(bps) == len(markers(plan)) == 4
    assert bps[0].on_tools and [b.message_index for b in bps[1:]] == [0, 2, 3]
    assert all(b.prefix_tokens >= 1024 for b in bps)
    assert [b.prefix_tokens for b in bps] == sorted(b.prefix_tokens for b in bps)
    assert plan.report.cacheable_tokens == bps[-1].prefix_tokens


def test_no_breakpoint_below_the_minimum() -> None:
    short = [{"role": "system", "content": "Be brief. Today is 2026-12-07."}, *conversation()]
    plan = PrefixFormatter(model="claude-sonnet-4-5").plan(short)
    assert markers(plan) == [] and plan.report.cacheable_tokens == 0
    assert any("prefix below the minimum" in w for w in plan.report.warnings)
    # Haiku 4.5 caches from 4,096 tokens: a 2,000-token prefix gets no marker, Sonnet's 1,024 does
    long = [{"role": "system", "content": system()}, *conversation()]
    assert markers(PrefixFormatter(model="claude-haiku-4-5").plan(long)) == []
    assert len(markers(PrefixFormatter(model="claude-sonnet-4-5").plan(long))) == 1


def test_openai_below_1024_warns() -> None:
    plan = PrefixFormatter(model="gpt-4o").plan([{"role": "system", "content": "Be brief."}, *conversation()])
    assert plan.report.cacheable_tokens == 0
    assert any("prefix below the minimum" in w for w in plan.report.warnings)


def test_callers_markers_count_against_four() -> None:
    mark = {"type": "ephemeral"}
    msgs = [
        {"role": "system", "content": system()},
        {"role": "user", "name": "document", "content": "Doc " + POLICY},
        {"role": "user", "content": [{"type": "text", "text": "Turn 1", "cache_control": mark}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Answer 1", "cache_control": mark}]},
        {"role": "user", "content": [{"type": "text", "text": "Turn 2", "cache_control": mark}]},
    ]
    plan = PrefixFormatter(model="claude-sonnet-4-5").plan(msgs)
    assert len(markers(plan)) == 4  # three of yours and one of the planner's (the deepest stable prefix)
    assert sum(b.caller for b in plan.report.breakpoints) == 3


def test_too_many_breakpoints_asked_keeps_four_and_warns() -> None:
    mark = {"type": "ephemeral"}
    turns: list[dict[str, Any]] = []
    for i in range(6):
        role = "user" if i % 2 == 0 else "assistant"
        turns.append(
            {"role": role, "content": [{"type": "text", "text": f"turn {i}", "cache_control": mark}]}
        )
    plan = PrefixFormatter(model="claude-sonnet-4-5").plan([{"role": "system", "content": system()}, *turns])
    assert len(markers(plan)) == 4
    assert any("too many breakpoints asked" in w for w in plan.report.warnings)
    assert [m["content"][0]["text"] for m in plan.messages[1:]] == [f"turn {i}" for i in range(6)]


def test_turn_order_never_changes() -> None:
    msgs = [
        {"role": "system", "content": system()},
        {"role": "user", "content": "first"},
        {"role": "user", "name": "example_1", "content": "late example stays a turn"},
        {"role": "system", "content": "mid-conversation system note 2026-12-07"},
        {"role": "assistant", "content": "second"},
        {"role": "user", "content": "third"},
    ]
    for model in ("claude-sonnet-4-5", "gpt-4o"):
        plan = PrefixFormatter(model=model).plan(msgs)
        assert plan.messages[1:] == msgs[1:]


def test_tool_result_before_its_call_is_left_unchanged_with_a_warning() -> None:
    msgs = [
        {"role": "system", "content": system()},
        {"role": "user", "content": "What is the status?"},
        {"role": "tool", "tool_call_id": "call_1", "content": "shipped"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "s", "arguments": "{}"}}
            ],
        },
    ]
    plan = PrefixFormatter(model="claude-sonnet-4-5").plan(msgs)
    assert plan.messages == msgs and not plan.changed and markers(plan) == []
    assert any("tool result" in w and "call_1" in w for w in plan.report.warnings)
    with pytest.raises(ConfigurationError) as err:
        PrefixFormatter(model="claude-sonnet-4-5", on_unsafe="raise").plan(msgs)
    assert err.value.field == "messages" and "on_unsafe" in str(err.value)


def test_a_valid_tool_exchange_is_kept() -> None:
    msgs = [
        {"role": "system", "content": system()},
        {"role": "user", "content": "Status?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "s", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "shipped"},
    ]
    plan = PrefixFormatter(model="gpt-4o").plan(msgs)
    assert plan.messages[1:] == msgs[1:] and plan.report.warnings[0].startswith("dynamic content found")


def test_template_variables_are_moved_by_inverting_the_template() -> None:
    template = POLICY + "\nYou are talking to {user_name} (tier {tier})."
    fmt = PrefixFormatter(model="claude-sonnet-4-5", templates=[template], dynamic_variables=["user_name"])
    plans = [
        fmt.plan([{"role": "system", "content": template.format(user_name=n, tier="gold")}, *conversation()])
        for n in ("Alice", "Bob Jones", "Zoë")
    ]
    assert len({stable_text(p) for p in plans}) == 1
    assert "(tier gold)" in stable_text(plans[0])  # variables not listed stay in place
    for name, plan in zip(("Alice", "Bob Jones", "Zoë"), plans, strict=True):
        [span] = plan.report.dynamic_spans
        assert (span.label, span.text, span.source, span.kind) == ("user_name", name, "variable", "name")
        assert plan.context[0].value == name


def test_marked_values_are_moved() -> None:
    msgs = [{"role": "system", "content": POLICY + " The customer is Alice; Alice is a gold member."}]
    plan = PrefixFormatter(model="gpt-4o", detect=()).plan(
        [*msgs, *conversation()], dynamic={"customer": "Alice"}
    )
    stable, values = split_context_block(plan.messages[0]["content"])
    assert "Alice" not in stable and stable.count("[see request context: customer]") == 2
    assert [(v.label, v.value) for v in values] == [("customer", "Alice")]
    assert plan.report.dynamic_spans[0].source == "marked"
    absent = PrefixFormatter(model="gpt-4o").plan([*msgs, *conversation()], dynamic={"order": "A-77"})
    assert any("not found in the preamble" in w and "order" in w for w in absent.report.warnings)


def test_no_names_are_guessed_from_free_text() -> None:
    plan = PrefixFormatter(model="gpt-4o").plan(
        [{"role": "system", "content": "You are helping Alice Smith from Paris."}, *conversation()]
    )
    assert plan.report.dynamic_spans == () and plan.context == ()
    assert plan.messages[0]["content"] == "You are helping Alice Smith from Paris."


def test_ttl_auto_follows_the_reuse_rate() -> None:
    msgs = [{"role": "system", "content": system()}, *conversation()]
    busy = PrefixFormatter(model="claude-sonnet-4-5", calls_per_hour=600).plan(msgs)
    assert busy.report.ttl == "5m" and markers(busy) == [{"type": "ephemeral"}]
    hourly = PrefixFormatter(model="claude-sonnet-4-5", calls_per_hour=4).plan(msgs)
    assert hourly.report.ttl == "1h" and markers(hourly) == [{"type": "ephemeral", "ttl": "1h"}]
    rare = PrefixFormatter(model="claude-sonnet-4-5", calls_per_hour=0.1).plan(msgs)
    assert rare.report.ttl is None and markers(rare) == []
    assert any("cost more than it saves" in w for w in rare.report.warnings)
    forced = PrefixFormatter(model="claude-sonnet-4-5", calls_per_hour=0.1, ttl="5m").plan(msgs)
    assert markers(forced) == [{"type": "ephemeral"}]
    assert busy.report.reuse_rate > 0.99


def test_ttl_auto_uses_your_prices() -> None:
    msgs = [{"role": "system", "content": system()}, *conversation()]
    assert PrefixFormatter(model="claude-sonnet-4-5", calls_per_hour=600).plan(msgs).report.ttl == "5m"
    # a price book where reading the cache costs as much as plain input: caching never pays
    no_discount = PriceBook(
        {"claude-sonnet-4-5": Price(input=3, output=15, cache_read=3, cache_write=3.75, cache_write_1h=6)}
    )
    plan = PrefixFormatter(model="claude-sonnet-4-5", calls_per_hour=600, prices=no_discount).plan(msgs)
    assert plan.report.ttl is None and markers(plan) == []
    assert plan.report.cost_per_call_usd == plan.report.cost_per_call_uncached_usd


def test_churn_detector_reports_changing_text() -> None:
    fmt = PrefixFormatter(model="gpt-4o")
    for name in ("Alice", "Bob"):
        plan = fmt.plan([{"role": "system", "content": f"{POLICY} You help {name} today."}, *conversation()])
    [churn] = plan.report.churn
    assert (churn.message_index, churn.before, churn.after, churn.seen) == (0, "Alice", "Bob", 1)
    assert any("changed between calls" in w and "mark it dynamic" in w for w in plan.report.warnings)
    # report only: the text stays where it was
    assert "You help Bob today." in plan.messages[0]["content"]
    # another prompt entirely through the same formatter is not churn
    plan = fmt.plan([{"role": "system", "content": "A different, short prompt."}, *conversation()])
    assert plan.report.churn == ()
    # values moved by the planner are not churn
    fmt2 = PrefixFormatter(model="gpt-4o")
    for d, r, e, q in CALLS:
        plan = fmt2.plan([{"role": "system", "content": system(d, r, e)}, *conversation(q)])
        assert plan.report.churn == ()


def test_churn_detector_is_thread_safe_and_bounded() -> None:
    fmt = PrefixFormatter(model="gpt-4o")
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            for i in range(50):
                fmt.plan(
                    [{"role": "system", "content": f"Prompt {k}-{i}"}, *conversation()], scope=f"s{k}-{i}"
                )
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(fmt._churn) <= 256


def test_report_format_and_to_dict() -> None:
    plan = PrefixFormatter(model="claude-sonnet-4-5").plan(
        [{"role": "system", "content": system()}, *conversation()]
    )
    text = plan.report.format()
    for needle in ("claude-sonnet-4-5", "cacheable tokens", "Cache breakpoints", "request id", "Warnings"):
        assert needle in text
    data = plan.report.to_dict()
    json.dumps(data)
    assert data["cacheable_tokens"] == plan.report.cacheable_tokens
    assert data["breakpoints"][0]["prefix_tokens"] >= 1024
    assert [s["label"] for s in data["dynamic_spans"]] == ["date", "request id", "email"]
    assert (
        PrefixFormatter(model="gpt-4o")
        .explain([{"role": "user", "content": "hi"}])
        .startswith("Prompt prefix plan: gpt-4o (openai)")
    )


def test_custom_rules_with_markers() -> None:
    rules = ProviderRules(provider="my-proxy", min_cacheable_tokens=100, max_breakpoints=2, ttls=("5m",))
    plan = PrefixFormatter(model="claude-sonnet-4-5", rules=rules).plan(
        [{"role": "system", "content": system()}, *conversation()]
    )
    assert len(markers(plan)) == 1 and plan.report.provider == "my-proxy"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"ttl": "10m"}, "ttl"),
        ({"calls_per_hour": 0}, "calls_per_hour"),
        ({"on_unsafe": "ignore"}, "on_unsafe"),
        ({"detect": ["dates"]}, "detect"),
        ({"dynamic_variables": ["user_name"]}, "dynamic_variables"),
        ({"templates": ["Hi {user_name}"], "dynamic_variables": ["name"]}, "dynamic_variables"),
        ({"templates": "Hi {user_name}"}, "templates"),
        ({"rules": {"provider": "x"}}, "rules"),
        ({"prices": {"m": 1}}, "prices"),
    ],
)
def test_bad_options_name_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigurationError) as err:
        PrefixFormatter(model="claude-sonnet-4-5", **kwargs)
    assert err.value.field == field


@pytest.mark.parametrize(
    ("call", "field"),
    [
        ({"messages": "hello"}, "messages"),
        ({"messages": [{"content": "no role"}]}, "messages"),
        ({"messages": [{"role": "user", "content": 3}]}, "messages"),
        ({"messages": [], "tools": {"type": "function"}}, "tools"),
        ({"messages": [], "dynamic": {"name": ""}}, "dynamic"),
        ({"messages": [], "dynamic": ["Alice"]}, "dynamic"),
    ],
)
def test_bad_requests_name_the_field(call: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigurationError) as err:
        PrefixFormatter(model="gpt-4o").plan(call.pop("messages"), **call)
    assert err.value.field == field


def test_several_system_messages_are_merged_when_the_block_goes_there() -> None:
    msgs = [
        {"role": "system", "content": POLICY},
        {"role": "developer", "content": "Today is 2026-12-07."},
        *conversation(),
    ]
    openai = PrefixFormatter(model="gpt-4o").plan(msgs)
    assert len(openai.messages) == 1 + len(conversation())
    stable, values = split_context_block(openai.messages[0]["content"])
    assert stable == POLICY + "\n\nToday is [see request context: date]." and values[0].value == "2026-12-07"
    anthropic = PrefixFormatter(model="claude-sonnet-4-5").plan(msgs)
    parts = anthropic.messages[0]["content"]
    assert [p["text"][:10] for p in parts] == [POLICY[:10], "Today is [", CONTEXT_HEADER[:10]]
    assert "cache_control" in parts[1] and "cache_control" not in parts[0]  # on the last stable part
    # nothing to move: the messages stay as they were (only a marker is added for Anthropic)
    plain = [
        {"role": "system", "content": POLICY},
        {"role": "system", "content": "Be brief."},
        *conversation(),
    ]
    same = PrefixFormatter(model="gpt-4o").plan(plain)
    assert same.messages == plain and not same.changed


def test_content_parts_and_images_are_kept() -> None:
    image = {"type": "image_url", "image_url": {"url": "https://example.com/logo.png"}}
    msgs = [
        {"role": "system", "content": [{"type": "text", "text": system()}, image]},
        {"role": "user", "content": [{"type": "text", "text": "What is this?"}, image]},
    ]
    plan = PrefixFormatter(model="gpt-4o").plan(msgs)
    parts = plan.messages[0]["content"]
    assert parts[1] == image and parts[-1]["text"].startswith(CONTEXT_HEADER)
    assert plan.messages[1] == msgs[1]
    anthropic = PrefixFormatter(model="claude-sonnet-4-5").plan(msgs)
    stable = anthropic.messages[0]["content"]
    assert stable[1] == {**image, "cache_control": {"type": "ephemeral", "ttl": "1h"}}  # last stable part


def test_anthropic_block_in_the_first_user_turn_is_its_own_part() -> None:
    msgs = [
        {"role": "system", "content": system()},
        {"role": "user", "name": "document", "content": "Doc " + POLICY},
        *conversation(),
    ]
    plan = PrefixFormatter(model="claude-sonnet-4-5").plan(msgs)
    first_turn = plan.messages[2]["content"]
    assert first_turn[0]["text"].startswith(CONTEXT_HEADER) and first_turn[1] == {
        "type": "text",
        "text": "Hi",
    }
    assert [b.message_index for b in plan.report.breakpoints] == [0, 1]
    assert plan.report.cacheable_tokens == plan.report.breakpoints[-1].prefix_tokens


def test_empty_and_tools_only_requests() -> None:
    assert PrefixFormatter(model="gpt-4o").plan([]).messages == []
    tools = [{"type": "function", "function": {"name": "search", "description": POLICY}}]
    plan = PrefixFormatter(model="claude-sonnet-4-5").plan([{"role": "user", "content": "hi"}], tools=tools)
    assert plan.tools is not None and plan.tools[0]["cache_control"]["type"] == "ephemeral"
    assert [b.on_tools for b in plan.report.breakpoints] == [True]
    assert tools[0].get("cache_control") is None


def test_lifetimes_follow_anthropic_order_with_your_markers() -> None:
    msgs = [
        {
            "role": "system",
            "content": [{"type": "text", "text": system(), "cache_control": {"type": "ephemeral"}}],
        },
        {"role": "user", "name": "document", "content": "Doc " + POLICY},
        *conversation(),
    ]
    # your 5-minute marker on the system prompt comes first: the planner's later marker cannot be 1h
    plan = PrefixFormatter(model="claude-sonnet-4-5", ttl="1h").plan(msgs)
    assert markers(plan) == [{"type": "ephemeral"}, {"type": "ephemeral"}]
    assert any("cannot follow your 5-minute one" in w for w in plan.report.warnings)
    later_1h = [
        {"role": "system", "content": system()},
        {"role": "user", "content": "Hi"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Hello", "cache_control": {"type": "ephemeral", "ttl": "1h"}}
            ],
        },
        {"role": "user", "content": "Where is my parcel?"},
    ]
    plan = PrefixFormatter(model="claude-sonnet-4-5", ttl="5m").plan(later_1h)
    assert markers(plan) == [{"type": "ephemeral", "ttl": "1h"}] * 2


def _call(call_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": call_id, "type": "function", "function": {"name": "f", "arguments": "{}"}}],
        **extra,
    }


def test_few_shot_tool_exchanges_stay_together() -> None:
    msgs = [
        {"role": "user", "name": "document", "content": "Doc " + POLICY},
        {"role": "system", "content": system()},
        {"role": "user", "name": "example_1", "content": "Status of order 1?"},
        _call("ex_1", name="example_1"),
        {"role": "tool", "tool_call_id": "ex_1", "content": "shipped", "name": "example_1"},
        {"role": "assistant", "name": "example_1", "content": "It shipped."},
        *conversation(),
    ]
    plan = PrefixFormatter(model="gpt-4o").plan(msgs)
    assert plan.changed and [m["role"] for m in plan.messages[:6]] == [
        "system",
        "user",
        "assistant",
        "tool",
        "assistant",
        "user",
    ]
    assert plan.messages[5]["name"] == "document"


@pytest.mark.parametrize(
    "msgs",
    [
        # a tool result marked as a document
        [
            {"role": "system", "content": "x"},
            _call("c1", name="example_1"),
            {"role": "tool", "tool_call_id": "c1", "content": "r", "name": "document"},
            {"role": "user", "content": "q"},
        ],
        # the preamble ends on a call whose result follows it, and reordering would move the call
        [
            {"role": "system", "content": "x"},
            _call("c1", name="example_1"),
            {"role": "user", "name": "document", "content": "d"},
            _call("c2", example=True),
            {"role": "tool", "tool_call_id": "c2", "content": "r"},
            {"role": "user", "content": "q"},
        ],
    ],
)
def test_preamble_tool_shapes_that_cannot_be_reordered(msgs: list[dict[str, Any]]) -> None:
    plan = PrefixFormatter(model="gpt-4o").plan(msgs)
    assert plan.messages == msgs and not plan.changed and "unchanged" in plan.report.warnings[0]


def test_a_formatter_copies_and_pickles_without_its_history() -> None:
    import pickle

    fmt = PrefixFormatter(
        model="gpt-4o", templates=["Hi {user_name}. " + POLICY], dynamic_variables=["user_name"]
    )
    fmt.plan([{"role": "system", "content": "Hi Alice. " + POLICY}])
    for clone in (copy.deepcopy(fmt), pickle.loads(pickle.dumps(fmt))):
        assert clone._churn == {} and clone.rules == fmt.rules
        plan = clone.plan([{"role": "system", "content": "Hi Bob. " + POLICY}])
        assert plan.context[0].value == "Bob" and plan.report.churn == ()


def test_with_a_template_retrieved_passages_keep_their_dates() -> None:
    template = (
        POLICY + "\nToday is {today}. You are helping {user_name}.\n"
        "Use the following pieces of retrieved context:\n{context}"
    )
    passages = "Order 1 shipped on 2026-11-30 to bob@example.com."
    filled = template.format(today="2026-12-07", user_name="Bob", context=passages)
    fmt = PrefixFormatter(model="gpt-4o", templates=[template], dynamic_variables=["user_name"])
    plan = fmt.plan([{"role": "system", "content": filled}, *conversation()])
    stable, values = split_context_block(plan.messages[0]["content"])
    assert stable.endswith(passages)  # the passages are content: left as they are
    assert [(v.label, v.value) for v in values] == [("date", "2026-12-07"), ("user_name", "Bob")]
    assert [s.source for s in plan.report.dynamic_spans] == ["detected", "variable"]
    only_template = PrefixFormatter(model="gpt-4o", templates=[template]).plan(
        [{"role": "system", "content": filled}, *conversation()]
    )
    assert [v.value for v in only_template.context] == ["2026-12-07"]
    # without the template, detectors read the whole prompt, passages included
    bare = PrefixFormatter(model="gpt-4o").plan([{"role": "system", "content": filled}, *conversation()])
    assert {v.value for v in bare.context} == {"2026-12-07", "2026-11-30", "bob@example.com"}


@pytest.mark.parametrize("model", ["claude-sonnet-4-5", "gpt-4o"])
def test_planning_twice_with_templates_and_marked_values_changes_nothing(model: str) -> None:
    template = POLICY + "\nToday is {today}. You are helping {user_name} ({email})."
    filled = template.format(today="2026-12-07", user_name="Bob", email="bob@example.com")
    msgs = [{"role": "system", "content": filled + " Account tier: gold."}, *conversation()]
    fmt = PrefixFormatter(
        model=model, templates=[template + " Account tier: {tier}."], dynamic_variables=["user_name"]
    )
    first = fmt.plan(msgs, dynamic={"tier": "gold"})
    second = fmt.plan(first.messages, tools=first.tools, dynamic={"tier": "gold"})
    assert [(v.label, v.value) for v in first.context] == [
        ("date", "2026-12-07"),
        ("user_name", "Bob"),
        ("email", "bob@example.com"),
        ("tier", "gold"),
    ]
    assert second.messages == first.messages and second.context == first.context
    assert second.report.warnings == tuple(w for w in second.report.warnings if "not found" not in w)


def test_dynamic_content_in_tools_is_reported_not_moved() -> None:
    tools = [
        {"type": "function", "function": {"name": "book", "description": "Book flights after 2026-12-07."}}
    ]
    plan = PrefixFormatter(model="claude-sonnet-4-5").plan(
        [{"role": "system", "content": system()}], tools=tools
    )
    assert plan.tools is not None and plan.tools[0]["function"] == tools[0]["function"]
    assert any("tool 'book'" in w and "2026-12-07" in w for w in plan.report.warnings)


def test_marked_values_never_reach_into_placeholders() -> None:
    msgs = [{"role": "system", "content": POLICY + " Today is 2026-12-07. See the context of the request."}]
    fmt = PrefixFormatter(model="gpt-4o")
    first = fmt.plan(msgs)
    second = fmt.plan(first.messages, dynamic={"word": "context"})
    stable, values = split_context_block(second.messages[0]["content"])
    assert "[see request context: date]" in stable
    assert stable.endswith("See the [see request context: word] of the request.")
    assert [(v.label, v.value) for v in values] == [("date", "2026-12-07"), ("word", "context")]
