"""The cascade engine, framework-free: score, pick a starting tier, call, check the gates, escalate.

Adapters (:class:`frugal_chains.langchain.CascadeChatModel`, :class:`frugal_chains.llama_index.CascadeLLM`)
supply the calls (``call(i) -> TierAnswer``) and convert messages; the engine owns every decision, the cost
arithmetic, the statistics and the ledger's ``routed`` record, so both adapters behave the same.

Rules:

* The scorer (if any) picks the starting tier through the :class:`RoutingPolicy`; without a scorer every
  request starts on the cheapest tier.
* A tier's answer passes when every gate passes (gates run in order and stop at the first failure). With
  structured output, an answer that did not parse fails the built-in ``structured_output`` gate first.
* A failed gate escalates to the next tier. The strongest tier's answer is not gated (there is nothing to
  escalate to, and gates such as a judge cost money), except that structured output must still parse: when
  it does not, :class:`~frugal_chains.errors.CascadeExhaustedError` is raised (attempt outcome ``exhausted``).
* A provider error that :meth:`Cascade.escalates` accepts (rate limits, timeouts, connection and server
  errors, context overflow: ``langchain_core``'s ``ModelError.is_retryable`` and the usual SDK names) moves to
  the next tier; any other error propagates at once (a bug, a refused budget, a bad request). When the last
  tier errors, :class:`~frugal_chains.errors.CascadeExhaustedError` carries every attempt. A nested cascade
  (a cascade used as a tier) that raises ``CascadeExhaustedError`` escalates when every error that exhausted it
  escalates by this cascade's rule (see :meth:`Cascade.escalates`).
* Streams (:meth:`Cascade.stream`, :meth:`Cascade.astream`): with no gate that needs the whole answer, the
  starting tier streams live and its answer is not gated. Otherwise each tier below the strongest is buffered,
  its whole answer checked, and its chunks given once it passes; the strongest tier streams live. An error that
  escalates moves to the next tier while nothing of the tier's answer has been shown; once a live tier has shown
  chunks it is raised (and recorded as that tier's attempt).

The adapters supply small callbacks (call a tier, open its stream, join its chunks) and translate types; every
loop above is written once, here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from frugal_chains.accounting.context import cascade_tier, current_attribution
from frugal_chains.accounting.ledger import SpendLedger
from frugal_chains.accounting.pricing import PriceBook
from frugal_chains.accounting.usage import Attribution, CallRecord, Price, Usage
from frugal_chains.errors import (
    BudgetExceededError,
    CascadeExhaustedError,
    ConfigurationError,
    LedgerUnavailableError,
)
from frugal_chains.routing.policy import RoutingPolicy, TierSpec, default_thresholds
from frugal_chains.routing.stats import RouterStats
from frugal_chains.routing.types import (
    ASampler,
    Attempt,
    GateContext,
    GateResult,
    Message,
    QualityGate,
    Sampler,
    Scorer,
    TierAnswer,
)
from frugal_chains.shared.question import QuestionKey, as_question_key
from frugal_chains.shared.sharing import SharedService
from frugal_chains.shared.streams import aclose_stream, close_stream

__all__ = ["Cascade", "CascadeResult", "Route", "TierChunk", "default_escalates"]

log = logging.getLogger("frugal_chains.routing")

_ESCALATING_NAMES = frozenset(
    {
        # openai / anthropic / mistral / groq SDKs and httpx
        "RateLimitError",
        "APITimeoutError",
        "APIConnectionError",
        "InternalServerError",
        "ServiceUnavailableError",
        "OverloadedError",
        "TimeoutException",
        "ConnectTimeout",
        "ReadTimeout",
        "ConnectError",
        # litellm
        "ContextWindowExceededError",
        "Timeout",
        # google
        "ResourceExhausted",
        "DeadlineExceeded",
        "ServiceUnavailable",
    }
)


_STOPS = (BudgetExceededError, ConfigurationError, LedgerUnavailableError)
"""Errors a gate raises that stop the request instead of failing the gate: a budget refused the gate's own call
(a judge, a sample), its ledger is unreachable, or the gate or its judge is misconfigured (an unpriced judge
model under a USD budget, an async gate on a sync path). Counted as a failed gate, each would escalate every
request silently."""


def _scorer_with_question_key(scorer: Scorer | None, question_key: Any) -> Scorer | None:
    key = as_question_key(question_key)
    if scorer is None:
        return None
    rebind = getattr(scorer, "with_question_key", None)
    if not callable(rebind):
        raise ConfigurationError(
            f"question_key is handed to the scorer, but {type(scorer).__name__} has no with_question_key(key): "
            "select the question in your scorer, or drop question_key=",
            field="question_key",
        )
    out = rebind(key)
    if not isinstance(out, Scorer):
        raise ConfigurationError(
            f"{type(scorer).__name__}.with_question_key returned {type(out).__name__}, not a scorer",
            field="question_key",
        )
    return out


def default_escalates(error: BaseException) -> bool:
    """True for errors a stronger tier (often another provider) may not have: rate limits, timeouts,
    connection and server errors, context overflow. A refused budget never escalates.

    Example:
        >>> class RateLimited(Exception):
        ...     status_code = 429
        >>> default_escalates(RateLimited("slow down")), default_escalates(ValueError("bug"))
        (True, False)
        >>> default_escalates(TimeoutError())
        True
    """
    if not isinstance(error, Exception) or isinstance(error, BudgetExceededError):
        return False
    if isinstance(error, TimeoutError | ConnectionError):
        return True
    for cls in type(error).__mro__:
        if cls.__name__ == "ContextOverflowError":
            return True
        if cls.__name__ == "ModelError":
            return bool(getattr(error, "is_retryable", False))
        if cls.__name__ in _ESCALATING_NAMES:
            return True
    status = getattr(error, "status_code", None)
    return isinstance(status, int) and (status == 429 or status >= 500)


@dataclass(frozen=True, kw_only=True)
class Route:
    """The pre-call decision: the scorer's score and the tier the request starts on.

    Example:
        >>> from frugal_chains.routing import Route
        >>> Route(score=0.2, start=0, latency_s=0.0001).start
        0
    """

    score: float | None
    start: int
    latency_s: float = 0.0
    prompt_tokens: int | None = None


C = TypeVar("C")
"""The type of a tier's stream chunks (the adapter's framework type)."""


@dataclass(frozen=True, kw_only=True)
class TierChunk(Generic[C]):
    """A chunk of tier ``tier_index``'s stream that the caller may show now (see :meth:`Cascade.stream`).

    Example:
        >>> from frugal_chains.routing.cascade import TierChunk
        >>> TierChunk(tier_index=0, chunk="Hel").chunk
        'Hel'
    """

    tier_index: int
    chunk: C


@dataclass(kw_only=True)
class CascadeResult:
    """A finished cascade: the answer returned, the tier that gave it and every attempt on the way.

    Example:
        >>> from frugal_chains.routing import Cascade, TierSpec, TierAnswer
        >>> cascade = Cascade([TierSpec(name="cheap", model="gpt-4o-mini"), TierSpec(name="strong", model="gpt-4o")])
        >>> result = cascade.run([{"role": "user", "content": "hi"}], lambda i: TierAnswer(text=f"tier {i}"))
        >>> result.answer.text, result.tier, result.escalations
        ('tier 0', 'cheap', 0)
    """

    answer: TierAnswer
    tier_index: int
    tier: str
    model: str
    route: Route
    attempts: list[Attempt] = field(default_factory=list)
    accepted: bool = True
    """True when the answer passed its gates (the strongest tier's answer is returned ungated)."""

    @property
    def escalations(self) -> int:
        """How many times the request moved up a tier (failed gates and provider errors)."""
        return sum(1 for a in self.attempts if a.outcome in ("escalated", "error"))

    @property
    def cost_usd(self) -> float | None:
        """USD of every attempt (tier calls, extra samples and judge calls); ``None`` when some attempt's USD is
        unknown (a model with no price: a partial sum would understate it)."""
        return _usd_sum(a.cost_usd for a in self.attempts)

    @property
    def usage(self) -> Usage:
        """Tokens of every attempt, summed."""
        total = Usage()
        for a in self.attempts:
            if a.usage is not None:
                total = total + a.usage
        return total

    def metadata(self, tier_names: Sequence[str]) -> dict[str, Any]:
        """``response_metadata["frugal"]``: tier, model, escalations, scores, cost in USD, attempts."""
        return {
            "tier": self.tier,
            "tier_index": self.tier_index,
            "model": self.model,
            "start_tier": tier_names[self.route.start],
            "escalations": self.escalations,
            "accepted": self.accepted,
            "scores": {
                "scorer": None if self.route.score is None else round(float(self.route.score), 6),
                "gates": {a.tier: [g.to_dict() for g in a.gates] for a in self.attempts if a.gates},
            },
            "cost_usd": self.cost_usd,
            "attempts": [a.to_dict() for a in self.attempts],
        }


class Cascade(SharedService):
    """The cascade engine shared by both adapters (you rarely build one yourself).

    Args:
        tiers: two or more :class:`TierSpec`, cheapest first.
        scorer: picks the starting tier before any call (``None``: start on the cheapest tier).
        gates: quality gates run on every tier's answer but the last one's (see the module rules).
        policy: turns the score into a starting tier (default thresholds 0.5, 0.75 ...).
        stats: escalation counters and the alert hook (default: a new :class:`RouterStats`).
        ledger: when given, one ``routed`` :class:`~frugal_chains.accounting.CallRecord` per request (no cost
            of its own) records the tiers tried and why; read them with ``escalation_rates(ledger.records())``.
        prices: a ``PriceBook`` or ``{model: Price}`` for the cost in the metadata (default: LiteLLM's map). A
            model with no price (and no ``TierSpec.price`` or ``fallback_price``) makes that USD ``None``
            (unknown, not $0), and so every sum it is part of.
        escalate_on: which provider errors move to the next tier (default :func:`default_escalates`).
        name: recorded in the ledger record (``extra["cascade"]``).
        question_key: a :class:`~frugal_chains.QuestionKey` handed to the scorer (its ``with_question_key``):
            what it scores in a templated (RAG) prompt. ``None``: the scorer's own (the built-in scorers
            recognise the known RAG templates by default). A scorer without ``with_question_key`` raises
            :class:`~frugal_chains.errors.ConfigurationError` (``field="question_key"``).

    Example:
        >>> from frugal_chains.routing import Cascade, RegexGate, TierSpec, TierAnswer
        >>> cascade = Cascade([TierSpec(name="cheap", model="gpt-4o-mini"), TierSpec(name="strong", model="gpt-4o")],
        ...                   gates=[RegexGate(r"\\d")])
        >>> answers = ["I am not sure.", "42"]
        >>> result = cascade.run([{"role": "user", "content": "6 x 7?"}], lambda i: TierAnswer(text=answers[i]))
        >>> result.answer.text, result.tier, [a.outcome for a in result.attempts]
        ('42', 'strong', ['escalated', 'accepted'])
    """

    def __init__(
        self,
        tiers: Sequence[TierSpec],
        *,
        scorer: Scorer | None = None,
        gates: Sequence[QualityGate] = (),
        policy: RoutingPolicy | None = None,
        stats: RouterStats | None = None,
        ledger: SpendLedger | None = None,
        prices: PriceBook | Mapping[str, Price] | None = None,
        escalate_on: Callable[[BaseException], bool] | None = None,
        name: str = "cascade",
        question_key: QuestionKey | None = None,
    ) -> None:
        tiers = list(tiers)
        if len(tiers) < 2:
            raise ConfigurationError(
                f"a cascade needs at least two tiers (cheapest first), got {len(tiers)}", field="tiers"
            )
        for t in tiers:
            if not isinstance(t, TierSpec):
                raise ConfigurationError(
                    f"tiers must be TierSpec objects, got {type(t).__name__}", field="tiers"
                )
        names = [t.name for t in tiers]
        if len(set(names)) != len(names):
            raise ConfigurationError(f"tier names must be unique, got {names}", field="tier_names")
        if scorer is not None and not isinstance(scorer, Scorer):
            raise ConfigurationError(
                f"scorer must implement the Scorer protocol (name, score, ascore), got {type(scorer).__name__}",
                field="scorer",
            )
        if question_key is not None:
            scorer = _scorer_with_question_key(scorer, question_key)
        for g in gates:
            if not isinstance(g, QualityGate):
                raise ConfigurationError(
                    f"gates must implement QualityGate (name, needs_full_answer, check, acheck), got "
                    f"{type(g).__name__}",
                    field="gates",
                )
        if policy is None:
            policy = RoutingPolicy(thresholds=default_thresholds(len(tiers)) if scorer is not None else None)
        elif not isinstance(policy, RoutingPolicy):
            raise ConfigurationError("policy must be a RoutingPolicy", field="policy")
        policy.check_tiers(len(tiers))
        if stats is not None and not isinstance(stats, RouterStats):
            raise ConfigurationError("stats must be a RouterStats", field="stats")
        if ledger is not None and not isinstance(ledger, SpendLedger):
            raise ConfigurationError(
                "ledger must be a SpendLedger (SQLiteLedger, RedisLedger)", field="ledger"
            )
        if prices is not None and not isinstance(prices, PriceBook):
            if not isinstance(prices, Mapping):
                raise ConfigurationError("prices must be a PriceBook or {model: Price}", field="prices")
            prices = PriceBook(prices, unknown_model="warn")
        if escalate_on is not None and not callable(escalate_on):
            raise ConfigurationError(
                "escalate_on must be a callable taking an exception", field="escalate_on"
            )
        self.tiers: tuple[TierSpec, ...] = tuple(tiers)
        self.scorer = scorer
        self.gates: tuple[QualityGate, ...] = tuple(gates)
        self.policy = policy
        self.stats = stats if stats is not None else RouterStats()
        self.ledger = ledger
        self.prices: PriceBook = prices if prices is not None else PriceBook(unknown_model="warn")
        self.escalate_on = escalate_on or default_escalates
        self.name = name

    # -- facts -----------------------------------------------------------------------------------------------
    @property
    def tier_names(self) -> list[str]:
        return [t.name for t in self.tiers]

    @property
    def needs_full_answer(self) -> bool:
        """True when some gate must see the whole answer before it can be returned (streams are buffered)."""
        return any(g.needs_full_answer for g in self.gates)

    def tier_price(self, index: int) -> Price:
        spec = self.tiers[index]
        if spec.price is not None:
            return spec.price
        return self.prices.resolve(spec.model)[0]

    def cost(self, index: int, usage: Usage | None, model: str | None = None) -> float | None:
        """USD of ``usage`` on tier ``index`` (its own price, else the price book's for ``model``); ``None`` when
        the model has no price (unknown, not $0).

        Example:
            >>> from frugal_chains import Usage
            >>> from frugal_chains.routing import Cascade, TierSpec
            >>> cascade = Cascade([TierSpec(name="small", model="my-llama"), TierSpec(name="big", model="gpt-4o")])
            >>> cascade.cost(0, Usage(input_tokens=10, output_tokens=5)) is None
            True
        """
        if usage is None:
            return 0.0
        spec = self.tiers[index]
        if spec.price is not None:
            return spec.price.cost(usage)
        price, _known = self.prices.lookup(model or spec.model, required=False)
        return None if price is None else price.cost(usage)

    def _gate_cost(self, index: int, usage: Usage, model: str | None) -> float | None:
        """USD of a gate's own call (a judge): on the judged tier's model when the gate names none; a model that
        is some tier's and has a ``TierSpec.price`` is priced by it, any other by the price book."""
        if not model:
            return self.cost(index, usage)
        for i, spec in enumerate(self.tiers):
            if spec.model == model and spec.price is not None:
                return self.cost(i, usage)
        price, _known = self.prices.lookup(model, required=False)
        return None if price is None else price.cost(usage)

    def escalates(self, error: BaseException) -> bool:
        """Whether ``error`` moves the request to the next tier (else it propagates).

        A :class:`~frugal_chains.errors.CascadeExhaustedError` (a nested cascade used as a tier gave up) escalates
        when every error that exhausted it escalates by this cascade's own rule; an attempt that failed without an
        error (structured output that did not parse) counts as escalating, as it does for a plain tier."""
        if isinstance(error, CascadeExhaustedError):
            return all(self.escalates(a.error) for a in error.attempts if a.error is not None)
        try:
            return bool(self.escalate_on(error))
        except Exception:
            log.exception("frugal-chains: escalate_on raised; treating the error as not escalating")
            return False

    # -- routing ---------------------------------------------------------------------------------------------
    def _prompt_tokens(self, messages: Sequence[Message]) -> int | None:
        if not self.policy.cost_aware:
            return None
        from frugal_chains.accounting.tokens import count_message_tokens

        return count_message_tokens(messages, model=self.tiers[0].model)

    def _route(self, score: float | None, started: float, prompt_tokens: int | None) -> Route:
        if score is not None:
            score = float(score)
        prices = [self.tier_price(i) for i in range(len(self.tiers))] if self.policy.cost_aware else None
        start = self.policy.start_tier(
            score, n_tiers=len(self.tiers), prompt_tokens=prompt_tokens or 0, prices=prices
        )
        return Route(
            score=score, start=start, latency_s=time.perf_counter() - started, prompt_tokens=prompt_tokens
        )

    def route(self, messages: Sequence[Message]) -> Route:
        """Score the conversation and pick the starting tier (no model is called)."""
        started = time.perf_counter()
        score = self.scorer.score(messages) if self.scorer is not None else None
        return self._route(score, started, self._prompt_tokens(messages))

    async def aroute(self, messages: Sequence[Message]) -> Route:
        """Async :meth:`route`."""
        started = time.perf_counter()
        score = await self.scorer.ascore(messages) if self.scorer is not None else None
        return self._route(score, started, self._prompt_tokens(messages))

    # -- gates -----------------------------------------------------------------------------------------------
    def context(
        self,
        messages: Sequence[Message],
        index: int,
        answer: TierAnswer,
        *,
        sample: Sampler | None = None,
        asample: ASampler | None = None,
        judge_config: Any = None,
        structured: bool = False,
    ) -> GateContext:
        return GateContext(
            messages=messages,
            answer=answer,
            tier=self.tiers[index].name,
            tier_index=index,
            n_tiers=len(self.tiers),
            sample=sample,
            asample=asample,
            judge_config=judge_config,
            structured=structured,
        )

    @staticmethod
    def _structured_result(ctx: GateContext) -> GateResult | None:
        if not ctx.structured:
            return None
        err = ctx.answer.parse_error
        if err is None and ctx.answer.parsed is None:
            err = ValueError("no structured output")
        if err is None:
            return GateResult(gate="structured_output", passed=True)
        return GateResult(gate="structured_output", passed=False, reason=f"{type(err).__name__}: {err}"[:300])

    def check(self, ctx: GateContext) -> tuple[GateResult, ...]:
        """Run the gates in order; stop at the first failure. A gate that raises counts as failed, except a
        refused budget (``BudgetExceededError``), which propagates."""
        results: list[GateResult] = []
        first = self._structured_result(ctx)
        if first is not None:
            results.append(first)
            if not first.passed:
                return tuple(results)
        for gate in self.gates:
            try:
                with cascade_tier(
                    ctx.tier
                ):  # a gate's own calls (a judge) are recorded under the judged tier
                    result = gate.check(ctx)
            except _STOPS:
                raise  # see _STOPS: a hard stop, never an escalation
            except Exception as e:
                log.warning("frugal-chains: gate %r raised %s: counted as failed", gate.name, e)
                result = GateResult(
                    gate=gate.name, passed=False, reason=f"gate raised {type(e).__name__}: {e}"
                )
            results.append(result)
            if not result.passed:
                break
        return tuple(results)

    async def acheck(self, ctx: GateContext) -> tuple[GateResult, ...]:
        """Async :meth:`check`."""
        results: list[GateResult] = []
        first = self._structured_result(ctx)
        if first is not None:
            results.append(first)
            if not first.passed:
                return tuple(results)
        for gate in self.gates:
            try:
                with cascade_tier(ctx.tier):
                    result = await gate.acheck(ctx)
            except _STOPS:
                raise  # see _STOPS: a hard stop, never an escalation
            except Exception as e:
                log.warning("frugal-chains: gate %r raised %s: counted as failed", gate.name, e)
                result = GateResult(
                    gate=gate.name, passed=False, reason=f"gate raised {type(e).__name__}: {e}"
                )
            results.append(result)
            if not result.passed:
                break
        return tuple(results)

    # -- attempts --------------------------------------------------------------------------------------------
    def attempt(
        self,
        index: int,
        answer: TierAnswer | None,
        *,
        outcome: str,
        gates: Sequence[GateResult] = (),
        error: BaseException | None = None,
        started: float | None = None,
        extra: Sequence[TierAnswer] = (),
    ) -> Attempt:
        """An :class:`Attempt` with its usage and cost (tier answer + ``extra`` samples + gates' own calls)."""
        spec = self.tiers[index]
        usage: Usage | None = None
        costs: list[float | None] = []
        for a in ([answer] if answer is not None else []) + list(extra):
            if a.usage is not None:
                usage = a.usage if usage is None else usage + a.usage
                costs.append(self.cost(index, a.usage, a.model))
        for g in gates:
            if g.usage is not None:
                usage = g.usage if usage is None else usage + g.usage
                costs.append(self._gate_cost(index, g.usage, g.model))
        cost = _usd_sum(costs)
        return Attempt(
            tier=spec.name,
            tier_index=index,
            model=(answer.model if answer is not None and answer.model else spec.model),
            outcome=outcome,  # type: ignore[arg-type]
            gates=tuple(gates),
            error=error,
            usage=usage,
            cost_usd=cost,
            latency_s=(time.perf_counter() - started) if started is not None else 0.0,
        )

    def verdict(self, index: int, gates: Sequence[GateResult]) -> str:
        """``accepted``, ``escalated`` or (last tier, failed quality gate) ``exhausted``."""
        if all(g.passed for g in gates):
            return "accepted"
        return "exhausted" if index >= len(self.tiers) - 1 else "escalated"

    # -- finishing -------------------------------------------------------------------------------------------
    def result(self, route: Route, attempts: list[Attempt], answer: TierAnswer) -> CascadeResult:
        """The :class:`CascadeResult` of a request whose last attempt gave ``answer``; raises
        :class:`CascadeExhaustedError` when that answer is structured output that did not parse."""
        last = attempts[-1]
        if last.outcome == "exhausted" and any(
            g.gate == "structured_output" and not g.passed for g in last.gates
        ):
            raise CascadeExhaustedError(attempts)
        spec = self.tiers[last.tier_index]
        return CascadeResult(
            answer=answer,
            tier_index=last.tier_index,
            tier=spec.name,
            model=answer.model or spec.model,
            route=route,
            attempts=attempts,
            accepted=last.outcome == "accepted",
        )

    def _record(
        self, route: Route, attempts: Sequence[Attempt], attribution: Attribution | None
    ) -> CallRecord | None:
        self.stats.record(attempts, start_tier=self.tiers[route.start].name)
        if self.ledger is None or not attempts:
            return None
        last = attempts[-1]
        return CallRecord(
            model=last.model,
            usage=Usage(),
            cost_usd=0.0,
            outcome="routed",
            tier=last.tier,
            attribution=(attribution or Attribution()).merged(current_attribution()),
            latency_s=sum(a.latency_s for a in attempts) + route.latency_s,
            extra={
                "cascade": self.name,
                "start_tier": self.tiers[route.start].name,
                "score": route.score,
                "escalations": sum(1 for a in attempts if a.outcome in ("escalated", "error")),
                "cascade_cost_usd": _usd_sum(a.cost_usd for a in attempts),
                "attempts": [
                    {
                        "tier": a.tier,
                        "model": a.model,
                        "outcome": a.outcome,
                        **(
                            {"gate": next(g.gate for g in a.gates if not g.passed)}
                            if any(not g.passed for g in a.gates)
                            else {}
                        ),
                        **({"error": type(a.error).__name__} if a.error is not None else {}),
                    }
                    for a in attempts
                ],
            },
        )

    def finish(
        self, route: Route, attempts: Sequence[Attempt], *, attribution: Attribution | None = None
    ) -> None:
        """Count the request in :attr:`stats` and write the ``routed`` record (a ledger failure only logs)."""
        record = self._record(route, attempts, attribution)
        if record is None or self.ledger is None:
            return
        try:
            self.ledger.add_record(record)
        except Exception as e:
            log.warning("frugal-chains: could not write the routing record to the ledger: %s", e)

    async def afinish(
        self, route: Route, attempts: Sequence[Attempt], *, attribution: Attribution | None = None
    ) -> None:
        """Async :meth:`finish`."""
        record = self._record(route, attempts, attribution)
        if record is None or self.ledger is None:
            return
        try:
            await self.ledger.aadd_record(record)
        except Exception as e:
            log.warning("frugal-chains: could not write the routing record to the ledger: %s", e)

    # -- the whole loop --------------------------------------------------------------------------------------
    def _sampler(
        self, sampler: Callable[[int], Sampler] | None, call: Callable[[int], TierAnswer] | None
    ) -> Callable[[int], Sampler] | None:
        """The sampler of tier ``i`` (extra answers for self-consistency gates): the adapter's, or ``n`` more
        calls of ``call(i)``."""
        if sampler is not None or call is None:
            return sampler

        def of_tier(i: int) -> Sampler:
            return lambda n: [call(i) for _ in range(n)]

        return of_tier

    def _asampler(
        self,
        sampler: Callable[[int], ASampler] | None,
        call: Callable[[int], Awaitable[TierAnswer]] | None,
    ) -> Callable[[int], ASampler] | None:
        """Async :meth:`_sampler`: the ``n`` extra calls run concurrently."""
        if sampler is not None or call is None:
            return sampler

        def of_tier(i: int) -> ASampler:
            async def sample(n: int) -> Sequence[TierAnswer]:
                return list(await asyncio.gather(*(call(i) for _ in range(n))))

            return sample

        return of_tier

    def _gated(
        self,
        i: int,
        messages: Sequence[Message],
        answer: TierAnswer,
        *,
        judge_config: Any,
        sample: Sampler | None = None,
        asample: ASampler | None = None,
        structured: bool = False,
    ) -> GateContext:
        """The gates' context for tier ``i``'s answer (``judge_config`` may be a function of the tier)."""
        return self.context(
            messages,
            i,
            answer,
            sample=sample,
            asample=asample,
            judge_config=_for_tier(judge_config, i),
            structured=structured,
        )

    def run(
        self,
        messages: Sequence[Message],
        call: Callable[[int], TierAnswer],
        *,
        sampler: Callable[[int], Sampler] | None = None,
        judge_config: Any = None,
        structured: bool = False,
        route: Route | None = None,
        attribution: Attribution | None = None,
    ) -> CascadeResult:
        """Route, then call tiers upward until one passes; ``call(i)`` calls tier ``i``. ``judge_config`` is
        handed to the gates (or, when callable, ``judge_config(i)`` for tier ``i``'s answer). ``sampler(i)``
        gives self-consistency gates their extra answers (default: more calls of ``call(i)``)."""
        route = route if route is not None else self.route(messages)
        sampler = self._sampler(sampler, call)
        attempts: list[Attempt] = []
        try:
            for i in range(route.start, len(self.tiers)):
                started = time.perf_counter()
                try:
                    answer = call(i)
                except Exception as e:
                    self._failed(i, e, attempts, started, shown=False)
                    continue
                samples: list[TierAnswer] = []
                ctx = self._gated(
                    i,
                    messages,
                    answer,
                    sample=_collecting(sampler(i), samples) if sampler is not None else None,
                    judge_config=judge_config,
                    structured=structured,
                )
                gates = self.check(ctx) if (self.gates or structured) and not ctx.is_last else self._last(ctx)
                verdict = self._settle(i, answer, gates, samples, started, attempts)
                if verdict != "escalated":
                    return self.result(route, attempts, answer)
            raise CascadeExhaustedError(attempts)
        finally:
            if attempts:
                self.finish(route, attempts, attribution=attribution)

    async def arun(
        self,
        messages: Sequence[Message],
        call: Callable[[int], Awaitable[TierAnswer]],
        *,
        sampler: Callable[[int], ASampler] | None = None,
        judge_config: Any = None,
        structured: bool = False,
        route: Route | None = None,
        attribution: Attribution | None = None,
    ) -> CascadeResult:
        """Async :meth:`run`; ``call(i)`` returns an awaitable (extra samples run concurrently)."""
        route = route if route is not None else await self.aroute(messages)
        asampler = self._asampler(sampler, call)
        attempts: list[Attempt] = []
        try:
            for i in range(route.start, len(self.tiers)):
                started = time.perf_counter()
                try:
                    answer = await call(i)
                except Exception as e:
                    self._failed(i, e, attempts, started, shown=False)
                    continue
                samples: list[TierAnswer] = []
                ctx = self._gated(
                    i,
                    messages,
                    answer,
                    asample=_acollecting(asampler(i), samples) if asampler is not None else None,
                    judge_config=judge_config,
                    structured=structured,
                )
                gates = (
                    await self.acheck(ctx)
                    if (self.gates or structured) and not ctx.is_last
                    else self._last(ctx)
                )
                verdict = self._settle(i, answer, gates, samples, started, attempts)
                if verdict != "escalated":
                    return self.result(route, attempts, answer)
            raise CascadeExhaustedError(attempts)
        finally:
            if attempts:
                await self.afinish(route, attempts, attribution=attribution)

    def _settle(
        self,
        index: int,
        answer: TierAnswer,
        gates: tuple[GateResult, ...],
        samples: Sequence[TierAnswer],
        started: float,
        attempts: list[Attempt],
    ) -> str:
        """Record tier ``index``'s attempt with its verdict (``accepted``, ``escalated`` or ``exhausted``)."""
        verdict = self.verdict(index, gates)
        attempts.append(
            self.attempt(index, answer, outcome=verdict, gates=gates, started=started, extra=samples)
        )
        return verdict

    def _failed(
        self, index: int, error: Exception, attempts: list[Attempt], started: float, *, shown: bool
    ) -> None:
        """A tier call raised: an error that escalates is recorded as the tier's attempt (``outcome="error"``);
        it is raised again when it does not escalate (a bug, a refused budget: no attempt is recorded) or when
        part of the tier's answer was already shown (``shown``: a live stream cannot take it back)."""
        if not self.escalates(error):
            raise error
        attempts.append(self.attempt(index, None, outcome="error", error=error, started=started))
        if shown:
            raise error

    def _live(self, index: int) -> bool:
        """Whether tier ``index`` streams to the caller as it answers: the strongest tier always (its answer is
        not gated), any tier when no gate needs the whole answer; otherwise it is buffered until it passes."""
        return index == len(self.tiers) - 1 or not self.needs_full_answer

    def stream(
        self,
        messages: Sequence[Message],
        open_stream: Callable[[int], Iterator[C]],
        join: Callable[[int, list[C]], TierAnswer],
        *,
        call: Callable[[int], TierAnswer] | None = None,
        judge_config: Any = None,
        route: Route | None = None,
        attribution: Attribution | None = None,
    ) -> Generator[TierChunk[C] | CascadeResult, None, None]:
        """The streaming loop: route, then stream tiers upward until one passes.

        ``open_stream(i)`` starts tier ``i``'s stream (chunks of any type ``C``), ``join(i, chunks)`` makes its
        whole answer (keep the joined native object in ``TierAnswer.native``), and ``call(i)`` calls the tier
        whole (extra samples for self-consistency gates). Yields a :class:`TierChunk` for every chunk the caller
        may show now (live tiers as they stream, a buffered tier's chunks once it passed), then the
        :class:`CascadeResult` last. Buffering and error rules: see the module documentation.

        Example:
            >>> from frugal_chains.routing import Cascade, RegexGate, TierSpec, TierAnswer
            >>> cascade = Cascade([TierSpec(name="cheap", model="gpt-4o-mini"),
            ...                    TierSpec(name="strong", model="gpt-4o")], gates=[RegexGate(r"\\d")])
            >>> replies = [["I am ", "not sure."], ["4", "2"]]
            >>> events = list(cascade.stream([{"role": "user", "content": "6 x 7?"}], lambda i: iter(replies[i]),
            ...                              lambda i, chunks: TierAnswer(text="".join(chunks))))
            >>> [e.chunk for e in events[:-1]], events[-1].answer.text, events[-1].escalations
            (['4', '2'], '42', 1)
        """
        route = route if route is not None else self.route(messages)
        sampler = self._sampler(None, call)
        attempts: list[Attempt] = []
        try:
            for i in range(route.start, len(self.tiers)):
                live = self._live(i)
                started = time.perf_counter()
                chunks: list[C] = []
                inner: Iterator[C] | None = None
                try:
                    inner = open_stream(i)
                    for piece in inner:
                        chunks.append(piece)
                        if live:
                            yield TierChunk(tier_index=i, chunk=piece)
                except Exception as e:
                    self._failed(i, e, attempts, started, shown=live and bool(chunks))
                    continue
                finally:
                    close_stream(inner)
                answer = join(i, chunks)
                samples: list[TierAnswer] = []
                gates: tuple[GateResult, ...] = ()
                if not live:
                    ctx = self._gated(
                        i,
                        messages,
                        answer,
                        sample=_collecting(sampler(i), samples) if sampler is not None else None,
                        judge_config=judge_config,
                    )
                    gates = self.check(ctx)
                verdict = self._settle(i, answer, gates, samples, started, attempts)
                if verdict == "escalated":
                    continue
                if not live:
                    for piece in chunks:
                        yield TierChunk(tier_index=i, chunk=piece)
                yield self.result(route, attempts, answer)
                return
            raise CascadeExhaustedError(attempts)
        finally:
            if attempts:
                self.finish(route, attempts, attribution=attribution)

    async def astream(
        self,
        messages: Sequence[Message],
        open_stream: Callable[[int], Awaitable[AsyncIterator[C]]],
        join: Callable[[int, list[C]], TierAnswer],
        *,
        call: Callable[[int], Awaitable[TierAnswer]] | None = None,
        judge_config: Any = None,
        route: Route | None = None,
        attribution: Attribution | None = None,
    ) -> AsyncGenerator[TierChunk[C] | CascadeResult, None]:
        """Async :meth:`stream`; ``open_stream(i)`` is awaited and returns an async iterator."""
        route = route if route is not None else await self.aroute(messages)
        asampler = self._asampler(None, call)
        attempts: list[Attempt] = []
        try:
            for i in range(route.start, len(self.tiers)):
                live = self._live(i)
                started = time.perf_counter()
                chunks: list[C] = []
                inner: AsyncIterator[C] | None = None
                try:
                    inner = await open_stream(i)
                    async for piece in inner:
                        chunks.append(piece)
                        if live:
                            yield TierChunk(tier_index=i, chunk=piece)
                except Exception as e:
                    self._failed(i, e, attempts, started, shown=live and bool(chunks))
                    continue
                finally:
                    await aclose_stream(inner)
                answer = join(i, chunks)
                samples: list[TierAnswer] = []
                gates: tuple[GateResult, ...] = ()
                if not live:
                    ctx = self._gated(
                        i,
                        messages,
                        answer,
                        asample=_acollecting(asampler(i), samples) if asampler is not None else None,
                        judge_config=judge_config,
                    )
                    gates = await self.acheck(ctx)
                verdict = self._settle(i, answer, gates, samples, started, attempts)
                if verdict == "escalated":
                    continue
                if not live:
                    for piece in chunks:
                        yield TierChunk(tier_index=i, chunk=piece)
                yield self.result(route, attempts, answer)
                return
            raise CascadeExhaustedError(attempts)
        finally:
            if attempts:
                await self.afinish(route, attempts, attribution=attribution)

    def _last(self, ctx: GateContext) -> tuple[GateResult, ...]:
        """The strongest tier's answer is not gated (nothing to escalate to), except that structured output
        must still parse."""
        first = self._structured_result(ctx)
        return (first,) if first is not None else ()


def _usd_sum(parts: Iterable[float | None]) -> float | None:
    """The sum of USD amounts; ``None`` when any is unknown (a partial sum would understate the cost)."""
    total = 0.0
    for part in parts:
        if part is None:
            return None
        total += part
    return total


def _for_tier(judge_config: Any, index: int) -> Any:
    """``judge_config`` may be one value or a function of the tier index (a judge's call recorded under the tier
    whose answer it judges)."""
    return judge_config(index) if callable(judge_config) else judge_config


def _collecting(sample: Sampler, into: list[TierAnswer]) -> Sampler:
    def wrapped(n: int) -> Sequence[TierAnswer]:
        got = list(sample(n))
        into.extend(got)
        return got

    return wrapped


def _acollecting(sample: ASampler, into: list[TierAnswer]) -> ASampler:
    async def wrapped(n: int) -> Sequence[TierAnswer]:
        got = list(await sample(n))
        into.extend(got)
        return got

    return wrapped
