"""Spend reports over a ledger's call records: spend, calls, cache hits, refusals and escalations, grouped by one
or more fields (framework-free; the ``frugal-chains report`` command and the demo print these).

What each record adds is decided once, in :class:`frugal_chains.accounting.ledger.Totals` (the same sums as
``ledger.summary()``): a provider call adds its USD and tokens, a cache hit what it saved (no tokens), a refused
call only to ``refused``, a cascade's ``routed`` record only its escalations.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

from frugal_chains.accounting.ledger import GROUP_KEYS, SpendLedger, Totals, group_key, prefix_hit_rate
from frugal_chains.accounting.usage import CallRecord
from frugal_chains.errors import ConfigurationError

__all__ = ["REPORT_GROUPS", "ReportRow", "SpendReport", "parse_since", "spend_report"]

REPORT_GROUPS: tuple[str, ...] = GROUP_KEYS
"""What a report can group by: feature, user, tenant, model, day (UTC), task, outcome, tier."""

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([mhdw])\s*$")
_UNIT_S = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclass(frozen=True, kw_only=True)
class ReportRow:
    """One group of a :class:`SpendReport` (or its total).

    USD sums hold the records whose USD is known; ``unpriced`` counts the others (a model with no price), which
    are never added as ``$0``.

    Example:
        >>> from frugal_chains.accounting.report import ReportRow
        >>> row = ReportRow(key=("faq",), calls=3, cost_usd=0.002, cache_hits=1, saved_usd=0.0007)
        >>> row.requests, row.label
        (4, 'faq')
    """

    key: tuple[str, ...] = ()
    """One value per grouping field (``"(none)"`` where a record has none); empty for the total."""
    calls: int = 0
    """Provider calls made (not cache hits, not refused calls)."""
    cost_usd: float = 0.0
    """USD of the calls whose cost is known."""
    input_tokens: int = 0
    """Tokens the provider calls sent (a cache hit sends none)."""
    output_tokens: int = 0
    """Tokens the provider calls received."""
    cache_hits: int = 0
    saved_usd: float = 0.0
    """USD the cache hits saved, where known."""
    refused: int = 0
    """Calls a budget refused before they were made (nothing spent)."""
    escalations: int = 0
    """Times a cascade moved a request up a tier (from its ``routed`` records; by ``tier`` or ``model``, counted
    under the tier and model the request started on)."""
    unpriced: int = 0
    """Records whose USD is unknown, left out of the USD sums."""
    overshoots: int = 0
    """Calls that used more than they reserved (a model with no output cap, an assumed or observed cap that was
    too low): see ``overshoot_tokens`` / ``overshoot_usd``."""
    overshoot_tokens: int = 0
    overshoot_usd: float = 0.0
    cache_read_tokens: int = 0
    """Of ``input_tokens``, those the provider reported as read from its prompt cache."""
    cache_write_tokens: int = 0
    """Of ``input_tokens``, those the provider reported as written to its prompt cache (5-minute and 1-hour)."""

    @property
    def prefix_hit_rate(self) -> float | None:
        """``cache_read_tokens / input_tokens`` (``None`` when no input tokens were sent): the share of the prompt
        tokens the provider served from its prompt cache. See :func:`~frugal_chains.accounting.ledger.prefix_hit_rate`.

        Example:
            >>> from frugal_chains.accounting.report import ReportRow
            >>> ReportRow(key=("faq",), calls=2, input_tokens=4000, cache_read_tokens=3000).prefix_hit_rate
            0.75
        """
        return prefix_hit_rate(self.cache_read_tokens, self.input_tokens)

    @property
    def requests(self) -> int:
        """Calls plus cache hits: the questions that got an answer."""
        return self.calls + self.cache_hits

    @property
    def label(self) -> str:
        """The key as one string (``"total"`` for the total row)."""
        return " / ".join(self.key) if self.key else "total"

    def figures(self) -> dict[str, Any]:
        """The row's numbers by field name (USD rounded to the nano-dollar), without its key."""
        d = asdict(self)
        del d["key"]
        for k in ("cost_usd", "saved_usd", "overshoot_usd"):
            d[k] = round(d[k], 9)
        rate = self.prefix_hit_rate
        d["prefix_hit_rate"] = None if rate is None else round(rate, 6)
        return d

    @classmethod
    def of(cls, key: tuple[str, ...], t: Totals) -> ReportRow:
        return cls(
            key=key,
            calls=t.calls,
            cost_usd=t.cost_usd,
            input_tokens=t.input_tokens,
            output_tokens=t.output_tokens,
            cache_hits=t.cache_hits,
            saved_usd=t.saved_usd,
            refused=t.refused,
            escalations=t.escalations,
            unpriced=t.unpriced,
            overshoots=t.overshoots,
            overshoot_tokens=t.overshoot_tokens,
            overshoot_usd=t.overshoot_usd,
            cache_read_tokens=t.cache_read_tokens,
            cache_write_tokens=t.cache_write_tokens,
        )


