"""Hard token and USD budgets for LlamaIndex: a legacy callback handler.

How it works (read from ``llama_index/core/llms/callbacks.py`` and ``callbacks/base.py``):

* Every LLM call made through ``chat``/``complete`` and their streaming and async variants is wrapped by
  LlamaIndex's ``llm_chat_callback``/``llm_completion_callback`` decorators. They send a ``CBEventType.LLM`` start
  event *before* the LLM is called and outside their try block, and ``CallbackManager.on_event_start`` calls the
  handlers without a try block. The handler **reserves** the call's worst case there (estimated prompt tokens
  with a safety margin, plus the output cap) and raises ``BudgetExceededError`` if a budget could be exceeded:
  the exception leaves ``llm.complete(...)``, ``query_engine.query(...)`` and so on, with nothing spent.
* The end event (same ``event_id``) carries the response: the actual usage is committed, read from
  ``response.raw`` (OpenAI, Anthropic, OpenAI Responses or Gemini usage, as a dict or an object), else from
  ``additional_kwargs`` token counts, else estimated (flagged ``usage_estimated`` on the record). A streaming call
  ends when its stream is exhausted. A stream closed early is committed at its worst case (it was billed for an
  unknown part of it); an error releases the reservation.
* Output cap: the worst case needs the cap the provider *enforces*. ``LLMMetadata.num_output`` (the only token
  figure in the event's ``SERIALIZED`` payload, ``{"class_name": ..., **metadata}``) is prompt-sizing advice, not
  a cap: it defaults to 256 for any ``CustomLLM`` whatever the model produces. The cap is read instead from the
  call's kwargs (``max_tokens``-like keys) and from the LLM instance itself: its ``max_tokens``,
  ``max_new_tokens``, ``max_completion_tokens``, ``max_output_tokens`` and ``num_predict`` fields and its
  ``additional_kwargs`` (the largest of them). The instance is the ``_self`` local of the decorator frame that
  sends this very start event (its ``model_dict`` local *is* the payload's ``SERIALIZED`` dict). Only when no
  such frame is found is ``num_output`` used, and then only for LLM classes whose ``num_output`` mirrors their
  ``max_tokens`` field (``MockLLM``, OpenAI, Azure OpenAI, Anthropic). Otherwise the price's
  ``max_output_tokens`` applies, and a model without one is refused (``ConfigurationError`` naming
  ``max_tokens``) while budgets are set. A call asking for several choices (``n``, ``best_of`` in its kwargs or
  in the LLM's ``additional_kwargs``) is billed for each: the cap is multiplied by their number.
* Tasks: each outermost LlamaIndex trace (one ``query()``, one ``chat()`` of a chat engine, one bare LLM call) is a
  task, unless an enclosing :func:`frugal_chains.attribute` block sets ``task_id``. Feature, user and tenant come
  from ``attribute(...)`` too: LlamaIndex has no per-call metadata.
* Streaming query engines (``as_query_engine(streaming=True)``) call the LLM lazily in llama-index-core 0.14: the
  call starts when the response stream is consumed, after ``query()`` has returned. The budget check (and
  ``BudgetExceededError``) happens there, as its own task, attributed to the context that consumes the stream:
  consume it inside the ``attribute(...)`` block.
* Nested LLM events: LlamaIndex LLMs often delegate to their own decorated methods (``CustomLLM.chat`` calls
  ``complete``; ``acomplete`` calls ``complete``; ``astream_chat`` iterates ``stream_chat``), and wrapper LLMs
  (``StructuredLLM``) call another LLM. Each level sends its own LLM event. Only the innermost call is counted:
  when an LLM event starts inside another one (found on the call stack), the outer one's reservation is given
  back and the inner one reserves for itself. A ``StructuredLLM``'s event is planned as the LLM it wraps (its
  model, its output cap), so the outer reservation is never larger than the call it stands for. LLMs whose
  ``to_payload()`` sets :data:`frugal_chains.metadata.WRAPPER_KEY` are never counted themselves.

Only **legacy** callback handlers can enforce a budget: instrumentation event handlers
(``llama_index.core.instrumentation``) swallow their exceptions, so they cannot abort a run.
"""

