"""``configure()``: budgets, the semantic cache and the cascading router on LlamaIndex's ``Settings`` in one call.

Without it, LlamaIndex wiring takes three objects built in the right order, the ledger passed to each
(``TokenBudgetHandler``, ``CascadeLLM``, the cache), and a handler set on ``Settings.callback_manager`` after a
query engine was built is never called. ``configure()``:

* builds one :class:`~frugal_chains.llama_index.TokenBudgetHandler` (``budgets`` and the guard's options, ledger
  and prices included) and **adds** it to ``Settings.callback_manager``: the manager already there is kept, with
  its handlers, so components built earlier from ``Settings`` (which hold that very manager) are budgeted too;
* sets ``Settings.llm`` to ``llm`` (or a :class:`~frugal_chains.llama_index.CascadeLLM` over ``tiers``), wrapped
  in a :class:`~frugal_chains.llama_index.CachedLLM` when ``cache`` is given;
* shares the handler's ledger and price book with the cascade (its ``routed`` records and cost metadata) and the
  cache (the USD each hit saved), and the ``feature`` / ``attribution`` defaults with all of them;
* returns a :class:`FrugalSettings` that holds these objects and undoes it all (``reset()``, or a ``with``
  block).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from llama_index.core.callbacks import CallbackManager
from llama_index.core.llms.llm import LLM
from typing_extensions import Self, Unpack

from frugal_chains.accounting.context import set_default_attribution
from frugal_chains.accounting.ledger import GroupBy, SpendLedger, SpendRow
from frugal_chains.accounting.pricing import PriceBook
from frugal_chains.accounting.usage import Attribution
from frugal_chains.budget.budget import Budget
from frugal_chains.budget.guard import GuardOptions
from frugal_chains.cache.core import AnswerCache, CacheStats
from frugal_chains.errors import ConfigurationError
from frugal_chains.llama_index.budget import TokenBudgetHandler
from frugal_chains.llama_index.cached_llm import CachedLLM
from frugal_chains.llama_index.cascade import CascadeLLM
from frugal_chains.routing.policy import RoutingPolicy
from frugal_chains.routing.stats import RouterStats
from frugal_chains.shared.question import QuestionKey, as_question_key

__all__ = ["FrugalSettings", "configure"]

_lock = threading.RLock()
_active: FrugalSettings | None = None
"""The configuration in effect (a new ``configure()`` resets it first)."""


@dataclass(eq=False)
class _Saved:
    """What ``configure()`` changed, to put back."""

    llm: LLM | None
    """``Settings._llm`` before (``None``: unset)."""
    manager: CallbackManager | None
    """``Settings._callback_manager`` before (``None``: unset)."""
    attribution: Attribution | None
    cache_ledger: bool = False
    """The cache had no ledger: the handler's was given to it."""
    cache_prices: bool = False


