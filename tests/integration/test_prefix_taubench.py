"""The τ-bench airline policy as a system prompt carrying the date, a request id and the user's name, called 100
times with different dates, users and questions through the prefix formatter: the stable prefix is byte-identical
across the calls, at least 95% of the input tokens are cacheable, and the rewritten request still gives the model
the date, the request id and the name. Also: ``benchmarks/prefix_savings.py`` runs on a small slice and its
figures hang together, and its provider-cache simulation follows the providers' rules."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections.abc import Mapping, Sequence
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from frugal_chains.accounting.pricing import litellm_price
from frugal_chains.accounting.tokens import count_text_tokens
from frugal_chains.prefix import CONTEXT_HEADER, PrefixFormatter, split_context_block
from tests.shared_data import shared_data

ROOT = Path(__file__).resolve().parents[2]
DATA = shared_data() or ROOT.parent / "shared" / "data"
TRAJECTORIES = DATA / "taubench_airline_traj" / "gpt-4o-airline.json"
TIME_LINE = "The current time is 2024-05-15 15:00:00 EST."
TEMPLATE_LINE = "Today's date is {date}.\n\nRequest id: {request_id}. You are helping {user_name}."
MODEL = "claude-sonnet-4-5"

needs_data = pytest.mark.skipif(
    not TRAJECTORIES.exists(), reason="taubench_airline_traj is not in $FRUGAL_CHAINS_DATA or ../shared/data"
)


def _trajectories() -> list[dict[str, Any]]:
    with open(TRAJECTORIES, encoding="utf-8") as f:
        data: list[dict[str, Any]] = json.load(f)
    return data


def _template(trajectories: Sequence[Mapping[str, Any]]) -> str:
    (policy,) = {t["traj"][0]["content"] for t in trajectories}
    assert TIME_LINE in policy and "{" not in policy
    return policy.replace(TIME_LINE, TEMPLATE_LINE)


def _calls(n: int = 100) -> tuple[str, list[dict[str, str]]]:
    """``n`` calls: a different date, request id, user and first question each (seeded)."""
    trajectories = _trajectories()
    rng = random.Random(7)
    users = sorted({t["info"]["task"]["user_id"] for t in trajectories})
    questions = [t["traj"][1]["content"] for t in trajectories]
    calls = []
    for i in range(n):
        user_id = users[i % len(users)]
        calls.append(
            {
                "date": (date(2026, 12, 7) + timedelta(days=i)).isoformat(),
                "request_id": f"req_{rng.getrandbits(64):016x}",
                "user_name": " ".join(p.capitalize() for p in user_id.split("_") if not p.isdigit()),
                "question": questions[(i * 37) % len(questions)],
            }
        )
    assert len({c["date"] for c in calls}) == n and len({c["request_id"] for c in calls}) == n
    assert len({c["user_name"] for c in calls}) > 30 and len({c["question"] for c in calls}) > 50
    return _template(trajectories), calls


def _tools() -> list[dict[str, Any]]:
    """The 14 τ-bench airline tools, sent with every call of the τ-bench agent."""
    with open(ROOT / "benchmarks" / "data" / "taubench_airline_tools.json", encoding="utf-8") as f:
        tools: list[dict[str, Any]] = json.load(f)["tools"]
    return tools


def _messages(template: str, call: Mapping[str, str]) -> list[dict[str, Any]]:
    values = {k: call[k] for k in ("date", "request_id", "user_name")}
    return [
        {"role": "system", "content": template.format(**values)},
        {"role": "user", "content": call["question"]},
    ]


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))


def _stable_prefix(tools: Sequence[Mapping[str, Any]] | None, messages: Sequence[Mapping[str, Any]]) -> str:
    """The request up to and including its last ``cache_control`` marker, serialized (what the provider compares:
    tools, then system, then messages)."""
    out: list[Any] = []
    last = None
    for tool in tools or ():
        out.append(["tool", tool])
        if "cache_control" in tool:
            last = len(out)
    for m in messages:
        content = m.get("content")
        parts = content if isinstance(content, list) else [{"type": "text", "text": content}]
        for p in parts:
            out.append([m["role"], p])
            if isinstance(p, Mapping) and "cache_control" in p:
                last = len(out)
    assert last is not None, "no cache_control marker in the request"
    return json.dumps(out[:last], sort_keys=True)


def _check_request(
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Mapping[str, Any]] | None,
    call: Mapping[str, str],
    prefixes: set[str],
) -> None:
    """One rewritten request: the values are out of the stable prefix and still in the request, in the context
    block; the question is kept as it was; at most 4 markers."""
    prefix = _stable_prefix(tools, messages)
    prefixes.add(prefix)
    for key in ("date", "request_id", "user_name"):
        assert call[key] not in prefix, f"{key} {call[key]!r} is still in the stable prefix"
    assert "[see request context: user_name]" in prefix
    system = messages[0]
    assert system["role"] == "system"
    stable, values = split_context_block(_text(system["content"]))
    assert CONTEXT_HEADER not in stable
    moved = {v.value for v in values}
    assert {call["date"], call["request_id"], call["user_name"]} <= moved, values
    assert {v.label for v in values if v.value == call["user_name"]} == {"user_name"}
    assert [m["role"] for m in messages] == ["system", "user"]
    assert _text(messages[1]["content"]) == call["question"]
    parts = [p for m in messages if isinstance(m["content"], list) for p in m["content"]]
    markers = [p for p in [*(tools or ()), *parts] if "cache_control" in p]
    assert 1 <= len(markers) <= 4


@needs_data
def test_taubench_policy_100_calls_core_formatter() -> None:
    """The τ-bench agent's request (the policy as the system prompt and its 14 tools) on Claude Sonnet 4.5."""
    template, calls = _calls()
    tools = _tools()
    formatter = PrefixFormatter(model=MODEL, templates=[template], dynamic_variables=["user_name"])
    prefixes: set[str] = set()
    hashes: set[str] = set()
    for call in calls:
        messages = _messages(template, call)
        original = json.dumps([messages, tools])
        plan = formatter.plan(messages, tools=tools)
        assert json.dumps([messages, tools]) == original  # the input is not mutated
        assert plan.changed and plan.tools is not None
        hashes.add(plan.prefix_hash)
        _check_request(plan.messages, plan.tools, call, prefixes)
        report = plan.report
        assert report.provider == "anthropic"
        assert report.cacheable_share >= 0.95, report.format()
        assert 1 <= len(report.breakpoints) <= 4
        assert all(b.prefix_tokens >= 1024 for b in report.breakpoints)  # Sonnet 4.5's minimum
        assert {"date", "request_id"} <= {s.kind for s in report.dynamic_spans}, report.dynamic_spans
        assert any(s.source == "variable" and s.label == "user_name" for s in report.dynamic_spans)
    assert len(prefixes) == 1, "the stable prefix differs between calls"
    assert len(hashes) == 1


