"""The embedded ledger: SQLite, a file or ``:memory:``. No server.

One connection per ledger object, guarded by a lock (threads and asyncio tasks share it safely); every
reservation is one ``BEGIN IMMEDIATE`` transaction, so several **processes** sharing one file also reserve
atomically (SQLite serialises writers; WAL mode lets readers continue). Async methods run the same
transaction in a worker thread (``asyncio.to_thread``): SQLite has no asynchronous driver, and a transaction
takes well under a millisecond.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from frugal_chains.accounting.ledger import (
    Claim,
    CommitResult,
    Counter,
    GroupBy,
    ReserveResult,
    SpendRow,
    check_claims,
    distinct_writes,
    now,
    summarize,
)
from frugal_chains.accounting.usage import CallRecord
from frugal_chains.errors import ConfigurationError, LedgerUnavailableError
from frugal_chains.shared.sharing import SharedService

__all__ = ["SQLiteLedger"]

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS fc_counters (
    counter TEXT NOT NULL, bucket INTEGER NOT NULL,
    cn INTEGER NOT NULL DEFAULT 0, ct INTEGER NOT NULL DEFAULT 0,
    rn INTEGER NOT NULL DEFAULT 0, rt INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (counter, bucket)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS fc_reservations (
    id TEXT PRIMARY KEY, state TEXT NOT NULL, nano INTEGER NOT NULL, tokens INTEGER NOT NULL,
    writes TEXT NOT NULL, expires_at REAL NOT NULL, created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS fc_reservations_expiry ON fc_reservations (state, expires_at);
"""

# cost_usd is NULL for a record whose USD is unknown (a model with no price); SQL's SUM skips it, as the
# ledger's own summaries do. Files made before that was possible declare it NOT NULL: see _allow_unknown_cost.
_RECORDS = """
CREATE TABLE IF NOT EXISTS {table} (
    id TEXT PRIMARY KEY, ts REAL NOT NULL, model TEXT, feature TEXT, user_id TEXT, tenant_id TEXT,
    task_id TEXT, outcome TEXT, cost_usd REAL, data TEXT NOT NULL
);
"""
_RECORDS_COLUMNS = "id, ts, model, feature, user_id, tenant_id, task_id, outcome, cost_usd, data"
_RECORDS_INDEXES = """
CREATE INDEX IF NOT EXISTS fc_records_ts ON fc_records (ts);
CREATE INDEX IF NOT EXISTS fc_records_feature ON fc_records (feature, ts);
CREATE INDEX IF NOT EXISTS fc_records_user ON fc_records (user_id, ts);
"""

_KEEP_FINISHED_RESERVATIONS_S = 7 * 86400
_PRUNE_EVERY_S = 60.0


