"""``frugal-chains report`` and ``spend_report``: what each record adds, grouping, time ranges, formats, bad flags,
and the demo printing the same figures as a report over the ledger it writes."""

from __future__ import annotations

import csv
import io
import json
import re
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from frugal_chains import SQLiteLedger
from frugal_chains._tables import render_report
from frugal_chains.accounting import Attribution, CallRecord, Usage, spend_report
from frugal_chains.accounting.report import parse_since
from frugal_chains.cli import main
from frugal_chains.errors import ConfigurationError

NOW = time.time()
DAY = 86400.0


def rec(
    outcome: str = "ok", *, cost: float | None = 0.01, saved: float | None = 0.0, **kw: Any
) -> CallRecord:
    a = Attribution(
        feature=kw.pop("feature", "faq"), user_id=kw.pop("user", "u1"), tenant_id=kw.pop("tenant", None)
    )
    kw.setdefault(
        "usage", Usage(input_tokens=10, output_tokens=5) if outcome in ("ok", "cache_hit") else Usage()
    )
    return CallRecord(
        model=kw.pop("model", "gpt-4o-mini"),
        cost_usd=cost,
        saved_usd=saved,
        outcome=outcome,  # type: ignore[arg-type]
        attribution=a,
        **kw,
    )


def routed(escalations: int, *, start: str = "cheap", end: str = "strong", **kw: Any) -> CallRecord:
    return rec(
        "routed",
        cost=0.0,
        tier=end,
        model=f"{end}-model",
        extra={
            "start_tier": start,
            "escalations": escalations,
            "attempts": [{"tier": start, "model": f"{start}-model", "outcome": "escalated"}],
        },
        **kw,
    )


@pytest.fixture
def ledger_file(tmp_path: Path) -> str:
    path = str(tmp_path / "ledger.sqlite")
    with SQLiteLedger(path) as ledger:
        for r in (
            rec(cost=0.02, ts=NOW - 60),
            rec(cost=0.01, user="u2", ts=NOW - 60),
            rec("cache_hit", cost=0.0, saved=0.02, ts=NOW - 50),
            rec("refused", cost=0.0, ts=NOW - 40),
            # a model with no price: its USD is unknown
            rec(cost=None, saved=0.0, price_known=False, model="my-llama", ts=NOW - 30),
            rec(cost=0.5, feature="research", ts=NOW - 10 * DAY),  # ten days ago
            rec(cost=0.001, feature="helpdesk", model="cheap-model", tier="cheap", ts=NOW - 20),
            rec(cost=0.003, feature="helpdesk", model="strong-model", tier="strong", ts=NOW - 20),
            routed(1, feature="helpdesk", ts=NOW - 20),
            routed(0, feature="helpdesk", ts=NOW - 20),
        ):
            ledger.add_record(r)
    return path