from __future__ import annotations

import contextvars
import os
import sys
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any

import llama_index.core.callbacks.base as _li_callbacks_base
from llama_index.core.callbacks.base_handler import BaseCallbackHandler
from llama_index.core.callbacks.schema import CBEventType, EventPayload
from typing_extensions import Unpack

from frugal_chains._deprecation import deprecated_attributes, old_metadata_keys
from frugal_chains.accounting.context import current_attribution, current_tier
from frugal_chains.accounting.tokens import OUTPUT_CAP_KEYS
from frugal_chains.accounting.usage import Attribution
from frugal_chains.budget.budget import Budget
from frugal_chains.budget.guard import BudgetGuard, GuardOptions, Reservation
from frugal_chains.budget.handler import GuardDriven
from frugal_chains.llama_index import attachment
from frugal_chains.llama_index._convert import openai_message, response_text, usage_of
from frugal_chains.metadata import WRAPPER_KEY

# The trace-id stack of LlamaIndex's callback managers (a ContextVar of lists), to find orphaned reservations;
# if a later LlamaIndex moves it, orphan detection is off (reservations then expire after reservation_ttl).
_trace_ids_var: Any = getattr(_li_callbacks_base, "global_stack_trace_ids", None)

__all__ = ["TokenBudgetHandler"]


_CALLBACKS_FILE = os.path.join("llama_index", "core", "llms", "callbacks.py")
_WRAPPER_EVENTS_FILE = os.path.join("frugal_chains", "llama_index", "_convert.py")
"""Where the cascade's and the cache wrapper's own LLM events are sent (``wrapper_event``): calls nest in them too."""
_MAX_STACK = 400
_PLACEHOLDER_MODEL = "unknown"  # LLMMetadata.model_name's default

# The provider a LlamaIndex LLM class talks to, from its class_name(); it picks the token-estimate margin and
# the ``provider/model`` price lookup. Checked in order (azure before openai; OpenAI-compatible servers are not
# OpenAI).
_PROVIDER_HINTS: tuple[tuple[str, str | None], ...] = (
    ("openailike", None),
    ("openai_like", None),
    ("azure", "azure"),
    ("openai", "openai"),
    ("anthropic", "anthropic"),
    ("bedrock", "bedrock"),
    ("vertex", "vertex_ai"),
    ("gemini", "gemini"),
    ("google", "gemini"),
    ("mistral", "mistral"),
    ("groq", "groq"),
    ("cohere", "cohere"),
    ("ollama", "ollama"),
    ("vllm", "vllm"),
)

_trace_task: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "frugal_chains_li_trace", default=None
)
"""The task id of the outermost LlamaIndex trace running in this context (set by ``start_trace``)."""


