"""What a plan does, in numbers: tokens, cacheable share, breakpoints, cost per call, moved values, warnings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from frugal_chains.prefix.spans import DynamicSpan

__all__ = ["Breakpoint", "ChurnSpan", "PrefixReport"]


@dataclass(frozen=True)
class Breakpoint:
    """One ``cache_control`` marker of a plan (Anthropic).

    Example:
        >>> from frugal_chains.prefix import Breakpoint
        >>> Breakpoint(message_index=0, part_index=0, prefix_tokens=1500, ttl="5m").where()
        'message 0, part 0'
    """

    message_index: int | None
    """Index in the planned messages (None: on the tools)."""
    part_index: int | None = None
    """Index of the content part carrying the marker."""
    on_tools: bool = False
    """The marker sits on the last tool."""
    prefix_tokens: int = 0
    """Tokens of the prefix the marker closes (tools, then messages, up to and including it)."""
    ttl: str = "5m"
    """"5m" or "1h"."""
    caller: bool = False
    """The marker was already in the request given to the planner (yours, or from an earlier plan); it counts
    against the provider's limit."""
    conversation: bool = False
    """The marker closes the conversation so far (the next turn of a multi-turn chat or agent loop reads it); it
    is not part of the stable prefix a new conversation reuses."""

    def where(self) -> str:
        """Where the marker sits, for people."""
        if self.on_tools:
            return "last tool"
        part = "" if self.part_index is None else f", part {self.part_index}"
        return f"message {self.message_index}{part}"


@dataclass(frozen=True)
class ChurnSpan:
    """Text of the stable prefix that changed between two calls (found by the churn detector).

    Example:
        >>> from frugal_chains.prefix import ChurnSpan
        >>> ChurnSpan(message_index=0, before="Bob", after="Carol", seen=2).after
        'Carol'
    """

    message_index: int
    """Index of the input message that changed."""
    before: str
    """The differing text on the previous call (trimmed to its changed part)."""
    after: str
    """The differing text on this call."""
    seen: int = 1
    """Calls on which this message has changed so far."""


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _usd(x: float | None) -> str:
    return "unknown (no price)" if x is None else f"${x:.6f}"


