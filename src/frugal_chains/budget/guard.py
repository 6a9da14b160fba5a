"""The framework-free reserve -> commit -> release guard that both adapters drive.

Lifecycle of one provider call::

    plan = guard.plan(messages, model=..., max_output_tokens=..., attribution=...)   # worst case, no I/O
    res = guard.reserve(plan)          # atomically reserve the worst case in every budget, or raise
    ...provider call...
    guard.commit(res, usage)           # replace the reservation with the actual cost, write a CallRecord
    guard.release(res)                 # (on error) give the reservation back
    guard.cache_hit(res, usage)        # (served from a cache) give it back and record a $0 hit

If the ledger is unreachable: ``reserve`` raises :class:`~frugal_chains.errors.LedgerUnavailableError`
(``on_ledger_error="closed"``, the default) or lets the call through unreserved (``"open"``). A commit or a
release that cannot reach the ledger is queued in memory and retried before the next operation and on
:meth:`BudgetGuard.flush`; commits are idempotent by reservation id, so a retry never counts twice.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal, TypedDict

from typing_extensions import Unpack

from frugal_chains.accounting.ledger import Claim, CommitResult, Counter, ReserveResult, SpendLedger
from frugal_chains.accounting.pricing import PriceBook
from frugal_chains.accounting.tokens import (
    UNKNOWN_MODEL_IMAGE_TOKENS,
    TokenEstimator,
    count_text_tokens,
    uses_prompt_caching,
)
from frugal_chains.accounting.usage import (
    Attribution,
    CallRecord,
    Outcome,
    Price,
    Usage,
    nano_to_usd,
    usd_to_nano,
)
from frugal_chains.budget.alerts import DAILY_COUNTER, Alert, AlertHook, AnomalyDetector, call_hook
from frugal_chains.budget.budget import Budget
from frugal_chains.budget.output_caps import SOFT_SOURCES, CapSource, ObservedOutput, OutputCaps
from frugal_chains.errors import BudgetExceededError, ConfigurationError, LedgerUnavailableError
from frugal_chains.shared.sharing import SharedService

__all__ = ["BudgetGuard", "CallPlan", "Reservation"]

log = logging.getLogger("frugal_chains.budget")


@dataclass(frozen=True, kw_only=True)
class CallPlan:
    """The worst case of one call, computed before it is made.

    Example:
        >>> from frugal_chains import Price
        >>> from frugal_chains.budget import BudgetGuard
        >>> guard = BudgetGuard(prices={"m": Price(input=2.0, output=8.0)})
        >>> plan = guard.plan([], model="m", max_output_tokens=1000, input_tokens=500)
        >>> plan.worst_tokens, round(plan.worst_usd, 6)
        (1500, 0.009)
    """

    model: str
    provider: str | None
    price: Price | None
    """``None``: the model has no price and no USD budget needs one; the call is reserved in tokens only."""
    price_known: bool
    input_tokens: int
    """Estimated prompt tokens, margin included."""
    max_output_tokens: int
    worst_usd: float | None
    """The worst case in USD (``None`` without a price: unknown)."""
    prompt_caching: bool
    attribution: Attribution
    cap_source: CapSource = "max_tokens"
    """Where ``max_output_tokens`` came from: the call's own cap, the observed percentile or the assumed cap
    (``observed_output`` / ``assume_max_output``), the model's whole output limit, or none."""
    choices: int = 1
    """Answers the call asks for (``max_output_tokens`` covers all of them)."""
    tier: str | None = None
    """The cascade tier the call belongs to, written to the record of a refusal."""

    @property
    def worst_tokens(self) -> int:
        return self.input_tokens + self.max_output_tokens


@dataclass(kw_only=True)
class Reservation:
    """A reservation made by :meth:`BudgetGuard.reserve` (hand it back to commit, release or cache_hit).

    Example:
        >>> from frugal_chains import Budget, Price
        >>> from frugal_chains.budget import BudgetGuard
        >>> guard = BudgetGuard([Budget(max_usd=1.0, scope="global")], prices={"m": Price(input=2.0, output=8.0)})
        >>> res = guard.reserve(guard.plan([], model="m", max_output_tokens=1000, input_tokens=500))
        >>> res.nano, res.in_ledger  # the worst case, in nano-USD
        (9000000, True)
        >>> guard.release(res)
    """

    id: str
    plan: CallPlan
    claims: tuple[Claim, ...]
    budgets: tuple[Budget | None, ...]
    """Aligned with ``claims``; ``None`` for the guard's own daily counter."""
    nano: int
    tokens: int
    ts: float
    started: float = field(default_factory=time.perf_counter)
    in_ledger: bool = True
    """False when the ledger could not be reached at reserve time (``on_ledger_error="open"`` let the call
    through). The reservation may still have landed (a lost reply); commits and releases are idempotent, so they
    are sent all the same."""


@dataclass(frozen=True)
class _PendingOp:
    kind: Literal["commit", "release"]
    res: Reservation
    nano: int = 0
    tokens: int = 0
    record: CallRecord | None = None


