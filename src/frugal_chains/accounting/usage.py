"""The shared language of accounting: token usage, prices, attribution and call records.

Conventions (the same in every component):

* ``Usage.input_tokens`` is the **whole** prompt, *including* the cached parts (cache reads and cache writes),
  as in LangChain's ``usage_metadata`` and OpenAI's ``prompt_tokens``. Anthropic reports its uncached input
  apart; adapters add the parts together before building a ``Usage``. The uncached part is
  :attr:`Usage.uncached_input_tokens`.
* ``Usage.output_tokens`` includes reasoning tokens (as both OpenAI and Anthropic bill and cap them);
  ``reasoning_tokens`` says how many of them were reasoning.
* Prices are in USD **per million tokens**. Money inside ledgers is kept in integer nano-dollars
  (:func:`usd_to_nano`), so sums are exact and never drift.
* A USD amount that cannot be known (a model with no price, counted in tokens only) is ``None``, never ``0.0``.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from frugal_chains.errors import ConfigurationError
from frugal_chains.shared.text import SURROGATE, without_surrogates

__all__ = [
    "Attribution",
    "CallRecord",
    "Outcome",
    "Price",
    "Usage",
    "nano_to_usd",
    "usd_to_nano",
]

NANO = 1_000_000_000
Outcome = Literal["ok", "error", "cache_hit", "refused", "routed"]
"""``routed`` records are a cascade's routing decisions (no cost of their own; the calls are separate records)."""


def usd_to_nano(usd: float, *, round_up: bool = False) -> int:
    """USD to integer nano-dollars (``round_up`` for reservations, which must never be too small)."""
    scaled = usd * NANO
    return math.ceil(scaled - 1e-6) if round_up else round(scaled)


def nano_to_usd(nano: int) -> float:
    """Integer nano-dollars to USD."""
    return nano / NANO


def _check_count(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigurationError(f"Usage.{name} must be a non-negative int, got {value!r}.", field=name)


@dataclass(frozen=True, kw_only=True)
class Usage:
    """Tokens of one call.

    Example:
        >>> from frugal_chains import Usage
        >>> u = Usage(input_tokens=1200, output_tokens=300, cache_read_tokens=1000)
        >>> u.uncached_input_tokens, u.total_tokens
        (200, 1500)
    """

    input_tokens: int = 0
    """All prompt tokens, including ``cache_read_tokens`` and both kinds of cache writes."""
    output_tokens: int = 0
    """All completion tokens, including ``reasoning_tokens``."""
    cache_read_tokens: int = 0
    """Prompt tokens served from the provider's prompt cache (OpenAI ``cached_tokens``, Anthropic cache reads)."""
    cache_write_tokens: int = 0
    """Prompt tokens written to the provider's cache with the default (5-minute) lifetime."""
    cache_write_1h_tokens: int = 0
    """Prompt tokens written to the provider's cache with the 1-hour lifetime (Anthropic)."""
    reasoning_tokens: int = 0
    """Output tokens spent on reasoning (a part of ``output_tokens``)."""

    def __post_init__(self) -> None:
        for name in (
            "input_tokens",
            "output_tokens",
            "cache_read_tokens",
            "cache_write_tokens",
            "cache_write_1h_tokens",
            "reasoning_tokens",
        ):
            _check_count(name, getattr(self, name))
        cached = self.cache_read_tokens + self.cache_write_tokens + self.cache_write_1h_tokens
        if cached > self.input_tokens:
            raise ConfigurationError(
                f"Usage: cache reads and writes ({cached}) exceed input_tokens ({self.input_tokens}); "
                "input_tokens must include the cached parts.",
                field="input_tokens",
            )
        if self.reasoning_tokens > self.output_tokens:
            raise ConfigurationError(
                f"Usage: reasoning_tokens ({self.reasoning_tokens}) exceed output_tokens ({self.output_tokens}); "
                "output_tokens must include reasoning.",
                field="reasoning_tokens",
            )

    @property
    def uncached_input_tokens(self) -> int:
        """Prompt tokens billed at the plain input rate."""
        return (
            self.input_tokens - self.cache_read_tokens - self.cache_write_tokens - self.cache_write_1h_tokens
        )

    @property
    def total_tokens(self) -> int:
        """Input plus output tokens: what token budgets count."""
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cache_read_tokens=self.cache_read_tokens + other.cache_read_tokens,
            cache_write_tokens=self.cache_write_tokens + other.cache_write_tokens,
            cache_write_1h_tokens=self.cache_write_1h_tokens + other.cache_write_1h_tokens,
            reasoning_tokens=self.reasoning_tokens + other.reasoning_tokens,
        )

    def to_dict(self) -> dict[str, int]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_read_tokens": self.cache_read_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "cache_write_1h_tokens": self.cache_write_1h_tokens,
            "reasoning_tokens": self.reasoning_tokens,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Usage:
        return cls(**{k: int(v) for k, v in data.items() if k in cls.__dataclass_fields__})


