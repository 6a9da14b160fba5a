"""One contract for every SpendLedger: SQLite in memory, SQLite in a file, and Redis (a real server).

The same tests run against each backend, so the backends cannot drift apart: reservation checks, warn claims,
shared counters, idempotent commits and releases, the sweep of expired reservations, call records, async
methods, and concurrency from threads and from separate processes.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from frugal_chains.accounting import Attribution, CallRecord, Claim, Counter, SpendLedger, SQLiteLedger, Usage
from frugal_chains.errors import ConfigurationError

COUNTER = "global|all|*"
FAR = 9e9  # an expiry that never comes

# -- backends -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Backend:
    """How to open a ledger of one kind; picklable, so child processes can open their own."""

    kind: str
    target: str

    def make(self) -> SpendLedger:
        if self.kind == "redis":
            from frugal_chains.accounting.redis import RedisLedger

            return RedisLedger(self.target)
        return SQLiteLedger(self.target)


def _backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    kind = request.param
    if kind == "sqlite-memory":
        return Backend(kind, ":memory:")
    if kind == "sqlite-file":
        return Backend(kind, str(tmp_path / "ledger.db"))
    return Backend(kind, request.getfixturevalue("redis_url"))


ALL = [
    pytest.param("sqlite-memory", id="sqlite-memory"),
    pytest.param("sqlite-file", id="sqlite-file"),
    pytest.param("redis", id="redis", marks=pytest.mark.redis),
]
SHARED = [
    pytest.param("sqlite-file", id="sqlite-file"),
    pytest.param("redis", id="redis", marks=pytest.mark.redis),
]


@pytest.fixture(params=ALL)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return _backend(request, tmp_path)


@pytest.fixture(params=SHARED)
def shared_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """Backends that several processes can open at once."""
    return _backend(request, tmp_path)


@pytest.fixture
def ledger(backend: Backend) -> Iterator[SpendLedger]:
    led = backend.make()
    try:
        yield led
    finally:
        led.close()


@pytest_asyncio.fixture
async def aledger(backend: Backend) -> AsyncIterator[SpendLedger]:
    led = backend.make()
    try:
        yield led
    finally:
        aclose = getattr(led, "aclose", None)
        if aclose is not None:
            await aclose()
        led.close()


def claim(counter: str = COUNTER, **kw: Any) -> Claim:
    kw.setdefault("bucket", 0)
    kw.setdefault("min_bucket", 0)
    return Claim(counter=counter, **kw)


def c(cn: int = 0, ct: int = 0, rn: int = 0, rt: int = 0) -> Counter:
    return Counter(committed_nano=cn, committed_tokens=ct, reserved_nano=rn, reserved_tokens=rt)


def record(rid: str, *, ts: float, model: str = "m1", cost: float = 1e-6, **attribution: Any) -> CallRecord:
    return CallRecord(
        id=rid,
        ts=ts,
        model=model,
        usage=Usage(input_tokens=10, output_tokens=5),
        cost_usd=cost,
        attribution=Attribution(**attribution),
    )


# -- reserve ------------------------------------------------------------------------------------------------------


def test_reserve_then_deny_by_usd(ledger: SpendLedger) -> None:
    cl = claim(limit_nano=1_000)
    r1 = ledger.reserve("r1", [cl], nano=600, tokens=10, expires_at=FAR)
    assert r1.ok and r1.denied is None and r1.exceeded == ()
    assert r1.before == (c(),)
    r2 = ledger.reserve("r2", [cl], nano=600, tokens=10, expires_at=FAR)
    assert not r2.ok
    assert (r2.denied, r2.denied_unit) == (0, "usd")
    assert r2.before == (c(rn=600, rt=10),)
    assert ledger.counter(COUNTER, 0, 0) == c(rn=600, rt=10)  # the denied one wrote nothing
    r3 = ledger.reserve("r3", [cl], nano=400, tokens=10, expires_at=FAR)  # exactly up to the limit fits
    assert r3.ok
    assert ledger.counter(COUNTER, 0, 0).total_nano == 1_000


def test_reserve_then_deny_by_tokens(ledger: SpendLedger) -> None:
    cl = claim(limit_tokens=100, limit_nano=10**12)
    assert ledger.reserve("r1", [cl], nano=1, tokens=70, expires_at=FAR).ok
    r2 = ledger.reserve("r2", [cl], nano=1, tokens=31, expires_at=FAR)
    assert not r2.ok
    assert (r2.denied, r2.denied_unit) == (0, "tokens")
    assert r2.before == (c(rn=1, rt=70),)
    assert ledger.reserve("r3", [cl], nano=1, tokens=30, expires_at=FAR).ok
    assert ledger.counter(COUNTER, 0, 0) == c(rn=2, rt=100)


def test_denied_claim_index_and_nothing_written_anywhere(ledger: SpendLedger) -> None:
    roomy = claim("user|all|ann", limit_nano=10_000)
    tight = claim("feature|all|faq", limit_nano=100)
    r = ledger.reserve("r1", [roomy, tight], nano=150, tokens=1, expires_at=FAR)
    assert not r.ok
    assert (r.denied, r.denied_unit) == (1, "usd")
    assert r.before == (c(), c())
    assert ledger.counter("user|all|ann", 0, 0) == c()
    assert ledger.counter("feature|all|faq", 0, 0) == c()


def test_buckets_are_summed_over_the_window(ledger: SpendLedger) -> None:
    old = claim(bucket=10, min_bucket=10, limit_nano=1_000)
    assert ledger.reserve("r1", [old], nano=300, tokens=1, expires_at=FAR).ok
    assert ledger.reserve("r2", [claim(bucket=12, min_bucket=12)], nano=200, tokens=1, expires_at=FAR).ok
    window = claim(bucket=13, min_bucket=11, limit_nano=1_000)  # sees bucket 12, not bucket 10
    r = ledger.reserve("r3", [window], nano=800, tokens=1, expires_at=FAR)
    assert r.ok
    assert r.before == (c(rn=200, rt=1),)
    assert ledger.counter(COUNTER, 10, 13) == c(rn=1_300, rt=3)
    assert ledger.counter(COUNTER, 11, 12) == c(rn=200, rt=1)
    assert not ledger.reserve("r4", [window], nano=1, tokens=1, expires_at=FAR).ok


def test_warn_claim_is_reported_but_reserved(ledger: SpendLedger) -> None:
    hard = claim("global|all|*", limit_nano=10_000)
    warn = claim("user|all|ann", limit_nano=100, enforce=False)
    r = ledger.reserve("r1", [hard, warn], nano=150, tokens=3, expires_at=FAR)
    assert r.ok
    assert r.exceeded == (1,)
    assert r.denied is None
    assert ledger.counter("user|all|ann", 0, 0) == c(rn=150, rt=3)
    assert ledger.counter("global|all|*", 0, 0) == c(rn=150, rt=3)
    r2 = ledger.reserve("r2", [hard, warn], nano=10, tokens=1, expires_at=FAR)
    assert r2.ok and r2.exceeded == (1,)
    assert r2.before[1] == c(rn=150, rt=3)


def test_enforced_denial_wins_over_warn_claims(ledger: SpendLedger) -> None:
    warn = claim("user|all|ann", limit_nano=10, enforce=False)
    hard = claim("global|all|*", limit_nano=100)
    r = ledger.reserve("r1", [warn, hard], nano=150, tokens=1, expires_at=FAR)
    assert not r.ok
    assert r.denied == 1
    assert ledger.counter("user|all|ann", 0, 0) == c()


def test_claims_sharing_a_counter_are_written_once(ledger: SpendLedger) -> None:
    a = claim(limit_nano=1_000)
    b = claim(limit_tokens=50)  # another budget on the same counter and bucket
    r = ledger.reserve("r1", [a, b], nano=300, tokens=20, expires_at=FAR)
    assert r.ok
    assert ledger.counter(COUNTER, 0, 0) == c(rn=300, rt=20)
    res = ledger.commit("r1", [a, b], nano=100, tokens=10)
    assert res.after == (c(cn=100, ct=10), c(cn=100, ct=10))
    assert ledger.counter(COUNTER, 0, 0) == c(cn=100, ct=10)


def test_duplicate_reservation_id_is_refused(ledger: SpendLedger) -> None:
    cl = claim(limit_nano=1_000)
    assert ledger.reserve("r1", [cl], nano=100, tokens=1, expires_at=FAR).ok
    with pytest.raises(ConfigurationError) as e:
        ledger.reserve("r1", [cl], nano=100, tokens=1, expires_at=FAR)
    assert e.value.field == "reservation_id"
    assert ledger.counter(COUNTER, 0, 0) == c(rn=100, rt=1)


def test_names_are_taken_verbatim(ledger: SpendLedger) -> None:
    odd = 'user|all|Zoë 😀 "quoted" : {x} |'
    cl = claim(odd, limit_nano=100)
    assert ledger.reserve("r:1 {é}", [cl], nano=60, tokens=1, expires_at=FAR).ok
    assert not ledger.reserve("r2", [cl], nano=60, tokens=1, expires_at=FAR).ok
    assert ledger.counter(odd, 0, 0) == c(rn=60, rt=1)
    assert ledger.counter("user|all|Zoe", 0, 0) == c()
    assert ledger.commit(
        "r:1 {é}", [cl], nano=10, tokens=1, record=record("r:1 {é}", ts=T0, user_id="Zoë")
    ).applied
    assert ledger.counter(odd, 0, 0) == c(cn=10, ct=1)
    assert [r.id for r in ledger.records(user_id="Zoë")] == ["r:1 {é}"]


# -- commit and release -------------------------------------------------------------------------------------------


def test_commit_replaces_the_reservation(ledger: SpendLedger) -> None:
    cl = claim(limit_nano=1_000)
    assert ledger.reserve("r1", [cl], nano=600, tokens=10, expires_at=FAR).ok
    assert ledger.reserve("r2", [cl], nano=100, tokens=2, expires_at=FAR).ok
    res = ledger.commit("r1", [cl], nano=400, tokens=8)
    assert res.applied
    assert res.after == (c(cn=400, ct=8, rn=100, rt=2),)
    assert ledger.counter(COUNTER, 0, 0) == c(cn=400, ct=8, rn=100, rt=2)
    assert ledger.reserve("r3", [cl], nano=500, tokens=1, expires_at=FAR).ok  # 400 + 100 + 500 = limit


def test_commit_may_overshoot_the_reservation(ledger: SpendLedger) -> None:
    cl = claim(limit_nano=1_000)
    assert ledger.reserve("r1", [cl], nano=100, tokens=1, expires_at=FAR).ok
    res = ledger.commit("r1", [cl], nano=1_500, tokens=7)  # the provider counted more: committed in full
    assert res.after == (c(cn=1_500, ct=7),)
    assert not ledger.reserve("r2", [cl], nano=1, tokens=1, expires_at=FAR).ok


def test_commit_twice_counts_once(ledger: SpendLedger) -> None:
    cl = claim()
    assert ledger.reserve("r1", [cl], nano=600, tokens=10, expires_at=FAR).ok
    assert ledger.commit("r1", [cl], nano=400, tokens=8).applied
    again = ledger.commit("r1", [cl], nano=400, tokens=8)
    assert not again.applied
    assert again.after == ()
    assert ledger.counter(COUNTER, 0, 0) == c(cn=400, ct=8)


def test_release_gives_back(ledger: SpendLedger) -> None:
    cl = claim(limit_nano=1_000)
    assert ledger.reserve("r1", [cl], nano=900, tokens=10, expires_at=FAR).ok
    assert ledger.release("r1") is True
    assert ledger.counter(COUNTER, 0, 0) == c()
    assert ledger.release("r1") is False
    assert not ledger.commit("r1", [cl], nano=5, tokens=1).applied  # released: a late commit changes nothing
    assert ledger.counter(COUNTER, 0, 0) == c()
    assert ledger.reserve("r2", [cl], nano=1_000, tokens=1, expires_at=FAR).ok


def test_release_after_commit_changes_nothing(ledger: SpendLedger) -> None:
    cl = claim()
    assert ledger.reserve("r1", [cl], nano=600, tokens=10, expires_at=FAR).ok
    assert ledger.commit("r1", [cl], nano=400, tokens=8).applied
    assert ledger.release("r1") is False
    assert ledger.counter(COUNTER, 0, 0) == c(cn=400, ct=8)


def test_release_of_unknown_id_is_false(ledger: SpendLedger) -> None:
    assert ledger.release("nope") is False
    assert ledger.counter(COUNTER, 0, 0) == c()


def test_commit_of_unknown_id_adds_the_actual(ledger: SpendLedger) -> None:
    user = claim("user|all|ann")
    glob = claim("global|all|*")
    res = ledger.commit("never-reserved", [user, glob], nano=250, tokens=9)
    assert res.applied
    assert res.after == (c(cn=250, ct=9), c(cn=250, ct=9))
    assert not ledger.commit("never-reserved", [user, glob], nano=250, tokens=9).applied
    assert ledger.counter("user|all|ann", 0, 0) == c(cn=250, ct=9)
    assert ledger.counter("global|all|*", 0, 0) == c(cn=250, ct=9)


def test_expired_reservation_is_swept_by_the_next_reserve(ledger: SpendLedger) -> None:
    cl = claim(limit_nano=1_000)
    assert ledger.reserve("crashed", [cl], nano=900, tokens=10, expires_at=time.time() - 60).ok
    r = ledger.reserve("next", [cl], nano=800, tokens=5, expires_at=FAR)
    assert r.ok  # the crashed process's 900 were given back first
    assert r.before == (c(),)
    assert ledger.counter(COUNTER, 0, 0) == c(rn=800, rt=5)
    assert ledger.release("crashed") is False
    # a very late commit of the expired reservation adds its actual without subtracting anything
    late = ledger.commit("crashed", [cl], nano=120, tokens=4)
    assert late.applied
    assert late.after == (c(cn=120, ct=4, rn=800, rt=5),)
    assert not ledger.commit("crashed", [cl], nano=120, tokens=4).applied


# -- records ------------------------------------------------------------------------------------------------------

T0 = 1_700_000_000.0  # 2023-11-14 22:13 UTC
DAY = 86_400.0


def _fill_records(ledger: SpendLedger) -> None:
    cl = claim()
    rows = [
        ("a", T0, "m1", 1e-3, {"feature": "faq", "user_id": "ann"}),
        ("b", T0 + 10, "m2", 2e-3, {"feature": "faq", "user_id": "bob"}),
        (
            "c",
            T0 + DAY,
            "m1",
            4e-3,
            {"feature": "chat", "user_id": "ann", "tenant_id": "t1", "task_id": "k1"},
        ),
        ("d", T0 + 3 * DAY, "m2", 8e-3, {"feature": "chat", "user_id": "bob"}),
    ]
    for rid, ts, model, cost, attribution in rows:
        assert ledger.reserve(rid, [cl], nano=10_000_000, tokens=20, expires_at=FAR).ok
        rec = record(rid, ts=ts, model=model, cost=cost, **attribution)
        assert ledger.commit(rid, [cl], nano=int(cost * 1e9), tokens=15, record=rec).applied


def test_records_filters(ledger: SpendLedger) -> None:
    _fill_records(ledger)
    assert [r.id for r in ledger.records()] == ["a", "b", "c", "d"]
    assert [r.id for r in ledger.records(feature="faq")] == ["a", "b"]
    assert [r.id for r in ledger.records(user_id="ann")] == ["a", "c"]
    assert [r.id for r in ledger.records(model="m2")] == ["b", "d"]
    assert [r.id for r in ledger.records(tenant_id="t1")] == ["c"]
    assert [r.id for r in ledger.records(task_id="k1")] == ["c"]
    assert [r.id for r in ledger.records(feature="chat", user_id="bob")] == ["d"]
    assert [r.id for r in ledger.records(since=T0 + 10)] == ["b", "c", "d"]  # since is inclusive
    assert [r.id for r in ledger.records(until=T0 + DAY)] == ["a", "b"]  # until is exclusive
    assert [r.id for r in ledger.records(since=T0 + 5, until=T0 + 2 * DAY)] == ["b", "c"]
    assert [r.id for r in ledger.records(limit=3)] == ["a", "b", "c"]
    assert ledger.records(feature="nothing") == []
    got = ledger.records(task_id="k1")[0]
    assert got == record("c", ts=T0 + DAY, model="m1", cost=4e-3, feature="chat", user_id="ann", tenant_id="t1",
                         task_id="k1")  # fmt: skip
    assert ledger.counter(COUNTER, 0, 0) == c(cn=15_000_000, ct=60)


def test_summary_groups(ledger: SpendLedger) -> None:
    _fill_records(ledger)
    by_feature = {row.key: row for row in ledger.summary(by="feature")}
    assert set(by_feature) == {"faq", "chat"}
    assert by_feature["faq"].calls == 2
    assert by_feature["faq"].cost_usd == pytest.approx(3e-3)
    assert by_feature["chat"].cost_usd == pytest.approx(12e-3)
    assert by_feature["chat"].input_tokens == 20 and by_feature["chat"].output_tokens == 10
    assert [row.key for row in ledger.summary(by="feature")] == ["chat", "faq"]  # most expensive first
    by_user = {row.key: row.calls for row in ledger.summary(by="user", since=T0 + 5)}
    assert by_user == {"bob": 2, "ann": 1}
    by_tenant = {row.key: row.calls for row in ledger.summary(by="tenant")}
    assert by_tenant == {"t1": 1, "(none)": 3}
    by_day = {row.key: row.calls for row in ledger.summary(by="day")}
    assert by_day == {"2023-11-14": 2, "2023-11-15": 1, "2023-11-17": 1}
    with pytest.raises(ConfigurationError):
        ledger.summary(by="colour")  # type: ignore[arg-type]


def test_add_record_is_idempotent(ledger: SpendLedger) -> None:
    rec = record("hit-1", ts=T0, feature="faq").with_(outcome="cache_hit", cost_usd=0.0, saved_usd=0.5)
    ledger.add_record(rec)
    ledger.add_record(rec)
    assert [r.id for r in ledger.records()] == ["hit-1"]
    assert ledger.records()[0].saved_usd == 0.5
    rows = ledger.summary(by="feature")
    assert (rows[0].calls, rows[0].cache_hits, rows[0].saved_usd) == (0, 1, 0.5)  # a hit is no provider call
    # a commit carrying a record that is already stored does not store it twice
    assert ledger.commit("hit-1", [claim()], nano=0, tokens=0, record=rec).applied
    assert len(ledger.records()) == 1


# -- async --------------------------------------------------------------------------------------------------------


async def test_async_reserve_commit_release(aledger: SpendLedger) -> None:
    cl = claim(limit_nano=1_000)
    r1 = await aledger.areserve("r1", [cl], nano=600, tokens=10, expires_at=FAR)
    assert r1.ok and r1.before == (c(),)
    r2 = await aledger.areserve("r2", [cl], nano=600, tokens=10, expires_at=FAR)
    assert not r2.ok and (r2.denied, r2.denied_unit) == (0, "usd")
    assert r2.before == (c(rn=600, rt=10),)
    res = await aledger.acommit("r1", [cl], nano=400, tokens=8, record=record("r1", ts=T0, feature="faq"))
    assert res.applied and res.after == (c(cn=400, ct=8),)
    assert not (await aledger.acommit("r1", [cl], nano=400, tokens=8)).applied
    assert await aledger.arelease("r1") is False
    assert (await aledger.areserve("r3", [cl], nano=600, tokens=1, expires_at=FAR)).ok
    assert await aledger.arelease("r3") is True
    assert await aledger.arelease("r3") is False
    with pytest.raises(ConfigurationError):
        await aledger.areserve("r1", [cl], nano=1, tokens=1, expires_at=FAR)
    await aledger.aadd_record(record("hit", ts=T0 + 1, feature="faq"))
    await aledger.aadd_record(record("hit", ts=T0 + 1, feature="faq"))
    assert [r.id for r in aledger.records()] == ["r1", "hit"]
    assert aledger.counter(COUNTER, 0, 0) == c(cn=400, ct=8)


async def test_async_warn_claims_and_unknown_commit(aledger: SpendLedger) -> None:
    warn = claim("user|all|ann", limit_tokens=5, enforce=False)
    r = await aledger.areserve("r1", [claim(), warn], nano=10, tokens=6, expires_at=FAR)
    assert r.ok and r.exceeded == (1,)
    res = await aledger.acommit("ghost", [warn], nano=7, tokens=3)
    assert res.applied and res.after == (c(cn=7, ct=3, rn=10, rt=6),)


async def test_async_tasks_never_overspend(aledger: SpendLedger) -> None:
    import asyncio

    cl = claim(limit_nano=1_000)

    async def one(i: int) -> bool:
        return (await aledger.areserve(f"t{i}", [cl], nano=30, tokens=1, expires_at=FAR)).ok

    oks = await asyncio.gather(*(one(i) for i in range(60)))
    assert sum(oks) == 33  # 33 * 30 = 990 <= 1000 < 34 * 30
    assert aledger.counter(COUNTER, 0, 0) == c(rn=990, rt=33)


# -- concurrency --------------------------------------------------------------------------------------------------


def test_threads_never_reserve_past_the_limit(ledger: SpendLedger) -> None:
    cl = claim(limit_nano=1_000, limit_tokens=10**6)
    barrier = threading.Barrier(8)
    oks: list[int] = [0] * 8
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            barrier.wait(timeout=30)
            for i in range(25):
                if ledger.reserve(f"t{t}-{i}", [cl], nano=7, tokens=1, expires_at=FAR).ok:
                    oks[t] += 1
        except BaseException as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    assert sum(oks) * 7 <= 1_000
    assert sum(oks) == 142  # 200 tries for 142 places: every place is taken, none twice
    assert ledger.counter(COUNTER, 0, 0) == c(rn=142 * 7, rt=142)


def _hammer(backend: Backend, tag: str, tries: int, barrier: Any, results: Any) -> None:
    """Runs in a child process: its own ledger, reserving against the shared counter."""
    ledger = backend.make()
    ok = 0
    try:
        cl = claim(limit_nano=1_000)
        barrier.wait(timeout=60)
        for i in range(tries):
            if ledger.reserve(f"{tag}-{i}", [cl], nano=10, tokens=1, expires_at=FAR).ok:
                ok += 1
                if i % 4 == 0:  # some are committed for the same amount: the total must not move
                    ledger.commit(f"{tag}-{i}", [cl], nano=10, tokens=1)
        results.put((tag, ok, None))
    except BaseException as e:
        results.put((tag, ok, repr(e)))
    finally:
        ledger.close()


def test_processes_never_reserve_past_the_limit(shared_backend: Backend) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_hammer, args=(shared_backend, f"p{n}", 120, barrier, results)) for n in range(2)
    ]
    for p in procs:
        p.start()
    got = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
        p.close()
    results.close()
    results.join_thread()
    assert [err for _, _, err in got] == [None, None]
    total = sum(ok for _, ok, _ in got)
    assert total == 100  # 240 tries for 100 places of 10 nano-USD under a 1,000 limit
    ledger = shared_backend.make()
    try:
        counter = ledger.counter(COUNTER, 0, 0)
    finally:
        ledger.close()
    assert counter.total_nano == 1_000
    assert counter.total_tokens == 100
    assert counter.committed_nano > 0  # both kinds of rows were written under contention


def _open_same_file(path: str, q: Any) -> None:
    from frugal_chains import SQLiteLedger as Ledger

    try:
        Ledger(path).close()
        q.put("ok")
    except Exception as e:  # pragma: no cover - reported to the parent
        q.put(repr(e))


def test_processes_opening_a_new_sqlite_file_together(tmp_path: Any) -> None:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    for round_ in range(2):
        path = str(tmp_path / f"new-{round_}.sqlite")
        q = ctx.Queue()
        procs = [ctx.Process(target=_open_same_file, args=(path, q)) for _ in range(6)]
        for p in procs:
            p.start()
        results = [q.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(timeout=60)
        assert results == ["ok"] * 6
