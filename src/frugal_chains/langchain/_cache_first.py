"""Cached answers for calls a budget refused, under LangChain's own cache (``set_llm_cache``, ``cache=``).

LangChain fires ``on_chat_model_start`` (where the budget handler reserves) **before** it looks the call up in its
cache. When the reservation is refused, :func:`hold_cached_answer` asks the cache that will serve this very call
(the model's ``cache=`` or the global one, when it is a :class:`~frugal_chains.langchain.SemanticCache` whose
lookup is not overridden) for the answer, with the exact ``prompt`` and ``llm_string`` LangChain is about to look
up (read from the frame of ``BaseChatModel.generate``/``agenerate`` that sent the event). A found answer is pinned
to the run; the call goes ahead with no reservation, and the cache's lookup for that run (found by the
``run_manager`` of LangChain's ``_generate_with_cache``) serves exactly the pinned entry, or raises the refusal: the
provider is never called without a reservation.

Nothing here runs while reservations succeed, and a lookup costs one dictionary check while no answer is held.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import CodeType, FrameType
from typing import TYPE_CHECKING, Any
from uuid import UUID

from langchain_core.caches import BaseCache
from langchain_core.globals import get_llm_cache
from langchain_core.language_models import BaseChatModel
from langchain_core.load import dumps
from langchain_core.messages import BaseMessage

from frugal_chains.langchain._attribution import manager_attribution, run_attribution

if TYPE_CHECKING:
    from frugal_chains.cache.core import CachePin
    from frugal_chains.errors import BudgetExceededError
    from frugal_chains.langchain.cache import SemanticCache

__all__ = ["Held", "caller_attribution", "forget_aborted", "held_for_caller", "hold_cached_answer"]

_WITH_CACHE: dict[CodeType, str] = {
    # the frames that send on_chat_model_start and then look the call up (stream() never looks up), with the method
    # they look it up in
    BaseChatModel.generate.__code__: "_generate_with_cache",
    BaseChatModel.agenerate.__code__: "_agenerate_with_cache",
}
_CACHE_LOOKUP = {"_generate_with_cache": "lookup", "_agenerate_with_cache": "alookup"}
"""The cache method each of LangChain's lookups calls: only SemanticCache's own serves a held answer."""
_LOOKUP_CALLERS: tuple[CodeType, ...] = (
    BaseChatModel._generate_with_cache.__code__,
    BaseChatModel._agenerate_with_cache.__code__,
)
_MAX_DEPTH = 32
"""Frames searched: the handler is a few calls below ``generate`` (``handle_event`` and the manager's method),
the lookup one call below ``_generate_with_cache`` (more if a subclass of the cache overrides it)."""
_MAX_HELD = 10_000
"""Held answers are taken by their run's lookup at once; one whose run was aborted before its lookup (another
handler raised in ``on_chat_model_start``) is dropped, oldest first, past this many."""


@dataclass(frozen=True)
class Held:
    """The answer held for one run: served by that run's lookup of exactly this prompt and llm_string."""

    cache: SemanticCache
    pin: CachePin[Any]
    prompt: str
    llm_string: str
    refusal: BudgetExceededError
    call: Any
    """The ``invocation_params`` of the ``generate`` call (one object for all its runs)."""


log = logging.getLogger("frugal_chains.budget")

_held: collections.OrderedDict[UUID, Held] = collections.OrderedDict()
_lock = threading.Lock()


def _frame_of(
    codes: Sequence[CodeType] | Mapping[CodeType, Any], start: FrameType | None
) -> FrameType | None:
    frame, depth = start, 0
    while frame is not None and depth < _MAX_DEPTH:
        if frame.f_code in codes:
            return frame
        frame, depth = frame.f_back, depth + 1
    return None


def _normalize_messages() -> Any | None:
    """LangChain's own message normaliser (what ``generate`` applies before the lookup); None if it moved: then no
    answer is held and refused calls stay refused."""
    try:
        from langchain_core.language_models._utils import _normalize_messages as normalize
    except ImportError:  # pragma: no cover - another langchain-core layout
        return None
    return normalize


def _call_of(
    messages: Sequence[Sequence[BaseMessage]], invocation_params: Any
) -> tuple[BaseChatModel, list[BaseMessage], list[str] | None, dict[str, Any], str] | None:
    """``(model, messages, stop, kwargs, lookup method)`` of the ``generate``/``agenerate`` call that sent this start
    event (its ``params`` local is the event's ``invocation_params``), or None."""
    frame = _frame_of(_WITH_CACHE, sys._getframe(1))
    while frame is not None:
        local = frame.f_locals
        if local.get("params") is invocation_params:
            break
        frame = _frame_of(_WITH_CACHE, frame.f_back)
    if frame is None or len(messages) != 1:
        return None
    local = frame.f_locals
    model, traced, raw = local.get("self"), local.get("messages_to_trace"), local.get("messages")
    stop, kwargs = local.get("stop"), local.get("kwargs")
    if not isinstance(model, BaseChatModel) or not isinstance(traced, list) or not isinstance(raw, list):
        return None
    index = next((i for i, batch in enumerate(traced) if batch is messages[0]), None)
    if index is None or index >= len(raw) or not isinstance(kwargs, dict):
        return None
    return model, list(raw[index]), stop, kwargs, _WITH_CACHE[frame.f_code]


