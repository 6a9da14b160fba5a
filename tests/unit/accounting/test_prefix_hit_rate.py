"""Prompt-cache figures per group: cache-read and cache-write tokens and the prefix hit rate (cache-read tokens /
input tokens of the provider calls) in ``ledger.summary()``, ``spend_report`` (rows, total, JSON, CSV, table) and
``frugal-chains report``, with records written before these figures existed read as uncached."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from pathlib import Path

import pytest

from frugal_chains.accounting import Attribution, CallRecord, SQLiteLedger, Usage, spend_report
from frugal_chains.accounting.ledger import prefix_hit_rate, summarize
from frugal_chains.accounting.report import ReportRow
from frugal_chains.cli import main


def call(feature: str, usage: Usage, outcome: str = "ok", **kw: object) -> CallRecord:
    kw.setdefault("cost_usd", 0.01)
    return CallRecord(
        model="claude-sonnet-4-5",
        usage=usage,
        attribution=Attribution(feature=feature, user_id="u1"),
        outcome=outcome,  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )


def records() -> list[CallRecord]:
    return [
        # support: the first call writes the prefix (5-minute and 1-hour), the next two read it
        call("support", Usage(input_tokens=2000, output_tokens=10, cache_write_tokens=1500, cache_write_1h_tokens=300)),
        call("support", Usage(input_tokens=2000, output_tokens=10, cache_read_tokens=1800)),
        call("support", Usage(input_tokens=2000, output_tokens=10, cache_read_tokens=1800)),
        # a cache hit and a refusal send no prompt: they change neither figure
        call("support", Usage(input_tokens=2000, cache_read_tokens=1800), "cache_hit", saved_usd=0.01),
        call("support", Usage(), "refused", cost_usd=0.0),
        # a feature whose provider reports no prompt caching
        call("search", Usage(input_tokens=500, output_tokens=5)),
        # only refused: no input tokens at all
        call("idle", Usage(), "refused"),
    ]  # fmt: skip


def test_prefix_hit_rate_is_cache_reads_over_input_tokens() -> None:
    assert prefix_hit_rate(1800, 2000) == pytest.approx(0.9)
    assert prefix_hit_rate(0, 500) == 0.0
    assert prefix_hit_rate(0, 0) is None  # nothing sent: not measured, not 0 %


def test_summary_gives_cache_tokens_and_hit_rate_per_feature() -> None:
    ledger = SQLiteLedger()
    for r in records():
        ledger.add_record(r)
    rows = {r.key: r for r in ledger.summary("feature")}
    support = rows["support"]
    assert (support.calls, support.input_tokens) == (3, 6000)
    assert (support.cache_read_tokens, support.cache_write_tokens) == (3600, 1800)
    assert support.prefix_hit_rate == pytest.approx(3600 / 6000)
    assert (rows["search"].cache_read_tokens, rows["search"].prefix_hit_rate) == (0, 0.0)
    assert rows["idle"].prefix_hit_rate is None
    assert summarize(records(), "feature") == ledger.summary("feature")


def test_spend_report_rows_total_and_json() -> None:
    ledger = SQLiteLedger()
    for r in records():
        ledger.add_record(r)
    report = spend_report(ledger, by="feature")
    rows = {r.key: r for r in report.rows}
    assert rows[("support",)].prefix_hit_rate == pytest.approx(0.6)
    assert rows[("support",)].cache_write_tokens == 1800
    assert (report.total.input_tokens, report.total.cache_read_tokens) == (6500, 3600)
    assert report.total.prefix_hit_rate == pytest.approx(3600 / 6500)
    data = report.to_dict()
    by_feature = {r["feature"]: r for r in data["rows"]}
    assert by_feature["support"]["cache_read_tokens"] == 3600
    assert by_feature["support"]["prefix_hit_rate"] == 0.6
    assert by_feature["idle"]["prefix_hit_rate"] is None
    assert data["total"]["prefix_hit_rate"] == round(3600 / 6500, 6)
    json.dumps(data)  # JSON-ready


def test_report_row_hit_rate_by_fields() -> None:
    row = ReportRow(key=("faq",), calls=4, input_tokens=4000, cache_read_tokens=1000, cache_write_tokens=2000)
    assert row.prefix_hit_rate == 0.25
    assert row.figures()["prefix_hit_rate"] == 0.25
    assert ReportRow().prefix_hit_rate is None


def test_table_shows_prompt_cache_columns_only_when_a_call_used_the_cache() -> None:
    ledger = SQLiteLedger()
    for r in records():
        ledger.add_record(r)
    table = spend_report(ledger, by="feature").render("table", rich=False)
    header, _, *lines = table.splitlines()
    assert "cache read tok" in header and "cache write tok" in header and "prefix hit" in header
    support = next(line for line in lines if line.startswith("support"))
    assert support.split()[-3:] == ["3,600", "1,800", "60.0%"]
    idle = next(line for line in lines if line.startswith("idle"))
    assert idle.split()[-1] == "-"  # no input tokens: no rate
    plain = SQLiteLedger()
    plain.add_record(call("search", Usage(input_tokens=500, output_tokens=5)))
    assert "prefix hit" not in spend_report(plain, by="feature").render("table", rich=False)


def test_csv_always_has_the_prompt_cache_columns() -> None:
    ledger = SQLiteLedger()
    ledger.add_record(call("search", Usage(input_tokens=500, output_tokens=5)))
    ledger.add_record(call("idle", Usage(), "refused"))
    text = spend_report(ledger, by="feature").render("csv")
    rows = {r["feature"]: r for r in csv.DictReader(io.StringIO(text))}
    assert rows["search"]["cache_read_tokens"] == "0" and rows["search"]["prefix_hit_rate"] == "0.0"
    assert rows["idle"]["prefix_hit_rate"] == ""  # unknown: empty cell, not 0


OLD_RECORDS_TABLE = """
CREATE TABLE fc_records (
    id TEXT PRIMARY KEY, ts REAL NOT NULL, model TEXT, feature TEXT, user_id TEXT, tenant_id TEXT,
    task_id TEXT, outcome TEXT, cost_usd REAL NOT NULL, data TEXT NOT NULL
);
"""


def test_records_from_before_the_cache_figures_read_as_uncached(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A ledger file whose records' usage has only input and output tokens (an earlier version) reports them with
    no cache reads or writes; new records in the same file add theirs."""
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(OLD_RECORDS_TABLE)
        old = call(
            "support", Usage(input_tokens=1000, output_tokens=5), id="old", ts=1_700_000_000.0
        ).to_dict()
        old["usage"] = {"input_tokens": 1000, "output_tokens": 5}
        conn.execute(
            "INSERT INTO fc_records VALUES ('old', ?, 'claude-sonnet-4-5', 'support', 'u1', NULL, NULL, 'ok', 0.01, ?)",
            (old["ts"], json.dumps(old)),
        )
    conn.close()
    with SQLiteLedger(path) as ledger:
        ledger.add_record(call("support", Usage(input_tokens=1000, output_tokens=5, cache_read_tokens=900)))
        (row,) = ledger.summary("feature")
        assert (row.input_tokens, row.cache_read_tokens, row.cache_write_tokens) == (2000, 900, 0)
        assert row.prefix_hit_rate == pytest.approx(0.45)
    assert main(["report", "--ledger", str(path), "--format", "json"]) == 0
    (out,) = json.loads(capsys.readouterr().out)["rows"]
    assert (out["feature"], out["cache_read_tokens"], out["prefix_hit_rate"]) == ("support", 900, 0.45)


def test_report_command_prints_the_prefix_hit_rate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(tmp_path / "ledger.db")
    with SQLiteLedger(path) as ledger:
        for r in records():
            ledger.add_record(r)
    assert main(["report", "--ledger", path, "--by", "feature"]) == 0
    out = capsys.readouterr().out
    assert "prefix hit" in out
    support = next(line for line in out.splitlines() if line.startswith("support"))
    assert support.rstrip().endswith("60.0%")
