"""The routing vocabulary shared by scorers, gates, the cascade engine and both adapters (framework-free).

Conversations are OpenAI-format message dicts (``{"role": "user", "content": "..."}``); adapters convert.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from frugal_chains.accounting.usage import Usage

__all__ = [
    "Attempt",
    "GateContext",
    "GateResult",
    "Message",
    "QualityGate",
    "ASampler",
    "Sampler",
    "Scorer",
    "TierAnswer",
    "content_text",
    "last_user_text",
    "maybe_await",
    "user_turns",
]

Message = Mapping[str, Any]
"""One OpenAI-format chat message (``role``, ``content``, optional ``tool_calls`` ...)."""


def content_text(content: Any) -> str:
    """The text of an OpenAI-format ``content`` (a string or a list of parts; non-text parts are skipped)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        parts: list[str] = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, Mapping) and part.get("type") == "text":
                parts.append(str(part.get("text", "")))
        return "\n".join(parts)
    return str(content)


def user_turns(messages: Sequence[Message]) -> list[str]:
    """The text of every user turn, oldest first.

    Example:
        >>> user_turns([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}])
        ['hi']
    """
    return [content_text(m.get("content")) for m in messages if m.get("role") in ("user", "human")]


def last_user_text(messages: Sequence[Message]) -> str:
    """The text of the last user turn ("" when there is none).

    Example:
        >>> last_user_text([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
        ...                 {"role": "user", "content": "c"}])
        'c'
    """
    turns = user_turns(messages)
    return turns[-1] if turns else ""


async def maybe_await(value: Any) -> Any:
    """``await value`` if it is awaitable, else ``value``."""
    if inspect.isawaitable(value):
        return await value
    return value


@runtime_checkable
class Scorer(Protocol):
    """Scores a conversation before any model is called: the probability that the cheapest tier is **not**
    good enough (0 = easy, 1 = needs a stronger tier). The routing policy turns it into a starting tier.

    Scorers see the whole conversation (multi-turn), never labels of a data set.

    Example:
        >>> from frugal_chains.routing import HeuristicScorer, Scorer
        >>> isinstance(HeuristicScorer(), Scorer)
        True
    """

    @property
    def name(self) -> str: ...

    def score(self, messages: Sequence[Message]) -> float: ...

    async def ascore(self, messages: Sequence[Message]) -> float: ...


@dataclass(frozen=True, kw_only=True)
class TierAnswer:
    """One tier's answer, as the adapter hands it to the gates.

    Example:
        >>> from frugal_chains.routing import TierAnswer
        >>> TierAnswer(text="42").text
        '42'
    """

    text: str
    """The answer's text ("" for a pure tool call)."""
    tool_calls: tuple[Mapping[str, Any], ...] = ()
    """Tool calls in OpenAI-neutral form: ``{"name", "args", "id"}``."""
    usage: Usage | None = None
    """Token usage the provider reported (``None`` when it reported none)."""
    model: str | None = None
    """The model name the provider reported."""
    logprobs: tuple[float, ...] | None = None
    """Per-token log-probabilities, when the provider returned them."""
    parsed: Any = None
    """The parsed object (structured output), when a schema was requested."""
    parse_error: BaseException | None = None
    """Why the structured output did not parse or validate (``None`` when it did or none was requested)."""
    native: Any = None
    """The adapter's own object (a LangChain ``AIMessage``, a LlamaIndex ``ChatResponse``)."""


Sampler = Callable[[int], Sequence[TierAnswer]]
"""``sample(n)``: ``n`` more answers of the same tier to the same conversation (for self-consistency); the
engine adds their usage and cost to the attempt."""
ASampler = Callable[[int], Awaitable[Sequence[TierAnswer]]]