class GuardOptions(TypedDict, total=False):
    """The options a budget handler builds its :class:`BudgetGuard` from (each documented on
    :class:`BudgetGuard`). Both adapters' handlers take them as keyword arguments.

    Example:
        >>> from frugal_chains.budget.guard import BudgetGuard, GuardOptions
        >>> options: GuardOptions = {"unknown_model": "warn"}
        >>> BudgetGuard.for_handler(None, [], **options).ledger is not None
        True
    """

    ledger: SpendLedger | None
    prices: PriceBook | Mapping[str, Price] | None
    unknown_model: Literal["raise", "warn"]
    margins: Mapping[str, float] | None
    unknown_model_image_tokens: int
    on_ledger_error: Literal["closed", "open"]
    reservation_ttl: timedelta
    on_alert: AlertHook | None
    anomaly: AnomalyDetector | Literal[False] | None
    assume_max_output: Mapping[str, int] | None
    observed_output: ObservedOutput | bool | None


class BudgetGuard(SharedService):
    """Prices, reserves and records LLM calls against budgets. Framework-free; thread- and task-safe.

    Args:
        budgets: the limits to enforce (may be empty: then the guard only prices and records).
        ledger: where spend lives; default a new in-memory :class:`~frugal_chains.SQLiteLedger`.
        prices: a :class:`~frugal_chains.accounting.PriceBook`, or a mapping of overrides
            ``{"my-llama": Price(...)}`` over LiteLLM's price map.
        unknown_model: ``"raise"`` (default) or ``"warn"``, for models with no price when a USD budget is set
            (see ``PriceBook``). Without a USD budget no price is needed: such a model is reserved and committed
            in tokens, and its records say ``cost_usd=None`` (unknown), unless the price book has a
            ``fallback_price``.
        margins: token-estimate safety margins by provider (see ``TokenEstimator``).
        unknown_model_image_tokens: tokens reserved per image on a model with no known image rule (images on
            OpenAI, Anthropic and Gemini models are reserved by their provider's rule; see ``TokenEstimator``).
        on_ledger_error: ``"closed"`` (default): refuse calls while the ledger is unreachable. ``"open"``:
            let them through; their spend is written when the ledger is back.
        reservation_ttl: a reservation not committed or released by then is given back by the ledger
            (a crashed process cannot hold budget forever). Default one hour.
        on_alert: hook called with an :class:`~frugal_chains.budget.Alert` (default: a logged warning).
        anomaly: an :class:`~frugal_chains.budget.AnomalyDetector`; ``None`` (default) for a new one with its
            defaults (2x the trailing 7-day average); ``False`` to turn the check off.
        clock: the time source (UTC unix seconds); a seam for tests.
        outage_backoff: after the ledger fails, calls in the next ``outage_backoff`` do not wait for it again:
            reservations fail (closed) or pass (open) at once and commits are queued, so an outage costs one
            timeout per period, not one per call. :meth:`flush` called by you always tries.
        assume_max_output: for calls that set no output cap (no ``max_tokens``), the output to reserve instead
            of the model's whole output limit: ``{"gpt-4o": 1024, "feature:summarize": 400, "*": 2048}`` (a
            feature's cap wins over a model's, which wins over ``"*"``). See
            :mod:`frugal_chains.budget.output_caps`.
        observed_output: for the same calls, reserve a high percentile of recent calls' output (per model and
            feature) once enough were seen: an :class:`~frugal_chains.budget.ObservedOutput`, or ``True`` for
            its defaults (p99 after 50 calls). It wins over ``assume_max_output`` once it applies.

    Example:
        >>> from frugal_chains import Budget, Price, Usage
        >>> from frugal_chains.budget import BudgetGuard
        >>> guard = BudgetGuard([Budget(max_usd=0.01, scope="global")], prices={"m": Price(input=1, output=2)})
        >>> plan = guard.plan([{"role": "user", "content": "hi"}], model="m", max_output_tokens=1000)
        >>> res = guard.reserve(plan)
        >>> record = guard.commit(res, Usage(input_tokens=12, output_tokens=100))
        >>> round(record.cost_usd, 6)
        0.000212
    """

    def __init__(
        self,
        budgets: Sequence[Budget] = (),
        *,
        ledger: SpendLedger | None = None,
        prices: PriceBook | Mapping[str, Price] | None = None,
        unknown_model: Literal["raise", "warn"] = "raise",
        margins: Mapping[str, float] | None = None,
        unknown_model_image_tokens: int = UNKNOWN_MODEL_IMAGE_TOKENS,
        on_ledger_error: Literal["closed", "open"] = "closed",
        reservation_ttl: timedelta = timedelta(hours=1),
        on_alert: AlertHook | None = None,
        anomaly: AnomalyDetector | Literal[False] | None = None,
        clock: Callable[[], float] = time.time,
        outage_backoff: timedelta = timedelta(seconds=1),
        assume_max_output: Mapping[str, int] | None = None,
        observed_output: ObservedOutput | bool | None = None,
    ) -> None:
        budgets = tuple(budgets)
        for i, b in enumerate(budgets):
            if not isinstance(b, Budget):
                raise ConfigurationError(
                    f"budgets[{i}] must be a frugal_chains.Budget, got {type(b).__name__}.", field="budgets"
                )
        if on_ledger_error not in ("closed", "open"):
            raise ConfigurationError(
                f"on_ledger_error must be 'closed' or 'open', got {on_ledger_error!r}.",
                field="on_ledger_error",
            )
        if not isinstance(reservation_ttl, timedelta) or reservation_ttl.total_seconds() <= 0:
            raise ConfigurationError("reservation_ttl must be a positive timedelta.", field="reservation_ttl")
        if ledger is None:
            from frugal_chains.accounting.sqlite import SQLiteLedger

            ledger = SQLiteLedger(":memory:")
        elif not isinstance(ledger, SpendLedger):
            raise ConfigurationError(
                f"ledger must implement SpendLedger (SQLiteLedger, RedisLedger), got {type(ledger).__name__}.",
                field="ledger",
            )
        if isinstance(prices, PriceBook):
            self.prices = prices
        else:
            self.prices = PriceBook(prices, unknown_model=unknown_model)
        self.budgets = budgets
        self._needs_price = any(b.max_usd is not None for b in budgets)
        self.ledger = ledger
        self.estimator = TokenEstimator(margins, unknown_model_image_tokens=unknown_model_image_tokens)
        self.on_ledger_error = on_ledger_error
        self.reservation_ttl = reservation_ttl
        self.on_alert = on_alert
        self.anomaly: AnomalyDetector | None = (
            None if anomaly is False else anomaly if anomaly is not None else AnomalyDetector()
        )
        self.clock = clock
        self._pending: collections.deque[_PendingOp] = collections.deque()
        self._pending_lock = threading.Lock()
        if not isinstance(outage_backoff, timedelta) or outage_backoff.total_seconds() < 0:
            raise ConfigurationError(
                "outage_backoff must be a non-negative timedelta.", field="outage_backoff"
            )
        self.outage_backoff = outage_backoff
        self.output_caps = OutputCaps(assume_max_output, observed_output)
        """What calls with no output cap of their own reserve for their output."""
        self._down_until = 0.0  # time.monotonic() before which the ledger is taken as down

    @classmethod
    def for_handler(
        cls, guard: BudgetGuard | None, budgets: Sequence[Budget] | Budget, **options: Unpack[GuardOptions]
    ) -> BudgetGuard:
        """The guard a framework handler drives: ``guard`` as given, else a new one built from the options
        (the one place where both adapters' handlers turn their options into a guard).

        Raises:
            TypeError: an unknown option (as for any unexpected keyword argument).
            ConfigurationError: (``field="guard"``) a guard given together with budgets, a ledger or prices.
        """
        unknown = sorted(set(options) - set(GuardOptions.__annotations__))
        if unknown:
            raise TypeError(
                f"unexpected budget handler option {unknown[0]!r}; the options are "
                f"{', '.join(sorted(GuardOptions.__annotations__))}"
            )
        if isinstance(budgets, Budget):
            budgets = [budgets]  # one budget is a list of one
        if guard is None:
            return cls(budgets, **options)
        if budgets or options.get("ledger") is not None or options.get("prices") is not None:
            raise ConfigurationError("Pass either guard= or budgets/ledger/prices, not both.", field="guard")
        ignored = sorted(k for k in options if k not in ("ledger", "prices"))
        if ignored:
            warnings.warn(
                f"{', '.join(ignored)} ignored: a handler given guard= uses that guard's own options",
                UserWarning,
                stacklevel=3,
            )
        return guard

    # -- planning (no I/O) ---------------------------------------------------------------------------------
    def plan(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        model: str,
        provider: str | None = None,
        max_output_tokens: int | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        attribution: Attribution | None = None,
        input_tokens: int | None = None,
        prompt_caching: bool | None = None,
        choices: int = 1,
        tier: str | None = None,
    ) -> CallPlan:
        """The worst case of a call: estimated prompt tokens (with the provider's margin) and the output cap
        (the call's ``max_output_tokens``, else the guard's ``observed_output`` estimate or ``assume_max_output``
        cap when one applies, else the model's maximum output; times ``choices`` when the call asks for several
        answers), at the highest rates that apply. ``prompt_caching`` (default: found from
        ``cache_control`` markers in ``messages``) prices the prompt at the cache-write rate when higher.

        A model with no price is refused (``UnknownModelPriceError``, or priced as ``unknown_model="warn"``
        says) only when a USD budget is set; under token budgets alone it is planned in tokens, its USD
        unknown (``price=None``)."""
        price, known = self.prices.lookup(model, provider, required=self._needs_price)
        cap = max_output_tokens
        source: CapSource = "max_tokens"
        if cap is None:
            feature = attribution.feature if attribution is not None else None
            limit = price.max_output_tokens if price is not None else None
            cap, source = self.output_caps.cap_for(model, feature, limit)
        if cap is None:
            if self.budgets:
                raise ConfigurationError(
                    f"No output cap is known for model {model!r}: set max_tokens on the model, pass "
                    f"prices={{{model!r}: Price(..., max_output_tokens=...)}}, or give the budget handler "
                    f"assume_max_output={{{model!r}: ...}}.",
                    field="max_tokens",
                )
            cap = 0
        cap *= max(1, choices)
        if input_tokens is None:
            input_tokens = self.estimator.estimate(messages, model=model, provider=provider, tools=tools)
        caching = uses_prompt_caching(messages) if prompt_caching is None else prompt_caching
        return CallPlan(
            model=model,
            provider=provider,
            price=price,
            price_known=known,
            input_tokens=input_tokens,
            max_output_tokens=int(cap),
            worst_usd=(
                price.worst_case_cost(input_tokens, int(cap), prompt_caching=caching)
                if price is not None
                else None
            ),
            prompt_caching=caching,
            attribution=attribution or Attribution(),
            cap_source=source,
            choices=max(1, choices),
            tier=tier,
        )

    def _claims(self, plan: CallPlan, t: float) -> tuple[tuple[Claim, ...], tuple[Budget | None, ...]]:
        claims = [b.claim(plan.attribution, t) for b in self.budgets]
        day = int(t // 86400)
        claims.append(
            Claim(counter=DAILY_COUNTER, bucket=day, min_bucket=day, enforce=False, ttl_s=40 * 86400)
        )
        return tuple(claims), (*self.budgets, None)

    # -- reserve -------------------------------------------------------------------------------------------
    def _new_reservation(self, plan: CallPlan) -> Reservation:
        t = self.clock()
        claims, budgets = self._claims(plan, t)
        return Reservation(
            id=uuid.uuid4().hex,
            plan=plan,
            claims=claims,
            budgets=budgets,
            nano=usd_to_nano(plan.worst_usd, round_up=True) if plan.worst_usd is not None else 0,
            tokens=plan.worst_tokens,
            ts=t,
        )

    def _after_reserve(self, res: Reservation, result: ReserveResult) -> Reservation:
        if not result.ok:
            assert result.denied is not None
            budget = res.budgets[result.denied]
            assert budget is not None
            raise self._exceeded(budget, res, result.before[result.denied], result.denied_unit or "usd")
        for i in result.exceeded:
            budget = res.budgets[i]
            if budget is None:
                continue
            claim, before = res.claims[i], result.before[i]
            over_usd = claim.limit_nano is not None and before.total_nano + res.nano > claim.limit_nano
            err = self._exceeded(budget, res, before, "usd" if over_usd else "tokens")
            call_hook(
                self.on_alert,
                Alert(
                    kind="exceeded",
                    message=f"(warn only, the call goes ahead) {err}",
                    budget=budget,
                    scope_key=err.scope_key,
                    spent=err.spent,
                    limit=err.limit,
                    unit="usd" if err.unit == "usd" else "tokens",
                ),
            )
        return res

    def _exceeded(self, budget: Budget, res: Reservation, before: Counter, unit: str) -> BudgetExceededError:
        if unit == "usd" and budget.max_usd is not None:
            spent, requested, limit = nano_to_usd(before.total_nano), nano_to_usd(res.nano), budget.max_usd
        else:
            unit = "tokens"
            spent, requested, limit = (
                float(before.total_tokens),
                float(res.tokens),
                float(budget.max_tokens or 0),
            )
        return BudgetExceededError(
            budget,
            scope_key=budget.key_for(res.plan.attribution),
            spent=spent,
            requested=requested,
            limit=limit,
            unit=unit,
            model=res.plan.model,
            advice=self._cap_advice(res.plan, spent, limit, unit),
        )

    def _cap_advice(self, plan: CallPlan, spent: float, limit: float, unit: str) -> str | None:
        """A refusal's advice when the call reserved the model's whole output limit for want of a cap, and a
        smaller output cap could let it fit (its prompt alone fits what the budget has left)."""
        if plan.cap_source != "model_limit":
            return None
        prompt = float(plan.input_tokens)
        if unit == "usd":
            price = plan.price
            prompt = (
                price.worst_case_cost(plan.input_tokens, 0, prompt_caching=plan.prompt_caching)
                if price
                else 0.0
            )
        if spent + prompt >= limit:
            return None  # no cap would help: the budget is spent (or the prompt alone is over it)
        per_answer = plan.max_output_tokens // plan.choices
        return self.output_caps.advice(plan.model, plan.attribution.feature, per_answer)

    # -- outage state ---------------------------------------------------------------------------------------
    def _is_down(self) -> bool:
        return time.monotonic() < self._down_until

    def _mark_down(self) -> None:
        self._down_until = time.monotonic() + self.outage_backoff.total_seconds()

    def _mark_up(self) -> None:
        self._down_until = 0.0

    def _still_down(self) -> LedgerUnavailableError:
        return LedgerUnavailableError(
            f"the spend ledger failed less than {self.outage_backoff.total_seconds():g}s ago (outage_backoff)"
        )

    def _ledger_down(
        self, res: Reservation, err: LedgerUnavailableError, *, maybe_landed: bool
    ) -> Reservation:
        if self.on_ledger_error == "closed":
            if maybe_landed:
                # The reserve may have landed with its reply lost: give it back (idempotent; a no-op if it never
                # landed), or the budget would stay held until the reservation expires.
                self._queue(_PendingOp("release", res), err)
            raise LedgerUnavailableError(
                f"The spend ledger is unreachable, so the call on {res.plan.model!r} was refused before any money "
                f"was spent (on_ledger_error='closed'): {err}"
            ) from err
        log.warning(
            "frugal-chains: the spend ledger is unreachable; letting the call through unreserved "
            "(on_ledger_error='open'): %s",
            err,
        )
        res.in_ledger = False
        return res

    def reserve(self, plan: CallPlan) -> Reservation:
        """Reserve the plan's worst case in every budget, atomically; raise before any money is spent (and write
        the refusal's ``refused`` record)."""
        return self._reserve(plan, self._record_refusal)

    def _reserve(
        self, plan: CallPlan, refused: Callable[[Reservation, BudgetExceededError], None]
    ) -> Reservation:
        self._flush_if_up()
        res = self._new_reservation(plan)
        if self._is_down():
            return self._ledger_down(res, self._still_down(), maybe_landed=False)
        try:
            result = self.ledger.reserve(
                res.id, res.claims, nano=res.nano, tokens=res.tokens, expires_at=res.ts + self._ttl()
            )
        except LedgerUnavailableError as e:
            self._mark_down()
            return self._ledger_down(res, e, maybe_landed=True)
        try:
            return self._after_reserve(res, result)
        except BudgetExceededError as refusal:
            refused(res, refusal)
            raise

    async def areserve(self, plan: CallPlan) -> Reservation:
        """Async :meth:`reserve`."""
        await self._aflush_if_up()
        res = self._new_reservation(plan)
        if self._is_down():
            return self._ledger_down(res, self._still_down(), maybe_landed=False)
        try:
            result = await self.ledger.areserve(
                res.id, res.claims, nano=res.nano, tokens=res.tokens, expires_at=res.ts + self._ttl()
            )
        except LedgerUnavailableError as e:
            self._mark_down()
            return self._ledger_down(res, e, maybe_landed=True)
        try:
            return self._after_reserve(res, result)
        except BudgetExceededError as refusal:
            await self._arecord_refusal(res, refusal)
            raise

    # -- refusals: a record with outcome "refused", never spend --------------------------------------------
    @staticmethod
    def _refusal_record(res: Reservation, err: BudgetExceededError) -> CallRecord:
        """The ledger record of a refused call: cost $0 and no tokens (a refusal is never spend); what it asked
        for and which budget refused it are in ``extra["refused"]``."""
        plan, budget = res.plan, err.budget
        return CallRecord(
            id=res.id,
            ts=res.ts,
            model=plan.model,
            provider=plan.provider,
            usage=Usage(),
            cost_usd=0.0,
            attribution=plan.attribution,
            tier=plan.tier,
            outcome="refused",
            reserved_usd=0.0,
            overshoot_usd=0.0,
            price_known=plan.price_known,
            saved_usd=0.0,
            extra={
                "refused": {
                    "budget": budget.describe(),
                    "name": budget.name,
                    "scope": budget.scope,
                    "window": budget.window_id,
                    "scope_key": err.scope_key,
                    "unit": err.unit,
                    "requested_tokens": res.tokens,
                    "requested_usd": plan.worst_usd,
                    "spent": err.spent,
                    "limit": err.limit,
                }
            },
        )

    def _record_refusal(self, res: Reservation, err: BudgetExceededError) -> None:
        """Write the refusal's record; a ledger failure only logs (the refusal is raised all the same)."""
        try:
            self.ledger.add_record(self._refusal_record(res, err))
        except Exception as e:
            log.warning("frugal-chains: could not record a refused call in the ledger: %s", e)

    async def _arecord_refusal(self, res: Reservation, err: BudgetExceededError) -> None:
        """Async :meth:`_record_refusal`."""
        try:
            await self.ledger.aadd_record(self._refusal_record(res, err))
        except Exception as e:
            log.warning("frugal-chains: could not record a refused call in the ledger: %s", e)

    def reserve_unless_cached(
        self, plan: CallPlan, cached: Callable[[BudgetExceededError], bool]
    ) -> Reservation | None:
        """:meth:`reserve`, except that a call a budget refuses goes ahead unreserved when its answer is already
        held by a cache (a served answer costs nothing): ``cached(refusal)`` is asked only then, and must return
        True only if the call's lookup will serve that answer or raise ``refusal``. Returns None for such a call.
        The common path (a reservation that fits) costs exactly :meth:`reserve`.

        Example:
            >>> from frugal_chains import Budget, Price
            >>> from frugal_chains.budget import BudgetGuard
            >>> guard = BudgetGuard([Budget(max_usd=1e-9, scope="global")], prices={"m": Price(input=1, output=1)})
            >>> plan = guard.plan([], model="m", max_output_tokens=100, input_tokens=10)
            >>> guard.reserve_unless_cached(plan, lambda refusal: True) is None  # served from a cache
            True
        """
        held: list[Reservation] = []  # recorded as a refusal only if it stands
        try:
            return self._reserve(plan, lambda res, _: held.append(res))
        except BudgetExceededError as refusal:
            if cached(refusal):
                return None  # served from the cache at $0: no refusal to record
            if held:
                self._record_refusal(held[0], refusal)
            raise

    def _ttl(self) -> float:
        return self.reservation_ttl.total_seconds()

    def estimated_usage(self, res: Reservation, answer_text: str) -> Usage:
        """Usage of a call whose provider reported none: the prompt estimate (margin included) and the answer's
        tokens counted, plus the provider's margin (never more than the output cap, unless the text is longer)."""
        counted = count_text_tokens(answer_text, res.plan.model) if answer_text else 0
        margin = self.estimator.margin_for(res.plan.provider)
        out = min(math.ceil(counted * (1 + margin)), max(res.plan.max_output_tokens, counted))
        return Usage(input_tokens=res.plan.input_tokens, output_tokens=out)

    def worst_usage(self, res: Reservation) -> Usage:
        """The usage that costs what was reserved: every prompt token in the dearest input category that
        applies (a cache write when the prompt asks for caching) and the whole output cap."""
        plan = res.plan
        n, out = plan.input_tokens, plan.max_output_tokens
        if plan.price is None:
            return Usage(input_tokens=n, output_tokens=out)
        p = plan.price.for_input(n)
        reasoning = out if p.reasoning_rate > p.output else 0  # the dearer of the two output rates
        if plan.prompt_caching:
            dearest = max(
                (p.input, "input"), (p.cache_write_rate, "write"), (p.cache_write_1h_rate, "write_1h")
            )[1]
            if dearest == "write":
                return Usage(
                    input_tokens=n, cache_write_tokens=n, output_tokens=out, reasoning_tokens=reasoning
                )
            if dearest == "write_1h":
                return Usage(
                    input_tokens=n, cache_write_1h_tokens=n, output_tokens=out, reasoning_tokens=reasoning
                )
        return Usage(input_tokens=n, output_tokens=out, reasoning_tokens=reasoning)

    # -- commit --------------------------------------------------------------------------------------------
    def _record(
        self,
        res: Reservation,
        usage: Usage,
        *,
        model: str | None,
        outcome: Outcome,
        usage_estimated: bool,
        extra: Mapping[str, Any] | None,
        tier: str | None = None,
    ) -> CallRecord:
        plan = res.plan
        price, known = plan.price, plan.price_known
        if model and model != plan.model:
            # the response names the model that answered (often a dated snapshot); re-price with it, unless
            # the planned model has your own price and the answering one has none of yours
            if self.prices.override_for(model) is not None or self.prices.override_for(plan.model) is None:
                found = self.prices.find(model, plan.provider)
                if found is not None:
                    price, known = found, True
        else:
            model = plan.model
        cost = price.cost(usage) if price is not None else None
        reserved = nano_to_usd(res.nano) if plan.price is not None else None
        record = CallRecord(
            id=res.id,
            ts=res.ts,
            model=model,
            provider=plan.provider,
            usage=usage,
            cost_usd=cost,
            latency_s=time.perf_counter() - res.started,
            attribution=plan.attribution,
            outcome=outcome,
            tier=tier,
            reserved_usd=reserved,
            # in nano-dollars, as the ledger counts: a commit at exactly the reservation is no overshoot
            overshoot_usd=nano_to_usd(max(0, usd_to_nano(cost) - res.nano))
            if cost is not None and reserved is not None
            else None,
            # past the whole reservation, or past the output reserved (what an assumed or observed cap guessed)
            overshoot_tokens=max(
                0, usage.total_tokens - res.tokens, self._past_output(plan, usage, usage_estimated)
            ),
            usage_estimated=usage_estimated,
            price_known=known,
            extra=dict(extra or {}),
        )
        if outcome == "ok":
            self.output_caps.observe(
                model=plan.model,
                feature=plan.attribution.feature,
                source=plan.cap_source,
                output_tokens=usage.output_tokens,
                choices=plan.choices,
                usage_estimated=usage_estimated,
                extra=record.extra,
            )
        if record.overshoot_tokens or record.overshoot_usd:
            self._overshot(record, res)
        return record

    @staticmethod
    def _past_output(plan: CallPlan, usage: Usage, usage_estimated: bool) -> int:
        """Output tokens past the output reserved. An estimate (no usage reported) past a cap the provider
        enforces (the call's ``max_tokens``, the model's limit) is the estimate's error, not more output."""
        if usage_estimated and plan.cap_source not in SOFT_SOURCES:
            return 0
        return usage.output_tokens - plan.max_output_tokens

    def _overshot(self, record: CallRecord, res: Reservation) -> None:
        """Alert (``kind="overshoot"``; the default hook logs a warning) that the call used more than its
        reservation (in tokens, in USD, or both)."""
        plan = res.plan
        parts = []
        past_output = self._past_output(plan, record.usage, record.usage_estimated)
        if (
            record.overshoot_tokens
            and past_output == record.overshoot_tokens
            and past_output > (record.usage.total_tokens - res.tokens)
        ):
            parts.append(
                f"{record.usage.output_tokens} output tokens, {record.overshoot_tokens} more than the "
                f"{plan.max_output_tokens} reserved for its output"
            )
        elif record.overshoot_tokens:
            parts.append(
                f"{record.usage.total_tokens} tokens, {record.overshoot_tokens} more than the {res.tokens} reserved"
            )
        if record.overshoot_usd:
            parts.append(
                f"${record.cost_usd:.6f}, ${record.overshoot_usd:.6f} more than the ${record.reserved_usd:.6f} "
                "reserved"
            )
        elif record.cost_usd is None:
            parts.append("USD unknown (the model has no price)")
        if plan.cap_source in SOFT_SOURCES:
            option = "observed_output" if plan.cap_source == "observed" else "assume_max_output"
            why = (
                f"its output cap was {plan.cap_source} ({option}), not enforced by the provider: raise it or set "
                "max_tokens"
            )
        else:
            why = "the provider reported more than the worst case, or one usage covers a whole batch"
        unit: Literal["usd", "tokens"] = "tokens"
        if record.overshoot_usd:
            spent, limit, unit = record.cost_usd, record.reserved_usd, "usd"
        elif past_output == record.overshoot_tokens:
            spent, limit = float(record.usage.output_tokens), float(plan.max_output_tokens)
        else:
            spent, limit = float(record.usage.total_tokens), float(res.tokens)
        call_hook(
            self.on_alert,
            Alert(
                kind="overshoot",
                message=(
                    f"{record.model!r} used {'; '.join(parts)} ({why}); committed in full, later calls are "
                    "refused sooner."
                ),
                spent=spent,
                limit=limit,
                unit=unit,
                record=record,
            ),
        )

    def commit(
        self,
        res: Reservation,
        usage: Usage,
        *,
        model: str | None = None,
        usage_estimated: bool = False,
        extra: Mapping[str, Any] | None = None,
        tier: str | None = None,
    ) -> CallRecord:
        """Replace the reservation with the actual cost of ``usage`` and write the call record.

        A ledger outage queues the commit (it is written later, once); it never raises: the call is paid."""
        self._flush_if_up()
        record = self._record(
            res, usage, model=model, outcome="ok", usage_estimated=usage_estimated, extra=extra, tier=tier
        )
        nano, tokens = _nano(record.cost_usd), usage.total_tokens
        op = _PendingOp("commit", res, nano, tokens, record)
        if self._is_down():
            self._queue(op, self._still_down())
            return record
        try:
            result = self.ledger.commit(res.id, res.claims, nano=nano, tokens=tokens, record=record)
        except LedgerUnavailableError as e:
            self._mark_down()
            self._queue(op, e)
            return record
        self._after_commit(res, result, nano, tokens)
        return record

    async def acommit(
        self,
        res: Reservation,
        usage: Usage,
        *,
        model: str | None = None,
        usage_estimated: bool = False,
        extra: Mapping[str, Any] | None = None,
        tier: str | None = None,
    ) -> CallRecord:
        """Async :meth:`commit`."""
        await self._aflush_if_up()
        record = self._record(
            res, usage, model=model, outcome="ok", usage_estimated=usage_estimated, extra=extra, tier=tier
        )
        nano, tokens = _nano(record.cost_usd), usage.total_tokens
        op = _PendingOp("commit", res, nano, tokens, record)
        if self._is_down():
            self._queue(op, self._still_down())
            return record
        try:
            result = await self.ledger.acommit(res.id, res.claims, nano=nano, tokens=tokens, record=record)
        except LedgerUnavailableError as e:
            self._mark_down()
            self._queue(op, e)
            return record
        self._after_commit(res, result, nano, tokens)
        return record

    def _after_commit(self, res: Reservation, result: CommitResult, nano: int, tokens: int) -> None:
        if not result.applied:
            return
        for budget, claim, after in zip(res.budgets, res.claims, result.after, strict=True):
            if budget is None:
                continue
            for unit, limit, amount, total in (
                ("usd", claim.limit_nano, nano, after.committed_nano),
                ("tokens", claim.limit_tokens, tokens, after.committed_tokens),
            ):
                if not limit:
                    continue
                before = total - amount
                for threshold in budget.alert_at:
                    mark = threshold * limit
                    if before < mark <= total:
                        scale = nano_to_usd if unit == "usd" else float
                        call_hook(
                            self.on_alert,
                            Alert(
                                kind="threshold",
                                message=(
                                    f"{budget.describe()} for {budget.scope} {budget.key_for(res.plan.attribution)!r}"
                                    f" reached {threshold:.0%} of its {unit} limit "
                                    f"({scale(total):,.6g} of {scale(limit):,.6g})"
                                ),
                                budget=budget,
                                scope_key=budget.key_for(res.plan.attribution),
                                threshold=threshold,
                                spent=scale(total),
                                limit=scale(limit),
                                unit="usd" if unit == "usd" else "tokens",
                            ),
                        )
        if self.anomaly is not None and self.anomaly.due(self.clock()):
            alert = self.anomaly.check(self.ledger, self.clock())
            if alert is not None:
                call_hook(self.on_alert, alert)

    # -- release and cache hits ----------------------------------------------------------------------------
    def release(self, res: Reservation) -> None:
        """Give the reservation back (the call failed before it was billed)."""
        self._flush_if_up()
        if self._is_down():
            self._queue(_PendingOp("release", res), self._still_down())
            return
        try:
            self.ledger.release(res.id)
        except LedgerUnavailableError as e:
            self._mark_down()
            self._queue(_PendingOp("release", res), e)

    async def arelease(self, res: Reservation) -> None:
        """Async :meth:`release`."""
        await self._aflush_if_up()
        if self._is_down():
            self._queue(_PendingOp("release", res), self._still_down())
            return
        try:
            await self.ledger.arelease(res.id)
        except LedgerUnavailableError as e:
            self._mark_down()
            self._queue(_PendingOp("release", res), e)

    def _hit_record(self, res: Reservation, usage: Usage | None, model: str | None) -> CallRecord:
        price = res.plan.price
        saved = None if price is None else price.cost(usage) if usage is not None else 0.0
        return CallRecord(
            id=res.id,
            ts=res.ts,
            model=model or res.plan.model,
            provider=res.plan.provider,
            usage=usage or Usage(),
            cost_usd=0.0,
            latency_s=time.perf_counter() - res.started,
            attribution=res.plan.attribution,
            outcome="cache_hit",
            saved_usd=saved,
            price_known=res.plan.price_known,
        )

    def cache_hit(
        self, res: Reservation, usage: Usage | None = None, *, model: str | None = None, record: bool = True
    ) -> CallRecord | None:
        """A cache served the call: release the reservation and (``record=True``) write a $0 record
        with the USD the hit saved."""
        self.release(res)
        if not record:
            return None
        rec = self._hit_record(res, usage, model)
        try:
            self.ledger.add_record(rec)
        except LedgerUnavailableError as e:
            log.warning("frugal-chains: could not record a cache hit (ledger unreachable): %s", e)
        return rec

    async def acache_hit(
        self, res: Reservation, usage: Usage | None = None, *, model: str | None = None, record: bool = True
    ) -> CallRecord | None:
        """Async :meth:`cache_hit`."""
        await self.arelease(res)
        if not record:
            return None
        rec = self._hit_record(res, usage, model)
        try:
            await self.ledger.aadd_record(rec)
        except LedgerUnavailableError as e:
            log.warning("frugal-chains: could not record a cache hit (ledger unreachable): %s", e)
        return rec

    # -- outage queue --------------------------------------------------------------------------------------
    def _queue(self, op: _PendingOp, err: Exception) -> None:
        log.warning(
            "frugal-chains: the spend ledger is unreachable; the %s of reservation %s is queued and will be "
            "written when it is back: %s",
            op.kind,
            op.res.id,
            err,
        )
        with self._pending_lock:
            self._pending.append(op)

    @property
    def pending(self) -> int:
        """Commits and releases waiting for the ledger to come back."""
        return len(self._pending)

    def _take_pending(self) -> _PendingOp | None:
        with self._pending_lock:
            return self._pending.popleft() if self._pending else None

    def _putback(self, op: _PendingOp) -> None:
        with self._pending_lock:
            self._pending.appendleft(op)

    def _flush_if_up(self) -> None:
        if self._pending and not self._is_down():
            self.flush()

    async def _aflush_if_up(self) -> None:
        if self._pending and not self._is_down():
            await self.aflush()

    def flush(self) -> int:
        """Write queued commits and releases now; returns how many are still waiting (the ledger is down)."""
        while (op := self._take_pending()) is not None:
            try:
                if op.kind == "commit":
                    result = self.ledger.commit(
                        op.res.id, op.res.claims, nano=op.nano, tokens=op.tokens, record=op.record
                    )
                    self._after_commit(op.res, result, op.nano, op.tokens)
                else:
                    self.ledger.release(op.res.id)
            except LedgerUnavailableError:
                self._mark_down()
                self._putback(op)
                break
            self._mark_up()
        return self.pending

    async def aflush(self) -> int:
        """Async :meth:`flush`."""
        while (op := self._take_pending()) is not None:
            try:
                if op.kind == "commit":
                    result = await self.ledger.acommit(
                        op.res.id, op.res.claims, nano=op.nano, tokens=op.tokens, record=op.record
                    )
                    self._after_commit(op.res, result, op.nano, op.tokens)
                else:
                    await self.ledger.arelease(op.res.id)
            except LedgerUnavailableError:
                self._mark_down()
                self._putback(op)
                break
            self._mark_up()
        return self.pending

    # -- queries -------------------------------------------------------------------------------------------
    def spent(self, budget: Budget, attribution: Attribution | None = None) -> Counter:
        """What a scope key has spent in the budget's current window (committed and reserved)."""
        t = self.clock()
        bucket, min_bucket = budget.buckets(t)
        key = budget.key_for(attribution or Attribution())
        return self.ledger.counter(budget.counter_name(key), min_bucket, bucket)


def _nano(usd: float | None) -> int:
    """What a committed USD amount adds to the ledger's USD counters (an unknown one adds nothing)."""
    return 0 if usd is None else usd_to_nano(usd)