# -- request -------------------------------------------------------------------------------------------------
def _tools(kwargs: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """Tool schemas passed to the call (OpenAI-format dicts or LlamaIndex tools)."""
    tools = kwargs.get("tools")
    if not isinstance(tools, Sequence) or isinstance(tools, str) or not tools:
        return None
    out: list[dict[str, Any]] = []
    for tool in tools:
        if isinstance(tool, Mapping):
            out.append(dict(tool))
            continue
        to_openai = getattr(getattr(tool, "metadata", None), "to_openai_tool", None)
        if callable(to_openai):
            try:
                schema = to_openai()
            except Exception:
                continue
            if isinstance(schema, Mapping):
                out.append(dict(schema))
    return out or None


def _model_and_provider(serialized: Mapping[str, Any]) -> tuple[str, str | None]:
    """The model name from the LLM's payload (``to_payload()``: ``class_name`` plus ``LLMMetadata``; integrations
    and older LlamaIndex versions add ``model``). ``model_name`` left at LlamaIndex's ``"unknown"`` placeholder
    falls back to the class name (``"MockLLM"``, ``"custom_llm"``), so prices can name the class."""
    class_name = str(serialized.get("class_name") or "")
    model: str | None = None
    for key in ("model", "model_name", "model_id"):
        v = serialized.get(key)
        if isinstance(v, str) and v and v != _PLACEHOLDER_MODEL:
            model = v
            break
    lowered = class_name.lower()
    provider: str | None = None
    for hint, name in _PROVIDER_HINTS:
        if hint in lowered:
            provider = name
            break
    return model or class_name or _PLACEHOLDER_MODEL, provider


_CHOICE_KEYS = ("n", "best_of")
"""Kwargs asking for several choices, each billed (``best_of`` choices are generated, ``n`` returned)."""
_NUM_OUTPUT_IS_MAX_TOKENS = frozenset(
    {"MockLLM", "MockLLMWithChatMemoryOfLastCall", "openai_llm", "azure_openai_llm", "Anthropic_LLM"}
)
"""``class_name()`` of LLMs whose ``LLMMetadata.num_output`` is their ``max_tokens`` field (``MockLLM``:
``num_output=self.max_tokens or -1``; OpenAI and Azure OpenAI: the same; Anthropic: ``num_output=self.max_tokens``).
For any other LLM ``num_output`` is advice (256 by default), never taken as a cap."""


def _positive_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _llm_instance(serialized: Mapping[str, Any]) -> Any | None:
    """The LLM sending this start event: the ``_self`` local of the ``llm_chat_callback``/
    ``llm_completion_callback`` wrapper (``wrapped_llm_chat``, ``wrapped_llm_predict`` and their async twins)
    whose ``model_dict`` local is this event's ``SERIALIZED`` payload (the wrapper passes it by reference); it is
    on the call stack, calling ``CallbackManager.on_event_start``. ``None`` when the event came from elsewhere."""
    frame: FrameType | None = sys._getframe(1)
    depth = 0
    while frame is not None and depth < _MAX_STACK:
        if frame.f_code.co_filename.endswith(_CALLBACKS_FILE):
            local = frame.f_locals
            if local.get("model_dict") is serialized and "_self" in local:
                return local["_self"]
        frame = frame.f_back
        depth += 1
    return None


def _structured_inner(
    serialized: Mapping[str, Any], instance: Any | None
) -> tuple[Mapping[str, Any], Any | None]:
    """The payload and instance to plan a call with: a ``StructuredLLM`` (``llm.as_structured_llm(...)``, which
    agents with an ``output_cls`` use) sends its own LLM event, but calls the LLM it wraps, whose model, output cap
    and wrapper mark are the ones that apply (its inner call then takes over the reservation)."""
    from llama_index.core.llms.structured_llm import StructuredLLM

    while isinstance(instance, StructuredLLM):
        instance = instance.llm
        try:
            serialized = instance.to_payload()
        except Exception:  # an LLM whose payload fails: plan with what the event sent
            return serialized, instance
    return serialized, instance


def _field(obj: Any, name: str) -> Any:
    try:
        return getattr(obj, name, None)
    except Exception:  # a property that fails
        return None


def _output_cap(
    kwargs: Mapping[str, Any], serialized: Mapping[str, Any], llm: Any | None
) -> tuple[int | None, int]:
    """``(cap, choices)`` for one call. ``cap`` is the largest output cap the provider will enforce: the call's
    ``max_tokens``-like kwargs, the LLM instance's ``max_tokens``-like fields and its ``additional_kwargs``
    (integrations differ in which one wins), and the same keys if the payload carries the LLM's fields (older
    LlamaIndex payloads). ``LLMMetadata.num_output`` counts only when the instance was not found, and only for
    :data:`_NUM_OUTPUT_IS_MAX_TOKENS` classes (``-1`` = none). ``None`` when nothing names a cap: the price's
    ``max_output_tokens`` is used. ``choices`` is the largest ``n``/``best_of`` asked for (1 by default)."""
    sources: list[Mapping[str, Any]] = [kwargs]
    if llm is not None:
        sources.append({key: _field(llm, key) for key in OUTPUT_CAP_KEYS})
        extra = _field(llm, "additional_kwargs")
        if isinstance(extra, Mapping):
            sources.append(extra)
    sources.append(serialized)
    extra = serialized.get("additional_kwargs")
    if isinstance(extra, Mapping):
        sources.append(extra)
    caps = [c for source in sources for key in OUTPUT_CAP_KEYS if (c := _positive_int(source.get(key)))]
    if not caps and llm is None and serialized.get("class_name") in _NUM_OUTPUT_IS_MAX_TOKENS:
        n = _positive_int(serialized.get("num_output"))
        if n is not None:
            caps.append(n)
    choices = [c for source in sources for key in _CHOICE_KEYS if (c := _positive_int(source.get(key)))]
    return (max(caps) if caps else None), max(choices, default=1)


def _current_trace_ids() -> Any:
    return _trace_ids_var.get() if _trace_ids_var is not None else None


# -- the handler -----------------------------------------------------------------------------------------------
@dataclass(eq=False)
class _Call:
    """One open LLM event."""

    res: Reservation | None
    """``None`` for a wrapper (its inner calls are counted) or after the reservation was handed on."""
    attribution: Attribution
    trace_ids: Any
    """The LlamaIndex trace-id list active when the event started (compared by identity)."""
    started: float
    tier: str | None = None
    """The cascade tier the call belongs to (``cascade_tier``), written to ``CallRecord.tier``."""


_IGNORED_STARTS: list[CBEventType] = [
    t for t in CBEventType if t not in (CBEventType.LLM, CBEventType.EXCEPTION)
]
_IGNORED_ENDS: list[CBEventType] = [t for t in CBEventType if t is not CBEventType.LLM]


class TokenBudgetHandler(GuardDriven, BaseCallbackHandler):
    """Prices every LlamaIndex LLM call and stops it **before** it is made when a budget would be exceeded.

    A legacy callback handler: put it on ``Settings.callback_manager = CallbackManager([handler])`` (or on an
    LLM's or a query engine's ``callback_manager``). Instrumentation event handlers cannot do this job: LlamaIndex
    swallows their exceptions, so they cannot abort a run.

    Args:
        budgets: the :class:`~frugal_chains.Budget` limits to enforce (empty: only price and record).
        ledger: where spend lives (default: a new in-memory ``SQLiteLedger``; share one ledger, or use
            ``RedisLedger``, to share budgets between handlers, processes or hosts).
        prices: overrides ``{"model": Price(...)}`` over LiteLLM's price map, or a ``PriceBook``. The model name
            is the LLM's ``metadata.model_name``, or its ``class_name()`` when that is LlamaIndex's placeholder
            ``"unknown"`` (``"MockLLM"`` for ``MockLLM``).
        unknown_model, margins, unknown_model_image_tokens, on_ledger_error, reservation_ttl, on_alert, anomaly,
        assume_max_output, observed_output:
            the guard's options
            (:class:`~frugal_chains.budget.GuardOptions`, each documented on
            :class:`~frugal_chains.budget.BudgetGuard`).
        guard: an existing :class:`~frugal_chains.budget.BudgetGuard` to drive instead of the above.

    The worst case of a call is its estimated prompt plus its output cap, the one the provider enforces: the
    largest of the call's ``max_tokens``-like kwargs and the LLM instance's ``max_tokens``, ``max_new_tokens``,
    ``max_completion_tokens``, ``max_output_tokens``, ``num_predict`` fields and ``additional_kwargs``; else the
    price's ``max_output_tokens``, lowered by ``assume_max_output`` or ``observed_output`` when given (a model with
    none of them is refused with a ``ConfigurationError`` while budgets are
    set). ``LLMMetadata.num_output`` is not a cap (256 for any ``CustomLLM`` by default): it is used only when the
    LLM instance cannot be found on the call stack, and only for classes whose ``num_output`` is their
    ``max_tokens`` (``MockLLM``, OpenAI, Azure OpenAI, Anthropic). The cap is multiplied by the number of choices
    the call asks for (``n``, ``best_of``), each being billed.

    Attribution (feature, user, tenant, task) comes from an enclosing :func:`frugal_chains.attribute` block;
    without a ``task_id`` there, each outermost LlamaIndex trace (one ``query()``) is a task.

    Example:
        >>> from llama_index.core.callbacks import CallbackManager
        >>> from llama_index.core.llms.mock import MockLLM
        >>> from frugal_chains import Budget, BudgetExceededError, Price
        >>> from frugal_chains.llama_index import TokenBudgetHandler
        >>> handler = TokenBudgetHandler(
        ...     [Budget(max_usd=0.0005, scope="global")], prices={"MockLLM": Price(input=1.0, output=2.0)})
        >>> llm = MockLLM(max_tokens=64, callback_manager=CallbackManager([handler]))
        >>> llm.complete("hi").text.count("text")
        64
        >>> calls = 1
        >>> try:
        ...     while True:
        ...         _ = llm.complete("hi")
        ...         calls += 1
        ... except BudgetExceededError as e:
        ...     print(calls, e.unit)
        3 usd
        >>> round(sum(r.cost_usd for r in handler.ledger.records()), 6)
        0.000414
    """

    def __init__(
        self,
        budgets: Sequence[Budget] | Budget = (),
        *,
        guard: BudgetGuard | None = None,
        **options: Unpack[GuardOptions],
    ) -> None:
        super().__init__(event_starts_to_ignore=_IGNORED_STARTS, event_ends_to_ignore=_IGNORED_ENDS)
        self.core = BudgetGuard.for_handler(guard, budgets, **options)
        self._calls: dict[str, _Call] = {}
        self._lock = threading.Lock()
        self._wrapped: tuple[Any, ...] = ()
        """LLMs ``configure()`` wrapped in ``_wrapper`` (a call made to one directly bypassed the wrapper)."""
        self._wrapper = ""
        attachment.install()  # warns when a handler on Settings.callback_manager misses a call

    # -- traces = tasks -----------------------------------------------------------------------------------------
    def start_trace(self, trace_id: str | None = None) -> None:
        """An outermost trace starts (LlamaIndex calls handlers for the outermost one only): a new task."""
        _trace_task.set(f"{trace_id or 'trace'}-{uuid.uuid4().hex}")

    def end_trace(self, trace_id: str | None = None, trace_map: dict[str, list[str]] | None = None) -> None:
        _trace_task.set(None)

    # -- events ---------------------------------------------------------------------------------------------------
    def on_event_start(
        self,
        event_type: CBEventType,
        payload: dict[str, Any] | None = None,
        event_id: str = "",
        parent_id: str = "",
        **kwargs: Any,
    ) -> str:
        if event_type == CBEventType.LLM:
            self._start_llm(payload or {}, event_id)
        elif event_type == CBEventType.EXCEPTION:
            self._release_orphans()
        return event_id

    def on_event_end(
        self,
        event_type: CBEventType,
        payload: dict[str, Any] | None = None,
        event_id: str = "",
        **kwargs: Any,
    ) -> None:
        if event_type != CBEventType.LLM:
            return
        with self._lock:
            call = self._calls.pop(event_id, None)
        if call is None or call.res is None:
            return
        res = call.res
        payload = payload or {}
        error = payload.get(EventPayload.EXCEPTION)
        if error is not None and not isinstance(error, Exception):
            # interrupted (GeneratorExit: the consumer closed the stream early; CancelledError: the task was
            # cancelled): billed for an unknown part of it, so exactly the worst case that was reserved
            self.core.commit(
                res,
                self.core.worst_usage(res),
                usage_estimated=True,
                extra={"interrupted": type(error).__name__},
                tier=call.tier,
            )
            return
        if error is not None:
            self.core.release(res)
            return
        response = payload.get(EventPayload.RESPONSE)
        if response is None:
            response = payload.get(EventPayload.COMPLETION)
        usage, model = usage_of(response)
        estimated = usage is None
        if usage is None:
            usage = self.core.estimated_usage(res, response_text(response))
        self.core.commit(res, usage, model=model, usage_estimated=estimated, tier=call.tier)

    # -- internals ------------------------------------------------------------------------------------------------
    def _enclosing(self) -> _Call | None:
        """The open LLM event whose decorated call (or stream) is running below this one on the call stack."""
        frame: FrameType | None = sys._getframe(2)
        depth = 0
        while frame is not None and depth < _MAX_STACK:
            if frame.f_code.co_filename.endswith((_CALLBACKS_FILE, _WRAPPER_EVENTS_FILE)):
                event_id = frame.f_locals.get("event_id")
                if isinstance(event_id, str):
                    with self._lock:
                        call = self._calls.get(event_id)
                    if call is not None:
                        return call
            frame = frame.f_back
            depth += 1
        return None

    def _start_llm(self, payload: Mapping[str, Any], event_id: str) -> None:
        event_id = event_id or uuid.uuid4().hex
        self._prune()
        serialized = payload.get(EventPayload.SERIALIZED)
        serialized = serialized if isinstance(serialized, Mapping) else {}
        call_kwargs = payload.get(EventPayload.ADDITIONAL_KWARGS)
        call_kwargs = call_kwargs if isinstance(call_kwargs, Mapping) else {}
        trace_ids = _current_trace_ids()

        outer = self._enclosing()
        if outer is not None:
            # count the innermost call only: the outer one becomes a wrapper and gives its reservation back
            with self._lock:
                handed, outer.res = outer.res, None
            if handed is not None:
                self.core.release(handed)
            attribution = outer.attribution
        else:
            attribution = current_attribution().merged(
                Attribution(task_id=_trace_task.get() or f"llm-{event_id}")
            )

        res: Reservation | None = None
        instance = _llm_instance(serialized)
        serialized, instance = _structured_inner(serialized, instance)
        if not serialized.get(WRAPPER_KEY):
            messages = payload.get(EventPayload.MESSAGES)
            if messages is not None:
                openai_messages = [openai_message(m) for m in messages]
            else:
                prompt = payload.get(EventPayload.PROMPT)
                openai_messages = [{"role": "user", "content": "" if prompt is None else str(prompt)}]
            model, provider = _model_and_provider(serialized)
            if outer is None and instance is not None and any(instance is w for w in self._wrapped):
                attachment.warn_bypassed(self, model, self._wrapper)
            cap, choices = _output_cap(call_kwargs, serialized, instance)
            plan = self.core.plan(
                openai_messages,
                model=model,
                provider=provider,
                max_output_tokens=cap,
                choices=choices,
                tools=_tools(call_kwargs),
                attribution=attribution,
                tier=current_tier(),
            )
            res = self.core.reserve(plan)
        with self._lock:
            self._calls[event_id] = _Call(
                res=res,
                attribution=attribution,
                trace_ids=trace_ids,
                started=time.monotonic(),
                tier=current_tier(),
            )

    def _release_orphans(self) -> None:
        """An exception is leaving a trace. A reservation made in that very trace activation and still open was
        orphaned: another handler raised in ``on_event_start`` after this one reserved, so the LLM decorator
        never sends its end event. (A call that failed itself already got its end event, with the error.)"""
        current = _current_trace_ids()
        if not current:  # outside any trace (LlamaIndex's shared empty default list): nothing to match
            return
        orphans: list[Reservation] = []
        with self._lock:
            for event_id, call in list(self._calls.items()):
                if call.trace_ids is current:
                    del self._calls[event_id]
                    if call.res is not None:
                        orphans.append(call.res)
        for res in orphans:
            self.core.release(res)

    def _prune(self) -> None:
        """Forget events that never ended (a stream never iterated) once the ledger has expired them."""
        cutoff = time.monotonic() - self.core.reservation_ttl.total_seconds()
        with self._lock:
            stale = [k for k, c in self._calls.items() if c.started < cutoff]
            for k in stale:
                del self._calls[k]


__getattr__ = deprecated_attributes(__name__, old_metadata_keys("WRAPPER_PAYLOAD_KEY"))