@needs_data
def test_taubench_policy_alone_caches_all_but_the_values_and_the_question() -> None:
    """The policy alone (no tools): the same byte-identical prefix; what is not cacheable is the context block and
    the question, nothing else (the share is then about 95%: those are ~60 of ~1,330 tokens)."""
    template, calls = _calls()
    formatter = PrefixFormatter(model=MODEL, templates=[template], dynamic_variables=["user_name"])
    prefixes: set[str] = set()
    for call in calls:
        plan = formatter.plan(_messages(template, call))
        _check_request(plan.messages, plan.tools, call, prefixes)
        report = plan.report
        system = plan.messages[0]["content"]
        marked = [p for p in system if "cache_control" in p]
        assert len(marked) == 1 and count_text_tokens(marked[0]["text"]) <= report.cacheable_tokens
        block = "".join(p["text"] for p in system if "cache_control" not in p)
        assert block.startswith(CONTEXT_HEADER)
        dynamic = count_text_tokens(block) + count_text_tokens(call["question"])
        framing = 8 * 2  # per message and content part (the message and part overheads of the token counter)
        assert report.total_tokens - report.cacheable_tokens <= dynamic + framing, report.format()
    assert len(prefixes) == 1


@needs_data
def test_taubench_policy_100_calls_langchain_formatter() -> None:
    """The same calls through ``ChatPromptTemplate | PrefixCacheFormatter``; the request langchain-anthropic
    builds from its messages has the same system blocks up to the marker on every call."""
    from langchain_anthropic.chat_models import _format_messages
    from langchain_core.messages import HumanMessage, SystemMessage
    from langchain_core.prompts import ChatPromptTemplate

    from frugal_chains.langchain import PrefixCacheFormatter

    template, calls = _calls()
    tools = _tools()
    prompt = ChatPromptTemplate.from_messages([("system", template), ("human", "{question}")])
    formatter = PrefixCacheFormatter(model=MODEL, prompt=prompt, dynamic_variables=["user_name"])
    chain = prompt | formatter
    prefixes: set[str] = set()
    payload_prefixes: set[str] = set()
    for call in calls:
        out = chain.invoke(call)
        assert [type(m) for m in out] == [SystemMessage, HumanMessage]
        as_dicts = [
            {"role": "system", "content": out[0].content},
            {"role": "user", "content": out[1].content},
        ]
        _check_request(as_dicts, None, call, prefixes)
        system, _messages = _format_messages(out, model=MODEL)
        assert isinstance(system, list)
        marked = max(i for i, block in enumerate(system) if "cache_control" in block)
        payload_prefixes.add(json.dumps(system[: marked + 1], sort_keys=True))
        rest = json.dumps(system[marked + 1 :])
        assert call["user_name"] in rest and call["date"] in rest and call["request_id"] in rest
        # with the τ-bench tools (bound to the model in an app), the cacheable share of the request
        planned, plan = formatter.plan(prompt.invoke(call), tools=tools)
        assert [m.content for m in planned] == [m.content for m in out]
        assert plan.report.cacheable_share >= 0.95, plan.report.format()
    assert len(prefixes) == 1
    assert len(payload_prefixes) == 1


