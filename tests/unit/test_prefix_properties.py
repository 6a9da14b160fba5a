"""Properties of the planner over many generated requests (seeded, so a failure reproduces): the input is never
mutated, conversation turns keep their order, at most four breakpoints and none of the planner's below the minimum,
every moved value is still in the request, one context block, and planning twice changes nothing."""

from __future__ import annotations

import copy
import json
import random
from typing import Any

import pytest

from frugal_chains.prefix import CONTEXT_HEADER, PrefixFormatter, rules_for, split_context_block

POLICY = "".join(f"Clause {i}: follow the booking and refund policy, section {i}. " for i in range(90))
TEMPLATE = POLICY + " Today is {today}. You help {user_name}. Context: {context}"
NAMES = ["Alice", "Bob Jones", "Zoë"]
MODELS = ["claude-sonnet-4-5", "claude-haiku-4-5", "gpt-4o-mini", "gemini-2.5-flash", "hosted_vllm/llama"]


def dynamic_sentence(rng: random.Random) -> str:
    return rng.choice(
        [
            f"Today is 2026-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}.",
            f"The time is {rng.randrange(1, 13)}:{rng.randrange(60):02d} PM.",
            f"Request id: req_{rng.getrandbits(48):012x}.",
            f"Contact: user{rng.randrange(1000)}@example.com.",
            f"Session {rng.getrandbits(32):08x}-1234-4abc-8def-{rng.getrandbits(48):012x}.",
            "No dynamic value here.",
        ]
    )


def text(rng: random.Random, long: bool) -> str:
    body = POLICY if long else "Be helpful."
    return f"{body} {dynamic_sentence(rng)}" if rng.random() < 0.8 else body


def maybe_parts(rng: random.Random, content: str, mark: bool) -> Any:
    if not mark and rng.random() < 0.6:
        return content
    part: dict[str, Any] = {"type": "text", "text": content}
    if mark:
        part["cache_control"] = {"type": "ephemeral"}
    return [part]


def request(rng: random.Random) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    messages: list[dict[str, Any]] = []
    for _ in range(rng.randrange(0, 5)):
        kind = rng.choice(["system", "system", "example", "document"])
        mark = rng.random() < 0.15
        if kind == "system" and rng.random() < 0.3:
            filled = TEMPLATE.format(
                today=f"2026-12-{rng.randrange(1, 29):02d}",
                user_name=rng.choice(NAMES),
                context=dynamic_sentence(rng),
            )
            messages.append({"role": "system", "content": maybe_parts(rng, filled, mark)})
        elif kind == "system":
            role = rng.choice(["system", "developer"])
            body = text(rng, rng.random() < 0.5)
            if rng.random() < 0.3:
                body += " The customer is Dana Scully."
            messages.append({"role": role, "content": maybe_parts(rng, body, mark)})
        elif kind == "example":
            name = f"example_{rng.randrange(3)}"
            messages.append(
                {"role": "user", "name": name, "content": maybe_parts(rng, "Example question?", mark)}
            )
            messages.append({"role": "assistant", "name": name, "content": "Example answer."})
        else:
            messages.append({"role": "user", "name": "document", "content": maybe_parts(rng, POLICY, mark)})
    call = 0
    for turn in range(rng.randrange(1, 6)):
        mark = rng.random() < 0.2
        messages.append({"role": "user", "content": maybe_parts(rng, f"Question {turn}?", mark)})
        if rng.random() < 0.3:
            call += 1
            messages.append(
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": f"call_{call}",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{}"},
                        }
                    ],
                }
            )
            messages.append({"role": "tool", "tool_call_id": f"call_{call}", "content": "result"})
        messages.append({"role": "assistant", "content": maybe_parts(rng, f"Answer {turn}.", mark)})
    tools = None
    if rng.random() < 0.5:
        tools = [
            {
                "type": "function",
                "function": {"name": f"tool_{i}", "description": POLICY[: rng.randrange(50, 4000)]},
            }
            for i in range(rng.randrange(1, 4))
        ]
        if rng.random() < 0.2:
            tools[-1]["cache_control"] = {"type": "ephemeral"}
    return messages, tools


def markers(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> int:
    n = sum("cache_control" in t for t in tools or [])
    for m in messages:
        if isinstance(m.get("content"), list):
            n += sum("cache_control" in p for p in m["content"] if isinstance(p, dict))
    return n


def conversation_turns(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The turns after the preamble, with a context block taken off the first user turn."""
    out = []
    seen_user = False
    started = False
    for m in messages:
        marked = m.get("name") == "document" or str(m.get("name", "")).startswith("example_")
        if not started and (m["role"] in ("system", "developer") or marked):
            continue
        started = True
        m = copy.deepcopy(m)
        if m["role"] == "user" and not seen_user:
            seen_user = True
            content = m["content"]
            if isinstance(content, str):
                m["content"] = split_context_block(content)[0]
            else:
                m["content"] = [p for p in content if not p.get("text", "").startswith(CONTEXT_HEADER)]
                if len(m["content"]) == 1 and set(m["content"][0]) == {"type", "text"}:
                    m["content"] = m["content"][0]["text"]  # Anthropic turns a string into one part
        out.append(m)
    return out


def strip_markers(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: strip_markers(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, list):
        return [strip_markers(v) for v in value]
    return value


@pytest.mark.parametrize("seed", range(80))
def test_planner_properties(seed: int) -> None:
    rng = random.Random(seed)
    messages, tools = request(rng)
    model = MODELS[seed % len(MODELS)]
    before = copy.deepcopy((messages, tools))
    fmt = PrefixFormatter(
        model=model,
        calls_per_hour=rng.choice([2, 60, 600]),
        templates=[TEMPLATE],
        dynamic_variables=["user_name"] if rng.random() < 0.7 else [],
    )
    dynamic = rng.choice([None, {"customer": "Dana Scully"}, {"customer": "Dana Scully", "word": "context"}])
    plan = fmt.plan(messages, tools=tools, dynamic=dynamic)
    assert (messages, tools) == before  # never mutated

    body = json.dumps([plan.messages, plan.tools], ensure_ascii=False)
    assert body.count(CONTEXT_HEADER) <= 1
    for span in plan.report.dynamic_spans:
        assert json.dumps(span.text, ensure_ascii=False)[1:-1] in body  # every moved value still travels

    # conversation turns: same turns, same order (a marker beyond the fourth is dropped, with a warning)
    assert strip_markers(conversation_turns(plan.messages)) == strip_markers(conversation_turns(messages))
    if markers(messages, tools) > 4 and rules_for(model).max_breakpoints:
        assert any("too many breakpoints asked" in w for w in plan.report.warnings)

    rules = rules_for(model)
    count = markers(plan.messages, plan.tools)
    if rules.max_breakpoints:
        assert count <= 4
        for bp in plan.report.breakpoints:
            if not bp.caller:
                assert bp.prefix_tokens >= rules.min_cacheable_tokens
    else:
        assert count == markers(messages, tools)  # no markers added for implicit providers

    again = fmt.plan(plan.messages, tools=plan.tools, dynamic=dynamic)
    assert again.messages == plan.messages and again.tools == plan.tools
    assert again.prefix_hash == plan.prefix_hash and again.context == plan.context
