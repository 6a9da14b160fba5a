"""Measure a vLLM model's throughput and turn it into a :class:`~frugal_chains.Price`.

A self-hosted model has no list price: what a token costs is the GPU time it takes. :func:`measure_throughput`
sends batches through any :class:`~frugal_chains.vllm.VLLMClient` (the in-process engine or a ``vllm serve``
client) and measures the two rates that decide it, prefill (prompt tokens a second) and decoding (answer tokens a
second, all requests of the batch together); :meth:`Throughput.price` gives the matching
:meth:`Price.from_gpu_hour <frugal_chains.Price.from_gpu_hour>`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from frugal_chains.accounting.usage import Price, Usage
from frugal_chains.errors import ConfigurationError
from frugal_chains.vllm.types import ChatRequest, SamplingOptions, VLLMClient

__all__ = ["Throughput", "measure_throughput"]

DEFAULT_PROMPTS: tuple[str, ...] = (
    "Explain in two sentences why the sky is blue.",
    "Write a short note thanking a colleague for their help with a report.",
    "List three things to check before a long car journey.",
    "What is the difference between weather and climate?",
    "Give a simple recipe for a tomato salad.",
    "Summarise the plot of a detective story in a few sentences.",
    "How do plants make their food?",
    "Suggest a name for a small bakery and say why.",
)
"""Varied everyday requests (what :func:`measure_throughput` sends when given no prompts)."""

Prompt = str | Sequence[Mapping[str, Any]]

_clock = time.perf_counter
"""The timer (a seam for tests that simulate a GPU's clock)."""


@dataclass(frozen=True, kw_only=True)
class Throughput:
    """What :func:`measure_throughput` measured: the prefill and decoding rates at one batch size.

    Both rates are aggregates (every request of the batch together), which is what a GPU-hour buys.

    Example:
        >>> from frugal_chains.vllm import Throughput
        >>> t = Throughput(prompt_tokens_per_s=20_000, output_tokens_per_s=2_000, requests=96, batch_size=32,
        ...                seconds=12.5, cached_share=0.4)
        >>> price = t.price(1.2, utilization=0.6)  # a GPU at $1.20 an hour, busy 60% of the time
        >>> round(price.output, 4), round(price.input, 4), price.cache_read  # USD per million tokens
        (0.2778, 0.0278, 0.0)
    """

    prompt_tokens_per_s: float
    """Prefill: prompt tokens computed a second (tokens served from the prefix cache are not computed and are
    not counted here)."""
    output_tokens_per_s: float
    """Decoding: answer tokens a second, all requests of a batch together."""
    requests: int
    """Requests answered in the timed rounds."""
    batch_size: int
    """Requests handed to vLLM at once."""
    seconds: float
    """Wall-clock time of the timed rounds (prefill and full answers)."""
    cached_share: float
    """Prompt tokens served from the prefix cache / prompt tokens (0 to 1), over the full answers."""

    def __post_init__(self) -> None:
        for name in ("prompt_tokens_per_s", "output_tokens_per_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ConfigurationError(
                    f"Throughput.{name} must be a positive number, got {value!r}.", field=name
                )
        if not 0 <= self.cached_share <= 1:
            raise ConfigurationError(
                f"Throughput.cached_share must be between 0 and 1, got {self.cached_share!r}.",
                field="cached_share",
            )

    def price(self, usd_per_hour: float, utilization: float = 1.0) -> Price:
        """The price of this model on a GPU costing ``usd_per_hour``, busy ``utilization`` of the time
        (:meth:`Price.from_gpu_hour <frugal_chains.Price.from_gpu_hour>` with both measured rates)."""
        return Price.from_gpu_hour(
            usd_per_hour,
            output_tokens_per_s=self.output_tokens_per_s,
            input_tokens_per_s=self.prompt_tokens_per_s,
            utilization=utilization,
        )


def _check_int(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(
            f"measure_throughput: {name} must be a positive int, got {value!r}.", field=name
        )


def _messages(prompt: Prompt, marker: str) -> list[dict[str, Any]]:
    """The prompt as messages, its last message ending with ``marker`` (shared prefixes stay shared)."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": f"{prompt} [{marker}]"}]
    messages = [dict(m) for m in prompt]
    if not messages or not isinstance(messages[-1].get("content"), str):
        raise ConfigurationError(
            "measure_throughput: each prompt must be a string or a list of OpenAI-format messages whose last "
            f"message has text content, got {prompt!r}.",
            field="prompts",
        )
    messages[-1]["content"] = f"{messages[-1]['content']} [{marker}]"
    return messages


def _timed(client: VLLMClient, requests: list[ChatRequest]) -> tuple[float, Usage]:
    start = _clock()
    answers = client.generate(requests)
    seconds = _clock() - start
    total = Usage()
    for answer in answers:
        total = total + answer.usage
    return seconds, total


def measure_throughput(
    client: VLLMClient,
    *,
    prompts: Sequence[Prompt] | None = None,
    batch_size: int = 8,
    max_tokens: int = 64,
    rounds: int = 3,
    ignore_eos: bool = True,
) -> Throughput:
    """Measure ``client``'s prefill and decoding throughput at ``batch_size`` requests at once.

    Each round hands vLLM two batches of ``batch_size`` requests (``prompts`` cycled; strings are user messages,
    lists are OpenAI-format messages): one with ``max_tokens=1``, which is the prefill alone (the first token
    comes out of the prompt's forward pass), then one with full answers of ``max_tokens`` tokens
    (``ignore_eos``: every answer has exactly that many, so rounds compare). Prefill rate: the prompt tokens
    computed (not served from the prefix cache) over the prefill batches' time; decoding rate: the answer tokens
    over the full batches' time less their prefill at that rate. Every request's last message ends with a marker
    of its own, so a round never hits the cache of an earlier identical request; prefixes the prompts share (a
    long system prompt) still hit it, as they do in production (``cached_share``). One untimed batch comes first
    (it starts a lazy engine).

    Measure on the hardware and at the batch size you serve with, with prompts like yours.

    Example:
        >>> from frugal_chains import Usage
        >>> from frugal_chains.vllm import Completion, measure_throughput
        >>> class Instant:  # a stand-in; in your app: EngineClient("HuggingFaceTB/SmolLM2-135M-Instruct")
        ...     model, mode = "instant", "engine"
        ...     def generate(self, requests):
        ...         return [Completion(text="ok", model="instant",
        ...                            usage=Usage(input_tokens=30, output_tokens=r.options.max_tokens))
        ...                 for r in requests]
        >>> t = measure_throughput(Instant(), batch_size=4, max_tokens=16, rounds=2)
        >>> t.requests, t.batch_size, t.cached_share
        (8, 4, 0.0)
    """
    _check_int("batch_size", batch_size)
    _check_int("max_tokens", max_tokens)
    _check_int("rounds", rounds)
    chosen: Sequence[Prompt] = DEFAULT_PROMPTS if prompts is None else prompts
    if isinstance(chosen, str) or not chosen:
        raise ConfigurationError(
            "measure_throughput: prompts must be a non-empty list of prompts (strings or message lists).",
            field="prompts",
        )
    run = uuid.uuid4().hex[:8]
    extra: dict[str, Any] = {"ignore_eos": True} if ignore_eos else {}
    prefill = SamplingOptions(max_tokens=1, temperature=0.0, extra=extra)
    full = SamplingOptions(max_tokens=max_tokens, temperature=0.0, extra=extra)

    def batch(tag: str, options: SamplingOptions) -> list[ChatRequest]:
        return [
            ChatRequest(messages=_messages(chosen[i % len(chosen)], f"{run}-{tag}-{i}"), options=options)
            for i in range(batch_size)
        ]

    _timed(client, batch("warmup", full))
    prefill_s = full_s = 0.0
    prefill_usage = full_usage = Usage()
    for r in range(rounds):
        seconds, usage = _timed(client, batch(f"p{r}", prefill))
        prefill_s, prefill_usage = prefill_s + seconds, prefill_usage + usage
        seconds, usage = _timed(client, batch(f"f{r}", full))
        full_s, full_usage = full_s + seconds, full_usage + usage
    if full_usage.output_tokens == 0 or prefill_usage.uncached_input_tokens == 0 or prefill_s <= 0:
        raise ConfigurationError(
            f"measure_throughput: {client.model!r} reported no token usage, so no throughput can be measured.",
            field="client",
        )
    prompt_rate = prefill_usage.uncached_input_tokens / prefill_s
    decode_s = full_s - full_usage.uncached_input_tokens / prompt_rate
    if decode_s <= 0:  # a noisy machine: charge the whole time to decoding (the higher price)
        decode_s = full_s
    cached_share = full_usage.cache_read_tokens / full_usage.input_tokens if full_usage.input_tokens else 0.0
    return Throughput(
        prompt_tokens_per_s=prompt_rate,
        output_tokens_per_s=full_usage.output_tokens / decode_s,
        requests=rounds * batch_size,
        batch_size=batch_size,
        seconds=prefill_s + full_s,
        cached_share=min(1.0, max(0.0, cached_share)),
    )
