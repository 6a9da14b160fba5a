"""``frugal-chains prefix explain``: the rewritten request and the report for a message file, its options, and bad
input refused with one line and exit status 2 (never a traceback)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from frugal_chains.cli import main
from frugal_chains.prefix import CONTEXT_HEADER

POLICY = " ".join(
    f"Rule {i}: agents must verify the booking reference, explain the fare conditions for change number {i}, "
    "and never waive fees without a supervisor's written approval."
    for i in range(120)
)
SYSTEM = (
    f"You are the airline's support agent. Today is 2026-12-07. The customer is Alice Martin.\n\n{POLICY}"
)
MESSAGES = [
    {"role": "system", "content": SYSTEM},
    {"role": "user", "content": "Can I change my flight to Friday?"},
]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_booking",
            "description": "Look a booking up by its reference.",
            "parameters": {"type": "object", "properties": {"ref": {"type": "string"}}, "required": ["ref"]},
        },
    }
]


def write(tmp_path: Path, name: str, data: Any) -> str:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return str(path)


def explain_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    assert main(["prefix", "explain", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)  # type: ignore[no-any-return]


def texts(message: dict[str, Any]) -> list[str]:
    content = message["content"]
    return [content] if isinstance(content, str) else [p["text"] for p in content if "text" in p]


def test_anthropic_plan_moves_the_date_and_name_and_marks_the_stable_prefix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "messages.json", MESSAGES)
    out = explain_json(capsys, path, "--model", "claude-sonnet-4-5", "--dynamic", "customer=Alice Martin")
    assert out["provider"] == "anthropic" and out["changed"] is True
    system = out["messages"][0]
    assert system["role"] == "system"
    parts = system["content"]
    marked = [p for p in parts if "cache_control" in p]
    assert 1 <= len(marked) <= 4
    stable = "".join(p["text"] for p in parts if CONTEXT_HEADER not in p["text"])
    assert "2026-12-07" not in stable and "Alice Martin" not in stable  # out of the stable prefix...
    joined = "\n".join(t for m in out["messages"] for t in texts(m))
    assert "2026-12-07" in joined and "Alice Martin" in joined  # ...and still in the request
    assert out["messages"][-1]["content"] == "Can I change my flight to Friday?"
    report = out["report"]
    assert report["cacheable_share"] >= 0.9 and len(report["breakpoints"]) == len(marked)
    assert {s["label"] for s in report["dynamic_spans"]} >= {"date", "customer"}
    assert report["cost_per_call_usd"] < report["cost_per_call_uncached_usd"]


def test_table_output_shows_the_plan_and_the_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "messages.json", {"messages": MESSAGES, "tools": TOOLS})
    assert (
        main(
            ["prefix", "explain", path, "--model", "claude-sonnet-4-5", "--dynamic", "customer=Alice Martin"]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "Rewritten request for claude-sonnet-4-5 (anthropic): changed" in out
    assert "get_booking" in out and "<- cache_control" in out
    assert "Today is [see request con" in out and "Request context (values referred to above)" in out
    assert "Prompt prefix plan: claude-sonnet-4-5 (anthropic)" in out
    assert "cacheable tokens" in out and "input cost / call" in out
    assert "prefix sha256:" in out


def test_tools_file_replaces_the_tools_and_openai_gets_a_cache_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    messages = write(tmp_path, "messages.json", {"messages": MESSAGES})
    tools = write(tmp_path, "tools.json", TOOLS)
    out = explain_json(capsys, messages, "--model", "gpt-4o", "--tools", tools)
    assert out["provider"] == "openai"
    assert [t["function"]["name"] for t in out["tools"]] == ["get_booking"]
    assert out["params"]["prompt_cache_key"]
    assert not any("cache_control" in json.dumps(m) for m in out["messages"])  # OpenAI takes no markers


def test_ttl_and_calls_per_hour(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "messages.json", MESSAGES)
    hour = explain_json(capsys, path, "--model", "claude-sonnet-4-5", "--ttl", "1h")
    assert hour["report"]["ttl"] == "1h"
    assert all(b["ttl"] == "1h" for b in hour["report"]["breakpoints"])
    assert any(p.get("cache_control", {}).get("ttl") == "1h" for p in hour["messages"][0]["content"])
    busy = explain_json(capsys, path, "--model", "claude-sonnet-4-5", "--calls-per-hour", "600")
    rare = explain_json(
        capsys, path, "--model", "claude-sonnet-4-5", "--calls-per-hour", "0.5", "--ttl", "5m"
    )
    assert busy["report"]["reuse_rate"] > rare["report"]["reuse_rate"]


def test_provider_flag_plans_a_model_litellm_does_not_list(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "messages.json", MESSAGES)
    out = explain_json(capsys, path, "--model", "my-llama-70b", "--provider", "vllm")
    assert out["provider"] == "vllm" and out["params"] == {}
    assert out["report"]["cost_per_call_usd"] is None  # unpriced: unknown, not $0


def _one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str], *needles: str) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert captured.out == ""
    assert len(err.splitlines()) == 1, err
    assert err.startswith("frugal-chains prefix explain: ")
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err
    return err


@pytest.mark.parametrize(
    ("content", "needles"),
    [
        ('[{"role": "system", "content": "hi"}', ("not valid JSON", "line 1")),
        ('{"msgs": []}', ('no "messages"',)),
        ('"just a string"', ("JSON list of objects",)),
        ("[]", ("empty",)),
        ('[{"content": "no role"}]', ('message 0 has no "role"',)),
    ],
)
def test_bad_message_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, needles: tuple[str, ...]
) -> None:
    path = write(tmp_path, "messages.json", content)
    _one_line_error(capsys, ["prefix", "explain", path, "--model", "claude-sonnet-4-5"], "MESSAGES", *needles)


def test_missing_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = str(tmp_path / "nope.json")
    _one_line_error(capsys, ["prefix", "explain", missing, "--model", "gpt-4o"], "cannot read", "nope.json")
    path = write(tmp_path, "messages.json", MESSAGES)
    _one_line_error(
        capsys, ["prefix", "explain", path, "--model", "gpt-4o", "--tools", missing], "--tools", "cannot read"
    )
    bad_tools = write(tmp_path, "tools.json", '{"type": "function"}')
    _one_line_error(
        capsys,
        ["prefix", "explain", path, "--model", "gpt-4o", "--tools", bad_tools],
        "--tools",
        "list of objects",
    )


def test_unknown_model_or_provider(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "messages.json", MESSAGES)
    err = _one_line_error(capsys, ["prefix", "explain", path, "--model", "claude-sonet-4-5"], "--model")
    assert "did you mean claude-sonnet-4-5" in err.lower() and "--provider" in err
    _one_line_error(capsys, ["prefix", "explain", path, "--model", "zzqx-nothing"], "--model", "--provider")
    _one_line_error(
        capsys,
        ["prefix", "explain", path, "--model", "my-model", "--provider", "nosuch"],
        "--provider",
        "nosuch",
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["--dynamic", "no-equals-sign"],
        ["--dynamic", "=value"],
        ["--calls-per-hour", "0"],
        ["--calls-per-hour", "lots"],
        ["--ttl", "2h"],
    ],
)
def test_bad_flags_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    path = write(tmp_path, "messages.json", MESSAGES)
    with pytest.raises(SystemExit) as exc:
        main(["prefix", "explain", path, "--model", "claude-sonnet-4-5", *argv])
    assert exc.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_a_request_the_planner_cannot_reorder_is_shown_unchanged_with_the_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tool_first = [
        {"role": "system", "content": SYSTEM},
        {"role": "tool", "tool_call_id": "call_1", "content": "42"},
        {"role": "user", "content": "hi"},
    ]
    path = write(tmp_path, "messages.json", tool_first)
    out = explain_json(capsys, path, "--model", "claude-sonnet-4-5")
    assert out["changed"] is False and out["messages"] == tool_first
    assert any("unchanged" in w and "tool_call_id='call_1'" in w for w in out["report"]["warnings"])
    assert main(["prefix", "explain", path, "--model", "claude-sonnet-4-5"]) == 0
    assert "Rewritten request for claude-sonnet-4-5 (anthropic): unchanged" in capsys.readouterr().out


def test_a_message_the_planner_refuses_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "messages.json", [{"role": "system", "content": 42}])
    _one_line_error(capsys, ["prefix", "explain", path, "--model", "gpt-4o"], "MESSAGES", "content")
