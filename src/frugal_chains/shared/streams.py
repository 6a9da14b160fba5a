"""Closing a stream someone else opened: a generator, an SDK stream, or an iterator with nothing to close."""

from __future__ import annotations

from typing import Any

__all__ = ["aclose_stream", "close_stream"]


def close_stream(stream: Any) -> None:
    """Call ``stream.close()`` when it has one (stops a provider's stream after an early exit).

    Example:
        >>> def gen():
        ...     yield 1
        >>> g = gen(); next(g); close_stream(g); close_stream(iter([1]))
        1
    """
    close = getattr(stream, "close", None)
    if callable(close):
        close()


async def aclose_stream(stream: Any) -> None:
    """Async :func:`close_stream` (``await stream.aclose()`` when it has one)."""
    close = getattr(stream, "aclose", None)
    if callable(close):
        await close()
