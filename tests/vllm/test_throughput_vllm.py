"""measure_throughput and the price it gives, on the real CPU engine (SmolLM2): no timings asserted, only that
the engine's own token counts and prefix-cache hits come through."""

from __future__ import annotations

from typing import TYPE_CHECKING

from frugal_chains import Usage
from frugal_chains.vllm import measure_throughput

if TYPE_CHECKING:
    from frugal_chains.vllm.engine import EngineClient

SYSTEM = (
    "You are the support assistant of an online shop. Answer from the policy below, briefly and politely. "
    "Returns: unused items can be sent back within thirty days of delivery; refunds go to the original payment "
    "method once the warehouse has inspected the parcel. Exchanges: a different size or colour of the same item "
    "is sent free of charge when the first one is returned. "
) * 3


def test_measures_the_engine_and_prices_it(engine_client: EngineClient) -> None:
    t = measure_throughput(engine_client, batch_size=4, max_tokens=8, rounds=1)
    assert (t.requests, t.batch_size) == (4, 4)
    assert t.prompt_tokens_per_s > 0 and t.output_tokens_per_s > 0 and t.seconds > 0
    price = t.price(1.0, utilization=0.5)
    assert price.input > 0 and price.output > 0 and price.cache_read == 0.0
    # prices follow the measured rates: the cost of a call is its GPU time at $1/hour, busy half the time
    seconds = 100 / t.prompt_tokens_per_s + 10 / t.output_tokens_per_s
    assert abs(price.cost(Usage(input_tokens=100, output_tokens=10)) - seconds / 3600 * 2) < 1e-12


def test_a_shared_system_prompt_hits_the_prefix_cache(engine_client: EngineClient) -> None:
    prompts = [
        [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}]
        for q in ("Can I return shoes?", "How long do refunds take?")
    ]
    t = measure_throughput(engine_client, prompts=prompts, batch_size=4, max_tokens=4, rounds=1)
    assert 0.3 < t.cached_share < 1  # the system prompt's whole blocks come from the cache, the rest does not
