"""Hard token and USD budgets for LangChain: a callback handler and a ``with budget_scope(...)`` block.

How it works (see ``docs/budgets.md``):

* ``on_chat_model_start`` / ``on_llm_start`` fire before LangChain's cache lookup and before the provider is
  called, outside LangChain's try block. The handler **reserves** the call's worst case there (estimated
  prompt tokens with a safety margin, plus the output cap) and raises ``BudgetExceededError`` if any budget
  could be exceeded: the run aborts with nothing spent. Unless the call's answer is in the
  :class:`~frugal_chains.langchain.SemanticCache` LangChain will look it up in: asked only for a refused call, that
  cache then serves the answer at $0 with nothing reserved, or raises the refusal (``_cache_first``).
* ``on_llm_end`` commits the actual usage (``usage_metadata``; else the provider's ``llm_output``; else an
  estimate, flagged on the record). A hit of LangChain's own LLM cache costs nothing: its reservation is
  released and a ``cache_hit`` record notes what it saved.
* ``on_llm_error`` releases the reservation.
* Runs marked as wrappers (``metadata={WRAPPER_KEY: True}`` on the model, local to its own run, with
  :data:`frugal_chains.metadata.WRAPPER_KEY`) are not counted; only the leaf provider calls they make are.
  Mark your own wrapper models the same way.
* The handler is synchronous with ``run_inline = True``: it runs in order under ``invoke`` and ``ainvoke``
  alike, and its exception aborts both. (LangChain swallows exceptions of *async* handlers driven by
  synchronous calls, so an async handler could not enforce a budget under ``invoke``.)
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import BaseMessage, convert_to_openai_messages
from langchain_core.outputs import ChatGeneration, LLMResult
from langchain_core.tracers.context import register_configure_hook
from typing_extensions import Unpack

from frugal_chains import scopes
from frugal_chains._deprecation import deprecated_attributes, old_metadata_keys
from frugal_chains.accounting.context import attribute, current_attribution
from frugal_chains.accounting.ledger import SpendLedger
from frugal_chains.accounting.pricing import PriceBook, normalize_provider
from frugal_chains.accounting.provider_usage import usage_from_provider
from frugal_chains.accounting.tokens import OUTPUT_CAP_KEYS
from frugal_chains.accounting.usage import Attribution, Price, Usage
from frugal_chains.budget.budget import Budget
from frugal_chains.budget.guard import BudgetGuard, GuardOptions, Reservation
from frugal_chains.budget.handler import GuardDriven
from frugal_chains.errors import BudgetExceededError, ConfigurationError
from frugal_chains.langchain._attribution import attribution_from_run
from frugal_chains.langchain._cache_first import forget_aborted, hold_cached_answer
from frugal_chains.metadata import TIER_KEY, WRAPPER_KEY, cache_status

__all__ = ["TokenBudgetHandler", "budget_scope", "is_wrapper_run", "usage_from_message"]

log = logging.getLogger("frugal_chains.budget")


def usage_from_message(message: BaseMessage) -> Usage | None:
    """A :class:`~frugal_chains.Usage` from an ``AIMessage.usage_metadata`` (``None`` if it has none).

    ``input_token_details``: ``cache_read``; ``cache_creation`` (all cache writes), split by
    ``ephemeral_1h_input_tokens`` / ``ephemeral_5m_input_tokens`` when the provider reports the lifetimes.

    Example:
        >>> from langchain_core.messages import AIMessage
        >>> from frugal_chains.langchain import usage_from_message
        >>> m = AIMessage("hi", usage_metadata={"input_tokens": 10, "output_tokens": 2, "total_tokens": 12,
        ...     "input_token_details": {"cache_read": 8}})
        >>> usage_from_message(m).cache_read_tokens
        8
    """
    um = getattr(message, "usage_metadata", None)
    if not um:
        return None
    # usage_metadata's input_tokens include the cached parts: mark it as LangChain's shape
    return usage_from_provider({"input_token_details": {}, **um})


def _usage_from_llm_output(llm_output: Mapping[str, Any] | None) -> Usage | None:
    """OpenAI-style ``token_usage`` or Anthropic-style ``usage`` in ``LLMResult.llm_output``."""
    if not llm_output:
        return None
    return usage_from_provider(llm_output.get("token_usage") or llm_output.get("usage"))


def _model_and_provider(
    serialized: Mapping[str, Any] | None, metadata: Mapping[str, Any], params: Mapping[str, Any]
) -> tuple[str, str | None]:
    model = (
        params.get("model")
        or params.get("model_name")
        or params.get("model_id")
        or metadata.get("ls_model_name")
        or params.get("_type")
        or (serialized or {}).get("name")
        or "unknown"
    )
    provider = metadata.get("ls_provider") or params.get("_type")
    return str(model), normalize_provider(str(provider)) if provider else None


def _max_output(params: Mapping[str, Any]) -> int | None:
    """The call's own output cap from its invocation params. ``ls_max_tokens`` in metadata is not used: it is
    inherited metadata, so a child run may carry its parent's cap."""
    for key in OUTPUT_CAP_KEYS:
        v = params.get(key)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v
    return None


