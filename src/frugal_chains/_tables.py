"""How spend reports are printed: a table (``rich`` in a terminal when it is installed, plain text otherwise), CSV or
JSON. The ``frugal-chains report`` command and ``frugal-chains demo`` both print through here."""

from __future__ import annotations

import csv
import io
import json
import shutil
import sys
from collections.abc import Callable, Sequence
from typing import Literal

from frugal_chains.accounting.report import ReportRow, SpendReport
from frugal_chains.errors import ConfigurationError

__all__ = ["FORMATS", "plain_table", "render_report"]

Format = Literal["table", "csv", "json"]
FORMATS: tuple[str, ...] = ("table", "csv", "json")


def _usd(value: float, r: ReportRow) -> str:
    """USD as text; ``unknown`` when no record of the row has a known USD (never shown as ``0.000000``)."""
    return "unknown" if r.unpriced and r.unpriced >= r.requests else f"{value:.6f}"


# (machine name for CSV/JSON, table header, value as text)
_COLUMNS: tuple[tuple[str, str, Callable[[ReportRow], str]], ...] = (
    ("calls", "calls", lambda r: f"{r.calls:,}"),
    ("input_tokens", "input tok", lambda r: f"{r.input_tokens:,}"),
    ("output_tokens", "output tok", lambda r: f"{r.output_tokens:,}"),
    ("cost_usd", "cost USD", lambda r: _usd(r.cost_usd, r)),
    ("cache_hits", "cache hits", lambda r: f"{r.cache_hits:,}"),
    ("saved_usd", "saved USD", lambda r: _usd(r.saved_usd, r)),
    ("refused", "refused", lambda r: f"{r.refused:,}"),
    ("escalations", "escalations", lambda r: f"{r.escalations:,}"),
    ("unpriced", "unpriced", lambda r: f"{r.unpriced:,}"),
    ("overshoots", "overshoots", lambda r: f"{r.overshoots:,}"),
    ("overshoot_tokens", "overshoot tok", lambda r: f"{r.overshoot_tokens:,}"),
    ("cache_read_tokens", "cache read tok", lambda r: f"{r.cache_read_tokens:,}"),
    ("cache_write_tokens", "cache write tok", lambda r: f"{r.cache_write_tokens:,}"),
    ("prefix_hit_rate", "prefix hit", lambda r: _rate(r.prefix_hit_rate)),
)
_WHEN_ANY = frozenset({"unpriced", "overshoots", "overshoot_tokens"})
"""Columns shown in a table only when some record has them (CSV and JSON always have every column)."""
_PROMPT_CACHE = frozenset({"cache_read_tokens", "cache_write_tokens", "prefix_hit_rate"})
"""Columns shown in a table only when some provider call reported prompt-cache reads or writes."""


def _rate(value: float | None) -> str:
    """A share as a percentage; ``-`` when there is nothing to divide (no input tokens)."""
    return "-" if value is None else f"{value:.1%}"


def _columns(report: SpendReport) -> list[tuple[str, str, Callable[[ReportRow], str]]]:
    """The table's metric columns: ``unpriced`` only when some record's USD is unknown, the overshoot columns only
    when some call used more than it reserved, the prompt-cache columns only when some call read or wrote the
    provider's prompt cache."""
    t = report.total
    prompt_cache = bool(t.cache_read_tokens or t.cache_write_tokens)
    return [
        c
        for c in _COLUMNS
        if (c[0] not in _WHEN_ANY or getattr(t, c[0])) and (c[0] not in _PROMPT_CACHE or prompt_cache)
    ]


def plain_table(
    title: str | None, header: Sequence[str], rows: Sequence[Sequence[str]], *, keys: int = 1
) -> str:
    """A fixed-width text table: the first ``keys`` columns left-aligned, the others right-aligned; a row whose
    first cell is ``"total"`` is set apart by a rule."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    rule = "  ".join("-" * w for w in widths)

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            str(c).ljust(w) if i < keys else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    out = [title] if title else []
    out += [line(header), rule]
    for r in rows:
        if r and r[0] == "total":
            out.append(rule)
        out.append(line(r))
    return "\n".join(out)


def _cells(report: SpendReport) -> tuple[list[str], list[list[str]]]:
    columns = _columns(report)
    header = [*(report.by or ("",)), *(c[1] for c in columns)]
    rows = [[*r.key, *(c[2](r) for c in columns)] for r in report.rows]
    total_key = ["total", *([""] * (len(report.by) - 1))] if report.by else ["total"]
    rows.append([*total_key, *(c[2](report.total) for c in columns)])
    return header, rows


def _rich_table(report: SpendReport, title: str | None, width: int | None) -> str:
    from rich.console import Console
    from rich.table import Table

    header, rows = _cells(report)
    keys = max(1, len(report.by))
    table = Table(title=title, title_justify="left", show_footer=False)
    for i, h in enumerate(header):
        table.add_column(h, justify="left" if i < keys else "right", no_wrap=True)
    for i, row in enumerate(rows):
        table.add_row(*row, end_section=i == len(rows) - 2, style="bold" if i == len(rows) - 1 else None)
    out = io.StringIO()
    Console(file=out, force_terminal=True, width=width or shutil.get_terminal_size().columns).print(table)
    return out.getvalue().rstrip("\n")


def _use_rich(rich: bool | None) -> bool:
    if rich is False:
        return False
    try:
        import rich as _  # noqa: F401
    except ImportError:
        return False
    return True if rich else sys.stdout.isatty()


def render_report(
    report: SpendReport,
    fmt: str = "table",
    *,
    title: str | None = None,
    rich: bool | None = None,
    width: int | None = None,
) -> str:
    """``report`` as text. ``table``: one row per group and a total row, drawn with ``rich`` when it is installed
    and ``rich`` is True or (``None``) standard output is a terminal, else plain text; ``csv``: the groups only
    (no total row, so sums in a spreadsheet stay right), machine column names; ``json``: :meth:`SpendReport.to_dict`.
    """
    if fmt == "json":
        return json.dumps(report.to_dict(), indent=2)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow([*report.by, *(c[0] for c in _COLUMNS)])
        for r in report.rows:
            figures = r.figures()
            writer.writerow([*r.key, *("" if figures[c[0]] is None else figures[c[0]] for c in _COLUMNS)])
        return out.getvalue().rstrip("\n")
    if fmt != "table":
        raise ConfigurationError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}.", field="format")
    if _use_rich(rich):
        return _rich_table(report, title, width)
    header, rows = _cells(report)
    return plain_table(title, header, rows, keys=max(1, len(report.by)))