def _check_rate(name: str, value: float | None) -> None:
    if value is None:
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
    ):
        raise ConfigurationError(
            f"Price.{name} must be a non-negative number of USD per million tokens, got {value!r}.",
            field=name,
        )


def _check_positive(name: str, value: float, unit: str) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigurationError(
            f"Price.from_gpu_hour: {name} must be a positive number of {unit}, got {value!r}.", field=name
        )


@dataclass(frozen=True, kw_only=True)
class Price:
    """USD per **million** tokens for one model.

    Unset cache rates fall back to the input rate (the conservative choice for a model whose provider does
    not discount them); an unset reasoning rate falls back to the output rate.

    Example:
        >>> from frugal_chains import Price, Usage
        >>> p = Price(input=0.5, output=1.5)
        >>> round(p.cost(Usage(input_tokens=1_000_000, output_tokens=1_000_000)), 6)
        2.0
    """

    input: float
    """Plain (uncached) input tokens."""
    output: float
    """Output tokens (reasoning included unless ``reasoning`` is set)."""
    cache_read: float | None = None
    """Input tokens read from the provider's prompt cache; defaults to ``input``."""
    cache_write: float | None = None
    """Input tokens written to the prompt cache (5-minute lifetime); defaults to ``input``."""
    cache_write_1h: float | None = None
    """Input tokens written to the prompt cache with a 1-hour lifetime; defaults to ``cache_write``."""
    reasoning: float | None = None
    """Reasoning tokens, if the provider prices them apart; defaults to ``output``."""
    max_output_tokens: int | None = None
    """The model's largest possible output, used for the worst case when a call sets no ``max_tokens``."""
    long_context: tuple[tuple[int, Price], ...] = ()
    """Tiers ``((threshold, price), ...)``: a prompt of more than ``threshold`` input tokens is priced entirely
    at ``price`` (LiteLLM's ``*_above_200k_tokens`` rates)."""

    def __post_init__(self) -> None:
        for name in ("input", "output", "cache_read", "cache_write", "cache_write_1h", "reasoning"):
            _check_rate(name, getattr(self, name))
        if self.max_output_tokens is not None and (
            not isinstance(self.max_output_tokens, int) or self.max_output_tokens <= 0
        ):
            raise ConfigurationError(
                f"Price.max_output_tokens must be a positive int, got {self.max_output_tokens!r}.",
                field="max_output_tokens",
            )
        object.__setattr__(self, "long_context", tuple(sorted(self.long_context, key=lambda t: t[0])))

    @classmethod
    def from_gpu_hour(
        cls,
        usd_per_hour: float,
        *,
        output_tokens_per_s: float,
        input_tokens_per_s: float | None = None,
        utilization: float = 1.0,
        cache_read: float = 0.0,
        max_output_tokens: int | None = None,
    ) -> Price:
        """The price of a self-hosted model from what its GPU costs per hour and how fast it runs.

        Every token is charged the GPU time it takes: an answer token ``1 / output_tokens_per_s`` seconds, a prompt
        token ``1 / input_tokens_per_s`` seconds, at ``usd_per_hour / 3600`` USD a second, divided by
        ``utilization`` because an idle GPU costs the same per hour.

        * ``output_tokens_per_s``: the aggregate decoding throughput at the batch size you run (all requests
          together, not one request's speed): a GPU answering 32 requests at once makes far more tokens a second
          than one answering a single request, and each token costs that much less.
        * ``input_tokens_per_s``: the prefill throughput (prompt tokens processed a second). Not given: prompt
          tokens are priced like answer tokens, an upper bound (prefill handles a whole prompt in one forward pass
          where decoding makes one pass per token, so a prompt token never takes more GPU time than an answer
          token; it is typically 5-50 times faster). Measure it with
          :func:`frugal_chains.vllm.measure_throughput` for the real figure.
        * ``cache_read``: prompt tokens served from vLLM's prefix cache cost ``0.0`` by default: vLLM reuses the
          cached KV blocks and starts the request's prefill after them, so those tokens get no forward pass and
          take no GPU time (their memory is the KV cache the measured throughput already ran with). Give a rate
          in USD per million tokens to charge them anyway.
        * ``utilization``: the share of the hours the GPU is busy at that throughput (0 < utilization <= 1).

        Example:
            >>> from frugal_chains import Price, Usage
            >>> p = Price.from_gpu_hour(2.0, output_tokens_per_s=1000, input_tokens_per_s=10_000, utilization=0.5)
            >>> round(p.output, 4), round(p.input, 4), p.cache_read  # USD per million tokens
            (1.1111, 0.1111, 0.0)
            >>> round(Price.from_gpu_hour(2.0, output_tokens_per_s=1000).input, 4)  # no prefill rate: the output's
            0.5556
            >>> Price.from_gpu_hour(2.0, output_tokens_per_s=0)
            Traceback (most recent call last):
            ...
            frugal_chains.errors.ConfigurationError: Price.from_gpu_hour: output_tokens_per_s must be a positive ...
        """
        _check_positive("usd_per_hour", usd_per_hour, "USD per GPU-hour")
        _check_positive(
            "output_tokens_per_s", output_tokens_per_s, "tokens per second (aggregate, at your batch size)"
        )
        if input_tokens_per_s is not None:
            _check_positive("input_tokens_per_s", input_tokens_per_s, "prompt tokens per second (prefill)")
        if (
            isinstance(utilization, bool)
            or not isinstance(utilization, (int, float))
            or not math.isfinite(utilization)
            or not 0 < utilization <= 1
        ):
            raise ConfigurationError(
                "Price.from_gpu_hour: utilization must be the busy share of the GPU's hours, above 0 and at most 1 "
                f"(0.5: busy half the time), got {utilization!r}.",
                field="utilization",
            )
        _check_rate("cache_read", cache_read)
        usd_per_million_seconds = usd_per_hour / 3600 * 1_000_000 / utilization
        output = usd_per_million_seconds / output_tokens_per_s
        return cls(
            input=output if input_tokens_per_s is None else usd_per_million_seconds / input_tokens_per_s,
            output=output,
            cache_read=cache_read,
            max_output_tokens=max_output_tokens,
        )

    def for_input(self, input_tokens: int) -> Price:
        """The price that applies to a prompt of ``input_tokens`` (long-context tiers)."""
        chosen = self
        for threshold, tier in self.long_context:
            if input_tokens > threshold:
                chosen = tier
        return chosen

    @property
    def cache_read_rate(self) -> float:
        return self.input if self.cache_read is None else self.cache_read

    @property
    def cache_write_rate(self) -> float:
        return self.input if self.cache_write is None else self.cache_write

    @property
    def cache_write_1h_rate(self) -> float:
        return self.cache_write_rate if self.cache_write_1h is None else self.cache_write_1h

    @property
    def reasoning_rate(self) -> float:
        return self.output if self.reasoning is None else self.reasoning

    @property
    def max_input_rate(self) -> float:
        """The highest rate an input token can be billed at (a cache write may cost more than plain input)."""
        return max(self.input, self.cache_read_rate, self.cache_write_rate, self.cache_write_1h_rate)

    def cost(self, usage: Usage) -> float:
        """USD for ``usage``, every part at its own rate."""
        p = self.for_input(usage.input_tokens)
        per_million = (
            usage.uncached_input_tokens * p.input
            + usage.cache_read_tokens * p.cache_read_rate
            + usage.cache_write_tokens * p.cache_write_rate
            + usage.cache_write_1h_tokens * p.cache_write_1h_rate
            + (usage.output_tokens - usage.reasoning_tokens) * p.output
            + usage.reasoning_tokens * p.reasoning_rate
        )
        return per_million / 1_000_000

    def worst_case_cost(
        self, input_tokens: int, output_tokens: int, *, prompt_caching: bool = False
    ) -> float:
        """USD upper bound for a call: every input token at the highest rate it could be billed at
        (cache-write rates when the prompt asks for caching), every output token at the output rate."""
        p = self.for_input(input_tokens)
        in_rate = p.max_input_rate if prompt_caching else p.input
        out_rate = max(p.output, p.reasoning_rate)
        return (input_tokens * in_rate + output_tokens * out_rate) / 1_000_000