class FrugalSettings:
    """What :func:`configure` put on LlamaIndex's ``Settings``, sharing one ledger and one price book, and the way
    back (:meth:`reset`, or use it as a context manager). Returned by :func:`configure`; not built directly.

    Attributes:
        llm: the LLM set as ``Settings.llm`` (``CachedLLM``, ``CascadeLLM`` or the ``llm`` given), or ``None`` when
            ``configure()`` left ``Settings.llm`` alone. Give it to components that take an ``llm=``.
        handler: the :class:`~frugal_chains.llama_index.TokenBudgetHandler` added to ``Settings.callback_manager``.
        callback_manager: the manager on ``Settings.callback_manager`` (the one that was there, or a new one).
        cache: the :class:`~frugal_chains.cache.AnswerCache`, or ``None``.
        cascade: the :class:`~frugal_chains.llama_index.CascadeLLM` built from ``tiers``, or ``None``.
        attribution: the defaults every call is attributed with (fields an ``attribute(...)`` block sets win).

    Example:
        >>> from llama_index.core import Settings
        >>> from llama_index.core.llms import MockLLM
        >>> from frugal_chains import Budget, Price
        >>> from frugal_chains.llama_index import configure
        >>> llm = MockLLM(max_tokens=16)  # in your app: OpenAI(model="gpt-4o-mini")
        >>> with configure(llm, budgets=Budget(max_usd=1.0, scope="global"),
        ...                prices={"MockLLM": Price(input=1.0, output=2.0)}, feature="docs-qa") as frugal:
        ...     _ = Settings.llm.complete("How long do refunds take?")
        ...     [(row.key, row.calls) for row in frugal.summary("feature")]
        [('docs-qa', 1)]
        >>> frugal.handler in Settings.callback_manager.handlers  # reset when the block ended
        False
    """

    def __init__(
        self,
        *,
        llm: LLM | None,
        handler: TokenBudgetHandler,
        callback_manager: CallbackManager,
        cache: AnswerCache | None,
        cascade: CascadeLLM | None,
        attribution: Attribution,
        saved: _Saved,
        base: LLM | None = None,
    ) -> None:
        self.llm = llm
        self.handler = handler
        self.callback_manager = callback_manager
        self.cache = cache
        self.cascade = cascade
        self.attribution = attribution
        self._saved = saved
        self._base = base
        """The LLM given (or the cascade built), under the cache."""
        self._active = True
        self._entered = False
        """Inside this configuration's ``with`` block."""
        self._outer: FrugalSettings | None = None
        """The configuration whose ``with`` block this one was made in: back in effect when this one is reset."""

    @property
    def ledger(self) -> SpendLedger:
        """The one ledger: budgets' records, the cascade's ``routed`` records and the cache's hits."""
        return self.handler.ledger

    @property
    def prices(self) -> PriceBook:
        """The one price book (the handler's; the cascade and the cache price with it too)."""
        return self.handler.core.prices

    @property
    def budgets(self) -> tuple[Budget, ...]:
        """The limits enforced."""
        return self.handler.budgets

    @property
    def cache_stats(self) -> CacheStats | None:
        """The cache's hits, misses and USD saved (``None`` without a cache)."""
        return self.cache.stats if self.cache is not None else None

    @property
    def router_stats(self) -> RouterStats | None:
        """The cascade's escalations per tier (``None`` without a cascade)."""
        return self.cascade.stats if self.cascade is not None else None

    @property
    def active(self) -> bool:
        """``True`` until :meth:`reset` (or a later ``configure()``) undid this configuration."""
        return self._active

    def summary(
        self, by: GroupBy = "model", *, since: float | None = None, until: float | None = None
    ) -> list[SpendRow]:
        """The ledger grouped ``by`` ``"model"``, ``"feature"``, ``"user"``, ``"tenant"``, ``"task"``, ``"tier"``,
        ``"outcome"`` or ``"day"`` (see :meth:`~frugal_chains.SpendLedger.summary`)."""
        return self.ledger.summary(by, since=since, until=until)

    def reset(self) -> None:
        """Undo :func:`configure`: the handler leaves ``Settings.callback_manager``, and ``Settings.llm``,
        ``Settings.callback_manager``, the attribution defaults and the cache's ledger and prices are what they
        were before. A ``Settings`` value you replaced since is left as you set it. Calling it again does nothing.
        """
        with _lock:
            self._entered = (
                False  # undone by you: not put back when a configuration made in its block is reset
            )
            self._undo()

    def _undo(self) -> None:
        """:meth:`reset`, also when a new ``configure()`` replaces this one (which leaves its ``with`` block
        waiting to have it back)."""
        global _active
        with _lock:
            if not self._active:
                return
            self._active = False
            if _active is self:
                _active = None
            _restore(self)
            outer, self._outer = self._outer, None
            if outer is not None and outer._entered and _active is None:
                _apply(outer)  # a configure() inside a with block: the block's configuration is back
                _active = outer

    def __enter__(self) -> Self:
        self._entered = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._entered = False
        self.reset()

    def __repr__(self) -> str:
        llm = type(self.llm).__name__ if self.llm is not None else None
        return (
            f"FrugalSettings(llm={llm}, budgets={list(self.budgets)!r}, ledger={self.ledger!r}, "
            f"cache={self.cache is not None}, active={self._active})"
        )


