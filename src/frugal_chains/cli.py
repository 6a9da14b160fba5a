"""The ``frugal-chains`` command.

Subcommands: ``demo`` (budgets, the semantic cache and the cascading router with fake models; no keys, no servers),
``report --ledger PATH|redis://...`` (spend, calls, cache hits, refusals and escalations from a ledger),
``prices MODEL...`` (what a model costs per million tokens, from LiteLLM's map offline),
``cache tune --pairs FILE.jsonl`` (the precision / hit-rate curve of the semantic cache on your labelled pairs;
a progress bar on stderr when it is a terminal, ``--progress``/``--no-progress`` to choose).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
from collections.abc import Sequence
from typing import Any

from frugal_chains import __version__

__all__ = ["main"]


def _cmd_demo(args: argparse.Namespace) -> int:
    try:
        from frugal_chains._demo import run_demo
    except ImportError as e:  # a missing extra: say which, without a traceback
        print(f"frugal-chains demo: {e}", file=sys.stderr)
        return 2
    if args.ledger and os.path.exists(args.ledger):
        # the demo's budgets would count the spend already in that ledger, and its totals would mix the runs
        print(
            f"frugal-chains demo: --ledger: {args.ledger!r} already exists; the demo writes a new ledger. "
            "Remove the file or pass another path.",
            file=sys.stderr,
        )
        return 2
    result = run_demo(ledger_path=args.ledger, echo=(lambda s: None) if args.json else print)
    if args.json:
        print(json.dumps(result, indent=2))
    return 0


_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def _open_ledger(where: str, prefix: str) -> Any:
    """The ledger ``--ledger`` names: a Redis URL, else an existing SQLite ledger file (opened only if it holds a
    ledger, so a wrong path never gets tables added to it)."""
    from frugal_chains.errors import ConfigurationError

    if where.startswith(_REDIS_SCHEMES):
        from frugal_chains.accounting.redis import RedisLedger

        try:
            return RedisLedger(where, prefix=prefix)
        except ConfigurationError as e:
            if e.field != "url":
                raise
            reason = str(e.__cause__ or e).rstrip(".")
            raise ConfigurationError(
                f"cannot reach Redis at {where.split('@')[-1]!r}: {reason}. Check that the server is up and the "
                "URL is right (redis://[:password@]host:port/db).",
                field="--ledger",
            ) from e
    if not os.path.isfile(where):
        raise ConfigurationError(f"no ledger file at {where!r}.", field="--ledger")
    try:
        with sqlite3.connect(f"file:{os.path.abspath(where)}?mode=ro", uri=True) as conn:
            found = conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'fc_records'"
            ).fetchone()
    except sqlite3.Error as e:
        raise ConfigurationError(f"{where!r} is not a SQLite ledger: {e}.", field="--ledger") from e
    if found is None:
        raise ConfigurationError(
            f"{where!r} is not a frugal-chains ledger (it has no fc_records table).", field="--ledger"
        )
    from frugal_chains.accounting.sqlite import SQLiteLedger

    return SQLiteLedger(where)


def _group_list(text: str) -> list[str]:
    """``--by feature,user`` (the flag may also repeat)."""
    from frugal_chains.accounting.report import REPORT_GROUPS

    fields = [f.strip() for f in text.split(",") if f.strip()]
    for f in fields:
        if f not in REPORT_GROUPS:
            raise argparse.ArgumentTypeError(f"{f!r} is not one of {', '.join(REPORT_GROUPS)}")
    if not fields:
        raise argparse.ArgumentTypeError(f"name one or more of {', '.join(REPORT_GROUPS)}")
    return fields


def _cmd_report(args: argparse.Namespace) -> int:
    from frugal_chains._tables import render_report
    from frugal_chains.accounting.report import parse_since, spend_report
    from frugal_chains.errors import ConfigurationError, LedgerUnavailableError

    by = [f for group in (args.by or [["feature"]]) for f in group]
    bounds: dict[str, float | None] = {}
    for flag, value in (("--since", args.since), ("--until", args.until)):
        try:
            bounds[flag] = None if value is None else parse_since(value)
        except ConfigurationError as e:
            print(f"frugal-chains report: {flag}: {e}", file=sys.stderr)
            return 2
    since, until = bounds["--since"], bounds["--until"]
    try:
        ledger = _open_ledger(args.ledger, args.prefix)
    except (ConfigurationError, LedgerUnavailableError, ImportError) as e:
        print(f"frugal-chains report: --ledger: {e}", file=sys.stderr)
        return 2
    try:
        report = spend_report(ledger, by=by, since=since, until=until)
    except ConfigurationError as e:
        flag = "--by" if e.field == "by" else "--since" if e.field == "since" else "--ledger"
        print(f"frugal-chains report: {flag}: {e}", file=sys.stderr)
        return 2
    except LedgerUnavailableError as e:
        print(f"frugal-chains report: --ledger: {e}", file=sys.stderr)
        return 2
    finally:
        ledger.close()
    print(
        render_report(
            report, args.format, title=f"Spend by {', '.join(by)}" if args.format == "table" else None
        )
    )
    return 0


def _cmd_prices(args: argparse.Namespace) -> int:
    from frugal_chains.accounting import litellm_price
    from frugal_chains.accounting.pricing import similar_models

    status = 0
    for model in args.models:
        p = litellm_price(model)
        if p is None:
            close = similar_models(model)
            hint = f" did you mean {' or '.join(close)}?" if close else ""
            print(
                f"{model}: no price in LiteLLM's map;{hint} (pass prices={{...}} to price it)",
                file=sys.stderr,
            )
            status = 1
            continue
        print(
            f"{model}: input ${p.input:g}/M, output ${p.output:g}/M, cache read ${p.cache_read_rate:g}/M, "
            f"cache write ${p.cache_write_rate:g}/M (1h ${p.cache_write_1h_rate:g}/M), "
            f"max output {p.max_output_tokens or 'unknown'} tokens"
        )
    return status


def _cmd_cache_tune(args: argparse.Namespace) -> int:
    from frugal_chains.cache.guard import HitGuard
    from frugal_chains.cache.tuning import load_pairs, tune_threshold
    from frugal_chains.errors import ConfigurationError

    try:
        pairs = load_pairs(args.pairs)
        result = tune_threshold(
            pairs,
            guard=None if args.no_guard else HitGuard(),
            target_precision=args.target_precision,
            progress=args.progress,
        )
    except (ConfigurationError, OSError) as e:
        print(f"frugal-chains cache tune: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    print(result.table(step=args.step))
    verdict = "reaches" if result.reached else "does NOT reach"
    print(
        f"\nthreshold {result.threshold:.2f} {verdict} precision {result.target_precision:.2f}: "
        f"precision {result.precision:.3f}, hit rate {result.hit_rate:.3f}, false hits {result.false_hit_rate:.3f} "
        f"({result.n_pairs} pairs, {result.n_positive} positive; guard {'off' if args.no_guard else 'on'})"
    )
    print(
        f"use it: AnswerCache(threshold={result.threshold:.2f}) or SemanticCache(threshold={result.threshold:.2f})"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``frugal-chains`` command."""
    parser = argparse.ArgumentParser(
        prog="frugal-chains", description="Cut LLM bills in LangChain and LlamaIndex."
    )
    parser.add_argument("--version", action="version", version=f"frugal-chains {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo",
        help="budgets, the semantic cache and the cascading router at work (fake models, no keys, no servers)",
        description=(
            "Runs four scenes with fake models priced from LiteLLM's price map (offline; no API keys, no servers): "
            "1) per-user and per-feature USD budgets refuse a chatty user's FAQ questions before any money is "
            "spent; 2) a per-run budget stops a research agent whose tool loop never ends; 3) SemanticCache "
            "(offline MiniLM embedder, hit guard on) answers repeated and paraphrased support questions and sends "
            "look-alikes to the model; 4) CascadeChatModel keeps easy help-desk questions on gpt-4o-mini and "
            "escalates the rest to gpt-4o. Then it prints spend tables (by feature, model and cascade tier: calls, "
            "tokens, cost, cache hits, saved USD, refusals, escalations). With --ledger FILE the ledger is kept: "
            "`frugal-chains report --ledger FILE` prints the same figures."
        ),
    )
    demo.add_argument("--ledger", metavar="PATH", help="write the spend ledger to this new SQLite file")
    demo.add_argument("--json", action="store_true", help="print the figures as JSON instead of tables")
    demo.set_defaults(func=_cmd_demo)

    from frugal_chains.accounting.report import REPORT_GROUPS

    report = sub.add_parser(
        "report",
        help="spend, calls, cache hits, refusals and escalations from a ledger",
        description=(
            "Reads the call records of a SQLite or Redis ledger and prints, per group: provider calls, tokens, "
            "USD spent, cache hits and the USD they saved, calls refused by a budget, and cascade escalations, "
            "with a total. USD sums hold the records whose price is known; an 'unpriced' column counts the others."
        ),
    )
    report.add_argument(
        "--ledger",
        required=True,
        metavar="PATH|URL",
        help="a SQLite ledger file, or a Redis URL (redis://host:6379/0, rediss://..., unix:///path.sock)",
    )
    report.add_argument(
        "--by",
        action="append",
        type=_group_list,
        metavar="FIELD[,FIELD]",
        help=f"group by one or more of {', '.join(REPORT_GROUPS)} (comma-separated or repeated; default feature)",
    )
    report.add_argument(
        "--since",
        metavar="WHEN",
        help="only records from then on: an ISO date or date-time in UTC (2026-12-01, 2026-12-01T09:30) or a span "
        "back from now (30m, 24h, 7d, 2w)",
    )
    report.add_argument(
        "--until",
        metavar="WHEN",
        help="only records before then: the same forms as --since (2026-12-01, 24h: up to a day ago)",
    )
    report.add_argument("--format", choices=["table", "csv", "json"], default="table", help="default table")
    report.add_argument("--prefix", default="frugal:", help="the RedisLedger key prefix (default frugal:)")
    report.set_defaults(func=_cmd_report)

    prices = sub.add_parser("prices", help="per-million-token prices of models (LiteLLM's map, offline)")
    prices.add_argument("models", nargs="+", metavar="MODEL")
    prices.set_defaults(func=_cmd_prices)

    cache = sub.add_parser("cache", help="semantic cache tools")
    cache_sub = cache.add_subparsers(dest="cache_command", required=True)
    tune = cache_sub.add_parser(
        "tune",
        help="precision / hit-rate curve on labelled pairs, and the threshold for a target precision",
        description=(
            "Embeds each labelled pair of questions from your logs (label 1: one answer serves both, 0: it does "
            "not) with the cache's default embedder and hit guard, prints precision, hit rate and false-hit rate "
            "per similarity threshold, and the threshold with the most hits that reaches --target-precision. Use "
            "it as SemanticCache(threshold=...). Guide: 'Tuning guide' in docs/cache.md."
        ),
    )
    tune.add_argument(
        "--pairs",
        required=True,
        metavar="FILE.jsonl",
        help='rows {"text_a": ..., "text_b": ..., "label": 0|1}',
    )
    tune.add_argument("--target-precision", type=float, default=0.9, metavar="P", help="default 0.9")
    tune.add_argument("--no-guard", action="store_true", help="threshold only (no hit guard)")
    tune.add_argument(
        "--step", type=int, default=5, help="print every STEP-th point of the curve (default 5)"
    )
    tune.add_argument("--json", action="store_true", help="print the result as JSON")
    tune.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a progress bar on stderr (default: when stderr is a terminal)",
    )
    tune.set_defaults(func=_cmd_cache_tune)

    args = parser.parse_args(argv)
    try:
        status: int = args.func(args)
    except BrokenPipeError:  # `frugal-chains report ... | head`: the reader left; no traceback
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    return status


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
