"""BudgetGuard: reserve -> commit -> release, alerts, outages, concurrency (framework-free)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest

from frugal_chains import (
    Attribution,
    Budget,
    BudgetExceededError,
    ConfigurationError,
    LedgerUnavailableError,
    Price,
    SQLiteLedger,
    Usage,
)
from frugal_chains.accounting.ledger import Claim, CommitResult, ReserveResult
from frugal_chains.budget import Alert, AnomalyDetector, BudgetGuard
from frugal_chains.budget.alerts import DAILY_COUNTER

PRICES = {"m": Price(input=1.0, output=1.0, max_output_tokens=1000)}  # $1 per million tokens
MSGS = [{"role": "user", "content": "hello"}]


def guard(*budgets: Budget, **kw: Any) -> BudgetGuard:
    return BudgetGuard(budgets, prices=PRICES, **kw)


def quick(*budgets: Budget, **kw: Any) -> BudgetGuard:
    """A guard that retries the ledger at once after a failure (tests toggle outages instantly)."""
    return guard(*budgets, outage_backoff=timedelta(0), **kw)


def test_reserve_then_refuse_before_spend() -> None:
    g = guard(Budget(max_tokens=2500, scope="global"))
    plan = g.plan(MSGS, model="m", max_output_tokens=1000)
    assert plan.worst_tokens == plan.input_tokens + 1000
    r1 = g.reserve(plan)
    r2 = g.reserve(plan)
    with pytest.raises(BudgetExceededError) as e:
        g.reserve(plan)
    assert e.value.unit == "tokens"
    assert e.value.spent == 2 * plan.worst_tokens
    assert e.value.requested == plan.worst_tokens
    assert e.value.limit == 2500
    assert e.value.scope_key == "*"
    g.commit(r1, Usage(input_tokens=10, output_tokens=5))
    g.release(r2)
    c = g.spent(Budget(max_tokens=2500, scope="global"))
    assert (c.committed_tokens, c.reserved_tokens) == (15, 0)


def test_usd_limit_and_error_fields() -> None:
    g = guard(Budget(max_usd=0.0015, scope="user"))
    plan = g.plan(MSGS, model="m", max_output_tokens=1000, attribution=Attribution(user_id="ann"))
    g.reserve(plan)
    with pytest.raises(BudgetExceededError) as e:
        g.reserve(plan)
    assert e.value.unit == "usd"
    assert e.value.scope_key == "ann"
    assert e.value.limit == 0.0015
    assert "ann" in str(e.value) and "Nothing was spent" in str(e.value)
    # another user has their own limit
    g.reserve(g.plan(MSGS, model="m", max_output_tokens=1000, attribution=Attribution(user_id="bob")))


def test_output_cap_defaults_to_model_maximum_and_is_required() -> None:
    g = guard(Budget(max_usd=1, scope="global"))
    assert g.plan(MSGS, model="m").max_output_tokens == 1000
    g2 = BudgetGuard([Budget(max_usd=1)], prices={"x": Price(input=1, output=1)})
    with pytest.raises(ConfigurationError) as e:
        g2.plan(MSGS, model="x")
    assert e.value.field == "max_tokens"


def test_overshoot_is_committed_and_recorded() -> None:
    budget = Budget(max_usd=0.1, scope="global")
    g = guard(budget)
    res = g.reserve(g.plan(MSGS, model="m", max_output_tokens=10))
    rec = g.commit(res, Usage(input_tokens=100_000, output_tokens=10))  # the provider reports far more
    assert rec.overshoot_usd == pytest.approx(rec.cost_usd - rec.reserved_usd)
    assert rec.overshoot_usd > 0
    assert g.spent(budget).committed_nano == 100_010_000  # the actual, never hidden
    with pytest.raises(BudgetExceededError):  # and the next call is refused
        g.reserve(g.plan(MSGS, model="m", max_output_tokens=10))


def test_cache_hit_releases_and_records_saving() -> None:
    g = guard(Budget(max_usd=1.0, scope="global"))
    res = g.reserve(g.plan(MSGS, model="m", max_output_tokens=10))
    rec = g.cache_hit(res, Usage(input_tokens=1000, output_tokens=1000))
    assert rec is not None and rec.outcome == "cache_hit" and rec.cost_usd == 0
    assert rec.saved_usd == pytest.approx(0.002)
    c = g.spent(Budget(max_usd=1.0, scope="global"))
    assert (c.committed_nano, c.reserved_nano) == (0, 0)


def test_threshold_alerts_fire_once_each() -> None:
    alerts: list[Alert] = []
    g = guard(Budget(max_tokens=1000, scope="global", alert_at=(0.5, 0.8)), on_alert=alerts.append)
    for _ in range(10):
        res = g.reserve(g.plan(MSGS, model="m", max_output_tokens=10, input_tokens=10))
        g.commit(res, Usage(input_tokens=50, output_tokens=50))
    assert [a.threshold for a in alerts if a.kind == "threshold"] == [0.5, 0.8]
    # each commit also passes its 20-token reservation: an overshoot alert apiece
    assert [a.kind for a in alerts].count("overshoot") == 10
    assert all(a.unit == "tokens" and a.limit == 1000 for a in alerts if a.kind == "threshold")


def test_warn_budget_lets_call_through_and_alerts() -> None:
    alerts: list[Alert] = []
    g = guard(Budget(max_tokens=10, scope="global", on_exceed="warn"), on_alert=alerts.append)
    res = g.reserve(g.plan(MSGS, model="m", max_output_tokens=100))
    assert res.in_ledger
    assert [a.kind for a in alerts] == ["exceeded"]
    assert alerts[0].unit == "tokens"


def test_alert_hook_errors_never_break_the_call(caplog: pytest.LogCaptureFixture) -> None:
    def boom(alert: Alert) -> None:
        raise RuntimeError("hook broke")

    g = guard(Budget(max_tokens=10, scope="global", on_exceed="warn"), on_alert=boom)
    g.reserve(g.plan(MSGS, model="m", max_output_tokens=100))
    assert "hook broke" in caplog.text


def test_anomaly_alert_when_day_doubles_trailing_average() -> None:
    day = 20_000
    clock = [day * 86400 + 3600.0]
    alerts: list[Alert] = []
    ledger = SQLiteLedger()
    # seven quiet days at 1,000 nano-USD each
    for d in range(day - 7, day):
        c = Claim(counter=DAILY_COUNTER, bucket=d, min_bucket=d, enforce=False)
        ledger.commit(f"seed{d}", [c], nano=1000, tokens=1)
    g = BudgetGuard(
        [],
        ledger=ledger,
        prices=PRICES,
        on_alert=alerts.append,
        anomaly=AnomalyDetector(check_every_s=0),
        clock=lambda: clock[0],
    )
    res = g.reserve(g.plan(MSGS, model="m", max_output_tokens=1, input_tokens=1))
    g.commit(res, Usage(input_tokens=1, output_tokens=0))  # $1e-6 = 1,000 nano: not anomalous
    assert alerts == []
    res = g.reserve(g.plan(MSGS, model="m", max_output_tokens=1, input_tokens=1))
    g.commit(res, Usage(input_tokens=2, output_tokens=0))  # 3,000 nano > 2 x 1,000
    assert [a.kind for a in alerts] == ["anomaly"]
    res = g.reserve(g.plan(MSGS, model="m", max_output_tokens=1, input_tokens=1))
    g.commit(res, Usage(input_tokens=5, output_tokens=0))  # past its reservation: an overshoot alert
    assert [a.kind for a in alerts] == ["anomaly", "overshoot"]  # the anomaly once per day


class FlakyLedger:
    """Wraps a real ledger; ``down`` makes every call fail like an unreachable server."""

    def __init__(self) -> None:
        self.inner = SQLiteLedger()
        self.down = False

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr):
            return attr

        def call(*a: Any, **k: Any) -> Any:
            if self.down:
                raise LedgerUnavailableError("ledger down")
            return attr(*a, **k)

        async def acall(*a: Any, **k: Any) -> Any:
            if self.down:
                raise LedgerUnavailableError("ledger down")
            return await attr(*a, **k)

        return acall if name.startswith("a") and name != "add_record" else call

    # explicit protocol surface for isinstance(SpendLedger)
    def reserve(self, rid: str, claims: Sequence[Claim], **k: Any) -> ReserveResult:
        return self.__getattr__("reserve")(rid, claims, **k)  # type: ignore[no-any-return]

    def commit(self, rid: str, claims: Sequence[Claim], **k: Any) -> CommitResult:
        return self.__getattr__("commit")(rid, claims, **k)  # type: ignore[no-any-return]

    def release(self, rid: str) -> bool:
        return self.__getattr__("release")(rid)  # type: ignore[no-any-return]

    def add_record(self, record: Any) -> None:
        self.__getattr__("add_record")(record)

    def counter(self, *a: Any) -> Any:
        return self.__getattr__("counter")(*a)

    def records(self, **k: Any) -> Any:
        return self.__getattr__("records")(**k)

    def summary(self, *a: Any, **k: Any) -> Any:
        return self.__getattr__("summary")(*a, **k)

    async def areserve(self, rid: str, claims: Sequence[Claim], **k: Any) -> ReserveResult:
        return await self.__getattr__("areserve")(rid, claims, **k)  # type: ignore[no-any-return]

    async def acommit(self, rid: str, claims: Sequence[Claim], **k: Any) -> CommitResult:
        return await self.__getattr__("acommit")(rid, claims, **k)  # type: ignore[no-any-return]

    async def arelease(self, rid: str) -> bool:
        return await self.__getattr__("arelease")(rid)  # type: ignore[no-any-return]

    async def aadd_record(self, record: Any) -> None:
        await self.__getattr__("aadd_record")(record)

    def close(self) -> None:
        self.inner.close()


def test_fails_closed_by_default() -> None:
    ledger = FlakyLedger()
    g = guard(Budget(max_usd=1, scope="global"), ledger=ledger)
    ledger.down = True
    with pytest.raises(LedgerUnavailableError, match="refused before any money was spent"):
        g.reserve(g.plan(MSGS, model="m", max_output_tokens=10))


def test_fail_open_queues_spend_and_writes_it_once() -> None:
    ledger = FlakyLedger()
    budget = Budget(max_usd=1, scope="global")
    g = quick(budget, ledger=ledger, on_ledger_error="open")
    reserved = g.reserve(g.plan(MSGS, model="m", max_output_tokens=10))  # reserved while up
    ledger.down = True
    unreserved = g.reserve(g.plan(MSGS, model="m", max_output_tokens=10))  # let through while down
    assert not unreserved.in_ledger
    g.commit(reserved, Usage(input_tokens=1000, output_tokens=0))
    g.commit(unreserved, Usage(input_tokens=2000, output_tokens=0))
    assert g.pending == 2
    assert g.flush() == 2  # still down: nothing lost
    ledger.down = False
    assert g.flush() == 0
    assert g.flush() == 0
    c = g.spent(budget)
    assert (c.committed_nano, c.reserved_nano) == (3_000_000, 0)
    assert len(ledger.inner.records()) == 2


async def test_async_paths_and_queue() -> None:
    ledger = FlakyLedger()
    budget = Budget(max_usd=1, scope="global")
    g = quick(budget, ledger=ledger)
    res = await g.areserve(g.plan(MSGS, model="m", max_output_tokens=10))
    ledger.down = True
    await g.acommit(res, Usage(input_tokens=1000, output_tokens=0))
    assert g.pending == 1
    ledger.down = False
    assert await g.aflush() == 0
    assert g.spent(budget).committed_nano == 1_000_000
    res = await g.areserve(g.plan(MSGS, model="m", max_output_tokens=10))
    await g.arelease(res)
    assert g.spent(budget).reserved_nano == 0


@pytest.mark.parametrize("backend", ["memory", "file"])
async def test_fifty_concurrent_reservations_never_overspend(backend: str, tmp_path: Any) -> None:
    ledger = SQLiteLedger(":memory:" if backend == "memory" else tmp_path / "l.sqlite")
    budget = Budget(max_usd=0.0105, scope="global")  # room for ten worst cases of $0.001 (+ prompt)
    g = BudgetGuard([budget], ledger=ledger, prices=PRICES)

    async def one() -> bool:
        plan = g.plan(MSGS, model="m", max_output_tokens=1000, input_tokens=0)
        try:
            res = await g.areserve(plan)
        except BudgetExceededError:
            return False
        await asyncio.sleep(0.01)
        await g.acommit(res, Usage(input_tokens=0, output_tokens=1000))
        return True

    results = await asyncio.gather(*(one() for _ in range(50)))
    assert sum(results) == 10
    c = g.spent(budget)
    assert c.committed_nano == 10 * 1_000_000 <= 10_500_000
    assert c.reserved_nano == 0


def test_threads_never_overspend() -> None:
    budget = Budget(max_tokens=10_000, scope="global")
    g = guard(budget)
    ok: list[int] = []

    def worker() -> None:
        for _ in range(20):
            try:
                res = g.reserve(g.plan(MSGS, model="m", max_output_tokens=400, input_tokens=100))
            except BudgetExceededError:
                continue
            ok.append(1)
            g.commit(res, Usage(input_tokens=100, output_tokens=400))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ok) == 20
    assert g.spent(budget).committed_tokens == 10_000


def test_bad_guard_input() -> None:
    with pytest.raises(ConfigurationError) as e:
        BudgetGuard(["not a budget"])  # type: ignore[list-item]
    assert e.value.field == "budgets"
    with pytest.raises(ConfigurationError) as e:
        BudgetGuard(on_ledger_error="maybe")  # type: ignore[arg-type]
    assert e.value.field == "on_ledger_error"
    with pytest.raises(ConfigurationError) as e:
        BudgetGuard(ledger=object())  # type: ignore[arg-type]
    assert e.value.field == "ledger"


def test_queued_commits_raise_their_alerts_when_flushed() -> None:
    ledger = FlakyLedger()
    alerts: list[Alert] = []
    budget = Budget(max_tokens=1000, scope="global", alert_at=(0.5, 0.8))
    g = quick(budget, ledger=ledger, on_alert=alerts.append)
    res = g.reserve(g.plan(MSGS, model="m", max_output_tokens=10, input_tokens=10))
    ledger.down = True
    g.commit(res, Usage(input_tokens=850, output_tokens=50))
    assert [a.kind for a in alerts] == ["overshoot"]  # raised at once (no ledger needed); thresholds: not yet
    ledger.down = False
    g.flush()
    assert [a.threshold for a in alerts if a.kind == "threshold"] == [0.5, 0.8]


class LostReplyLedger(FlakyLedger):
    """The reservation lands, but the reply is lost (a timeout after the server ran the script)."""

    def reserve(self, rid: str, claims: Sequence[Claim], **k: Any) -> ReserveResult:
        self.inner.reserve(rid, claims, **k)
        raise LedgerUnavailableError("reply lost")


def test_a_reservation_whose_reply_was_lost_is_given_back() -> None:
    budget = Budget(max_usd=1, scope="global")
    ledger = LostReplyLedger()
    g = quick(budget, ledger=ledger)
    with pytest.raises(LedgerUnavailableError):
        g.reserve(g.plan(MSGS, model="m", max_output_tokens=10))
    assert g.spent(budget).reserved_nano > 0  # landed, reply lost
    assert g.flush() == 0
    assert g.spent(budget).reserved_nano == 0


def test_fail_open_with_a_lost_reply_commits_exactly_once() -> None:
    budget = Budget(max_usd=1, scope="global")
    ledger = LostReplyLedger()
    g = guard(budget, ledger=ledger, on_ledger_error="open", outage_backoff=timedelta(0))
    res = g.reserve(g.plan(MSGS, model="m", max_output_tokens=10))
    assert not res.in_ledger
    g.commit(res, Usage(input_tokens=1000, output_tokens=0))
    c = g.spent(budget)
    assert (c.committed_nano, c.reserved_nano) == (1_000_000, 0)


def test_fail_open_with_a_lost_reply_then_a_provider_error_gives_it_back() -> None:
    budget = Budget(max_usd=1, scope="global")
    g = guard(budget, ledger=LostReplyLedger(), on_ledger_error="open", outage_backoff=timedelta(0))
    res = g.reserve(g.plan(MSGS, model="m", max_output_tokens=10))
    assert not res.in_ledger and g.spent(budget).reserved_nano > 0  # it landed all the same
    g.release(res)  # the provider failed
    assert g.spent(budget).reserved_nano == 0


class CountingDownLedger(FlakyLedger):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def reserve(self, rid: str, claims: Sequence[Claim], **k: Any) -> ReserveResult:
        self.calls += 1
        return super().reserve(rid, claims, **k)


def test_an_outage_costs_one_ledger_attempt_per_backoff_period() -> None:
    ledger = CountingDownLedger()
    ledger.down = True
    g = guard(Budget(max_usd=1, scope="global"), ledger=ledger, outage_backoff=timedelta(hours=1))
    for _ in range(5):
        with pytest.raises(LedgerUnavailableError):
            g.reserve(g.plan(MSGS, model="m", max_output_tokens=10))
    assert ledger.calls == 1  # the other four failed fast, without waiting for the ledger
    assert g.pending == 1  # only the first could have landed: one release queued, not five
    ledger.down = False
    assert g.flush() == 0  # flush() called by you always tries
    g.reserve(g.plan(MSGS, model="m", max_output_tokens=10))  # and the guard is up again
    assert ledger.calls == 2


@pytest.mark.parametrize(
    ("price", "caching"),
    [
        (Price(input=1, output=2), False),
        (Price(input=1, output=2, reasoning=5), False),
        (Price(input=3, output=15, cache_write=3.75, cache_write_1h=6), True),
        (Price(input=3, output=15, cache_write=3.75), True),
        (Price(input=1, output=2, long_context=((100, Price(input=4, output=8)),)), False),
    ],
)
def test_worst_usage_costs_exactly_what_was_reserved(price: Price, caching: bool) -> None:
    g = BudgetGuard(prices={"x": price})
    plan = g.plan(MSGS, model="x", max_output_tokens=500, input_tokens=1234, prompt_caching=caching)
    res = g.reserve(plan)
    assert price.cost(g.worst_usage(res)) == pytest.approx(res.nano / 1e9, abs=1e-9)
