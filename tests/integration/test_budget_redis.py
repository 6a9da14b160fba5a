"""LangChain budgets on a shared RedisLedger: concurrent tasks and separate processes never overspend."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
from typing import Any

import pytest

from frugal_chains import Budget, BudgetExceededError, RedisLedger
from frugal_chains.langchain import TokenBudgetHandler
from frugal_chains.testing import FakeUsageChatModel

pytestmark = pytest.mark.redis

LIMIT = 0.002  # USD; gpt-4o-mini worst case per call here is ~$0.0006, actual ~$0.0006


async def test_fifty_concurrent_ainvoke_on_redis(redis_url: str) -> None:
    ledger = RedisLedger(redis_url)
    budget = Budget(max_usd=LIMIT, scope="global")
    handler = TokenBudgetHandler([budget], ledger=ledger)
    model = FakeUsageChatModel(model="gpt-4o-mini", max_tokens=1000, output_tokens=1000, latency_s=0.02)

    async def one(i: int) -> bool:
        try:
            await model.ainvoke(f"q{i}", config={"callbacks": [handler]})
        except BudgetExceededError:
            return False
        return True

    try:
        ok = await asyncio.gather(*(one(i) for i in range(50)))
        assert 0 < sum(ok) < 50
        records = [r for r in ledger.records() if r.outcome != "refused"]
        assert len(records) == sum(ok)
        assert sum(r.outcome == "refused" for r in ledger.records()) == 50 - sum(ok)
        assert sum(r.cost_usd for r in records) <= LIMIT
        c = handler.core.spent(budget)
        assert c.reserved_nano == 0 and c.committed_nano <= LIMIT * 1e9
    finally:
        await ledger.aclose()


def _worker(url: str, n: int, out: mp.Queue, start: Any) -> None:  # type: ignore[type-arg]
    ledger = RedisLedger(url)
    handler = TokenBudgetHandler([Budget(max_usd=LIMIT, scope="global")], ledger=ledger)
    model = FakeUsageChatModel(model="gpt-4o-mini", max_tokens=1000, output_tokens=1000, latency_s=0.005)
    done = refused = 0
    start.wait(timeout=60)  # both processes call at the same time
    for i in range(n):
        try:
            model.invoke(f"q{i}", config={"callbacks": [handler]})
            done += 1
        except BudgetExceededError:
            refused += 1
    ledger.close()
    out.put((done, refused))


def test_two_processes_share_one_redis_budget(redis_url: str) -> None:
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    start = ctx.Barrier(2)
    procs = [ctx.Process(target=_worker, args=(redis_url, 10, out, start)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    done = sum(d for d, _ in results)
    assert done >= 1 and sum(r for _, r in results) >= 1
    ledger = RedisLedger(redis_url)
    try:
        records = [r for r in ledger.records() if r.outcome != "refused"]
        assert len(records) == done
        assert sum(r.outcome == "refused" for r in ledger.records()) == sum(r for _, r in results)
        assert sum(r.cost_usd for r in records) <= LIMIT
    finally:
        ledger.close()


def test_threads_share_one_redis_budget(redis_url: str) -> None:
    """Eight threads reserve at the same time (the handler runs in each batch thread)."""
    ledger = RedisLedger(redis_url)
    budget = Budget(max_usd=LIMIT, scope="global")
    handler = TokenBudgetHandler([budget], ledger=ledger)
    model = FakeUsageChatModel(model="gpt-4o-mini", max_tokens=1000, output_tokens=1000, latency_s=0.01)
    try:
        outs = model.batch(
            [f"q{i}" for i in range(40)],
            config={"callbacks": [handler], "max_concurrency": 8},
            return_exceptions=True,
        )
        done = [o for o in outs if not isinstance(o, BaseException)]
        assert done and len(done) < 40
        assert all(isinstance(o, BudgetExceededError) for o in outs if isinstance(o, BaseException))
        assert sum(r.cost_usd for r in ledger.records()) <= LIMIT
        assert handler.core.spent(budget).reserved_nano == 0
    finally:
        ledger.close()
