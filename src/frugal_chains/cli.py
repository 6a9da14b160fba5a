"""The ``frugal-chains`` command.

Subcommands: ``demo`` (budgets stopping a runaway agent with fake models; no keys, no servers),
``prices MODEL...`` (what a model costs per million tokens, from LiteLLM's map offline).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from frugal_chains import __version__

__all__ = ["main"]


def _cmd_demo(args: argparse.Namespace) -> int:
    from frugal_chains._demo import run_demo

    result = run_demo(ledger_path=args.ledger, echo=(lambda s: None) if args.json else print)
    if args.json:
        print(json.dumps(result, indent=2))
    return 0


def _cmd_prices(args: argparse.Namespace) -> int:
    from frugal_chains.accounting import litellm_price

    status = 0
    for model in args.models:
        p = litellm_price(model)
        if p is None:
            print(f"{model}: no price in LiteLLM's map (pass prices={{...}} to price it)", file=sys.stderr)
            status = 1
            continue
        print(
            f"{model}: input ${p.input:g}/M, output ${p.output:g}/M, cache read ${p.cache_read_rate:g}/M, "
            f"cache write ${p.cache_write_rate:g}/M (1h ${p.cache_write_1h_rate:g}/M), "
            f"max output {p.max_output_tokens or 'unknown'} tokens"
        )
    return status


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

    args = parser.parse_args(argv)
    status: int = args.func(args)
    return status


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
