"""The frugal-chains command."""

from __future__ import annotations

import json

import pytest

from frugal_chains.cli import main


def test_demo_stops_the_agent_and_reports(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["stopped_by"] == "per agent run"
    assert 0 < result["research_usd"] <= 0.05
    assert result["refused"].get("chatty-carol", 0) > 0
    assert "alice" not in result["refused"]
    assert result["agent_steps"] > 1
    cache = result["cache"]
    tiers = dict(map(tuple, cache["answered_by"]))
    # repeats are exact hits whatever the embedder; look-alikes are never served another question's answer
    assert cache["exact"] >= 8 and cache["saved_usd"] > 0
    for look_alike in (
        "How do I disable two-factor authentication?",
        "Do you ship to Mexico?",
        "Can I pay with Bitcoin?",
    ):
        assert tiers[look_alike] == "model"
    routing = result["routing"]
    # easy questions stay on gpt-4o-mini, the proof-and-code request starts on gpt-4o, unsure answers escalate
    assert routing["cheap"] >= 6 and routing["strong"] >= 1 and routing["escalated"] >= 1
    assert 0 < routing["spent_usd"] < routing["all_strong_usd"]
    prefix = result["prefix"]
    # the date, request id and name moved out of the system prompt: one byte-identical cacheable prefix
    assert prefix["model"] == "claude-sonnet-4-5" and prefix["identical_prefix"] is True
    assert set(prefix["moved"]) == {"date", "request id", "user_name"}
    assert prefix["cacheable_share"] >= 0.9 and 1 <= prefix["breakpoints"] <= 4
    assert 0 < prefix["cost_per_call_usd"] < prefix["cost_per_call_uncached_usd"]


def test_demo_prints_tables(capsys: pytest.CaptureFixture[str], tmp_path: object) -> None:
    path = f"{tmp_path}/ledger.sqlite"
    assert main(["demo", "--ledger", path]) == 0
    out = capsys.readouterr().out
    assert "Cost by feature" in out and "Cost by model" in out and "STOP" in out
    assert "Cost by cascade tier" in out and "escalated" in out
    assert "formatted for claude-sonnet-4-5's prompt cache" in out and "byte-identical on every call" in out
    assert "with prompt caching vs $" in out
    from frugal_chains import SQLiteLedger

    with SQLiteLedger(path) as ledger:
        assert {r.key for r in ledger.summary("feature")} == {"faq", "research", "support", "helpdesk"}


def test_prices(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prices", "gpt-4o-mini"]) == 0
    assert "input $0.15/M" in capsys.readouterr().out
    assert main(["prices", "no-such-model"]) == 1


def test_prices_suggests_close_model_names(capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["prices", "gpt4o"]) == 1
    err = capsys.readouterr().err
    assert "gpt4o: no price" in err and "did you mean gpt-4o" in err
    assert main(["prices", "zzqx-nothing-like-it"]) == 1
    assert "did you mean" not in capsys.readouterr().err


def test_cache_tune(capsys: pytest.CaptureFixture[str], tmp_path: object) -> None:
    rows = [
        ("How do I reset a password?", "How can I reset a password?", 1),
        ("What is your return policy?", "What's your return policy?", 1),
        ("Who is the CEO of Apple?", "Who is the CEO of Google?", 0),
        ("How do I enable dark mode?", "How do I disable dark mode?", 0),
        ("Best pizza in Rome?", "How tall is Mount Everest?", 0),
    ]
    path = f"{tmp_path}/pairs.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for a, b, label in rows:
            f.write(json.dumps({"text_a": a, "text_b": b, "label": label}) + "\n")
    assert main(["cache", "tune", "--pairs", path, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n_pairs"] == 5 and result["n_positive"] == 2
    assert 0 < result["threshold"] <= 1 and result["curve"]
    assert main(["cache", "tune", "--pairs", path]) == 0
    assert "threshold" in capsys.readouterr().out


def test_cache_tune_bad_file(capsys: pytest.CaptureFixture[str], tmp_path: object) -> None:
    path = f"{tmp_path}/bad.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        f.write('{"text_a": "x"}\n')
    assert main(["cache", "tune", "--pairs", path]) == 2
    err = capsys.readouterr().err
    assert "line 1" in err and "text_b" in err
    assert main(["cache", "tune", "--pairs", f"{tmp_path}/missing.jsonl"]) == 2


def test_demo_refuses_a_ledger_file_that_exists(capsys: pytest.CaptureFixture[str], tmp_path: object) -> None:
    """A second ``demo --ledger FILE`` would run its budgets on the first run's spend (more refusals, other totals)
    and mix both runs in the file: it is refused, naming the fix, and the file is left as it was."""
    path = f"{tmp_path}/ledger.sqlite"
    assert main(["demo", "--ledger", path, "--json"]) == 0
    capsys.readouterr()
    with open(path, "rb") as f:
        before = f.read()
    assert main(["demo", "--ledger", path]) == 2
    err = capsys.readouterr().err
    assert "--ledger" in err and "already exists" in err and "another path" in err
    with open(path, "rb") as f:
        assert f.read() == before


def test_cache_tune_help_says_what_it_does(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["cache", "tune", "--help"])
    assert exit_info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "labelled pair" in out and "SemanticCache(threshold=...)" in out and "docs/cache.md" in out