def _choices(params: Mapping[str, Any]) -> int:
    """How many answers the call asks for (``n``, ``best_of``): each one is billed."""
    best = 1
    for key in ("n", "best_of"):
        v = params.get(key)
        if isinstance(v, int) and not isinstance(v, bool) and v > best:
            best = v
    return best


def _asks_prompt_caching(messages: Sequence[Sequence[BaseMessage]], params: Mapping[str, Any]) -> bool:
    """True if the call asks the provider to cache its prompt (``cache_control`` on a content block, in a
    message's ``additional_kwargs``, or as a call parameter): cache writes may then cost more than input."""
    if params.get("cache_control"):
        return True
    for batch in messages:
        for message in batch:
            if message.additional_kwargs.get("cache_control"):
                return True
            if isinstance(message.content, list) and any(
                isinstance(block, Mapping) and "cache_control" in block for block in message.content
            ):
                return True
    return False


_CALLBACK_LOGGER = "langchain_core.callbacks.manager"
_CALLBACK_ERROR_MSG = "Error in %s.%s callback: %s"


class _QuietRefusals(logging.Filter):
    """On LangChain's callback-manager logger: drops the ``Error in <handler>.<event> callback: <error>`` warning
    that ``langchain_core`` logs before re-raising an error of a ``raise_error`` handler, for exactly the
    refusal a budget handler (``log_refusals=False``) has just raised in this thread. Every other line passes.
    The caller gets the ``BudgetExceededError`` itself, and the ledger has its ``refused`` record."""

    def __init__(self) -> None:
        super().__init__()
        self._local = threading.local()

    def expect(self, handler_name: str, error: BaseException) -> None:
        """The next such warning in this thread, about ``handler_name`` raising ``error``, is dropped."""
        self._local.expected = (handler_name, repr(error))

    def filter(self, record: logging.LogRecord) -> bool:
        expected = getattr(self._local, "expected", None)
        if expected is None or record.msg != _CALLBACK_ERROR_MSG:
            return True
        args = record.args
        if not isinstance(args, tuple) or len(args) != 3 or (args[0], args[2]) != expected:
            return True
        self._local.expected = None
        return False


_QUIET_REFUSALS = _QuietRefusals()


def _install_quiet_refusals() -> None:
    """Idempotent: ``Logger.addFilter`` adds a filter object once."""
    logging.getLogger(_CALLBACK_LOGGER).addFilter(_QUIET_REFUSALS)