class SQLiteLedger(SharedService):
    """Embedded spend ledger in SQLite (the default).

    Args:
        path: a database file (created if missing; its folder must exist) or ``":memory:"``.
        timeout_s: how long to wait for another process's transaction on the same file.

    Raises:
        ConfigurationError: (``field="path"``) when the database cannot be opened or created.

    Example:
        >>> from frugal_chains import SQLiteLedger
        >>> ledger = SQLiteLedger(":memory:")
        >>> ledger.records()
        []
        >>> ledger.close()
    """

    def __init__(self, path: str | os.PathLike[str] = ":memory:", *, timeout_s: float = 10.0) -> None:
        if not isinstance(path, (str, os.PathLike)) or (isinstance(path, str) and not path):
            raise ConfigurationError(
                f"SQLiteLedger path must be a file path or ':memory:', got {path!r}.", field="path"
            )
        self.path = str(path)
        if self.path != ":memory:":
            parent = Path(self.path).expanduser().resolve().parent
            if not parent.is_dir():
                raise ConfigurationError(
                    f"SQLiteLedger cannot open {self.path!r}: folder {str(parent)!r} does not exist. "
                    "Create it, or pass another path (or ':memory:').",
                    field="path",
                )
        self._lock = threading.RLock()
        try:
            self._conn = sqlite3.connect(
                self.path, timeout=timeout_s, isolation_level=None, check_same_thread=False
            )
            self._conn.execute(f"PRAGMA busy_timeout = {int(timeout_s * 1000)}")
            # Switching to WAL and creating the schema do not wait on busy_timeout when another process opens
            # the same new file at the same moment: retry while the file is locked, up to timeout_s.
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    if self.path != ":memory:":
                        self._conn.execute("PRAGMA journal_mode = WAL")
                        self._conn.execute("PRAGMA synchronous = NORMAL")
                    self._conn.executescript(_SCHEMA + _RECORDS.format(table="fc_records") + _RECORDS_INDEXES)
                    self._allow_unknown_cost()
                    break
                except sqlite3.OperationalError as e:
                    busy = "locked" in str(e) or "busy" in str(e)
                    if not busy or time.monotonic() > deadline:
                        raise
                    time.sleep(0.02)
        except sqlite3.Error as e:
            raise ConfigurationError(
                f"SQLiteLedger cannot open {self.path!r}: {e}. Pass a writable file path or ':memory:'.",
                field="path",
            ) from e
        self._closed = False
        self._last_prune = float("-inf")

    def __repr__(self) -> str:
        return f"SQLiteLedger({self.path!r})"

    def _allow_unknown_cost(self) -> None:
        """A ledger file made by an earlier version declares ``fc_records.cost_usd NOT NULL``, which cannot hold
        the record of a model with no price: rebuild that table once, every record kept as it is (SQLite cannot
        drop a NOT NULL constraint in place). One transaction; a process that opens the file meanwhile waits."""

        def old_schema() -> bool:
            columns = self._conn.execute("PRAGMA table_info(fc_records)").fetchall()
            return any(c[1] == "cost_usd" and c[3] for c in columns)

        if not old_schema():
            return
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            if old_schema():  # another process may have rebuilt it while this one waited
                conn.execute("DROP TABLE IF EXISTS fc_records_upgrade")
                conn.execute(_RECORDS.format(table="fc_records_upgrade"))
                conn.execute(
                    f"INSERT INTO fc_records_upgrade ({_RECORDS_COLUMNS}) SELECT {_RECORDS_COLUMNS} FROM fc_records"
                )
                conn.execute("DROP TABLE fc_records")
                conn.execute("ALTER TABLE fc_records_upgrade RENAME TO fc_records")
                for statement in _RECORDS_INDEXES.strip().splitlines():
                    conn.execute(statement)
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    # -- plumbing -----------------------------------------------------------------------------------------
    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._closed:
                raise LedgerUnavailableError(f"{self!r} is closed.")
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as e:
                raise LedgerUnavailableError(f"{self!r} could not start a transaction: {e}") from e
            try:
                yield conn
            except BaseException as e:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                if isinstance(e, sqlite3.Error):
                    raise LedgerUnavailableError(f"{self!r} failed: {e}") from e
                raise
            else:
                try:
                    conn.execute("COMMIT")
                except sqlite3.Error as e:
                    raise LedgerUnavailableError(f"{self!r} could not commit: {e}") from e

    def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:
            if self._closed:
                raise LedgerUnavailableError(f"{self!r} is closed.")
            try:
                return fn(self._conn)
            except sqlite3.Error as e:
                raise LedgerUnavailableError(f"{self!r} failed: {e}") from e

    @staticmethod
    def _counters(conn: sqlite3.Connection, claims: Sequence[Claim]) -> tuple[Counter, ...]:
        """Every claim's counter over its window, in one statement (each part uses the primary key)."""
        if not claims:
            return ()
        part = (
            "SELECT ?, COALESCE(SUM(cn),0), COALESCE(SUM(ct),0), COALESCE(SUM(rn),0), COALESCE(SUM(rt),0) "
            "FROM fc_counters WHERE counter = ? AND bucket BETWEEN ? AND ?"
        )
        rows = conn.execute(
            " UNION ALL ".join([part] * len(claims)),
            [v for i, c in enumerate(claims) for v in (i, c.counter, c.min_bucket, c.bucket)],
        ).fetchall()
        by_index = {
            r[0]: Counter(
                committed_nano=r[1], committed_tokens=r[2], reserved_nano=r[3], reserved_tokens=r[4]
            )
            for r in rows
        }
        return tuple(by_index[i] for i in range(len(claims)))

    @staticmethod
    def _counter(conn: sqlite3.Connection, counter: str, lo: int, hi: int) -> Counter:
        row = conn.execute(
            "SELECT COALESCE(SUM(cn),0), COALESCE(SUM(ct),0), COALESCE(SUM(rn),0), COALESCE(SUM(rt),0) "
            "FROM fc_counters WHERE counter = ? AND bucket BETWEEN ? AND ?",
            (counter, lo, hi),
        ).fetchone()
        return Counter(
            committed_nano=row[0], committed_tokens=row[1], reserved_nano=row[2], reserved_tokens=row[3]
        )

    @staticmethod
    def _add(
        conn: sqlite3.Connection, writes: Sequence[Sequence[Any]], cn: int, ct: int, rn: int, rt: int
    ) -> None:
        conn.executemany(
            "INSERT INTO fc_counters (counter, bucket, cn, ct, rn, rt) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (counter, bucket) DO UPDATE SET cn = cn + excluded.cn, ct = ct + excluded.ct, "
            "rn = rn + excluded.rn, rt = rt + excluded.rt",
            [(c, b, cn, ct, rn, rt) for c, b in writes],
        )

    def _sweep(self, conn: sqlite3.Connection, t: float) -> None:
        """Give back expired reservations (an indexed look-up on every reserve); prune old finished ones now
        and then."""
        expired = conn.execute(
            "SELECT id, nano, tokens, writes FROM fc_reservations WHERE state = 'reserved' AND expires_at < ? "
            "LIMIT 50",
            (t,),
        ).fetchall()
        for rid, nano, tokens, writes in expired:
            self._add(conn, json.loads(writes), 0, 0, -nano, -tokens)
            conn.execute("UPDATE fc_reservations SET state = 'expired' WHERE id = ?", (rid,))
        if t - self._last_prune >= _PRUNE_EVERY_S:
            self._last_prune = t
            conn.execute(
                "DELETE FROM fc_reservations WHERE id IN (SELECT id FROM fc_reservations "
                "WHERE state != 'reserved' AND created < ? LIMIT 500)",
                (t - _KEEP_FINISHED_RESERVATIONS_S,),
            )

    # -- SpendLedger ----------------------------------------------------------------------------------------
    def reserve(
        self, reservation_id: str, claims: Sequence[Claim], *, nano: int, tokens: int, expires_at: float
    ) -> ReserveResult:
        t = now()
        with self._tx() as conn:
            self._sweep(conn, t)
            before = self._counters(conn, claims)
            denied, unit, exceeded = check_claims(claims, before, nano, tokens)
            if denied is not None:
                return ReserveResult(ok=False, before=before, denied=denied, denied_unit=unit)
            writes = distinct_writes(claims)
            try:
                conn.execute(
                    "INSERT INTO fc_reservations (id, state, nano, tokens, writes, expires_at, created) "
                    "VALUES (?, 'reserved', ?, ?, ?, ?, ?)",
                    (reservation_id, nano, tokens, json.dumps(writes), expires_at, t),
                )
            except sqlite3.IntegrityError as e:
                raise ConfigurationError(
                    f"Reservation id {reservation_id!r} was used before; ids must be unique.",
                    field="reservation_id",
                ) from e
            self._add(conn, writes, 0, 0, nano, tokens)
            return ReserveResult(ok=True, before=before, exceeded=exceeded)

    def commit(
        self,
        reservation_id: str,
        claims: Sequence[Claim],
        *,
        nano: int,
        tokens: int,
        record: CallRecord | None = None,
    ) -> CommitResult:
        t = now()
        with self._tx() as conn:
            row = conn.execute(
                "SELECT state, nano, tokens, writes FROM fc_reservations WHERE id = ?", (reservation_id,)
            ).fetchone()
            if row is not None and row[0] in ("committed", "released"):
                return CommitResult(applied=False)
            held_nano = held_tokens = 0
            if row is not None:
                writes = json.loads(row[3])
                if row[0] == "reserved":  # (an expired reservation was already given back)
                    held_nano, held_tokens = row[1], row[2]
                conn.execute("UPDATE fc_reservations SET state = 'committed' WHERE id = ?", (reservation_id,))
            else:
                writes = distinct_writes(claims)
                conn.execute(
                    "INSERT INTO fc_reservations (id, state, nano, tokens, writes, expires_at, created) "
                    "VALUES (?, 'committed', 0, 0, ?, ?, ?)",
                    (reservation_id, json.dumps(writes), t, t),
                )
            self._add(conn, writes, nano, tokens, -held_nano, -held_tokens)
            if record is not None:
                self._insert_record(conn, record)
            return CommitResult(applied=True, after=self._counters(conn, claims))

    def release(self, reservation_id: str) -> bool:
        with self._tx() as conn:
            row = conn.execute(
                "SELECT state, nano, tokens, writes FROM fc_reservations WHERE id = ?", (reservation_id,)
            ).fetchone()
            if row is None or row[0] != "reserved":
                return False
            self._add(conn, json.loads(row[3]), 0, 0, -row[1], -row[2])
            conn.execute("UPDATE fc_reservations SET state = 'released' WHERE id = ?", (reservation_id,))
            return True

    @staticmethod
    def _insert_record(conn: sqlite3.Connection, r: CallRecord) -> None:
        a = r.attribution
        conn.execute(
            "INSERT OR IGNORE INTO fc_records (id, ts, model, feature, user_id, tenant_id, task_id, outcome, "
            "cost_usd, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                r.id,
                r.ts,
                r.model,
                a.feature,
                a.user_id,
                a.tenant_id,
                a.task_id,
                r.outcome,
                r.cost_usd,
                json.dumps(r.to_dict(), default=str),
            ),
        )

    def add_record(self, record: CallRecord) -> None:
        with self._tx() as conn:
            self._insert_record(conn, record)

    def counter(self, counter: str, min_bucket: int, max_bucket: int) -> Counter:
        return self._read(lambda conn: self._counter(conn, counter, min_bucket, max_bucket))

    def records(
        self,
        *,
        since: float | None = None,
        until: float | None = None,
        feature: str | None = None,
        user_id: str | None = None,
        tenant_id: str | None = None,
        model: str | None = None,
        task_id: str | None = None,
        limit: int | None = None,
    ) -> list[CallRecord]:
        where: list[str] = []
        args: list[str | float] = []
        for column, value in (
            ("feature", feature),
            ("user_id", user_id),
            ("tenant_id", tenant_id),
            ("model", model),
            ("task_id", task_id),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if since is not None:
            where.append("ts >= ?")
            args.append(since)
        if until is not None:
            where.append("ts < ?")
            args.append(until)
        sql = "SELECT data FROM fc_records"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY ts, id"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        rows = self._read(lambda conn: conn.execute(sql, args).fetchall())
        return [CallRecord.from_dict(json.loads(row[0])) for row in rows]

    def summary(
        self, by: GroupBy = "feature", *, since: float | None = None, until: float | None = None
    ) -> list[SpendRow]:
        return summarize(self.records(since=since, until=until), by)

    # -- async: the same transactions in a worker thread ----------------------------------------------------
    async def areserve(
        self, reservation_id: str, claims: Sequence[Claim], *, nano: int, tokens: int, expires_at: float
    ) -> ReserveResult:
        return await asyncio.to_thread(
            self.reserve, reservation_id, claims, nano=nano, tokens=tokens, expires_at=expires_at
        )

    async def acommit(
        self,
        reservation_id: str,
        claims: Sequence[Claim],
        *,
        nano: int,
        tokens: int,
        record: CallRecord | None = None,
    ) -> CommitResult:
        return await asyncio.to_thread(
            self.commit, reservation_id, claims, nano=nano, tokens=tokens, record=record
        )

    async def arelease(self, reservation_id: str) -> bool:
        return await asyncio.to_thread(self.release, reservation_id)

    async def aadd_record(self, record: CallRecord) -> None:
        await asyncio.to_thread(self.add_record, record)

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

    def __enter__(self) -> SQLiteLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
