"""Carrying scopes into worker threads, and a warning when they did not get there.

``budget_scope``, ``cache_scope`` and ``attribute`` live in context variables. Every asyncio task gets a copy of
the context it was created in, and LangChain copies it into its own worker threads (``batch``,
``RunnableParallel``), but a plain ``ThreadPoolExecutor``, a ``threading.Thread`` and ``loop.run_in_executor``
start from an **empty** context: work sent there runs outside every scope (no budget, no tenant partition, no
attribution). Send it with the helpers here instead:

* :class:`ScopedThreadPoolExecutor`: a ``ThreadPoolExecutor`` whose ``submit`` and ``map`` run each call in a
  copy of the submitting context;
* :func:`carry_scopes`: wraps a function so that it runs in a copy of the context it was wrapped in; use it for
  ``threading.Thread(target=carry_scopes(fn))`` and ``loop.run_in_executor(None, carry_scopes(fn), ...)``
  (``asyncio.to_thread`` already copies the context).

When a call finds no scope of a kind in its context while a scope of that kind is open in **another thread** of the
process, a :class:`ScopeNotPropagatedWarning` is issued, once per kind per process, naming the fix. Only a call
whose context was not copied from a known one is warned about: a plain thread starts from an empty context, while
asyncio tasks, ``asyncio.to_thread``, LangChain's ``batch`` threads and the helpers here copy the context they
were sent from (the one frugal-chains was imported in, or one a scope was opened in), so an asyncio task without a
scope next to tasks with one had no scope to lose and is left alone. A thread that runs unscoped work on purpose
while other threads hold scopes (a thread-per-request server where only some requests
set a scope) can silence the warning with ``warnings.filterwarnings("ignore", category=ScopeNotPropagatedWarning)``.

Example:
    >>> from frugal_chains import ScopedThreadPoolExecutor, attribute, carry_scopes
    >>> from frugal_chains.accounting import current_attribution
    >>> with attribute(tenant_id="acme"), ScopedThreadPoolExecutor(max_workers=2) as pool:
    ...     tenants = list(pool.map(lambda _: current_attribution().tenant_id, range(3)))
    >>> tenants
    ['acme', 'acme', 'acme']
    >>> import threading
    >>> seen = []
    >>> with attribute(tenant_id="globex"):
    ...     t = threading.Thread(target=carry_scopes(lambda: seen.append(current_attribution().tenant_id)))
    ...     t.start()
    >>> t.join()
    >>> seen
    ['globex']
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import os
import threading
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Literal, ParamSpec, TypeVar, cast

__all__ = ["ScopeNotPropagatedWarning", "ScopedThreadPoolExecutor", "carry_scopes"]

P = ParamSpec("P")
T = TypeVar("T")

Kind = Literal["budget_scope", "cache_scope", "attribute"]

_FIX = (
    "Send work to threads with frugal_chains.ScopedThreadPoolExecutor, or wrap the function with "
    "frugal_chains.carry_scopes(fn) (threading.Thread targets, loop.run_in_executor); see docs/concurrency.md."
)
_WHAT: dict[str, str] = {
    "budget_scope": (
        "a LangChain run started in a thread where no budget_scope is active, while one is active in another "
        "thread: its calls are neither checked against that scope's budgets nor recorded in its ledger."
    ),
    "cache_scope": (
        "a cache lookup ran in a thread where no cache_scope is active, while one is active in another thread: "
        "it used the unscoped partition (no tenant, user or namespace)."
    ),
    "attribute": (
        "an LLM call or cache lookup ran in a thread where no attribute(...) block is active, while one is "
        "active in another thread: it is attributed to no feature, user, tenant or task (per-tenant budgets "
        "and tenant cache partitions do not apply to it)."
    ),
}


class ScopeNotPropagatedWarning(UserWarning):
    """A call ran without a scope (``budget_scope``, ``cache_scope``, ``attribute``) while one is open in another
    thread: most likely work was sent to a thread that does not copy context variables. Issued once per kind per
    process; filter it with ``warnings.filterwarnings("ignore", category=ScopeNotPropagatedWarning)`` when
    unscoped threads are intended.

    Example:
        >>> import warnings
        >>> from frugal_chains import ScopeNotPropagatedWarning
        >>> warnings.filterwarnings("ignore", category=ScopeNotPropagatedWarning)
        >>> issubclass(ScopeNotPropagatedWarning, UserWarning)
        True
    """


_KNOWN: contextvars.ContextVar[bool] = contextvars.ContextVar("frugal_chains_known_context", default=False)
"""Set in the context that imported frugal-chains (and in every context a scope was opened in): every copy of
it (an asyncio task, ``asyncio.to_thread``, LangChain's ``batch`` threads) has it too, while a plain new thread
starts from an empty context without it. A call without a scope in a marked context had no scope to lose."""
_KNOWN.set(True)

_lock = threading.Lock()
_open: dict[str, dict[int, int]] = {"budget_scope": {}, "cache_scope": {}, "attribute": {}}
"""Open scopes of each kind, counted per thread (``threading.get_ident()``)."""
_warned: set[str] = set()


@contextmanager
def tracked(kind: Kind) -> Iterator[None]:
    """Count a scope of ``kind`` as open in this thread while the block runs (the scope context managers use it)."""
    ident = threading.get_ident()
    counts = _open[kind]
    _KNOWN.set(True)  # not reset: this context, and what is copied from it, carries scopes
    with _lock:
        counts[ident] = counts.get(ident, 0) + 1
    try:
        yield
    finally:
        with _lock:
            left = counts.get(ident, 0) - 1
            if left > 0:
                counts[ident] = left
            else:
                counts.pop(ident, None)


def open_elsewhere(kind: Kind) -> bool:
    """True if a scope of ``kind`` is open in a thread other than this one."""
    counts = _open[kind]
    if not counts:
        return False
    ident = threading.get_ident()
    with _lock:
        return any(n > 0 for t, n in counts.items() if t != ident)


def unscoped(kind: Kind, stacklevel: int = 3) -> None:
    """A call found no scope of ``kind`` in its context: warn (once per kind per process) when one is open in
    another thread."""
    if kind in _warned or not _open[kind] or _KNOWN.get() or not open_elsewhere(kind):
        return
    with _lock:
        if kind in _warned:
            return
        _warned.add(kind)
    warnings.warn(f"frugal-chains: {_WHAT[kind]} {_FIX}", ScopeNotPropagatedWarning, stacklevel=stacklevel)


def _reset_warnings() -> None:
    """Forget which kinds were warned about (tests)."""
    with _lock:
        _warned.clear()


def _after_fork() -> None:
    """Only the forking thread lives on in a child process: the other threads' scopes are gone."""
    ident = threading.get_ident()
    global _lock
    _lock = threading.Lock()
    for counts in _open.values():
        for t in [t for t in counts if t != ident]:
            del counts[t]


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def carry_scopes(fn: Callable[P, T]) -> Callable[P, T]:
    """``fn`` bound to the scopes active **now** (``budget_scope``, ``cache_scope``, ``attribute`` and any other
    context variable): each call runs in a fresh copy of this context, whichever thread makes it.

    Use it for ``threading.Thread(target=carry_scopes(work))`` and
    ``loop.run_in_executor(executor, carry_scopes(work), *args)``. Wrap inside the scope, where the work is sent.
    An ``async def`` function stays a coroutine function whose body runs in a task made in this context, e.g. for
    ``asyncio.run_coroutine_threadsafe(carry_scopes(job)(), other_loop)``.

    Example:
        >>> import asyncio
        >>> from frugal_chains import cache_scope, carry_scopes
        >>> from frugal_chains.cache import current_cache_scope
        >>> async def main() -> str | None:
        ...     with cache_scope(tenant_id="acme"):
        ...         fn = carry_scopes(lambda: current_cache_scope().tenant_id)
        ...         return await asyncio.get_running_loop().run_in_executor(None, fn)
        >>> asyncio.run(main())
        'acme'
    """
    context = contextvars.copy_context()

    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def arun(*args: Any, **kwargs: Any) -> Any:
            # a task copies the context current where it is created: create it inside the carried one
            task = context.copy().run(asyncio.get_running_loop().create_task, fn(*args, **kwargs))
            return await task

        return cast("Callable[P, T]", arun)

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        # a copy per call: one Context cannot be entered by two threads at once
        return context.copy().run(fn, *args, **kwargs)

    return run


class ScopedThreadPoolExecutor(ThreadPoolExecutor):
    """A ``ThreadPoolExecutor`` that runs every submitted call in a copy of the submitting context, so
    ``budget_scope``, ``cache_scope`` and ``attribute`` blocks reach the worker threads (LangChain's own
    ``ContextThreadPoolExecutor`` does the same for its ``batch``). ``map`` submits every call from the calling
    thread through :meth:`submit`, so it carries the scopes too.

    Example:
        >>> from frugal_chains import ScopedThreadPoolExecutor, cache_scope
        >>> from frugal_chains.cache import current_cache_scope
        >>> with ScopedThreadPoolExecutor(max_workers=4) as pool:
        ...     with cache_scope(tenant_id="acme"):
        ...         future = pool.submit(lambda: current_cache_scope().tenant_id)
        ...     with cache_scope(tenant_id="globex"):
        ...         other = pool.submit(lambda: current_cache_scope().tenant_id)
        >>> future.result(), other.result()
        ('acme', 'globex')
    """

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        """``ThreadPoolExecutor.submit`` in a copy of the current context."""
        context = contextvars.copy_context()
        return super().submit(functools.partial(context.run, fn, *args, **kwargs))