# --------------------------------------------------------------------------------------------- the benchmark


sys.path.insert(0, str(ROOT / "benchmarks"))


def _run_benchmark(*args: str) -> dict[str, Any]:
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "prefix_savings.py"),
            "--json",
            "--data-dir",
            str(DATA),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def _variant_cost(model: str, v: Mapping[str, Any]) -> float:
    price = litellm_price(model)
    assert price is not None
    return (
        v["uncached_tokens"] * price.input
        + v["cache_read_tokens"] * price.cache_read_rate
        + v["cache_write_tokens"] * price.cache_write_rate
        + v["cache_write_1h_tokens"] * price.cache_write_1h_rate
    ) / 1_000_000


@needs_data
@pytest.mark.parametrize("turns", ["agent", "first"])
def test_prefix_savings_benchmark_small_slice(turns: str) -> None:
    calls = 50
    res = _run_benchmark(
        "--calls", str(calls), "--calls-per-hour", "6", "--calls-per-hour", "600", "--turns", turns
    )
    w = res["workload"]
    assert w["calls"] == calls and w["turns"] == turns and w["tools"] is True
    assert w["distinct_request_ids"] == calls
    assert res["assumptions"] and all(isinstance(a, str) for a in res["assumptions"])
    assert {"python", "nproc"} <= set(res["machine"])
    models = [r["model"] for r in res["rows"]]
    assert {"claude-sonnet-4-5", "claude-haiku-4-5", "gpt-4o", "gpt-4o-mini"} <= set(models)
    assert [r["calls_per_hour"] for r in res["rows"]] == [6.0, 600.0] * len(set(models))
    prefix_tokens = w["tool_tokens"] + w["system_prompt_tokens"]
    for row in res["rows"]:
        provider, variants = row["provider"], row["variants"]
        anthropic_only = {"raw_breakpoint", "with_ttl_5m", "with_ttl_1h"}
        assert set(variants) == {"without", "with"} | (anthropic_only if provider == "anthropic" else set())
        for v in variants.values():
            assert v["calls"] == calls
            parts = (
                v["uncached_tokens"]
                + v["cache_read_tokens"]
                + v["cache_write_tokens"]
                + v["cache_write_1h_tokens"]
            )
            assert parts == v["input_tokens"] and min(parts, v["uncached_tokens"]) >= 0
            assert v["cost_usd"] == pytest.approx(_variant_cost(row["model"], v), rel=1e-6, abs=1e-6)
            assert v["calls_reading_cache"] <= calls - 1  # the first call finds nothing
            assert v["cached_share"] == pytest.approx(v["cache_read_tokens"] / v["input_tokens"], abs=1e-4)
        without, with_ = variants["without"], variants["with"]
        assert row["saving_usd"] == pytest.approx(without["cost_usd"] - with_["cost_usd"], abs=1e-5)
        assert row["saving_pct"] == pytest.approx(100 * row["saving_usd"] / without["cost_usd"], abs=0.05)
        f = row["formatter"]
        assert f["distinct_stable_prefixes"] == 1
        assert f["calls_keeping_all_values"] == calls
        # the formatter never makes the provider's own caching worse
        assert with_["calls_reading_cache"] >= without["calls_reading_cache"]
        if provider == "anthropic":
            # no marker in the request as written: Anthropic caches nothing
            assert without["cache_read_tokens"] == without["cache_write_tokens"] == 0
            # a marker on the system prompt as written is paid for on every call and never read (a new request id)
            raw_bp = variants["raw_breakpoint"]
            assert raw_bp["cache_read_tokens"] == 0
            assert raw_bp["cost_usd"] >= without["cost_usd"]
            # "auto" chose one TTL for every call: its requests, and so its cost, are the fixed TTL's
            if f["ttl"] in (["5m"], ["1h"]):
                assert with_ == variants[f"with_ttl_{f['ttl'][0]}"]
            if prefix_tokens < row["min_cacheable_tokens"]:
                # below the model's minimum: nothing is cached, the formatter says so
                assert (
                    with_["cache_read_tokens"]
                    == with_["cache_write_tokens"] + with_["cache_write_1h_tokens"]
                    == 0
                )
                assert any("minimum" in k for k in f["warnings"]), f["warnings"]
            else:
                assert with_["calls_reading_cache"] > 0 and with_["cost_usd"] < without["cost_usd"]
        else:
            assert with_["cache_write_tokens"] == with_["cache_write_1h_tokens"] == 0  # no write charge
            assert with_["cache_read_tokens"] >= without["cache_read_tokens"]
        if row["calls_per_hour"] == 600.0 and prefix_tokens >= row["min_cacheable_tokens"]:
            # ten calls a minute: all but the first few read the cache
            assert with_["calls_reading_cache"] >= calls - 3