@dataclass(frozen=True, kw_only=True)
class SpendReport:
    """What :func:`spend_report` found: one row per group and the total over all of them.

    Example:
        >>> from frugal_chains.accounting import CallRecord, SQLiteLedger, Usage
        >>> from frugal_chains.accounting.report import spend_report
        >>> ledger = SQLiteLedger()
        >>> ledger.add_record(CallRecord(model="m", usage=Usage(input_tokens=5), cost_usd=0.25))
        >>> spend_report(ledger, by="model").to_dict()["total"]["cost_usd"]
        0.25
    """

    by: tuple[str, ...]
    since: float | None
    """Unix time (UTC) of the oldest record counted (``None``: from the start)."""
    until: float | None
    rows: tuple[ReportRow, ...]
    total: ReportRow

    def render(self, format: str = "table", *, title: str | None = None, rich: bool | None = None) -> str:
        """The report as text, as ``frugal-chains report`` prints it. ``table``: one row per group and a total
        row, drawn with ``rich`` when ``rich`` is True or (``None``) standard output is a terminal, else plain
        text; ``csv``: the groups only (no total row), machine column names; ``json``: :meth:`to_dict`.

        Example:
            >>> from frugal_chains.accounting import CallRecord, SQLiteLedger, Usage, spend_report
            >>> ledger = SQLiteLedger()
            >>> ledger.add_record(CallRecord(model="m", usage=Usage(input_tokens=5), cost_usd=0.25))
            >>> print(spend_report(ledger, by="model").render("csv").splitlines()[0].split(",")[:3])
            ['model', 'calls', 'input_tokens']
        """
        from frugal_chains._tables import render_report

        return render_report(self, format, title=title, rich=rich)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``by``, ``since``/``until`` (ISO 8601 UTC or ``None``), ``rows`` and ``total`` (USD rounded
        to the nano-dollar)."""

        def row(r: ReportRow) -> dict[str, Any]:
            return {**dict(zip(self.by, r.key, strict=True)), **r.figures()}

        return {
            "by": list(self.by),
            "since": _iso(self.since),
            "until": _iso(self.until),
            "rows": [row(r) for r in self.rows],
            "total": self.total.figures(),
        }


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, timezone.utc).isoformat()


def parse_since(value: str | float | datetime, *, now: float | None = None) -> float:
    """A start time as unix seconds (UTC): a number of seconds, a ``datetime`` (naive means UTC), an ISO date or
    date-time (``2026-12-01``, ``2026-12-01T09:30``; naive means UTC), or a span back from now: ``30m``, ``24h``,
    ``7d``, ``2w``.

    Raises:
        ConfigurationError: (``field="since"``) anything else.

    Example:
        >>> from frugal_chains.accounting.report import parse_since
        >>> parse_since("7d", now=1_000_000.0)
        395200.0
        >>> parse_since("1970-01-02")
        86400.0
    """
    if isinstance(value, bool):
        raise ConfigurationError(f"since must be a time, got {value!r}.", field="since")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, datetime):
        dt = value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)
        return dt.timestamp()
    if isinstance(value, str):
        m = _RELATIVE.match(value)
        if m:
            base = time.time() if now is None else now
            return base - float(m.group(1)) * _UNIT_S[m.group(2)]
        try:
            dt = datetime.fromisoformat(value.strip())
        except ValueError:
            pass
        else:
            return parse_since(dt)
    raise ConfigurationError(
        f"since must be an ISO date or date-time (2026-12-01, 2026-12-01T09:30) or a span back from now "
        f"(30m, 24h, 7d, 2w); got {value!r}.",
        field="since",
    )


def _groups(by: str | Sequence[str]) -> tuple[str, ...]:
    fields = (by,) if isinstance(by, str) else tuple(by)
    for f in fields:
        if f not in REPORT_GROUPS:
            raise ConfigurationError(
                f"by must name fields among {', '.join(REPORT_GROUPS)}; got {f!r}.", field="by"
            )
    if len(set(fields)) != len(fields):
        raise ConfigurationError(f"by names a field twice: {list(fields)!r}.", field="by")
    return fields


def _key(record: CallRecord, fields: tuple[str, ...]) -> tuple[str, ...]:
    """A record's group. A cascade's ``routed`` record counts its escalations under the tier (and model) the
    request started on: where it escalated from."""
    if record.outcome != "routed":
        return tuple(group_key(record, f) for f in fields)
    start: dict[str, object] = {"tier": record.extra.get("start_tier")}
    attempts = record.extra.get("attempts")
    if isinstance(attempts, list) and attempts and isinstance(attempts[0], dict):
        start["model"] = attempts[0].get("model")
    return tuple(str(start[f]) if isinstance(start.get(f), str) else group_key(record, f) for f in fields)


def summarize_report(
    records: Sequence[CallRecord],
    by: str | Sequence[str] = ("feature",),
    *,
    since: float | None = None,
    until: float | None = None,
) -> SpendReport:
    """:func:`spend_report` over records already read."""
    fields = _groups(by)
    groups: dict[tuple[str, ...], Totals] = {}
    total = Totals()
    for r in records:
        if r.outcome == "routed" and not r.extra.get("escalations"):
            continue  # a routing decision adds only its escalations: no group of its own for none
        groups.setdefault(_key(r, fields), Totals()).add(r)
        total.add(r)
    rows = [ReportRow.of(k, t) for k, t in groups.items()]
    if "day" in fields:
        rows.sort(key=lambda r: r.key)
    else:
        rows.sort(key=lambda r: (-r.cost_usd, r.key))
    return SpendReport(by=fields, since=since, until=until, rows=tuple(rows), total=ReportRow.of((), total))


def spend_report(
    ledger: SpendLedger,
    by: str | Sequence[str] = ("feature",),
    *,
    since: str | float | datetime | None = None,
    until: str | float | datetime | None = None,
    feature: str | None = None,
    user_id: str | None = None,
    tenant_id: str | None = None,
    model: str | None = None,
) -> SpendReport:
    """Spend, calls, cache hits (and the USD they saved), refused calls and cascade escalations in ``ledger``,
    grouped by one or more of :data:`REPORT_GROUPS` (most expensive group first; by day, oldest first).

    ``since``/``until``: see :func:`parse_since` (``until`` is exclusive). ``feature``, ``user_id``,
    ``tenant_id``, ``model`` keep only the records that match.

    Raises:
        ConfigurationError: (``field="by"``, ``"since"`` or ``"until"``) a bad grouping or time.

    Example:
        >>> from frugal_chains.accounting import Attribution, CallRecord, SQLiteLedger, Usage
        >>> from frugal_chains.accounting.report import spend_report
        >>> ledger = SQLiteLedger()
        >>> faq = Attribution(feature="faq", user_id="u1")
        >>> ledger.add_record(CallRecord(model="m", usage=Usage(input_tokens=9), cost_usd=0.5, attribution=faq))
        >>> ledger.add_record(CallRecord(model="m", usage=Usage(), cost_usd=0.0, attribution=faq,
        ...                              outcome="cache_hit", saved_usd=0.5))
        >>> ledger.add_record(CallRecord(model="m", usage=Usage(), cost_usd=0.0, attribution=faq, outcome="refused"))
        >>> (row,) = spend_report(ledger, by=["feature", "user"]).rows
        >>> row.key, row.calls, row.cost_usd, row.cache_hits, row.saved_usd, row.refused
        (('faq', 'u1'), 1, 0.5, 1, 0.5, 1)
    """
    fields = _groups(by)
    lo = None if since is None else parse_since(since)
    try:
        hi = None if until is None else parse_since(until)
    except ConfigurationError as e:
        raise ConfigurationError(str(e).replace("since must", "until must"), field="until") from e
    records = ledger.records(
        since=lo, until=hi, feature=feature, user_id=user_id, tenant_id=tenant_id, model=model
    )
    return summarize_report(records, fields, since=lo, until=hi)
