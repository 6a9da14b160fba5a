"""A BudgetGuard on a RedisLedger while the real server goes down and comes back.

Closed (the default): calls are refused before any money is spent. Open: calls go through unreserved, their
commits are queued in memory and written exactly once when Redis is back.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import timedelta

import pytest
import pytest_asyncio

from frugal_chains import Budget, Price, Usage
from frugal_chains.accounting.redis import RedisLedger
from frugal_chains.accounting.usage import usd_to_nano
from frugal_chains.budget import BudgetGuard
from frugal_chains.errors import ConfigurationError, LedgerUnavailableError
from tests.redis_server import RedisServer

pytestmark = pytest.mark.redis

PRICES = {"m": Price(input=1, output=1, max_output_tokens=100)}  # $1 per million tokens
BUDGET = Budget(max_usd=0.01, scope="global")
MSGS = [{"role": "user", "content": "hello"}]


@pytest.fixture
def ledger(redis_url: str, redis_server: RedisServer) -> Iterator[RedisLedger]:
    led = RedisLedger(redis_url)
    try:
        yield led
    finally:
        if not redis_server.running:
            redis_server.start()
        led.close()


@pytest_asyncio.fixture
async def aledger(redis_url: str, redis_server: RedisServer) -> AsyncIterator[RedisLedger]:
    led = RedisLedger(redis_url)
    try:
        yield led
    finally:
        if not redis_server.running:
            redis_server.start()
        await led.aclose()


def make_guard(ledger: RedisLedger, **kw: object) -> BudgetGuard:
    kw.setdefault("outage_backoff", timedelta(0))  # these tests restart the server and retry at once
    return BudgetGuard([BUDGET], ledger=ledger, prices=PRICES, anomaly=False, **kw)  # type: ignore[arg-type]


def test_guard_reserves_through_redis_while_up(ledger: RedisLedger) -> None:
    guard = make_guard(ledger)
    plan = guard.plan(MSGS, model="m", input_tokens=50)
    res = guard.reserve(plan)
    assert res.in_ledger
    assert guard.spent(BUDGET).reserved_nano == usd_to_nano(plan.worst_usd, round_up=True)
    record = guard.commit(res, Usage(input_tokens=40, output_tokens=60))
    spent = guard.spent(BUDGET)
    assert (spent.committed_nano, spent.committed_tokens, spent.reserved_nano) == (
        usd_to_nano(record.cost_usd),
        100,
        0,
    )
    assert [r.id for r in ledger.records()] == [res.id]


def test_closed_guard_refuses_while_redis_is_down(ledger: RedisLedger, redis_server: RedisServer) -> None:
    guard = make_guard(ledger)  # on_ledger_error="closed" is the default
    plan = guard.plan(MSGS, model="m", input_tokens=50)
    worst = usd_to_nano(plan.worst_usd, round_up=True)
    assert guard.reserve(plan).in_ledger
    redis_server.stop(keep_data=True)
    with pytest.raises(LedgerUnavailableError) as e:
        guard.reserve(plan)
    assert "refused before any money was spent" in str(e.value)
    with pytest.raises(LedgerUnavailableError):
        ledger.counter("global|all|*", 0, 0)
    redis_server.start()
    assert guard.spent(BUDGET).reserved_nano == worst  # the refused call reserved nothing
    assert guard.reserve(plan).in_ledger  # the same ledger object works again once Redis is back
    assert guard.spent(BUDGET).reserved_nano == 2 * worst


def test_open_guard_queues_and_flushes_exactly_once(ledger: RedisLedger, redis_server: RedisServer) -> None:
    guard = make_guard(ledger, on_ledger_error="open")
    plan = guard.plan(MSGS, model="m", input_tokens=50)
    first = guard.commit(guard.reserve(plan), Usage(input_tokens=30, output_tokens=20))  # while up: 50 tokens
    assert usd_to_nano(first.cost_usd) == 50_000
    redis_server.stop(keep_data=True)
    res = guard.reserve(plan)  # lets the call through unreserved
    assert res.in_ledger is False
    record = guard.commit(res, Usage(input_tokens=40, output_tokens=60))
    assert usd_to_nano(record.cost_usd) == 100_000
    assert guard.pending == 1
    assert guard.flush() == 1  # still down: kept
    redis_server.start()
    assert guard.flush() == 0
    spent = guard.spent(BUDGET)
    assert (spent.committed_nano, spent.committed_tokens) == (150_000, 150)
    assert (spent.reserved_nano, spent.reserved_tokens) == (0, 0)
    assert sorted(r.id for r in ledger.records()) == sorted([first.id, res.id])
    assert guard.flush() == 0
    # the queued commit reaching the ledger a second time changes nothing
    again = ledger.commit(res.id, res.claims, nano=100_000, tokens=100, record=record)
    assert not again.applied
    assert guard.spent(BUDGET).committed_nano == 150_000
    assert len(ledger.records()) == 2


def test_release_while_down_is_queued(ledger: RedisLedger, redis_server: RedisServer) -> None:
    guard = make_guard(ledger)
    plan = guard.plan(MSGS, model="m", input_tokens=50)
    res = guard.reserve(plan)
    assert guard.spent(BUDGET).reserved_nano == usd_to_nano(plan.worst_usd, round_up=True)
    redis_server.stop(keep_data=True)
    guard.release(res)
    assert guard.pending == 1
    redis_server.start()
    assert guard.spent(BUDGET).reserved_nano > 0  # not given back yet
    assert guard.flush() == 0
    assert guard.spent(BUDGET).reserved_nano == 0
    assert ledger.release(res.id) is False


async def test_async_guard_closed_and_open(aledger: RedisLedger, redis_server: RedisServer) -> None:
    closed = make_guard(aledger)
    opened = make_guard(aledger, on_ledger_error="open")
    plan = closed.plan(MSGS, model="m", input_tokens=50)
    assert (await closed.areserve(plan)).in_ledger  # the async client connects while Redis is up
    redis_server.stop(keep_data=True)
    with pytest.raises(LedgerUnavailableError):
        await closed.areserve(plan)
    res = await opened.areserve(plan)
    assert res.in_ledger is False
    record = await opened.acommit(res, Usage(input_tokens=10, output_tokens=20))
    assert opened.pending == 1
    redis_server.start()
    assert await opened.aflush() == 0
    assert await opened.aflush() == 0
    spent = opened.spent(BUDGET)
    assert (spent.committed_nano, spent.committed_tokens) == (usd_to_nano(record.cost_usd), 30)
    assert spent.reserved_nano == usd_to_nano(plan.worst_usd, round_up=True)  # the first call, kept
    assert [r.id for r in aledger.records()] == [res.id]


def test_unreachable_url_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError) as e:
        RedisLedger("redis://127.0.0.1:1")
    assert e.value.field == "url"
    assert "redis://127.0.0.1:1" in str(e.value)
    assert "check=False" in str(e.value)


def test_malformed_url_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError) as e:
        RedisLedger("not a url")
    assert e.value.field == "url"
    assert "redis://" in str(e.value)


def test_unchecked_ledger_fails_on_first_use() -> None:
    ledger = RedisLedger("redis://127.0.0.1:1", check=False)
    try:
        with pytest.raises(LedgerUnavailableError):
            ledger.counter("global|all|*", 0, 0)
        guard = make_guard(ledger)
        with pytest.raises(LedgerUnavailableError):
            guard.reserve(guard.plan(MSGS, model="m", input_tokens=5))
    finally:
        ledger.close()