# ----------------------------------------------------------------------------------- the cache simulation rules


def _blocks(*texts: str, marker_at: int | None = None, ttl: str = "5m") -> list[Any]:
    import prefix_savings as ps

    return [
        ps.Block(t.encode(), ps.token_ids(t), ttl if i == marker_at else None) for i, t in enumerate(texts)
    ]


def test_simulated_anthropic_cache_follows_markers_minimum_and_ttl() -> None:
    import prefix_savings as ps

    stable = "policy " * 1500  # 1,500 tokens
    cache = ps.AnthropicCache(min_tokens=1024)
    first = cache.call(_blocks(stable, "question one", marker_at=0), now=0.0)
    assert first.cache_read_tokens == 0 and first.cache_write_tokens == len(ps.token_ids(stable))
    second = cache.call(_blocks(stable, "question two", marker_at=0), now=200.0)
    assert second.cache_read_tokens == len(ps.token_ids(stable)) and second.cache_write_tokens == 0
    # the read refreshed the entry: 400 s after the first write, 200 s after the read, still live
    assert cache.call(_blocks(stable, "q", marker_at=0), now=400.0).cache_read_tokens > 0
    # more than 5 minutes later: written again
    late = cache.call(_blocks(stable, "q", marker_at=0), now=1000.0)
    assert late.cache_read_tokens == 0 and late.cache_write_tokens > 0
    # no marker: nothing read or written even though the same prefix is cached
    bare = cache.call(_blocks(stable, "q"), now=1001.0)
    assert bare.cache_read_tokens == bare.cache_write_tokens == 0
    # one different byte before the marker: no read
    assert cache.call(_blocks(stable + ".", "q", marker_at=0), now=1002.0).cache_read_tokens == 0
    # below the minimum: the marker is ignored
    small = ps.AnthropicCache(min_tokens=4096)
    for t in (0.0, 1.0):
        u = small.call(_blocks(stable, "q", marker_at=0), now=t)
        assert u.cache_read_tokens == u.cache_write_tokens == 0
    # the 1-hour TTL is billed as a 1-hour write and lives an hour
    hour = ps.AnthropicCache(min_tokens=1024)
    assert hour.call(_blocks(stable, "q", marker_at=0, ttl="1h"), now=0.0).cache_write_1h_tokens > 0
    assert hour.call(_blocks(stable, "q", marker_at=0, ttl="1h"), now=3000.0).cache_read_tokens > 0


