"""Prompt-cache figures on the Redis ledger: the cache reads and writes of each call record are kept (in the record
itself; no new keys), summed per group with the prefix hit rate, and ``frugal-chains report`` prints them; records
stored before these figures existed read as uncached."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from frugal_chains.accounting import Attribution, CallRecord, Usage, spend_report
from frugal_chains.accounting.redis import RedisLedger
from frugal_chains.cli import main

pytestmark = pytest.mark.redis


@pytest.fixture
def ledger(redis_url: str) -> Iterator[RedisLedger]:
    led = RedisLedger(redis_url, prefix="prefixrate:")
    try:
        yield led
    finally:
        led.close()


def test_redis_ledger_reports_the_prefix_hit_rate_per_feature(
    ledger: RedisLedger, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    support = Attribution(feature="support", user_id="u1")
    ledger.add_record(
        CallRecord(model="claude-sonnet-4-5", cost_usd=0.01, attribution=support,
                   usage=Usage(input_tokens=2000, output_tokens=9, cache_write_tokens=1500, cache_write_1h_tokens=300))
    )  # fmt: skip
    ledger.add_record(
        CallRecord(model="claude-sonnet-4-5", cost_usd=0.001, attribution=support,
                   usage=Usage(input_tokens=2000, output_tokens=9, cache_read_tokens=1800))
    )  # fmt: skip
    # a record as an earlier version stored it: usage without the cache fields
    old = CallRecord(model="gpt-4o", cost_usd=0.002, usage=Usage(input_tokens=500),
                     attribution=Attribution(feature="search")).to_dict()  # fmt: skip
    old["usage"] = {"input_tokens": 500, "output_tokens": 0}
    ledger.add_record(CallRecord.from_dict(old))

    assert [r.usage.cache_read_tokens for r in ledger.records(feature="support")] == [0, 1800]
    rows = {r.key: r for r in ledger.summary("feature")}
    assert (rows["support"].cache_read_tokens, rows["support"].cache_write_tokens) == (1800, 1800)
    assert rows["support"].prefix_hit_rate == pytest.approx(0.45)
    assert rows["search"].prefix_hit_rate == 0.0

    report = spend_report(ledger, by="feature")
    assert report.total.prefix_hit_rate == pytest.approx(1800 / 4500)
    assert main(["report", "--ledger", redis_url, "--prefix", "prefixrate:", "--format", "json"]) == 0
    out = {r["feature"]: r for r in json.loads(capsys.readouterr().out)["rows"]}
    assert (out["support"]["cache_read_tokens"], out["support"]["prefix_hit_rate"]) == (1800, 0.45)
    assert main(["report", "--ledger", redis_url, "--prefix", "prefixrate:"]) == 0
    assert "prefix hit" in capsys.readouterr().out
