"""Late attachment: a budget handler, or a configured LLM, that a LlamaIndex component does not see.

LlamaIndex components take their callback manager and their LLM when they are built (``Settings.callback_manager``
and ``Settings.llm`` at that moment, unless they were given their own), so a handler or an LLM set on ``Settings``
afterwards never reaches them: the calls are made, nothing is checked or recorded, and nothing says so. What is
detected (each warned about once per handler, with the fix):

* :class:`BudgetNotAttachedWarning`: an LLM call runs with a callback manager that lacks a
  :class:`~frugal_chains.llama_index.TokenBudgetHandler` found on ``Settings.callback_manager``. Checked at the
  start of every LlamaIndex LLM call (an instrumentation event handler, installed when the first
  ``TokenBudgetHandler`` is built, reads the calling LLM's manager) and at the start of every ``CachedLLM`` /
  ``CascadeLLM`` call (a cache hit makes no inner call). A handler given only to a component's own manager, never
  to ``Settings``, is not looked for.
* :class:`LLMNotAttachedWarning`: an LLM that :func:`~frugal_chains.llama_index.configure` wrapped in a cache or a
  cascade is called directly, outside that wrapper (a query engine built before ``configure()`` keeps the LLM it
  was built with). Seen by the configured handler, so only where it is attached.

``configure()`` itself avoids the first case where LlamaIndex allows it: it adds its handler to the
``Settings.callback_manager`` object that components built earlier already hold, instead of replacing it.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import warnings
import weakref
from collections.abc import Sequence
from types import FrameType
from typing import Any

from llama_index.core import Settings
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events.llm import LLMChatStartEvent, LLMCompletionStartEvent

__all__ = ["BudgetNotAttachedWarning", "LLMNotAttachedWarning"]

log = logging.getLogger("frugal_chains.budget")

_CALLBACKS_FILE = os.path.join("llama_index", "core", "llms", "callbacks.py")
_MAX_STACK = 60


class BudgetNotAttachedWarning(UserWarning):
    """An LLM call that a :class:`~frugal_chains.llama_index.TokenBudgetHandler` on ``Settings.callback_manager``
    does not see: its budgets do not apply to the call and it is not recorded.

    The component making the call (a query engine, a chat engine, an index) was built before the handler was put
    on ``Settings.callback_manager``, or was given a callback manager of its own. Issued once per handler.

    Example:
        >>> import warnings
        >>> from llama_index.core import Settings
        >>> from llama_index.core.callbacks import CallbackManager
        >>> from llama_index.core.llms import MockLLM
        >>> from frugal_chains.llama_index import BudgetNotAttachedWarning, TokenBudgetHandler
        >>> llm = MockLLM(max_tokens=8, callback_manager=CallbackManager([]))  # built with its own manager
        >>> previous, Settings.callback_manager = Settings._callback_manager, CallbackManager([TokenBudgetHandler()])
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     _ = llm.complete("hi")
        >>> [w.category.__name__ for w in caught]
        ['BudgetNotAttachedWarning']
        >>> Settings._callback_manager = previous
    """


class LLMNotAttachedWarning(UserWarning):
    """An LLM that :func:`~frugal_chains.llama_index.configure` wrapped in a cache or a cascade was called directly:
    the cache (or cascade) was bypassed for that call.

    A query engine, chat engine or agent built before ``configure()`` keeps the LLM it was built with: build it
    after ``configure()``, or give it ``llm=frugal.llm``. Issued once per configuration.

    Example:
        >>> import warnings
        >>> from llama_index.core.llms import MockLLM
        >>> from frugal_chains.cache import AnswerCache
        >>> from frugal_chains.llama_index import LLMNotAttachedWarning, configure
        >>> from frugal_chains.testing import HashEmbeddings
        >>> llm = MockLLM(max_tokens=8)
        >>> with configure(llm, cache=AnswerCache(embedder=HashEmbeddings())) as frugal:
        ...     with warnings.catch_warnings(record=True) as caught:
        ...         warnings.simplefilter("always")
        ...         _ = llm.complete("hi")  # not frugal.llm.complete: the cache never sees it
        >>> [w.category.__name__ for w in caught]
        ['LLMNotAttachedWarning']
    """


_warned: dict[str, weakref.WeakSet[Any]] = {"budget": weakref.WeakSet(), "llm": weakref.WeakSet()}
_warned_lock = threading.Lock()


def _first_time(handler: Any, kind: str) -> bool:
    with _warned_lock:
        if handler in _warned[kind]:
            return False
        _warned[kind].add(handler)
        return True


def settings_handlers() -> list[Any]:
    """The budget handlers on ``Settings.callback_manager`` (read without creating one)."""
    from frugal_chains.llama_index.budget import TokenBudgetHandler

    manager = Settings._callback_manager
    if manager is None:
        return []
    return [h for h in getattr(manager, "handlers", ()) if isinstance(h, TokenBudgetHandler)]


def check_attached(manager: Any, model: str | None = None) -> None:
    """Warn (:class:`BudgetNotAttachedWarning`, once per handler) when ``Settings.callback_manager`` holds a budget
    handler that ``manager``, the callback manager of the LLM call about to start, lacks."""
    handlers = settings_handlers()
    if not handlers:
        return
    present: Sequence[Any] = getattr(manager, "handlers", None) or ()
    for handler in handlers:
        if any(h is handler for h in present) or not _first_time(handler, "budget"):
            continue
        what = f"an LLM call ({model})" if model else "an LLM call"
        warnings.warn(
            BudgetNotAttachedWarning(
                f"{what} runs with a callback manager that does not hold the TokenBudgetHandler set on "
                "Settings.callback_manager: its budgets do not apply to this call and it is not recorded. The "
                "component making the call (a query engine, chat engine, index or agent) was built before the "
                "handler was set, or was given a callback manager of its own. Build it after setting the handler "
                "(frugal_chains.llama_index.configure() adds it to the manager components already hold), or give "
                "it a callback manager holding the handler; see docs/llama_index.md."
            ),
            stacklevel=3,
        )


def warn_bypassed(handler: Any, model: str, wrapper: str) -> None:
    """Warn (:class:`LLMNotAttachedWarning`, once per ``handler``) that ``model`` was called outside ``wrapper``."""
    if not _first_time(handler, "llm"):
        return
    warnings.warn(
        LLMNotAttachedWarning(
            f"{model} was called directly, not through the {wrapper} that configure() set as Settings.llm: its "
            "cache or cascade was bypassed for this call. A query engine, chat engine or agent built before "
            "configure() keeps the LLM it was built with: build it after configure(), or give it llm=frugal.llm."
        ),
        stacklevel=4,
    )


def _calling_manager() -> Any | None:
    """The callback manager of the LLM call sending this instrumentation start event: a local of the
    ``llm_chat_callback``/``llm_completion_callback`` wrapper, which sends the event itself."""
    frame: FrameType | None = sys._getframe(2)
    depth = 0
    while frame is not None and depth < _MAX_STACK:
        if frame.f_code.co_filename.endswith(_CALLBACKS_FILE):
            local = frame.f_locals
            if "_self" in local and "callback_manager" in local:
                return local["callback_manager"]
        frame = frame.f_back
        depth += 1
    return None


class _AttachmentCheck(BaseEventHandler):
    """On the root instrumentation dispatcher: runs :func:`check_attached` at the start of every LLM call
    (instrumentation events reach it whatever callback manager the call has)."""

    @classmethod
    def class_name(cls) -> str:
        return "FrugalBudgetAttachmentCheck"

    def handle(self, event: Any, **kwargs: Any) -> None:
        if not isinstance(event, (LLMChatStartEvent, LLMCompletionStartEvent)):
            return
        if not settings_handlers():
            return
        manager = _calling_manager()
        if manager is not None:
            model = event.model_dict.get("model_name") or event.model_dict.get("class_name")
            try:
                check_attached(manager, str(model) if model else None)
            except BudgetNotAttachedWarning as e:
                # a warnings filter made it an error (filterwarnings=error), which LlamaIndex's dispatcher would
                # swallow: the once-only warning would be lost, so it is logged instead
                log.error("frugal-chains: %s", e)


_install_lock = threading.Lock()
_installed = False


def install() -> None:
    """Put the attachment check on LlamaIndex's root instrumentation dispatcher (once per process)."""
    global _installed
    if _installed:
        return
    with _install_lock:
        if not _installed:
            from llama_index.core.instrumentation import get_dispatcher  # type: ignore[attr-defined]

            get_dispatcher().add_event_handler(_AttachmentCheck())
            _installed = True