def test_simulated_automatic_cache_reads_the_longest_equal_prefix_in_steps() -> None:
    import prefix_savings as ps

    cache = ps.AutomaticCache(min_tokens=1024, step=128, ttl_seconds=300.0)
    stable = "policy " * 1300  # 1,300 tokens
    assert cache.call(_blocks(stable, "question one"), now=0.0).cache_read_tokens == 0
    u = cache.call(_blocks(stable, "question two"), now=10.0)
    assert u.cache_read_tokens == 1280  # the longest 128-token step inside the common 1,300 tokens
    assert cache.call(_blocks(stable, "question two"), now=1000.0).cache_read_tokens == 0  # expired
    short = ps.AutomaticCache(min_tokens=1024, step=128, ttl_seconds=300.0)
    for t in (0.0, 1.0):  # below 1,024 tokens nothing is cached
        assert short.call(_blocks("policy " * 900, "q"), now=t).cache_read_tokens == 0


def test_simulated_anthropic_cache_reads_the_previous_turns_marker() -> None:
    """A marker on the last message of one turn is read by the next turn of the conversation: its prefix up to that
    block is the previous request's prefix up to its marker, found by the look-back from the new last marker."""
    import prefix_savings as ps

    def turn(history: Sequence[str], ttl: str = "5m") -> list[Any]:
        stable = "policy " * 1500
        blocks = _blocks(stable, *history, marker_at=0, ttl="1h")
        last = blocks[-1]
        return [*blocks[:-1], ps.Block(last.key, last.ids, ttl)]

    def ends(history: Sequence[str]) -> int:
        return sum(len(b.ids) for b in turn(history))

    cache = ps.AnthropicCache(min_tokens=1024)
    first = ["user: change my flight " * 20]
    u = cache.call(turn(first), now=0.0)
    assert u.cache_read_tokens == 0 and u.cache_write_1h_tokens + u.cache_write_tokens == ends(first)
    second = [*first, "assistant: tool call", "tool: reservation " * 30]
    u = cache.call(turn(second), now=5.0)
    assert u.cache_read_tokens == ends(first)  # the whole first turn, not only the system prompt
    assert u.cache_write_tokens == ends(second) - ends(first)  # the new turns, at the 5-minute price
    # more than 20 blocks after the previous marker: the look-back stops short, only the system prompt is read
    far = [*second, *(f"tool: result {i}" for i in range(ps.ANTHROPIC_LOOKBACK_BLOCKS))]
    u = cache.call(turn(far), now=10.0)
    assert u.cache_read_tokens == len(ps.token_ids("policy " * 1500))
    # a different earlier turn (another run): the history does not match, only the system prompt is read
    other = ["user: cancel my booking " * 20, "assistant: tool call", "tool: reservation " * 30]
    assert cache.call(turn(other), now=15.0).cache_read_tokens == len(ps.token_ids("policy " * 1500))


