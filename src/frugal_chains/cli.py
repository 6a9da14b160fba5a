"""The ``frugal-chains`` command.

Subcommands: ``demo`` (budgets and the cache with fake models; no keys, no servers),
``prices MODEL...`` (what a model costs per million tokens, from LiteLLM's map offline),
``cache tune --pairs FILE.jsonl`` (the precision / hit-rate curve of the semantic cache on your labelled pairs;
a progress bar on stderr when it is a terminal, ``--progress``/``--no-progress`` to choose).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from frugal_chains import __version__

__all__ = ["main"]


def _cmd_demo(args: argparse.Namespace) -> int:
    try:
        from frugal_chains._demo import run_demo
    except ImportError as e:  # a missing extra: say which, without a traceback
        print(f"frugal-chains demo: {e}", file=sys.stderr)
        return 2
    result = run_demo(ledger_path=args.ledger, echo=(lambda s: None) if args.json else print)
    if args.json:
        print(json.dumps(result, indent=2))
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

    demo = sub.add_parser("demo", help="budgets stopping a runaway agent (fake models, no keys, no servers)")
    demo.add_argument("--ledger", metavar="PATH", help="write the spend ledger to this SQLite file")
    demo.add_argument("--json", action="store_true", help="print the figures as JSON instead of tables")
    demo.set_defaults(func=_cmd_demo)

    prices = sub.add_parser("prices", help="per-million-token prices of models (LiteLLM's map, offline)")
    prices.add_argument("models", nargs="+", metavar="MODEL")
    prices.set_defaults(func=_cmd_prices)

    cache = sub.add_parser("cache", help="semantic cache tools")
    cache_sub = cache.add_subparsers(dest="cache_command", required=True)
    tune = cache_sub.add_parser(
        "tune", help="precision / hit-rate curve on labelled pairs, and the threshold for a target precision"
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
    status: int = args.func(args)
    return status


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
