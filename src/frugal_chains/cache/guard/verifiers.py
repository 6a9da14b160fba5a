"""Verifiers: a stronger, slower check after the hit guard (a cross-encoder, an LLM judge ...), through the
:class:`Verifier` protocol; :class:`CallableVerifier` wraps plain functions."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol, runtime_checkable

from frugal_chains.errors import ConfigurationError

__all__ = ["CallableVerifier", "Verifier"]


@runtime_checkable
class Verifier(Protocol):
    """A stronger, slower check run after the :class:`HitGuard` (a cross-encoder, an LLM judge ...).

    Both methods get the raw incoming question, the raw cached question and their cosine similarity,
    and return ``True`` when the cached answer may be served.

    Example:
        >>> class Always:
        ...     def verify(self, query: str, cached: str, similarity: float) -> bool:
        ...         return True
        ...     async def averify(self, query: str, cached: str, similarity: float) -> bool:
        ...         return True
        >>> isinstance(Always(), Verifier)
        True
    """

    def verify(self, query: str, cached: str, similarity: float) -> bool: ...

    async def averify(self, query: str, cached: str, similarity: float) -> bool: ...


class CallableVerifier:
    """A :class:`Verifier` from plain functions.

    Args:
        fn: ``fn(query, cached, similarity) -> bool``.
        afn: optional async version; without it :meth:`averify` runs ``fn`` in a worker thread.

    Example:
        >>> v = CallableVerifier(lambda q, c, s: s >= 0.95)
        >>> v.verify("a", "b", 0.97), v.verify("a", "b", 0.9)
        (True, False)
        >>> import asyncio
        >>> asyncio.run(v.averify("a", "b", 0.99))
        True
    """

    def __init__(
        self,
        fn: Callable[[str, str, float], bool],
        afn: Callable[[str, str, float], Awaitable[bool]] | None = None,
    ) -> None:
        if not callable(fn):
            raise ConfigurationError("fn must be a callable (query, cached, similarity) -> bool.", field="fn")
        if afn is not None and not callable(afn):
            raise ConfigurationError("afn must be an async callable or None.", field="afn")
        self._fn = fn
        self._afn = afn

    def verify(self, query: str, cached: str, similarity: float) -> bool:
        """Run the sync function."""
        return bool(self._fn(query, cached, similarity))

    async def averify(self, query: str, cached: str, similarity: float) -> bool:
        """Run the async function, or the sync one in a worker thread."""
        if self._afn is not None:
            return bool(await self._afn(query, cached, similarity))
        return bool(await asyncio.to_thread(self._fn, query, cached, similarity))
