"""What only the Redis ledger has: key layout and hash tag, expiry, exact large amounts, clients and loops."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from redis.crc import key_slot

from frugal_chains.accounting import CallRecord, Claim, Counter, Usage
from frugal_chains.accounting.redis import RedisLedger
from frugal_chains.errors import ConfigurationError, LedgerUnavailableError

pytestmark = pytest.mark.redis

COUNTER = "global|all|*"
FAR = 9e9
WEEK = 7 * 86400


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def ledger(redis_url: str) -> Iterator[RedisLedger]:
    led = RedisLedger(redis_url)
    try:
        yield led
    finally:
        led.close()


def claim(counter: str = COUNTER, **kw: Any) -> Claim:
    kw.setdefault("bucket", 0)
    kw.setdefault("min_bucket", 0)
    return Claim(counter=counter, **kw)


def test_every_key_has_the_prefix_and_one_hash_tag(ledger: RedisLedger, raw: redis.Redis) -> None:
    rec = CallRecord(model="m", usage=Usage(input_tokens=1), cost_usd=0.0, ts=1_700_000_000.0)
    assert ledger.reserve("r1", [claim(), claim("user|day|ann", bucket=5, min_bucket=5)], nano=5, tokens=1,
                          expires_at=FAR).ok  # fmt: skip
    assert ledger.commit("r1", [claim()], nano=3, tokens=1, record=rec).applied
    assert ledger.reserve("r2", [claim()], nano=5, tokens=1, expires_at=FAR).ok
    keys = set(raw.keys("*"))
    assert keys == {
        "frugal:{fc}:c:global|all|*:0",
        "frugal:{fc}:c:user|day|ann:5",
        "frugal:{fc}:r:r1",
        "frugal:{fc}:r:r2",
        "frugal:{fc}:reserved",
        "frugal:{fc}:rec:2023-11-14",
        f"frugal:{{fc}}:recid:{rec.id}",
        "frugal:{fc}:days",
    }
    assert len({key_slot(k.encode()) for k in keys}) == 1  # one cluster slot: the scripts work on a cluster
    assert raw.hgetall("frugal:{fc}:c:global|all|*:0") == {"cn": "3", "ct": "1", "rn": "5", "rt": "1"}


def test_prefixes_are_isolated(redis_url: str) -> None:
    with RedisLedger(redis_url, prefix="app1:") as a, RedisLedger(redis_url, prefix="app2:") as b:
        assert a.reserve("r1", [claim(limit_nano=10)], nano=10, tokens=1, expires_at=FAR).ok
        assert b.reserve("r1", [claim(limit_nano=10)], nano=10, tokens=1, expires_at=FAR).ok  # same id: fine
        assert (
            a.counter(COUNTER, 0, 0)
            == b.counter(COUNTER, 0, 0)
            == Counter(reserved_nano=10, reserved_tokens=1)
        )


def test_bucket_ttl_follows_the_claim_and_is_never_shortened(ledger: RedisLedger, raw: redis.Redis) -> None:
    key = "frugal:{fc}:c:user|day|ann:7"
    day = claim("user|day|ann", bucket=7, min_bucket=7, ttl_s=1000)
    assert ledger.reserve("r1", [day], nano=1, tokens=1, expires_at=FAR).ok
    assert 990 <= raw.ttl(key) <= 1000
    shorter = claim("user|day|ann", bucket=7, min_bucket=7, ttl_s=10)
    assert ledger.reserve("r2", [shorter], nano=1, tokens=1, expires_at=FAR).ok
    assert raw.ttl(key) > 10
    assert ledger.commit("r2", [shorter], nano=1, tokens=1).applied
    assert raw.ttl(key) > 10
    assert ledger.reserve("r3", [claim()], nano=1, tokens=1, expires_at=FAR).ok
    assert raw.ttl("frugal:{fc}:c:global|all|*:0") == -1  # no ttl_s: kept


def test_reservations_expire_a_week_after_they_finish(ledger: RedisLedger, raw: redis.Redis) -> None:
    assert ledger.reserve("r1", [claim()], nano=1, tokens=1, expires_at=time.time() + 3600).ok
    assert WEEK + 3500 < raw.ttl("frugal:{fc}:r:r1") <= WEEK + 3601
    assert raw.zscore("frugal:{fc}:reserved", "r1") is not None
    assert ledger.commit("r1", [claim()], nano=1, tokens=1).applied
    assert WEEK - 100 < raw.ttl("frugal:{fc}:r:r1") <= WEEK
    assert raw.zscore("frugal:{fc}:reserved", "r1") is None
    assert raw.hget("frugal:{fc}:r:r1", "state") == "committed"


def test_sweep_marks_expired_and_empties_the_index(ledger: RedisLedger, raw: redis.Redis) -> None:
    for i in range(3):
        assert ledger.reserve(f"old{i}", [claim()], nano=10, tokens=1, expires_at=time.time() - 1).ok
    assert ledger.reserve("new", [claim()], nano=1, tokens=1, expires_at=FAR).ok
    assert raw.zrange("frugal:{fc}:reserved", 0, -1) == ["new"]
    assert [raw.hget(f"frugal:{{fc}}:r:old{i}", "state") for i in range(3)] == ["expired"] * 3
    assert ledger.counter(COUNTER, 0, 0) == Counter(reserved_nano=1, reserved_tokens=1)


def test_give_back_never_resurrects_an_expired_bucket(ledger: RedisLedger, raw: redis.Redis) -> None:
    day = claim("user|day|ann", bucket=3, min_bucket=3, ttl_s=60)
    assert ledger.reserve("r1", [day], nano=100, tokens=5, expires_at=FAR).ok
    raw.delete("frugal:{fc}:c:user|day|ann:3")  # as if its TTL had run out
    assert ledger.release("r1") is True
    assert raw.exists("frugal:{fc}:c:user|day|ann:3") == 0
    assert ledger.counter("user|day|ann", 3, 3) == Counter()


def test_record_retention(redis_url: str, raw: redis.Redis) -> None:
    with RedisLedger(redis_url, record_retention_days=2) as led:
        rec = CallRecord(model="m", usage=Usage(), cost_usd=0.0, ts=1_700_000_000.0)
        led.add_record(rec)
        assert 2 * 86400 - 100 < raw.ttl("frugal:{fc}:rec:2023-11-14") <= 2 * 86400
        assert 0 < raw.ttl(f"frugal:{{fc}}:recid:{rec.id}") <= 2 * 86400
        raw.delete("frugal:{fc}:rec:2023-11-14")  # the day expired
        assert led.records() == []


def test_large_amounts_are_exact(ledger: RedisLedger) -> None:
    big = 4_500_000_000_000_001  # $4.5M in nano-USD, odd: a float sum would lose the last digit
    cl = claim(limit_nano=2 * big)
    assert ledger.reserve("r1", [cl], nano=big, tokens=1, expires_at=FAR).ok
    r2 = ledger.reserve("r2", [cl], nano=big, tokens=1, expires_at=FAR)
    assert r2.ok and r2.before[0].reserved_nano == big
    assert ledger.counter(COUNTER, 0, 0).reserved_nano == 2 * big
    assert not ledger.reserve("r3", [cl], nano=1, tokens=1, expires_at=FAR).ok
    with pytest.raises(ConfigurationError) as e:
        ledger.reserve("r4", [claim()], nano=2**53, tokens=1, expires_at=FAR)
    assert e.value.field == "nano"
    with pytest.raises(ConfigurationError) as e:
        ledger.reserve("r5", [claim(limit_nano=2**60)], nano=1, tokens=1, expires_at=FAR)
    assert e.value.field == "limit_nano"


def test_bad_arguments(redis_url: str) -> None:
    with pytest.raises(ConfigurationError) as e:
        RedisLedger(redis_url, prefix="{x}:")
    assert e.value.field == "prefix"
    with pytest.raises(ConfigurationError) as e:
        RedisLedger(redis_url, record_retention_days=0)
    assert e.value.field == "record_retention_days"
    with RedisLedger(redis_url) as led:
        with pytest.raises(ConfigurationError):
            led.counter(COUNTER, 0, 1_000_000)
        with pytest.raises(ConfigurationError) as e:
            led.reserve("", [claim()], nano=1, tokens=1, expires_at=FAR)
        assert e.value.field == "reservation_id"


def test_repr_hides_the_password(redis_server: Any) -> None:
    led = RedisLedger(f"redis://:s3cret@127.0.0.1:{redis_server.port}/0", check=False)
    try:
        assert "s3cret" not in repr(led)
        assert "***" in repr(led)
        assert RedisLedger.__name__ in repr(led)
    finally:
        led.close()


def test_closed_ledger_is_unavailable(redis_url: str) -> None:
    led = RedisLedger(redis_url)
    led.close()
    led.close()  # twice is fine
    with pytest.raises(LedgerUnavailableError):
        led.reserve("r1", [claim()], nano=1, tokens=1, expires_at=FAR)
    with pytest.raises(LedgerUnavailableError):
        led.records()


def test_given_clients_are_used_and_left_open(redis_url: str) -> None:
    sync = redis.Redis.from_url(redis_url)  # bytes replies: the ledger copes
    try:
        led = RedisLedger(client=sync)
        assert redis_url.removesuffix("/0").removeprefix("redis://") in repr(led)  # named after the client
        assert led.reserve("r1", [claim()], nano=7, tokens=1, expires_at=FAR).ok
        rec = CallRecord(model="m", usage=Usage(), cost_usd=0.0, ts=1_700_000_000.0)
        assert asyncio.run(led.acommit("r1", [claim()], nano=5, tokens=1, record=rec)).applied  # via a thread
        assert [r.id for r in led.records()] == [rec.id]
        led.close()
        assert sync.ping()  # not ours to close
        assert sync.hget("frugal:{fc}:c:global|all|*:0", "cn") == b"5"
    finally:
        sync.close()


async def test_given_async_client_is_used_and_left_open(redis_url: str) -> None:
    import redis.asyncio

    aclient = redis.asyncio.Redis.from_url(redis_url)
    try:
        led = RedisLedger(redis_url, async_client=aclient)
        assert (await led.areserve("r1", [claim()], nano=7, tokens=1, expires_at=FAR)).ok
        assert await led.arelease("r1")
        await led.aclose()
        assert await aclient.ping()
        assert await aclient.zcard("frugal:{fc}:reserved") == 0
    finally:
        await aclient.aclose()


def test_one_async_client_per_event_loop(redis_url: str) -> None:
    led = RedisLedger(redis_url)
    loops = [asyncio.new_event_loop(), asyncio.new_event_loop()]
    try:
        for i, loop in enumerate(loops):
            res = loop.run_until_complete(led.areserve(f"r{i}", [claim()], nano=3, tokens=1, expires_at=FAR))
            assert res.ok
        assert led.counter(COUNTER, 0, 0) == Counter(reserved_nano=6, reserved_tokens=2)
        assert len(led._aclients) == 2
    finally:
        led.close()  # closes both loops' clients (the loops are idle)
        for loop in loops:
            loop.close()
    assert led._aclients == {}