@dataclass(frozen=True, kw_only=True)
class Attribution:
    """Who and what a call is for. Budgets and ledger queries group by these.

    Example:
        >>> from frugal_chains.accounting import Attribution
        >>> Attribution(feature="faq", user_id="u1").key_for("user")
        'u1'
    """

    task_id: str | None = None
    """One task: a root run (an agent invocation and everything under it)."""
    feature: str | None = None
    user_id: str | None = None
    tenant_id: str | None = None
    tags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # A lone surrogate (a bad decode upstream) would make every ledger refuse the record after the call was
        # paid for: labels are stored with U+FFFD in its place.
        for name in ("task_id", "feature", "user_id", "tenant_id"):
            value = getattr(self, name)
            if isinstance(value, str) and SURROGATE.search(value):
                object.__setattr__(self, name, without_surrogates(value))
        if any(isinstance(t, str) and SURROGATE.search(t) for t in self.tags):
            object.__setattr__(self, "tags", tuple(without_surrogates(t) for t in self.tags))

    def key_for(self, scope: str) -> str | None:
        """The key of this call in a budget scope (``None`` when the attribution has none)."""
        if scope == "global":
            return "*"
        return {
            "task": self.task_id,
            "feature": self.feature,
            "user": self.user_id,
            "tenant": self.tenant_id,
        }.get(scope)

    def merged(self, other: Attribution) -> Attribution:
        """Fields of ``self`` win; unset ones come from ``other``; tags are joined."""
        return Attribution(
            task_id=self.task_id or other.task_id,
            feature=self.feature or other.feature,
            user_id=self.user_id or other.user_id,
            tenant_id=self.tenant_id or other.tenant_id,
            tags=tuple(dict.fromkeys((*self.tags, *other.tags))),
        )