@needs_data
def test_prefix_savings_benchmark_runs_small_slice() -> None:
    calls = 60
    res = _run_benchmark(
        "--turns",
        "runs",
        "--calls",
        str(calls),
        "--calls-per-hour",
        "60",
        *("--model", "claude-sonnet-4-5", "--model", "claude-haiku-4-5", "--model", "gpt-4o"),
    )
    w = res["workload"]
    assert w["calls"] == calls and w["turns"] == "runs" and w["tools"] is True
    # one request id per run, several calls per run
    assert 1 < w["runs"] < calls and w["distinct_request_ids"] == w["runs"]
    assert w["calls_per_run_mean"] == pytest.approx(calls / w["runs"], abs=0.01)
    assert any("run" in a for a in res["assumptions"])
    prefix_tokens = w["tool_tokens"] + w["system_prompt_tokens"]
    for row in res["rows"]:
        provider, variants = row["provider"], row["variants"]
        anthropic_only = {"raw_breakpoint", "with_ttl_5m", "with_ttl_1h"}
        assert set(variants) == {"without", "with", "with_conversation"} | (
            anthropic_only if provider == "anthropic" else set()
        )
        for v in variants.values():
            assert v["calls"] == calls and v["later_turns"] == calls - w["runs"]
            parts = (
                v["uncached_tokens"]
                + v["cache_read_tokens"]
                + v["cache_write_tokens"]
                + v["cache_write_1h_tokens"]
            )
            assert parts == v["input_tokens"] and min(parts, v["uncached_tokens"]) >= 0
            assert 0 <= v["later_turn_cache_read_tokens"] <= v["cache_read_tokens"]
            assert v["cost_usd"] == pytest.approx(_variant_cost(row["model"], v), rel=1e-6, abs=1e-6)
        without, with_, conv = variants["without"], variants["with"], variants["with_conversation"]
        assert row["saving_conversation_pct"] == pytest.approx(
            100 * (1 - conv["cost_usd"] / without["cost_usd"]), abs=0.05
        )
        f = row["formatter"]
        assert f["distinct_stable_prefixes"] == 1 and f["calls_keeping_all_values"] == calls
        if provider != "anthropic":
            # the conversation marker is Anthropic's: elsewhere the two formatter variants send the same requests
            assert conv == with_
            # a run resends its own history with the same values: the provider's automatic cache reads it
            assert without["later_turn_cache_read_tokens"] > 0
            continue
        assert without["cache_read_tokens"] == without["cache_write_tokens"] == 0
        if prefix_tokens < row["min_cacheable_tokens"]:
            continue  # Haiku: the preamble is below the minimum, shape and sums checked above
        # the marker on the system prompt as written is read by the later turns of its run (same request id)
        assert variants["raw_breakpoint"]["later_turn_cache_read_tokens"] > 0
        # with the conversation marked, the later turns of a run read their history too
        assert conv["later_turn_cache_read_tokens"] > with_["later_turn_cache_read_tokens"] > 0
        assert conv["cache_read_tokens"] > with_["cache_read_tokens"]