@dataclass(frozen=True, kw_only=True)
class GateContext:
    """What a quality gate sees: the conversation, the tier and its answer, and hooks from the adapter.

    Example:
        >>> from frugal_chains.routing import GateContext, TierAnswer
        >>> ctx = GateContext(messages=[{"role": "user", "content": "2+2?"}], answer=TierAnswer(text="4"),
        ...                   tier="cheap", tier_index=0, n_tiers=2)
        >>> ctx.question, ctx.is_last
        ('2+2?', False)
    """

    messages: Sequence[Message]
    answer: TierAnswer
    tier: str
    tier_index: int
    n_tiers: int
    sample: Sampler | None = None
    """More answers from the same tier (counted by budgets as child calls); ``None`` when unavailable."""
    asample: ASampler | None = None
    """Async :attr:`sample`."""
    judge_config: Any = None
    """Adapter hook for calls a gate makes (LangChain: a ``RunnableConfig`` whose callbacks make the judge's
    call a child run of the cascade)."""
    structured: bool = False
    """True when the caller asked for structured output (the answer must parse)."""

    @property
    def question(self) -> str:
        """The last user turn."""
        return last_user_text(self.messages)

    @property
    def is_last(self) -> bool:
        """True on the strongest tier (its answer is returned even if a gate fails, see the engine)."""
        return self.tier_index >= self.n_tiers - 1


@dataclass(frozen=True, kw_only=True)
class GateResult:
    """A gate's verdict: ``passed`` or not, an optional score in [0, 1] and a short reason.

    Example:
        >>> from frugal_chains.routing import GateResult
        >>> GateResult(gate="regex", passed=False, reason="no match").passed
        False
    """

    gate: str
    passed: bool
    score: float | None = None
    reason: str = ""
    skipped: bool = False
    """True when the gate could not judge (e.g. no logprobs returned): counted as passed."""
    usage: Usage | None = None
    """Tokens the gate itself spent (an LLM judge's call), added to the attempt's cost."""
    model: str | None = None
    """The model those tokens were spent on (priced with the cascade's price book)."""

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"gate": self.gate, "passed": self.passed}
        if self.score is not None:
            d["score"] = round(float(self.score), 6)
        if self.reason:
            d["reason"] = self.reason
        if self.skipped:
            d["skipped"] = True
        return d


@runtime_checkable
class QualityGate(Protocol):
    """Checks a tier's answer after the call; a failed gate escalates to the next tier.

    ``needs_full_answer`` is False only for gates that can judge without the answer (none of the built-ins):
    when every gate has it False the cascade streams the chosen tier live.

    Example:
        >>> from frugal_chains.routing import QualityGate, RegexGate
        >>> isinstance(RegexGate(r"\\d"), QualityGate)
        True
    """

    @property
    def name(self) -> str: ...

    @property
    def needs_full_answer(self) -> bool: ...

    def check(self, ctx: GateContext) -> GateResult: ...

    async def acheck(self, ctx: GateContext) -> GateResult: ...


AttemptOutcome = Literal["accepted", "escalated", "error", "exhausted"]


@dataclass(frozen=True, kw_only=True)
class Attempt:
    """One call to one tier inside a cascade.

    ``outcome``: ``accepted`` (returned), ``escalated`` (a gate failed), ``error`` (the provider raised and the
    cascade moved on), ``exhausted`` (the last tier failed a gate and was returned anyway, flagged).

    Example:
        >>> from frugal_chains.routing import Attempt
        >>> Attempt(tier="cheap", tier_index=0, model="gpt-4o-mini", outcome="escalated").to_dict()["outcome"]
        'escalated'
    """

    tier: str
    tier_index: int
    model: str
    outcome: AttemptOutcome
    gates: tuple[GateResult, ...] = ()
    error: BaseException | None = field(default=None, compare=False)
    usage: Usage | None = None
    cost_usd: float | None = 0.0
    """USD of the attempt's calls; ``None`` when one of them used a model with no price (unknown, not $0)."""
    latency_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "tier": self.tier,
            "model": self.model,
            "outcome": self.outcome,
            "cost_usd": self.cost_usd,
            "latency_s": round(self.latency_s, 6),
        }
        if self.gates:
            d["gates"] = [g.to_dict() for g in self.gates]
        if self.error is not None:
            d["error"] = f"{type(self.error).__name__}: {self.error}"
        if self.usage is not None:
            d["usage"] = {k: v for k, v in self.usage.to_dict().items() if v}
        return d