def _restore(done: FrugalSettings) -> None:
    from llama_index.core import Settings

    saved = done._saved
    manager = done.callback_manager
    if any(h is done.handler for h in manager.handlers):
        manager.remove_handler(done.handler)
    if Settings._callback_manager is manager and saved.manager is not manager:
        Settings._callback_manager = saved.manager
    if done.llm is not None and Settings._llm is done.llm:
        Settings._llm = saved.llm
    set_default_attribution(saved.attribution)
    if done.cache is not None:
        if saved.cache_ledger and done.cache.ledger is done.handler.ledger:
            done.cache.ledger = None
        if saved.cache_prices and done.cache._prices is done.prices:
            done.cache._prices = None
    done.handler._wrapped, done.handler._wrapper = (), ""


def _apply(done: FrugalSettings) -> None:
    """Put ``done`` on ``Settings``, saving what it changes (in ``done._saved``), and mark it active."""
    from llama_index.core import Settings

    handler, cache, top = done.handler, done.cache, done.llm
    saved = _Saved(
        llm=Settings._llm,
        manager=Settings._callback_manager,
        attribution=set_default_attribution(done.attribution if done.attribution != Attribution() else None),
    )
    manager = saved.manager
    if manager is None:
        manager = done.callback_manager
        Settings.callback_manager = manager
    if not any(h is handler for h in manager.handlers):
        manager.add_handler(handler)
    done.callback_manager = manager
    if cache is not None:
        if cache.ledger is None:
            cache.ledger, saved.cache_ledger = handler.ledger, True
        if cache._prices is None:
            cache._prices, saved.cache_prices = done.prices, True
    if top is not None:
        top.callback_manager = manager  # shared with the LLMs it wraps
        Settings.llm = top
        if top is not done._base or done.cascade is not None:
            # a wrapper: a direct call to an LLM it wraps bypasses it (LLMNotAttachedWarning)
            handler._wrapped = tuple(_calls_made_by(top))
            handler._wrapper = type(top).__name__
    done._saved = saved
    done._active = True


def _as_llm(value: Any, field: str) -> LLM:
    if not isinstance(value, LLM):
        raise ConfigurationError(
            f"{field} must be a LlamaIndex LLM (llama_index.core.llms.LLM), got {type(value).__name__}; "
            "for a LangChain model use frugal_chains.langchain",
            field=field,
        )
    return value


def _as_cache(value: Any, ledger: SpendLedger) -> AnswerCache:
    cache = value if isinstance(value, AnswerCache) else getattr(value, "core", None)  # a SemanticCache
    if not isinstance(cache, AnswerCache):
        raise ConfigurationError(
            f"cache must be a frugal_chains.cache.AnswerCache, got {type(value).__name__}", field="cache"
        )
    if cache.ledger is not None and cache.ledger is not ledger:
        raise ConfigurationError(
            "cache has a ledger of its own: build the AnswerCache without ledger= (configure gives it the "
            "budgets' ledger), or pass the same object as configure(ledger=...)",
            field="cache",
        )
    return cache


def _defaults(feature: str | None, attribution: Attribution | None) -> Attribution:
    if attribution is not None and not isinstance(attribution, Attribution):
        raise ConfigurationError(
            f"attribution must be a frugal_chains.Attribution, got {type(attribution).__name__}",
            field="attribution",
        )
    if feature is not None and (not isinstance(feature, str) or not feature):
        raise ConfigurationError(f"feature must be a non-empty string, got {feature!r}", field="feature")
    found = Attribution(feature=feature).merged(attribution or Attribution())
    if found.task_id is not None:
        raise ConfigurationError(
            "attribution cannot set task_id: a process-wide task id would make every call one task; set it per "
            "request with frugal_chains.attribute(task_id=...)",
            field="attribution",
        )
    return found


