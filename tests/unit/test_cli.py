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


def test_demo_prints_tables(capsys: pytest.CaptureFixture[str], tmp_path: object) -> None:
    path = f"{tmp_path}/ledger.sqlite"
    assert main(["demo", "--ledger", path]) == 0
    out = capsys.readouterr().out
    assert "Cost by feature" in out and "Cost by model" in out and "STOP" in out
    from frugal_chains import SQLiteLedger

    with SQLiteLedger(path) as ledger:
        assert {r.key for r in ledger.summary("feature")} == {"faq", "research"}


def test_prices(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prices", "gpt-4o-mini"]) == 0
    assert "input $0.15/M" in capsys.readouterr().out
    assert main(["prices", "no-such-model"]) == 1
