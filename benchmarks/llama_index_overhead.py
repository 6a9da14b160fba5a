"""Overhead of the LlamaIndex budget handler per LLM call: what `TokenBudgetHandler` adds to one `llm.chat()`.

The same instant fake LLM (``FakeUsageLLM`` from ``frugal_chains.testing``, or LlamaIndex's ``MockLLM`` with
``--llm mock``, which older versions of frugal-chains can also drive) is called in three set-ups:

* **no handler**: ``Settings.callback_manager`` and the LLM's own manager are empty;
* **handler**: a ``TokenBudgetHandler`` with three budgets (task, user per day, global per month) on an in-memory
  SQLite ledger is on ``Settings.callback_manager``, and the LLM is built with that manager, as a user sets it
  up: reserve, commit and the call record, plus the check that the call's manager holds the handler;
* **check only**: the same handler on ``Settings.callback_manager`` but the LLM built with an empty manager of its
  own (warned about once, then silenced): what the attachment check costs on a call the handler does not see
  (versions without the check run only LlamaIndex's own dispatch there).

Each call sends a new prompt of about 1,000 tokens. Its token count is made once before the timer in every set-up,
so both the handler's count and the fake LLM's own count are served from the count cache: the figures exclude
token counting (``budget_overhead.py`` measures it, about 0.1-0.2 ms for 1,000 new tokens). The set-ups run in
alternating blocks (``--rounds`` x ``--block`` calls each) so they share the machine's load; the added time is the
difference of the medians (and of the means) to the no-handler set-up. Prints a table; ``--json`` for figures.

    python benchmarks/llama_index_overhead.py [--rounds 10] [--block 300] [--llm fake|mock] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

from llama_index.core import Settings
from llama_index.core.callbacks import CallbackManager
from llama_index.core.llms import LLM, ChatMessage

from frugal_chains import Budget, Price, SQLiteLedger, attribute
from frugal_chains.accounting import count_message_tokens
from frugal_chains.llama_index import TokenBudgetHandler

PARAGRAPH = (
    "Our return policy allows customers to send back any unused item within thirty days of delivery. "
    "Refunds are issued to the original payment method once the warehouse has inspected the parcel. "
)
SYSTEM = "You are a helpful support assistant. Answer from the policy text only."
SETUPS = ("no handler", "handler", "check only")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def make_text(target: int = 1000) -> str:
    text = ""
    while count_message_tokens(chat(text)) < target:
        text += PARAGRAPH
    return text


def chat(user: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def make_llm(kind: str, manager: CallbackManager) -> LLM:
    if kind == "mock":
        from llama_index.core.llms import MockLLM

        return MockLLM(max_tokens=64, callback_manager=manager)
    try:
        from frugal_chains.testing import FakeUsageLLM
    except ImportError as e:  # a version of frugal-chains without it
        raise SystemExit("this frugal-chains has no testing.FakeUsageLLM: run with --llm mock") from e
    return FakeUsageLLM(model="gpt-4o-mini", max_tokens=256, output_tokens=120, callback_manager=manager)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=10, help="alternations of the three set-ups")
    parser.add_argument("--block", type=int, default=300, help="timed calls per set-up and round")
    parser.add_argument("--warmup", type=int, default=200, help="untimed calls per set-up first")
    parser.add_argument("--llm", choices=("fake", "mock"), default="fake")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    text = make_text(1000)
    handler = TokenBudgetHandler(
        [
            Budget(max_usd=1e6, scope="task"),
            Budget(max_usd=1e6, scope="user", window="day"),
            Budget(max_usd=1e6, scope="global", window="month"),
        ],
        ledger=SQLiteLedger(":memory:"),
        anomaly=False,  # as in budget_overhead.py: the hard-stop path
        # MockLLM has no price of its own: gpt-4o-mini's
        prices={"MockLLM": Price(input=0.15, output=0.6)},
    )
    with_handler = CallbackManager([handler])
    empty = CallbackManager([])
    llms = {
        "no handler": (empty, make_llm(args.llm, empty)),
        "handler": (with_handler, make_llm(args.llm, with_handler)),
        "check only": (with_handler, make_llm(args.llm, CallbackManager([]))),
    }
    samples: dict[str, list[float]] = {name: [] for name in SETUPS}
    counter = iter(range(10**9))

    def run(name: str, calls: int, keep: bool) -> None:
        settings_manager, llm = llms[name]
        Settings.callback_manager = settings_manager
        for _ in range(calls):
            i = next(counter)
            # a prompt never sent before; its count is cached here, outside the timer, in every set-up
            user = f"[{i}] {text}"
            count_message_tokens(chat(user))
            messages = [ChatMessage(role="system", content=SYSTEM), ChatMessage(role="user", content=user)]
            if args.llm == "mock":
                # MockLLM answers a chat as a completion of this text, which is counted too
                count_message_tokens([{"role": "user", "content": llm.messages_to_prompt(messages)}])
            t0 = time.perf_counter()
            llm.chat(messages)
            dt = time.perf_counter() - t0
            if keep:
                samples[name].append(dt * 1000)

    previous = Settings._callback_manager
    try:
        with warnings.catch_warnings(), attribute(feature="bench", user_id="u1"):
            warnings.simplefilter("ignore")  # the "check only" set-up is warned about once, on purpose
            for name in SETUPS:
                run(name, args.warmup, keep=False)
            for _ in range(args.rounds):
                for name in SETUPS:
                    run(name, args.block, keep=True)
    finally:
        Settings._callback_manager = previous

    recorded = len(handler.ledger.records(feature="bench"))
    expected = args.warmup + args.rounds * args.block
    assert recorded == expected, (recorded, expected)  # every call under the handler was committed once

    summary: Callable[[list[float]], dict[str, float]] = lambda s: {  # noqa: E731
        "p50_ms": percentile(s, 50),
        "p90_ms": percentile(s, 90),
        "p99_ms": percentile(s, 99),
        "mean_ms": statistics.fmean(s),
    }
    rows: dict[str, dict[str, Any]] = {name: summary(samples[name]) for name in SETUPS}
    base = rows["no handler"]
    for name in SETUPS[1:]:
        rows[name]["added_p50_ms"] = rows[name]["p50_ms"] - base["p50_ms"]
        rows[name]["added_mean_ms"] = rows[name]["mean_ms"] - base["mean_ms"]
    machine = (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    llm_name = type(llms["handler"][1]).__name__
    if args.json:
        out = {
            "llm": llm_name,
            "calls_per_setup": args.rounds * args.block,
            "machine": machine,
            "results": rows,
        }
        print(json.dumps(out, indent=2))
        return 0
    print(
        f"LlamaIndex budget handler overhead per llm.chat() ({llm_name}, ~1,000-token prompt, counting excluded), "
        f"{args.rounds} x {args.block} calls per set-up; {machine}"
    )
    print(
        f"{'':<11}  {'p50 ms':>8}  {'p90 ms':>8}  {'p99 ms':>8}  {'mean ms':>8}  {'+p50 ms':>8}  {'+mean ms':>8}"
    )
    for name, r in rows.items():
        added = (
            f"  {r['added_p50_ms']:8.3f}  {r['added_mean_ms']:8.3f}"
            if "added_p50_ms" in r
            else f"  {'':>8}  {'':>8}"
        )
        print(
            f"{name:<11}  {r['p50_ms']:8.3f}  {r['p90_ms']:8.3f}  {r['p99_ms']:8.3f}  {r['mean_ms']:8.3f}"
            + added
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
