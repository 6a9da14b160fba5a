"""Records whose USD is unknown (a model with no price): stored and read back as ``None``, left out of USD sums and
counted apart, in new SQLite files and in files made before unknown USD existed."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from frugal_chains.accounting import CallRecord, SQLiteLedger, Usage
from frugal_chains.accounting.ledger import summarize

OLD_RECORDS_TABLE = """
CREATE TABLE fc_records (
    id TEXT PRIMARY KEY, ts REAL NOT NULL, model TEXT, feature TEXT, user_id TEXT, tenant_id TEXT,
    task_id TEXT, outcome TEXT, cost_usd REAL NOT NULL, data TEXT NOT NULL
);
CREATE INDEX fc_records_ts ON fc_records (ts);
"""


def unpriced(rid: str, ts: float = 1_800_000_000.0, **kw: object) -> CallRecord:
    return CallRecord(
        id=rid,
        ts=ts,
        model="house-llm",
        usage=Usage(input_tokens=10, output_tokens=5),
        cost_usd=None,
        reserved_usd=None,
        overshoot_usd=None,
        overshoot_tokens=3,
        price_known=False,
        **kw,  # type: ignore[arg-type]
    )


def test_a_record_with_unknown_usd_round_trips() -> None:
    record = unpriced("a", saved_usd=None)
    data = json.loads(json.dumps(record.to_dict()))
    assert data["cost_usd"] is None and data["overshoot_tokens"] == 3
    assert CallRecord.from_dict(data) == record
    # a record written before these fields existed reads as before
    old = {"id": "o", "ts": 1.0, "model": "m", "cost_usd": 0.5, "reserved_usd": 0.6, "overshoot_usd": 0.0}
    back = CallRecord.from_dict(old)
    assert (back.cost_usd, back.overshoot_tokens, back.saved_usd) == (0.5, 0, 0.0)


def test_summary_leaves_unknown_usd_out_of_sums_and_counts_it() -> None:
    priced = CallRecord(
        id="p", model="house-llm", usage=Usage(input_tokens=1, output_tokens=1), cost_usd=0.25
    )
    hit = CallRecord(
        id="h",
        model="house-llm",
        usage=Usage(),
        cost_usd=0.0,
        outcome="cache_hit",
        saved_usd=None,
        price_known=False,
    )
    (row,) = summarize([priced, unpriced("u"), hit], "model")
    assert (row.calls, row.cost_usd, row.saved_usd, row.unpriced, row.cache_hits) == (2, 0.25, 0.0, 2, 1)
    assert (row.input_tokens, row.output_tokens) == (11, 6)
    (complete,) = summarize([priced], "model")
    assert complete.unpriced == 0


def test_sqlite_stores_unknown_usd_as_null(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    with SQLiteLedger(path) as ledger:
        ledger.add_record(unpriced("u"))
        assert ledger.records()[0].cost_usd is None
        assert ledger.summary("model")[0].unpriced == 1
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT cost_usd FROM fc_records").fetchall() == [(None,)]


def test_a_ledger_file_from_an_earlier_version_takes_unpriced_records(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old_record = CallRecord(
        id="old", ts=1_700_000_000.0, model="m", usage=Usage(input_tokens=2), cost_usd=0.5
    )
    with sqlite3.connect(path) as conn:
        conn.executescript(OLD_RECORDS_TABLE)
        d = old_record.to_dict()
        del d["overshoot_tokens"]  # what an earlier version wrote
        conn.execute(
            "INSERT INTO fc_records VALUES (?, ?, ?, NULL, NULL, NULL, NULL, 'ok', ?, ?)",
            (old_record.id, old_record.ts, old_record.model, 0.5, json.dumps(d)),
        )
    conn.close()
    with SQLiteLedger(path) as ledger:
        ledger.add_record(unpriced("new"))
        assert [(r.id, r.cost_usd) for r in ledger.records()] == [("old", 0.5), ("new", None)]
        assert ledger.records(model="house-llm")[0].id == "new"
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT SUM(cost_usd), COUNT(*) FROM fc_records").fetchone() == (0.5, 2)
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert {"fc_records_ts", "fc_records_feature", "fc_records_user"} <= indexes
    conn.close()
    with SQLiteLedger(path) as again:  # opening it again changes nothing
        assert len(again.records()) == 2
