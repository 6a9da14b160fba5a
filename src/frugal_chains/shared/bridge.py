"""The sync/async bridge: tell async functions apart, run an awaitable from sync code when that is safe, and name a
user's function.

Used by the quality gates (a judge or a gate function may be ``async def``) and the callable router scorer.

Example:
    >>> from frugal_chains.shared.bridge import is_async_callable, resolve_sync
    >>> async def f():
    ...     return 42
    >>> is_async_callable(f), resolve_sync(f(), "f"), resolve_sync(7, "a plain value")
    (True, 42, 7)
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable
from typing import Any

from frugal_chains.errors import ConfigurationError

__all__ = ["callable_name", "is_async_callable", "loop_running", "resolve_sync"]


def callable_name(fn: object) -> Any:
    """A function's name for messages and metadata: its ``__name__`` (else its type's name), ``"callable"`` for a
    lambda."""
    name = getattr(fn, "__name__", None) or type(fn).__name__
    return "callable" if name == "<lambda>" else name


def is_async_callable(fn: object) -> bool:
    """True for an ``async def`` function, or an object whose ``__call__`` is one."""
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 - an object with an async __call__
    return inspect.iscoroutinefunction(call)


def loop_running() -> bool:
    """True when an event loop is running in this thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


async def _await(value: Awaitable[Any]) -> Any:
    return await value


def resolve_sync(value: Any, what: str, field: str | None = None) -> Any:
    """The result of a sync call that may have returned an awaitable: run it when no loop is running.

    Raises:
        ConfigurationError: ``value`` is awaitable and an event loop is running in this thread (``what`` names
            the caller's function in the message, ``field`` the argument it came from; a coroutine is closed
            first). Not a ``TypeError``: it is raised while a call runs, where hosts catch ``TypeError``.
    """
    if not inspect.isawaitable(value):
        return value
    if loop_running():
        if inspect.iscoroutine(value):
            value.close()
        raise ConfigurationError(
            f"{what} is async and an event loop is running: use the async path (acheck / ainvoke / arun), "
            "or pass a sync function",
            field=field,
        )
    return asyncio.run(_await(value))