def _cache_of(model: BaseChatModel, lookup: str) -> SemanticCache | None:
    """The frugal-chains cache LangChain's lookup will use for ``model``, if it is one and the model looks up the
    standard way."""
    from frugal_chains.langchain.cache import SemanticCache

    if getattr(type(model), lookup, None) is not getattr(BaseChatModel, lookup):
        return None  # a model with its own cache logic: its lookup may not be the one we expect
    if model.cache is False:
        return None
    cache = model.cache if isinstance(model.cache, BaseCache) else get_llm_cache()
    if not isinstance(cache, SemanticCache):
        return None
    method = _CACHE_LOOKUP[lookup]
    if getattr(type(cache), method, None) is not getattr(SemanticCache, method):
        return None  # a subclass with a lookup of its own: it may never serve the held answer
    return cache


def _probe(
    messages: Sequence[Sequence[BaseMessage]], invocation_params: Any
) -> tuple[SemanticCache, CachePin[Any], str, str] | None:
    """The answer LangChain's lookup for this call would serve now, with the cache, prompt and llm_string of that
    lookup; None when there is none or the lookup is not the standard one."""
    call = _call_of(messages, invocation_params)
    normalize = _normalize_messages()
    if call is None or normalize is None:
        return None
    model, raw, stop, kwargs, lookup = call
    cache = _cache_of(model, lookup)
    if cache is None:
        return None
    # what BaseChatModel._generate_with_cache looks up
    normalized = [
        m.model_copy(update={"id": None}) if getattr(m, "id", None) is not None else m for m in normalize(raw)
    ]
    prompt = dumps(normalized)
    llm_string = model._get_llm_string(stop=stop, **kwargs)
    pin = cache._pin(prompt, llm_string)
    return None if pin is None else (cache, pin, prompt, llm_string)


def hold_cached_answer(
    run_id: UUID,
    messages: Sequence[Sequence[BaseMessage]],
    invocation_params: Any,
    refusal: BudgetExceededError,
    *,
    metadata: Mapping[str, Any] | None = None,
    tags: Sequence[str] | None = None,
) -> bool:
    """True if the cache this chat-model run will look up holds its answer: the answer is then held for the run
    (its lookup serves it or raises ``refusal``). Called by the budget handler only for a refused reservation,
    with the run's ``metadata`` and ``tags``: probed under the attribution (and tenant) its lookup will have."""
    try:
        with run_attribution(metadata, tags):
            found = _probe(messages, invocation_params)
    except Exception as e:  # the refusal stands: a probe that fails never lets a call through
        log.warning("frugal-chains: could not look for a cached answer to a refused call: %r", e)
        found = None
    if found is None:
        _forget(invocation_params)
        return False
    cache, pin, prompt, llm_string = found
    # raised again by the lookup if it cannot serve the answer; its traceback would keep this call's frames alive
    refusal = refusal.with_traceback(None)
    with _lock:
        _held[run_id] = Held(cache, pin, prompt, llm_string, refusal, invocation_params)
        while len(_held) > _MAX_HELD:
            _held.popitem(last=False)
    return True


def _forget(invocation_params: Any) -> None:
    """This run is refused, which aborts its whole ``generate`` call: no lookup will take the answers held for the
    call's other runs (a batch of conversations)."""
    if not _held:
        return
    with _lock:
        for run_id in [k for k, held in _held.items() if held.call is invocation_params]:
            del _held[run_id]


def forget_aborted(run_id: UUID) -> None:
    """Run ``run_id`` failed, which aborts its whole ``generate`` call: the answers held for the call's later runs
    (a batch of conversations) will never be looked up. One dictionary check while nothing is held."""
    if not _held:
        return
    frame = _frame_of(_WITH_CACHE, sys._getframe(1))
    while frame is not None:
        managers = frame.f_locals.get("run_managers")
        if isinstance(managers, list) and any(getattr(m, "run_id", None) == run_id for m in managers):
            params = frame.f_locals.get("params")
            if params is not None:
                _forget(params)
            return
        frame = _frame_of(_WITH_CACHE, frame.f_back)


def _caller_run_manager(start: FrameType | None) -> Any | None:
    """The ``run_manager`` of the ``_generate_with_cache``/``_agenerate_with_cache`` frame at or above ``start``."""
    frame = _frame_of(_LOOKUP_CALLERS, start)
    return None if frame is None else frame.f_locals.get("run_manager")


def caller_attribution() -> contextlib.AbstractContextManager[None]:
    """For a cache's lookup or store: an :func:`~frugal_chains.attribute` block with the metadata and tags of the
    chat-model run whose ``_generate_with_cache`` called it (LangChain passes the cache no run manager); no block
    when there is none."""
    return manager_attribution(_caller_run_manager(sys._getframe(1)))


def held_for_caller() -> Held | None:
    """The answer held for the chat-model run whose ``_generate_with_cache`` called this lookup (taken: served
    once), or None. One dictionary check while nothing is held."""
    if not _held:
        return None
    run_id = getattr(_caller_run_manager(sys._getframe(2)), "run_id", None)
    if run_id is None:
        return None
    with _lock:
        return _held.pop(run_id, None)