def report_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    assert main(["report", *argv, "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)  # type: ignore[no-any-return]


def test_each_outcome_adds_what_it_is(ledger_file: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = report_json(capsys, "--ledger", ledger_file)
    rows = {r["feature"]: r for r in out["rows"]}
    faq = rows["faq"]
    # 3 provider calls (one unpriced); the cache hit is no call; the refusal is neither a call nor spend
    assert (faq["calls"], faq["cache_hits"], faq["refused"], faq["unpriced"]) == (3, 1, 1, 1)
    assert faq["cost_usd"] == pytest.approx(0.03) and faq["saved_usd"] == pytest.approx(0.02)
    assert faq["input_tokens"] == 30  # 3 calls, 10 each; a cache hit sent no tokens, a refusal neither
    helpdesk = rows["helpdesk"]
    assert (helpdesk["calls"], helpdesk["escalations"]) == (2, 1)
    total = out["total"]
    assert (total["calls"], total["cache_hits"], total["refused"], total["escalations"]) == (6, 1, 1, 1)
    assert total["cost_usd"] == pytest.approx(0.534)


def test_group_by_several_fields_comma_or_repeated(
    ledger_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    comma = report_json(capsys, "--ledger", ledger_file, "--by", "feature,user")
    repeated = report_json(capsys, "--ledger", ledger_file, "--by", "feature", "--by", "user")
    assert comma == repeated and comma["by"] == ["feature", "user"]
    keys = {(r["feature"], r["user"]) for r in comma["rows"]}
    assert keys == {("faq", "u1"), ("faq", "u2"), ("research", "u1"), ("helpdesk", "u1")}


def test_escalations_count_under_the_tier_and_model_they_left(
    ledger_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    by_tier = {r["tier"]: r for r in report_json(capsys, "--ledger", ledger_file, "--by", "tier")["rows"]}
    assert by_tier["cheap"]["escalations"] == 1 and by_tier["strong"]["escalations"] == 0
    by_model = {r["model"]: r for r in report_json(capsys, "--ledger", ledger_file, "--by", "model")["rows"]}
    assert by_model["cheap-model"]["escalations"] == 1 and by_model["strong-model"]["escalations"] == 0


def test_since_relative_and_iso(ledger_file: str, capsys: pytest.CaptureFixture[str]) -> None:
    recent = report_json(capsys, "--ledger", ledger_file, "--since", "7d")
    assert "research" not in {r["feature"] for r in recent["rows"]}
    assert recent["total"]["cost_usd"] == pytest.approx(0.034)
    old_day = time.strftime("%Y-%m-%d", time.gmtime(NOW - 12 * DAY))
    everything = report_json(capsys, "--ledger", ledger_file, "--since", old_day, "--by", "day")
    assert len(everything["rows"]) == 2 and everything["rows"][0]["cost_usd"] == pytest.approx(0.5)
    assert parse_since("24h", now=10 * DAY) == 9 * DAY
    assert parse_since("2026-12-01T00:00:00+01:00") == parse_since("2026-11-30T23:00")


def test_table_and_csv(ledger_file: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--ledger", ledger_file, "--by", "user"]) == 0
    table = capsys.readouterr().out
    assert "cost USD" in table and "refused" in table and "unpriced" in table  # some USD is unknown: said
    total = next(line for line in table.splitlines() if line.startswith("total"))
    assert "0.534000" in total
    assert main(["report", "--ledger", ledger_file, "--by", "user", "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert {r["user"] for r in rows} == {"u1", "u2"}  # no total row in CSV
    assert sum(float(r["cost_usd"]) for r in rows) == pytest.approx(0.534)


def test_rich_table_and_the_plain_fallback(ledger_file: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with SQLiteLedger(ledger_file) as ledger:
        report = spend_report(ledger, by="feature")
    drawn = render_report(report, title="Spend", rich=True, width=140)
    assert "━" in drawn and "research" in drawn and "0.534000" in drawn
    monkeypatch.setitem(sys.modules, "rich", None)  # rich not installed: plain text even when asked
    plain = render_report(report, title="Spend", rich=True)
    assert "━" not in plain and plain.splitlines()[0] == "Spend"
    assert re.search(r"^total\s+6\s", plain, re.M)


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--by", "colour"], "--by"),
        (["--by", ","], "--by"),
        (["--since", "yesterday"], "--since"),
        (["--format", "xml"], "--format"),
    ],
)
def test_bad_flags_name_the_flag(
    ledger_file: str, capsys: pytest.CaptureFixture[str], argv: list[str], flag: str
) -> None:
    try:
        status = main(["report", "--ledger", ledger_file, *argv])
    except SystemExit as e:  # argparse's own checks
        status = int(e.code or 0)
    assert status == 2
    assert flag in capsys.readouterr().err


def test_a_bad_ledger_is_named_and_left_alone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--ledger", str(tmp_path / "missing.sqlite")]) == 2
    assert "--ledger" in capsys.readouterr().err and not (tmp_path / "missing.sqlite").exists()
    other = tmp_path / "app.sqlite"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE t (x)")
    assert main(["report", "--ledger", str(other)]) == 2
    assert "not a frugal-chains ledger" in capsys.readouterr().err
    with sqlite3.connect(other) as conn:  # no ledger tables were added to someone else's database
        assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")] == ["t"]
    assert main(["report", "--ledger", "redis://127.0.0.1:1/0"]) == 2
    assert "--ledger" in capsys.readouterr().err


def test_spend_report_rejects_bad_arguments() -> None:
    ledger = SQLiteLedger()
    with pytest.raises(ConfigurationError) as e:
        spend_report(ledger, by=["feature", "colour"])
    assert e.value.field == "by"
    with pytest.raises(ConfigurationError) as e:
        spend_report(ledger, by=["user", "user"])
    assert e.value.field == "by"
    with pytest.raises(ConfigurationError) as e:
        spend_report(ledger, since="soon")
    assert e.value.field == "since"
    with pytest.raises(ConfigurationError) as e:
        spend_report(ledger, until="later")
    assert e.value.field == "until"


def test_the_demo_and_a_report_on_its_ledger_agree(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(tmp_path / "demo.sqlite")
    assert main(["demo", "--ledger", path]) == 0
    demo = capsys.readouterr().out
    spent = float(re.search(r"Total spent: \$([0-9.]+)", demo).group(1))  # type: ignore[union-attr]
    by_feature = demo[demo.index("Cost by feature") :]
    demo_total = next(line for line in by_feature.splitlines() if line.startswith("total"))
    assert main(["report", "--ledger", path]) == 0  # by feature, as the demo's first table
    report_total = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("total"))
    assert report_total == demo_total
    out = report_json(capsys, "--ledger", path, "--by", "model")
    assert out["total"]["cost_usd"] == pytest.approx(spent, abs=5e-7)
    assert out["total"]["refused"] > 0 and out["total"]["escalations"] > 0
    with SQLiteLedger(path) as ledger:
        records = ledger.records()
    for row in out["rows"]:  # a model's calls are its provider calls: cache hits and refusals are apart
        mine = [r for r in records if r.model == row["model"]]
        assert row["calls"] == sum(r.outcome == "ok" for r in mine)
        assert row["cache_hits"] == sum(r.outcome == "cache_hit" for r in mine)
        assert row["refused"] == sum(r.outcome == "refused" for r in mine)
    assert sum(r["cache_hits"] for r in out["rows"]) > 0


def test_demo_json_total_matches_the_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(tmp_path / "demo.sqlite")
    assert main(["demo", "--ledger", path, "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    out = report_json(capsys, "--ledger", path)
    assert out["total"]["cost_usd"] == pytest.approx(figures["total_usd"], abs=1e-9)
    assert out["total"]["refused"] == figures["refused_calls"] == sum(figures["refused"].values()) + 1


def test_demo_help_says_what_it_does(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for words in ("budget", "SemanticCache", "CascadeChatModel", "frugal-chains report --ledger FILE"):
        assert words in text


def test_overshoots_are_reported_and_shown_only_when_present() -> None:
    ledger = SQLiteLedger()
    ledger.add_record(rec(model="gpt-4o"))
    quiet = spend_report(ledger, by="model")
    assert quiet.total.overshoots == 0 and "overshoots" not in quiet.render(rich=False)
    ledger.add_record(rec(model="gpt-4o", overshoot_tokens=700, overshoot_usd=0.007))
    ledger.add_record(rec("refused", cost=0.0, model="gpt-4o"))
    report = spend_report(ledger, by="model")
    row = report.rows[0]
    assert (row.calls, row.refused, row.overshoots, row.overshoot_tokens) == (2, 1, 1, 700)
    assert row.overshoot_usd == pytest.approx(0.007)
    table = report.render(rich=False)
    assert "overshoots" in table and "700" in table
    assert report.to_dict()["total"]["overshoot_tokens"] == 700
    assert ledger.summary("model")[0].overshoot_tokens == 700  # the same figure as summary()


def test_a_group_with_no_known_usd_prints_unknown_not_zero(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """A model with no price: its row's USD is unknown, and the table says so instead of ``0.000000``."""
    from frugal_chains import SQLiteLedger

    path = str(tmp_path / "ledger.sqlite")
    with SQLiteLedger(path) as ledger:
        ledger.add_record(rec(model="my-llama", cost=None, price_known=False))
        ledger.add_record(rec("cache_hit", model="my-llama", cost=0.0, saved=None, price_known=False))
        ledger.add_record(rec(model="gpt-4o-mini", cost=0.01))
    assert main(["report", "--ledger", path, "--by", "model"]) == 0
    lines = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert lines["my-llama"][4] == "unknown" and lines["my-llama"][6] == "unknown"
    assert lines["gpt-4o-mini"][4] == "0.010000"


def test_until_keeps_the_records_before_it(ledger_file: str, capsys: pytest.CaptureFixture[str]) -> None:
    old = report_json(capsys, "--ledger", ledger_file, "--until", "2d")  # up to two days ago
    assert [r["feature"] for r in old["rows"]] == ["research"] and old["until"] is not None
    assert old["total"]["cost_usd"] == pytest.approx(0.5)
    window = report_json(capsys, "--ledger", ledger_file, "--since", "11d", "--until", "1d")
    assert window["total"]["calls"] == 1
    assert main(["report", "--ledger", ledger_file, "--until", "tomorrow-ish"]) == 2
    assert "--until" in capsys.readouterr().err


def test_a_reader_that_leaves_early_gets_no_traceback(tmp_path: Path) -> None:
    """``frugal-chains report ... | head -1``: the pipe closes before the table is written."""
    import subprocess

    path = str(tmp_path / "big.sqlite")
    with SQLiteLedger(path) as ledger:
        for i in range(3000):
            ledger.add_record(rec(user=f"user-{i}"))
    code = (
        "import sys; from frugal_chains.cli import main; "
        f"sys.exit(main(['report', '--ledger', {path!r}, '--by', 'user']))"
    )
    proc = subprocess.run(
        f'{sys.executable} -c "{code}" | head -1', shell=True, capture_output=True, text=True, timeout=120
    )
    assert proc.stdout.startswith("Spend by user")
    assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr


def test_an_unreachable_redis_ledger_is_a_clear_flag_error(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("redis")
    import socket

    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["report", "--ledger", f"redis://:secret@127.0.0.1:{port}/0"]) == 2
    err = capsys.readouterr().err
    assert "--ledger" in err and "cannot reach Redis" in err
    assert "check=False" not in err and "secret" not in err