def _calls_made_by(llm: LLM) -> list[LLM]:
    """The provider LLMs a wrapper calls (through nested caches and cascades)."""
    if isinstance(llm, CachedLLM):
        return _calls_made_by(llm.llm)
    if isinstance(llm, CascadeLLM):
        return [inner for tier in llm.tiers for inner in _calls_made_by(tier)]
    return [llm]


def _bare_settings_llm() -> LLM | None:
    """``Settings.llm`` as it was before the configuration in effect (never resolving LlamaIndex's default)."""
    from llama_index.core import Settings

    if _active is not None and _active.llm is not None and Settings._llm is _active.llm:
        return _active._base
    return Settings._llm


def configure(
    llm: LLM | None = None,
    *,
    tiers: Sequence[LLM] | None = None,
    tier_names: Sequence[str] | None = None,
    scorer: Any = None,
    gates: Any = None,
    policy: RoutingPolicy | None = None,
    cache: AnswerCache | Any | None = None,
    question_key: QuestionKey | None = None,
    budgets: Sequence[Budget] | Budget = (),
    feature: str | None = None,
    attribution: Attribution | None = None,
    **options: Unpack[GuardOptions],
) -> FrugalSettings:
    """Put budgets, a semantic cache and a cascading router on LlamaIndex's ``Settings``, sharing one ledger,
    one price book and one set of attribution defaults. Call it before building indexes and query engines.

    Args:
        llm: the LlamaIndex LLM to use (``Settings.llm``). Default: the current ``Settings.llm`` when ``cache`` is
            given, else ``Settings.llm`` is left alone.
        tiers: two or more LLMs, cheapest first, for a :class:`~frugal_chains.llama_index.CascadeLLM` (instead of
            ``llm``); ``tier_names``, ``scorer``, ``gates`` and ``policy`` are its options (see ``CascadeLLM``). To
            set any other
            cascade option, build the ``CascadeLLM`` yourself and pass it as ``llm``.
        cache: an :class:`~frugal_chains.cache.AnswerCache` (or a LangChain ``SemanticCache``, whose core is
            used): the LLM is wrapped in a :class:`~frugal_chains.llama_index.CachedLLM`. A cache built without
            ``ledger=``/``prices=`` gets the handler's (hits and the USD they saved go to the same ledger).
        question_key: a :class:`~frugal_chains.QuestionKey` for the cache and the cascade's scorer: what the
            user asked in a templated prompt (default: the cache's, and the scorer's own; both recognise
            LlamaIndex's text-QA and refine prompts).
        budgets: the :class:`~frugal_chains.Budget` limits (none: every call is only priced and recorded).
        feature: the feature every call is attributed to unless an ``attribute(...)`` block says otherwise.
        attribution: more defaults (``frugal_chains.Attribution``: feature, user, tenant, tags; not a task).
            They are process-wide, like ``Settings``.
        **options: the budget handler's options (:class:`~frugal_chains.budget.GuardOptions`): ``ledger``
            (default a new in-memory ``SQLiteLedger``), ``prices`` (``{model: Price}`` or a ``PriceBook``),
            ``unknown_model``, ``margins``, ``on_ledger_error``, ``reservation_ttl``, ``on_alert``, ``anomaly``...

    Returns:
        A :class:`FrugalSettings` holding the objects; ``reset()`` (or leaving its ``with`` block) undoes it all.
        A new ``configure()`` resets the one in effect first; made inside a configuration's ``with`` block, its
        reset puts the block's configuration back in effect.

    Raises:
        ConfigurationError: bad input, naming the field (``llm``, ``tiers``, ``cache``, ``budgets``, ...).
            Nothing on ``Settings`` is changed then.

    The handler is added to the ``Settings.callback_manager`` already there (its handlers are kept), so
    components built earlier from ``Settings`` are budgeted too. They keep the LLM they were built with, though:
    a call that reaches the LLM you gave ``configure()`` without going through its cache or cascade issues a
    :class:`~frugal_chains.llama_index.LLMNotAttachedWarning`.

    Example:
        >>> from llama_index.core import Settings
        >>> from llama_index.core.llms import MockLLM
        >>> from frugal_chains import Price
        >>> from frugal_chains.cache import AnswerCache
        >>> from frugal_chains.llama_index import configure
        >>> from frugal_chains.testing import HashEmbeddings
        >>> frugal = configure(MockLLM(max_tokens=16), cache=AnswerCache(embedder=HashEmbeddings()),
        ...                    prices={"MockLLM": Price(input=1.0, output=2.0)})
        >>> type(Settings.llm).__name__
        'CachedLLM'
        >>> for _ in range(2):
        ...     _ = Settings.llm.complete("How long do refunds take?")
        >>> sorted(r.outcome for r in frugal.ledger.records())
        ['cache_hit', 'ok']
        >>> frugal.cache_stats.hits
        1
        >>> frugal.reset()
    """
    from llama_index.core import Settings

    global _active
    with _lock:
        # -- build (nothing on Settings changes if this raises) -----------------------------------------------
        if llm is not None:
            llm = _as_llm(llm, "llm")
        if tiers is not None and llm is not None:
            raise ConfigurationError("pass llm= or tiers= (a cascade), not both", field="tiers")
        if tiers is None:
            cascade_options = (
                ("tier_names", tier_names),
                ("scorer", scorer),
                ("gates", gates),
                ("policy", policy),
            )
            for name, value in cascade_options:
                if value is not None:
                    raise ConfigurationError(
                        f"{name} is a cascade option: pass tiers=[cheap, strong] with it", field=name
                    )
        if question_key is not None:
            question_key = as_question_key(question_key)
            if cache is None and tiers is None:
                raise ConfigurationError(
                    "question_key selects the question for a cache or a cascade: pass cache= or tiers= with it",
                    field="question_key",
                )
        defaults = _defaults(feature, attribution)
        if isinstance(budgets, (str, bytes, Mapping)):
            raise ConfigurationError(
                f"budgets must be a Budget or a list of them, got {type(budgets).__name__}", field="budgets"
            )
        handler = TokenBudgetHandler(budgets, **options)
        shared_prices = handler.core.prices
        cascade: CascadeLLM | None = None
        if tiers is not None:
            cascade = CascadeLLM(
                tiers,
                tier_names=tier_names,
                scorer=scorer,
                gates=gates,
                policy=policy,
                ledger=handler.ledger,
                prices=shared_prices,
                question_key=question_key,
            )
        base: LLM | None = cascade if cascade is not None else llm
        answer_cache: AnswerCache | None = None
        if cache is not None:
            answer_cache = _as_cache(cache, handler.ledger)
            if base is None:
                base = _bare_settings_llm()
            if base is None:
                raise ConfigurationError(
                    "cache= needs an LLM to wrap: pass llm=, or set Settings.llm first", field="llm"
                )
        top: LLM | None = base
        if answer_cache is not None and base is not None:
            top = CachedLLM(llm=base, cache=answer_cache, question_key=question_key)

        # -- apply ---------------------------------------------------------------------------------------------
        outer = _active if _active is not None and _active._entered else None
        if _active is not None:
            _active._undo()
        done = FrugalSettings(
            llm=top,
            handler=handler,
            callback_manager=Settings._callback_manager or CallbackManager([]),
            cache=answer_cache,
            cascade=cascade,
            attribution=defaults,
            saved=_Saved(llm=None, manager=None, attribution=None),  # filled by _apply
            base=base,
        )
        done._outer = outer
        _apply(done)
        _active = done
        return done
