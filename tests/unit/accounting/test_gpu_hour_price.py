"""Price.from_gpu_hour: a self-hosted model's price from its GPU-hour cost and measured throughput."""

from __future__ import annotations

import math

import pytest

from frugal_chains import ConfigurationError, Price, PriceBook, SQLiteLedger, Usage
from frugal_chains.accounting import CallRecord


def test_each_token_costs_its_gpu_time() -> None:
    # $3.60 an hour is $0.001 a second; 100 answer tokens a second: 1,000 answer tokens take 10 s = $0.01
    price = Price.from_gpu_hour(3.6, output_tokens_per_s=100, input_tokens_per_s=2_000)
    assert price.output == pytest.approx(10.0)  # USD per million: 10,000 s of GPU
    assert price.input == pytest.approx(0.5)
    assert price.cost(Usage(input_tokens=0, output_tokens=1_000)) == pytest.approx(0.01)
    # 2,000 prompt tokens take 1 s of prefill, 100 answer tokens 1 s of decoding: 2 s of GPU
    assert price.cost(Usage(input_tokens=2_000, output_tokens=100)) == pytest.approx(0.002)


def test_idle_time_is_paid_for() -> None:
    busy = Price.from_gpu_hour(2.0, output_tokens_per_s=500, input_tokens_per_s=5_000)
    quarter = Price.from_gpu_hour(2.0, output_tokens_per_s=500, input_tokens_per_s=5_000, utilization=0.25)
    assert quarter.output == pytest.approx(4 * busy.output)
    assert quarter.input == pytest.approx(4 * busy.input)


def test_without_a_prefill_rate_prompt_tokens_cost_what_answer_tokens_cost() -> None:
    price = Price.from_gpu_hour(2.0, output_tokens_per_s=500)
    assert price.input == price.output
    measured = Price.from_gpu_hour(2.0, output_tokens_per_s=500, input_tokens_per_s=5_000)
    assert price.input > measured.input  # the default is the upper bound


def test_prefix_cache_hits_are_free_unless_priced() -> None:
    price = Price.from_gpu_hour(2.0, output_tokens_per_s=500, input_tokens_per_s=5_000)
    cached = Usage(input_tokens=1_000, cache_read_tokens=800, output_tokens=10)
    uncached = Usage(input_tokens=200, output_tokens=10)
    assert price.cache_read == 0.0
    assert price.cost(cached) == pytest.approx(price.cost(uncached))
    charged = Price.from_gpu_hour(2.0, output_tokens_per_s=500, input_tokens_per_s=5_000, cache_read=0.01)
    assert charged.cost(cached) == pytest.approx(price.cost(uncached) + 800 * 0.01 / 1e6)


def test_the_ledger_and_price_book_use_it_like_any_price() -> None:
    price = Price.from_gpu_hour(1.2, output_tokens_per_s=2_000, max_output_tokens=512)
    book = PriceBook(prices={"smollm2": price}, use_litellm=False)
    assert book.resolve("smollm2") == (price, True)
    usage = Usage(input_tokens=300, output_tokens=200)
    ledger = SQLiteLedger(":memory:")
    ledger.add_record(CallRecord(model="smollm2", usage=usage, cost_usd=price.cost(usage)))
    (row,) = ledger.summary("model")
    assert row.cost_usd == pytest.approx(500 / 2_000 * 1.2 / 3600)
    assert price.worst_case_cost(300, 512) == pytest.approx((300 + 512) / 2_000 * 1.2 / 3600)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"usd_per_hour": 0}, "usd_per_hour"),
        ({"usd_per_hour": -1.0}, "usd_per_hour"),
        ({"usd_per_hour": math.nan}, "usd_per_hour"),
        ({"usd_per_hour": math.inf}, "usd_per_hour"),
        ({"usd_per_hour": "2.0"}, "usd_per_hour"),
        ({"usd_per_hour": True}, "usd_per_hour"),
        ({"output_tokens_per_s": 0}, "output_tokens_per_s"),
        ({"output_tokens_per_s": -5}, "output_tokens_per_s"),
        ({"output_tokens_per_s": None}, "output_tokens_per_s"),
        ({"input_tokens_per_s": 0.0}, "input_tokens_per_s"),
        ({"input_tokens_per_s": math.inf}, "input_tokens_per_s"),
        ({"utilization": 0}, "utilization"),
        ({"utilization": 1.5}, "utilization"),
        ({"utilization": -0.2}, "utilization"),
        ({"utilization": math.nan}, "utilization"),
        ({"utilization": "full"}, "utilization"),
        ({"cache_read": -0.1}, "cache_read"),
        ({"max_output_tokens": 0}, "max_output_tokens"),
    ],
)
def test_bad_values_name_the_field(kwargs: dict[str, object], field: str) -> None:
    args: dict[str, object] = {"usd_per_hour": 2.0, "output_tokens_per_s": 500.0}
    args.update(kwargs)
    usd = args.pop("usd_per_hour")
    with pytest.raises(ConfigurationError) as info:
        Price.from_gpu_hour(usd, **args)  # type: ignore[arg-type]
    assert info.value.field == field
    assert field in str(info.value)