@dataclass
class _Run:
    res: Reservation
    batch_size: int
    chat: bool
    """A chat-model run (each run of a chat batch gets its own usage) or a plain LLM run."""
    tier: str | None = None
    """The cascade tier this call belongs to (``TIER_KEY`` in its metadata)."""
    streaming: bool = False
    """A token was streamed: LangChain's ``stream``/``astream`` send an end or error event however the stream ends."""


class TokenBudgetHandler(GuardDriven, BaseCallbackHandler):
    """Prices every LangChain LLM call and stops it **before** it is made when a budget would be exceeded.

    Args:
        budgets: the :class:`~frugal_chains.Budget` limits to enforce (empty: only price and record).
        ledger: where spend lives (default: a new in-memory ``SQLiteLedger``; share one ledger, or use
            ``RedisLedger``, to share budgets between handlers, processes or hosts).
        prices: overrides ``{"model": Price(...)}`` over LiteLLM's price map, or a ``PriceBook``.
        unknown_model: ``"raise"`` (default: while a USD budget is set, a model with no price is refused before
            the call) or ``"warn"``. Token budgets need no price: such a model is counted in tokens and recorded
            with ``cost_usd=None``.
        margins: token-estimate safety margins by provider (``{"anthropic": 0.35, "default": 0.25}``).
        unknown_model_image_tokens: tokens reserved per image on a model with no known image rule (default
            12,000, the largest of the known rules for common models; lower it to what your provider documents.
            OpenAI, Anthropic and Gemini images are reserved by their provider's rule).
        on_ledger_error: ``"closed"`` (default: refuse calls while the ledger is down) or ``"open"``.
        reservation_ttl: when an unfinished reservation is given back (default one hour).
        on_alert: hook for threshold, warn-only and anomaly alerts (default: logged warnings).
        anomaly: an ``AnomalyDetector``; ``None`` (default) for one with its defaults (2x the trailing 7-day
            average); ``False`` to turn the check off.
        assume_max_output: what a call that sets no ``max_tokens`` reserves for its output instead of the model's
            whole output limit: ``{"gpt-4o": 1024, "feature:summarize": 400, "*": 2048}`` (feature, then model,
            then ``"*"``).
        observed_output: for the same calls, a high percentile of recent calls' output per model and feature
            once enough were seen: an :class:`~frugal_chains.budget.ObservedOutput` or ``True`` (p99 after 50).
            A call's own ``max_tokens`` always wins; a call that uses more than it reserved is recorded and
            alerted (``Alert(kind="overshoot")``).
        guard: an existing :class:`~frugal_chains.budget.BudgetGuard` to drive instead of the above.
        log_refusals: LangChain logs a warning (``Error in TokenBudgetHandler.on_chat_model_start callback``) for
            every exception a callback raises. By default (``False``) that line is dropped for this handler's
            refusals: the caller gets the ``BudgetExceededError`` and the ledger a ``refused`` record. ``True``
            keeps LangChain's line.

    Attribution comes from run metadata ``feature``, ``user_id``, ``tenant_id``, ``task_id`` (else from an
    enclosing :func:`frugal_chains.attribute` block) and the run's tags. A task is one root run: attach the
    handler where the run starts (``config={"callbacks": [handler]}`` or :func:`budget_scope`).

    Example:
        >>> from frugal_chains import Budget, BudgetExceededError
        >>> from frugal_chains.langchain import TokenBudgetHandler
        >>> from frugal_chains.testing import FakeUsageChatModel  # reports usage like a provider
        >>> handler = TokenBudgetHandler([Budget(max_tokens=1000, scope="global")])
        >>> model = FakeUsageChatModel(model="gpt-4o-mini", max_tokens=300, output_tokens=300)
        >>> answered = 0
        >>> try:
        ...     while True:
        ...         _ = model.invoke("hi", config={"callbacks": [handler]})
        ...         answered += 1
        ... except BudgetExceededError as e:
        ...     print(answered, e.unit, e.spent, e.requested)
        3 tokens 924.0 309.0
    """

    raise_error: bool = True
    run_inline: bool = True

    def __init__(
        self,
        budgets: Sequence[Budget] | Budget = (),
        *,
        guard: BudgetGuard | None = None,
        log_refusals: bool = False,
        **options: Unpack[GuardOptions],
    ) -> None:
        super().__init__()
        self.core = BudgetGuard.for_handler(guard, budgets, **options)
        self.log_refusals = bool(log_refusals)
        if not self.log_refusals:
            _install_quiet_refusals()
        self._roots: dict[UUID, UUID] = {}
        self._reservations: dict[UUID, _Run] = {}
        self._batch_credit: dict[tuple[int, UUID | None, int], int] = {}
        self._lock = threading.Lock()

    # -- task tracking ------------------------------------------------------------------------------------
    def _enter(self, run_id: UUID, parent_run_id: UUID | None) -> UUID:
        with self._lock:
            root = run_id if parent_run_id is None else self._roots.get(parent_run_id, parent_run_id)
            self._roots[run_id] = root
            return root

    def _exit(self, run_id: UUID) -> None:
        with self._lock:
            self._roots.pop(run_id, None)

    def on_chain_start(
        self, serialized: Any, inputs: Any, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        self._enter(run_id, parent_run_id)

    def on_tool_start(
        self,
        serialized: Any,
        input_str: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        self._enter(run_id, parent_run_id)

    def on_retriever_start(
        self, serialized: Any, query: str, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        self._enter(run_id, parent_run_id)

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._exit(run_id)

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._exit(run_id)

    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._exit(run_id)

    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._exit(run_id)

    def on_retriever_end(self, documents: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._exit(run_id)

    def on_retriever_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._exit(run_id)

    # -- LLM calls --------------------------------------------------------------------------------------------
    def _attribution(
        self, root: UUID, metadata: Mapping[str, Any], tags: Sequence[str] | None
    ) -> Attribution:
        own = attribution_from_run(metadata, tags)
        return own.merged(current_attribution()).merged(Attribution(task_id=str(root)))

    def _start(
        self,
        serialized: Mapping[str, Any] | None,
        messages: list[dict[str, Any]],
        run_id: UUID,
        parent_run_id: UUID | None,
        tags: list[str] | None,
        metadata: Mapping[str, Any] | None,
        kwargs: Mapping[str, Any],
        prompt_caching: bool = False,
        chat: bool = True,
        cached: Callable[[BudgetExceededError], bool] | None = None,
    ) -> None:
        root = self._enter(run_id, parent_run_id)
        metadata = metadata or {}
        if metadata.get(WRAPPER_KEY):
            return
        params: Mapping[str, Any] = kwargs.get("invocation_params") or {}
        model, provider = _model_and_provider(serialized, metadata, params)
        tools = params.get("tools") or None
        tier = metadata.get(TIER_KEY)
        tier = tier if isinstance(tier, str) else None
        try:
            plan = self.core.plan(
                messages,
                model=model,
                provider=provider,
                max_output_tokens=_max_output(params),
                choices=_choices(params),
                tools=tools if isinstance(tools, list) else None,
                attribution=self._attribution(root, metadata, tags),
                prompt_caching=prompt_caching or None,
                tier=tier,
            )
            res = self.core.reserve(plan) if cached is None else self.core.reserve_unless_cached(plan, cached)
        except BaseException as e:
            self._exit(run_id)  # LangChain sends no end event for a run refused at its start
            if isinstance(e, BudgetExceededError) and not self.log_refusals:
                _QUIET_REFUSALS.expect(type(self).__name__, e)
            raise
        if res is None:
            return  # refused, but its cache holds the answer and serves it at $0: nothing reserved, nothing to settle
        batch_size = kwargs.get("batch_size")
        with self._lock:
            self._reservations[run_id] = _Run(
                res, batch_size if isinstance(batch_size, int) else 1, chat, tier
            )
        self._watch_task(run_id)

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        openai_messages: list[dict[str, Any]] = []
        for batch in messages:
            openai_messages.extend(convert_to_openai_messages(batch))
        # convert_to_openai_messages drops cache_control markers: look for them on the original messages
        caching = _asks_prompt_caching(messages, kwargs.get("invocation_params") or {})
        # a refused call goes ahead if LangChain's cache (a SemanticCache) holds its answer: see _cache_first
        cached = functools.partial(
            hold_cached_answer,
            run_id,
            messages,
            kwargs.get("invocation_params"),
            metadata=metadata,
            tags=tags,
        )
        self._start(
            serialized, openai_messages, run_id, parent_run_id, tags, metadata, kwargs, caching, cached=cached
        )

    def on_llm_start(
        self,
        serialized: dict[str, Any],
        prompts: list[str],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        messages = [{"role": "user", "content": p} for p in prompts]
        self._start(serialized, messages, run_id, parent_run_id, tags, metadata, kwargs, chat=False)

    def _watch_task(self, run_id: UUID) -> None:
        """Under asyncio, cancelling a non-streaming call sends no end or error event (LangChain's ``agenerate``
        is cancelled inside ``asyncio.gather``). When the task that started the run is done and the run is still
        open, the call is settled as interrupted."""
        try:
            task = asyncio.current_task()
        except RuntimeError:  # no running event loop: a synchronous call
            return
        if task is not None:
            task.add_done_callback(functools.partial(self._task_done, run_id))

    def _task_done(self, run_id: UUID, task: asyncio.Task[Any]) -> None:
        with self._lock:
            run = self._reservations.get(run_id)
            if run is None or (run.streaming and not task.cancelled()):
                # a stream outlives the task that started it (a chain's ``astream`` pulls each chunk in a task of
                # its own); LangChain's stream sends the end event, or an error event if it is cut off
                return
        run = self._pop(run_id)
        if run is not None:
            self._interrupted(run, "CancelledError" if task.cancelled() else "TaskEnded", None)

    def on_llm_new_token(
        self, token: str | list[str | dict[str, Any]], *, run_id: UUID, **kwargs: Any
    ) -> None:
        run = self._reservations.get(run_id)
        if run is not None and not run.streaming:
            run.streaming = True

    def _interrupted(self, run: _Run, why: str, response: LLMResult | None) -> None:
        """The call was cut off (a stream closed early, a cancelled task): the provider may have billed an unknown
        part of it. Commit the usage the partial answer reports if it does, else the worst case."""
        usage = None
        if response is not None:
            for gens in response.generations:
                for gen in gens:
                    if usage is None and isinstance(gen, ChatGeneration):
                        usage = usage_from_message(gen.message)
        if usage is not None:
            self.core.commit(run.res, usage, extra={"interrupted": why}, tier=run.tier)
        else:
            self.core.commit(
                run.res,
                self.core.worst_usage(run.res),
                usage_estimated=True,
                extra={"interrupted": why},
                tier=run.tier,
            )

    def _pop(self, run_id: UUID) -> _Run | None:
        with self._lock:
            self._roots.pop(run_id, None)
            return self._reservations.pop(run_id, None)

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        run = self._pop(run_id)
        if run is None:
            return
        res = run.res
        message: BaseMessage | None = None
        texts: list[str] = []
        for gens in response.generations:
            for gen in gens:
                texts.append(gen.text)
                if message is None and isinstance(gen, ChatGeneration):
                    message = gen.message
        model: str | None = None
        usage: Usage | None = None
        if message is not None:
            meta = message.response_metadata or {}
            model = meta.get("model_name") or meta.get("model")
            usage = usage_from_message(message)
            um = getattr(message, "usage_metadata", None) or {}
            ours = cache_status(meta) == "hit"
            if ours or ("total_cost" in um and not um.get("total_cost")):
                # LangChain zeroes total_cost on a cache hit; our own cache marks its answers.
                self.core.cache_hit(res, usage, model=model, record=not ours)
                return
        extra: dict[str, Any] = {}
        if usage is None:
            llm_output = response.llm_output or {}
            usage = _usage_from_llm_output(llm_output)
            model = model or llm_output.get("model_name")
            if not run.chat and run.batch_size > 1:
                usage = self._plain_batch_usage(run, usage, llm_output, kwargs.get("parent_run_id"), extra)
        estimated = usage is None
        if usage is None:
            usage = self.core.estimated_usage(res, "".join(texts))
        self.core.commit(
            res,
            usage,
            model=model if isinstance(model, str) else None,
            usage_estimated=estimated,
            extra=extra,
            tier=run.tier,
        )

    def _plain_batch_usage(
        self,
        run: _Run,
        usage: Usage | None,
        llm_output: Mapping[str, Any],
        parent_run_id: UUID | None,
        extra: dict[str, Any],
    ) -> Usage | None:
        """A plain LLM's batch: ``LLMResult.flatten()`` reports the batch's usage on its first run and
        ``token_usage={}`` on the others, whose ends follow in order on the same thread. The first run's record
        carries the batch total; the others record zero, but only when their batch's first run did report usage
        (a provider that reports none leaves every run to the estimate)."""
        key = (threading.get_ident(), parent_run_id, run.batch_size)
        with self._lock:
            if usage is not None:
                self._batch_credit[key] = run.batch_size - 1
                extra["usage_covers_batch"] = run.batch_size
                return usage
            if llm_output.get("token_usage") == {} and self._batch_credit.get(key, 0) > 0:
                self._batch_credit[key] -= 1
                if not self._batch_credit[key]:
                    del self._batch_credit[key]
                extra["usage_reported_on_batch_first_run"] = True
                return Usage()
        return None

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        forget_aborted(run_id)  # answers a cache held for the later runs of this aborted call
        run = self._pop(run_id)
        if run is None:
            return
        response = kwargs.get("response")
        response = response if isinstance(response, LLMResult) else None
        if not isinstance(error, Exception):
            # GeneratorExit (a stream closed early), CancelledError, KeyboardInterrupt
            self._interrupted(run, type(error).__name__, response)
            return
        partial = "".join(g.text for gens in (response.generations if response else []) for g in gens)
        if partial:
            # the provider failed mid-answer, after billing the part it sent: estimate that part
            self.core.commit(
                run.res,
                self.core.estimated_usage(run.res, partial),
                usage_estimated=True,
                extra={"error": type(error).__name__},
                tier=run.tier,
            )
            return
        self.core.release(run.res)  # the provider refused or failed before answering


_scope: contextvars.ContextVar[TokenBudgetHandler | None] = contextvars.ContextVar(
    "frugal_chains_budget_scope", default=None
)


class _ScopeHook:
    """What LangChain's configure hook reads (it calls only ``get()`` when a run starts): the active scope's handler;
    when there is none while a ``budget_scope`` is open in another thread, a ``ScopeNotPropagatedWarning``."""

    def get(self) -> TokenBudgetHandler | None:
        handler = _scope.get()
        if handler is None:
            scopes.unscoped("budget_scope", stacklevel=4)
        return handler


register_configure_hook(cast("contextvars.ContextVar[Any]", _ScopeHook()), inheritable=True)


@contextmanager
def budget_scope(
    budgets: Sequence[Budget] = (),
    *,
    ledger: SpendLedger | None = None,
    prices: PriceBook | Mapping[str, Price] | None = None,
    one_task: bool = False,
    handler: TokenBudgetHandler | None = None,
    **handler_kwargs: Any,
) -> Iterator[TokenBudgetHandler]:
    """Apply budgets to every LangChain run started inside the block (no ``callbacks=`` needed).

    Each root run inside the block is its own task, as everywhere else; ``one_task=True`` makes the whole
    block one task (its ``"task"`` budgets then cap the block). A nested ``budget_scope`` adds its budgets to
    the enclosing one's and shares its ledger and prices, so one reservation covers all of them.

    The block reaches asyncio tasks and LangChain's own worker threads (``batch``, ``RunnableParallel``), not a
    plain ``ThreadPoolExecutor`` or ``threading.Thread``: send work there with
    :class:`frugal_chains.ScopedThreadPoolExecutor` or :func:`frugal_chains.carry_scopes` (a run started in a
    thread without the scope while it is open elsewhere issues a ``ScopeNotPropagatedWarning``).

    Args:
        budgets: the limits (see :class:`~frugal_chains.Budget`).
        ledger: the ledger (default: in-memory SQLite; nested scopes use the enclosing one's).
        prices: price overrides or a ``PriceBook``.
        one_task: count everything in the block as one task.
        handler: use this handler instead of building one.
        **handler_kwargs: more :class:`TokenBudgetHandler` options (``on_alert``, ``margins``, ...).

    Example:
        >>> from langchain_core.language_models.fake_chat_models import FakeListChatModel
        >>> from frugal_chains import Budget, Price
        >>> from frugal_chains.langchain import budget_scope
        >>> model = FakeListChatModel(responses=["ok"])
        >>> prices = {"fake-list-chat-model": Price(input=1.0, output=1.0, max_output_tokens=100)}
        >>> with budget_scope([Budget(max_usd=1.0, scope="global")], prices=prices) as scope:
        ...     _ = model.invoke("hi")
        >>> len(scope.ledger.records())
        1
    """
    outer = _scope.get()
    if handler is None:
        if outer is not None:
            if ledger is not None and ledger is not outer.ledger:
                raise ConfigurationError(
                    "A nested budget_scope shares the enclosing scope's ledger; do not pass another ledger.",
                    field="ledger",
                )
            guard = outer.core
            handler = TokenBudgetHandler(
                guard=BudgetGuard(
                    (*guard.budgets, *budgets),
                    ledger=guard.ledger,
                    prices=guard.prices if prices is None else prices,
                    on_ledger_error=guard.on_ledger_error,
                    reservation_ttl=guard.reservation_ttl,
                    on_alert=guard.on_alert,
                    anomaly=guard.anomaly or False,
                    margins=handler_kwargs.pop("margins", dict(guard.estimator.margins)),
                    unknown_model_image_tokens=guard.estimator.unknown_model_image_tokens,
                    assume_max_output=guard.output_caps.assumed,
                    observed_output=guard.output_caps.observed,
                )
            )
            if handler_kwargs:
                raise ConfigurationError(
                    f"A nested budget_scope takes only budgets, prices and margins; got {sorted(handler_kwargs)}.",
                    field="budget_scope",
                )
        else:
            handler = TokenBudgetHandler(budgets, ledger=ledger, prices=prices, **handler_kwargs)
    token = _scope.set(handler)
    try:
        with scopes.tracked("budget_scope"):
            if one_task:
                with attribute(task_id=f"scope-{uuid.uuid4().hex}"):
                    yield handler
            else:
                yield handler
    finally:
        _scope.reset(token)


def is_wrapper_run(metadata: Mapping[str, Any] | None) -> bool:
    """True if a run's metadata marks it as a wrapper model (not counted)."""
    return bool((metadata or {}).get(WRAPPER_KEY))


__getattr__ = deprecated_attributes(
    __name__,
    {
        "TokenBudgetCallbackHandler": (
            "frugal_chains.langchain.TokenBudgetHandler",
            lambda: TokenBudgetHandler,
        ),
        **old_metadata_keys("WRAPPER_METADATA_KEY", "TIER_METADATA_KEY", "CACHE_HIT_METADATA_KEY"),
    },
)
