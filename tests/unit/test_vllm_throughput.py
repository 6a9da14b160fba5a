"""measure_throughput over any VLLMClient, against a fake client that simulates a GPU's clock.

The fake "GPU" prefills PREFILL_RATE uncached prompt tokens a second and makes one decoding step (one token for
every request of the batch) every STEP_S seconds; its clock is the one measure_throughput reads, so the measured
rates can be checked exactly (no real timings are asserted).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any, Literal

import pytest

from frugal_chains import ConfigurationError, Price, Usage
from frugal_chains.vllm import (
    ChatRequest,
    Completion,
    CompletionChunk,
    Throughput,
    VLLMClient,
    measure_throughput,
)
from frugal_chains.vllm import throughput as throughput_module

PREFILL_RATE = 4_000.0  # uncached prompt tokens a second
STEP_S = 0.02  # one decoding step: one token for each request of the batch
BLOCK = 4  # prefix-cache block, in words


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeGPUClient:
    """A VLLMClient whose tokens are words and whose time is simulated."""

    model = "fake-gpu"
    mode: Literal["engine", "server"] = "engine"

    def __init__(self, clock: Clock, *, report_usage: bool = True) -> None:
        self.clock = clock
        self.report_usage = report_usage
        self.calls: list[list[ChatRequest]] = []
        self.reported: list[tuple[list[Usage], float]] = []  # per call: the usages and the simulated seconds
        self.seen: list[list[str]] = []

    def _cached(self, words: list[str]) -> int:
        best = 0
        for earlier in self.seen:
            n = 0
            for a, b in zip(words, earlier, strict=False):
                if a != b:
                    break
                n += 1
            best = max(best, n)
        return min(best, len(words) - 1) // BLOCK * BLOCK

    def generate(self, requests: Sequence[ChatRequest]) -> list[Completion]:
        self.calls.append(list(requests))
        answers = []
        uncached_total = 0
        longest = 0
        for r in requests:
            words = " ".join(str(m["content"]) for m in r.messages).split()
            cached = self._cached(words)
            self.seen.append(words)
            uncached_total += len(words) - cached
            out = r.options.max_tokens or 16
            longest = max(longest, out)
            usage = Usage(input_tokens=len(words), cache_read_tokens=cached, output_tokens=out)
            answers.append(
                Completion(text="x " * out, model=self.model, usage=usage if self.report_usage else Usage())
            )
        # prefill of every prompt, then decoding steps for the tokens after the first (which the prefill makes)
        seconds = uncached_total / PREFILL_RATE + (longest - 1) * STEP_S
        self.clock.now += seconds
        self.reported.append(([a.usage for a in answers], seconds))
        return answers

    async def agenerate(self, requests: Sequence[ChatRequest]) -> list[Completion]:
        return self.generate(requests)

    def stream(self, request: ChatRequest) -> Iterator[CompletionChunk]:
        yield from ()

    async def astream(self, request: ChatRequest) -> AsyncIterator[CompletionChunk]:
        for chunk in ():
            yield chunk

    def close(self) -> None:
        pass


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(throughput_module, "_clock", c)
    return c


def test_measures_the_simulated_prefill_and_decoding_rates(clock: Clock) -> None:
    client = FakeGPUClient(clock)
    assert isinstance(client, VLLMClient)
    t = measure_throughput(client, batch_size=8, max_tokens=16, rounds=3)
    assert t.prompt_tokens_per_s == pytest.approx(PREFILL_RATE)
    # 8 requests x 16 tokens in 15 decoding steps
    assert t.output_tokens_per_s == pytest.approx(8 * 16 / (15 * STEP_S))
    assert (t.requests, t.batch_size) == (24, 8)
    assert t.seconds > 0


def test_each_batch_goes_to_vllm_in_one_call(clock: Clock) -> None:
    client = FakeGPUClient(clock)
    measure_throughput(client, batch_size=5, max_tokens=8, rounds=2)
    assert [len(c) for c in client.calls] == [5] * 5  # one untimed batch, then prefill + full per round
    prefill, full = client.calls[1], client.calls[2]
    assert {r.options.max_tokens for r in prefill} == {1}
    assert {r.options.max_tokens for r in full} == {8}
    assert all(r.options.extra == {"ignore_eos": True} for c in client.calls for r in c)
    assert all(r.options.temperature == 0.0 for c in client.calls for r in c)
    no_eos = FakeGPUClient(clock)
    measure_throughput(no_eos, batch_size=2, max_tokens=8, rounds=1, ignore_eos=False)
    assert all(r.options.extra == {} for c in no_eos.calls for r in c)


def test_repeated_prompts_do_not_hit_the_prefix_cache_of_earlier_rounds(clock: Clock) -> None:
    client = FakeGPUClient(clock)
    t = measure_throughput(client, prompts=["one and the same question " * 3], batch_size=4, rounds=3)
    texts = [r.messages[-1]["content"] for c in client.calls for r in c]
    assert len(set(texts)) == len(texts)  # every request ends with a marker of its own
    assert all(text.startswith("one and the same question") for text in texts)
    # the words before the marker are shared (whole blocks of them hit), the marker never is
    assert 0 < t.cached_share < 1
    assert t.prompt_tokens_per_s == pytest.approx(PREFILL_RATE)  # counts computed tokens only


def test_a_shared_system_prompt_shows_in_cached_share(clock: Clock) -> None:
    system = {"role": "system", "content": "You answer questions about our return policy. " * 20}
    prompts = [[system, {"role": "user", "content": q}] for q in ("Refund?", "Exchange?", "Gift?")]
    client = FakeGPUClient(clock)
    t = measure_throughput(client, prompts=prompts, batch_size=6, max_tokens=8, rounds=2)
    assert t.cached_share > 0.8
    assert t.prompt_tokens_per_s == pytest.approx(PREFILL_RATE)
    assert prompts[0][1]["content"] == "Refund?"  # the caller's messages are not changed
    fresh = FakeGPUClient(clock)
    plain = measure_throughput(fresh, prompts=["Refund?", "Exchange?"], batch_size=6, max_tokens=8, rounds=2)
    assert plain.cached_share < t.cached_share


def test_the_price_charges_exactly_the_gpu_time_of_the_work(clock: Clock) -> None:
    system = {"role": "system", "content": "A long shared system prompt for every request. " * 10}
    prompts = [[system, {"role": "user", "content": q}] for q in ("one?", "two?", "three?")]
    client = FakeGPUClient(clock)
    t = measure_throughput(client, prompts=prompts, batch_size=8, max_tokens=32, rounds=2)
    price = t.price(3.6)  # $0.001 a second
    assert price == Price.from_gpu_hour(
        3.6, output_tokens_per_s=t.output_tokens_per_s, input_tokens_per_s=t.prompt_tokens_per_s
    )
    # each batch of full answers (the warm-up and one per round) is charged the GPU time it took: its
    # uncached prompt tokens as prefill, its cache hits free, its answer tokens as decoding
    full_batches = [client.reported[0], *client.reported[2::2]]
    assert len(full_batches) == 3
    for usages, seconds in full_batches:
        assert sum(u.cache_read_tokens for u in usages) > 0
        assert sum(price.cost(u) for u in usages) == pytest.approx(seconds * 0.001)
    assert t.price(3.6, utilization=0.5).output == pytest.approx(2 * price.output)


def test_a_client_without_usage_is_refused(clock: Clock) -> None:
    with pytest.raises(ConfigurationError) as info:
        measure_throughput(FakeGPUClient(clock, report_usage=False), batch_size=2, rounds=1)
    assert info.value.field == "client" and "usage" in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 2.5}, "batch_size"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"rounds": 0}, "rounds"),
        ({"prompts": []}, "prompts"),
        ({"prompts": "a single string"}, "prompts"),
        ({"prompts": [[{"role": "user", "content": [{"type": "text", "text": "hi"}]}]]}, "prompts"),
    ],
)
def test_bad_arguments_name_the_field(clock: Clock, kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        measure_throughput(FakeGPUClient(clock), **kwargs)
    assert info.value.field == field


def test_throughput_validates_its_figures() -> None:
    with pytest.raises(ConfigurationError) as info:
        Throughput(
            prompt_tokens_per_s=0, output_tokens_per_s=1, requests=1, batch_size=1, seconds=1, cached_share=0
        )
    assert info.value.field == "prompt_tokens_per_s"
    with pytest.raises(ConfigurationError) as info:
        Throughput(
            prompt_tokens_per_s=1, output_tokens_per_s=1, requests=1, batch_size=1, seconds=1, cached_share=2
        )
    assert info.value.field == "cached_share"