@dataclass(frozen=True, kw_only=True)
class CallRecord:
    """One provider call (or one cache hit) as written to a ledger.

    USD fields are ``None`` when they cannot be known: a model with no price, called under token budgets only,
    is counted in tokens and its record says ``cost_usd=None`` (and ``price_known=False``), never ``0.0``.

    Example:
        >>> from frugal_chains.accounting import CallRecord, Usage
        >>> r = CallRecord(model="gpt-4o-mini", usage=Usage(input_tokens=10, output_tokens=5), cost_usd=4.5e-06)
        >>> r.outcome
        'ok'
        >>> unpriced = CallRecord(model="my-llama", usage=Usage(input_tokens=10), cost_usd=None, price_known=False)
        >>> unpriced.cost_usd is None  # unknown, not $0
        True
    """

    model: str
    usage: Usage
    cost_usd: float | None
    """USD of the call; ``None`` when the model has no price (unknown, not free)."""
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    ts: float = field(default_factory=time.time)
    """Unix time (UTC) of the call's start."""
    latency_s: float | None = None
    provider: str | None = None
    attribution: Attribution = field(default_factory=Attribution)
    outcome: Outcome = "ok"
    tier: str | None = None
    """The cascade tier that answered (filled in by the router)."""
    reserved_usd: float | None = 0.0
    """The worst case reserved before the call (``None``: reserved in tokens only, the model has no price)."""
    overshoot_usd: float | None = 0.0
    """How much the actual cost went past the reservation (recorded, never hidden); ``None`` when either is
    unknown."""
    overshoot_tokens: int = 0
    """How many tokens the call used past the ones reserved for it (recorded, never hidden)."""
    usage_estimated: bool = False
    """True when the provider reported no usage and the tokens were estimated."""
    price_known: bool = True
    """False when the model had no price: charged at ``fallback_price``, or (``cost_usd=None``) not priced."""
    saved_usd: float | None = 0.0
    """USD a cache hit saved (filled in by the cache); ``None`` when the model has no price."""
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Room for later components' fields (JSON-serialisable)."""

    def __post_init__(self) -> None:
        for name in ("model", "provider", "tier"):
            value = getattr(self, name)
            if isinstance(value, str) and SURROGATE.search(value):
                object.__setattr__(self, name, without_surrogates(value))

    def with_(self, **changes: Any) -> CallRecord:
        """A copy with some fields changed."""
        return replace(self, **changes)

    @property
    def day(self) -> str:
        """The UTC day of the call, ``YYYY-MM-DD``."""
        return time.strftime("%Y-%m-%d", time.gmtime(self.ts))

    def to_dict(self) -> dict[str, Any]:
        a = self.attribution
        return {
            "id": self.id,
            "ts": self.ts,
            "model": self.model,
            "provider": self.provider,
            "usage": self.usage.to_dict(),
            "cost_usd": self.cost_usd,
            "latency_s": self.latency_s,
            "task_id": a.task_id,
            "feature": a.feature,
            "user_id": a.user_id,
            "tenant_id": a.tenant_id,
            "tags": list(a.tags),
            "outcome": self.outcome,
            "tier": self.tier,
            "reserved_usd": self.reserved_usd,
            "overshoot_usd": self.overshoot_usd,
            "overshoot_tokens": self.overshoot_tokens,
            "usage_estimated": self.usage_estimated,
            "price_known": self.price_known,
            "saved_usd": self.saved_usd,
            "extra": dict(self.extra),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CallRecord:
        """The record :meth:`to_dict` wrote (records written before a field existed get its default)."""
        return cls(
            id=str(d["id"]),
            ts=float(d["ts"]),
            model=str(d["model"]),
            provider=d.get("provider"),
            usage=Usage.from_dict(d.get("usage") or {}),
            cost_usd=_usd(d["cost_usd"]),
            latency_s=d.get("latency_s"),
            attribution=Attribution(
                task_id=d.get("task_id"),
                feature=d.get("feature"),
                user_id=d.get("user_id"),
                tenant_id=d.get("tenant_id"),
                tags=tuple(d.get("tags") or ()),
            ),
            outcome=d.get("outcome", "ok"),
            tier=d.get("tier"),
            reserved_usd=_usd(d.get("reserved_usd", 0.0)),
            overshoot_usd=_usd(d.get("overshoot_usd", 0.0)),
            overshoot_tokens=int(d.get("overshoot_tokens") or 0),
            usage_estimated=bool(d.get("usage_estimated", False)),
            price_known=bool(d.get("price_known", True)),
            saved_usd=_usd(d.get("saved_usd", 0.0)),
            extra=dict(d.get("extra") or {}),
        )


def _usd(value: Any) -> float | None:
    """A stored USD amount: ``None`` (unknown) stays ``None``."""
    return None if value is None else float(value)