@dataclass(frozen=True)
class PrefixReport:
    """What a :class:`~frugal_chains.prefix.PrefixPlan` does: tokens, the cacheable share, breakpoints, expected
    input cost per call with and without caching, the values moved out of the prefix, and warnings.

    Example:
        >>> from frugal_chains.prefix import PrefixReport
        >>> r = PrefixReport(provider="openai", model="gpt-4o", total_tokens=2000, cacheable_tokens=1792)
        >>> r.cacheable_share
        0.896
        >>> r.to_dict()["cacheable_share"]
        0.896
    """

    provider: str
    model: str
    total_tokens: int = 0
    """Input tokens of the planned request (tools included)."""
    cacheable_tokens: int = 0
    """Tokens the provider can read from its cache on a repeat call (0 below the minimum or with no marker)."""
    breakpoints: tuple[Breakpoint, ...] = ()
    ttl: str | None = None
    """The cache lifetime asked for ("5m", "1h"), None for implicit caching or when nothing is cached."""
    reuse_rate: float = 0.0
    """Expected share of calls that find the prefix cached (Poisson arrivals at ``calls_per_hour``)."""
    cost_per_call_usd: float | None = None
    """Expected input USD per call with caching; None when the model has no known price."""
    cost_per_call_uncached_usd: float | None = None
    """Input USD per call with no caching; None when the model has no known price."""
    dynamic_spans: tuple[DynamicSpan, ...] = ()
    """Values moved into the request context block."""
    churn: tuple[ChurnSpan, ...] = ()
    """Stable text that changed since the previous call (the churn detector)."""
    warnings: tuple[str, ...] = field(default=())
    """Dynamic content found, prefix below the minimum, too many breakpoints asked, a request sent unchanged..."""
    calls_per_hour: float = 0.0
    """The reuse estimate's assumption (the formatter's ``calls_per_hour``)."""

    @property
    def cacheable_share(self) -> float:
        """``cacheable_tokens / total_tokens`` (0.0 for an empty request)."""
        return round(self.cacheable_tokens / self.total_tokens, 4) if self.total_tokens else 0.0

    @property
    def saving_share(self) -> float | None:
        """Expected input cost saved per call, as a share of the uncached cost (None when unpriced)."""
        if self.cost_per_call_usd is None or not self.cost_per_call_uncached_usd:
            return None
        return 1 - self.cost_per_call_usd / self.cost_per_call_uncached_usd

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data."""
        return {
            "provider": self.provider,
            "model": self.model,
            "total_tokens": self.total_tokens,
            "cacheable_tokens": self.cacheable_tokens,
            "cacheable_share": self.cacheable_share,
            "breakpoints": [
                {
                    "message_index": b.message_index,
                    "part_index": b.part_index,
                    "on_tools": b.on_tools,
                    "prefix_tokens": b.prefix_tokens,
                    "ttl": b.ttl,
                    "caller": b.caller,
                    "conversation": b.conversation,
                }
                for b in self.breakpoints
            ],
            "ttl": self.ttl,
            "reuse_rate": self.reuse_rate,
            "calls_per_hour": self.calls_per_hour,
            "cost_per_call_usd": self.cost_per_call_usd,
            "cost_per_call_uncached_usd": self.cost_per_call_uncached_usd,
            "dynamic_spans": [
                {
                    "kind": s.kind,
                    "text": s.text,
                    "label": s.label,
                    "source": s.source,
                    "message_index": s.message_index,
                }
                for s in self.dynamic_spans
            ],
            "churn": [
                {"message_index": c.message_index, "before": c.before, "after": c.after, "seen": c.seen}
                for c in self.churn
            ],
            "warnings": list(self.warnings),
        }

    def format(self) -> str:
        """A readable table (what ``frugal-chains prefix explain`` prints).

        Example:
            >>> from frugal_chains.prefix import PrefixReport
            >>> print(PrefixReport(provider="vllm", model="my-llama", total_tokens=10).format().splitlines()[0])
            Prompt prefix plan: my-llama (vllm)
        """
        from frugal_chains._tables import plain_table

        out = [f"Prompt prefix plan: {self.model} ({self.provider})"]
        rows = [
            ["input tokens", f"{self.total_tokens:,}"],
            ["cacheable tokens", f"{self.cacheable_tokens:,} ({_pct(self.cacheable_share)})"],
            ["cache lifetime", self.ttl or ("implicit" if self.cacheable_tokens else "none")],
            ["expected reuse", f"{_pct(self.reuse_rate)} at {self.calls_per_hour:g} calls/hour"],
            ["input cost / call, cached", _usd(self.cost_per_call_usd)],
            ["input cost / call, uncached", _usd(self.cost_per_call_uncached_usd)],
        ]
        out.append(plain_table(None, ["", "value"], rows))
        if self.breakpoints:
            out.append("")
            out.append(
                plain_table(
                    "Cache breakpoints",
                    ["#", "where", "prefix tokens", "ttl", "from"],
                    [
                        [
                            str(i + 1),
                            b.where(),
                            f"{b.prefix_tokens:,}",
                            b.ttl,
                            "request"
                            if b.caller
                            else "planner (conversation)"
                            if b.conversation
                            else "planner",
                        ]
                        for i, b in enumerate(self.breakpoints)
                    ],
                    keys=2,
                )
            )
        if self.dynamic_spans:
            out.append("")
            out.append(
                plain_table(
                    "Moved to the request context",
                    ["label", "kind", "found by", "message", "value"],
                    [
                        [s.label, s.kind, s.source, str(s.message_index), _short(s.text)]
                        for s in self.dynamic_spans
                    ],
                    keys=5,
                )
            )
        if self.churn:
            out.append("")
            out.append(
                plain_table(
                    "Changed since the previous call",
                    ["message", "before", "after", "changes"],
                    [
                        [str(c.message_index), _short(c.before), _short(c.after), str(c.seen)]
                        for c in self.churn
                    ],
                    keys=3,
                )
            )
        if self.warnings:
            out.append("")
            out.append("Warnings")
            out.extend(f"- {w}" for w in self.warnings)
        return "\n".join(out)


def _short(text: str, limit: int = 48) -> str:
    one = text.replace("\n", "\\n")
    return one if len(one) <= limit else one[: limit - 3] + "..."
