"""Who a cached answer may be served to: ``cache_scope(...)`` sets the partition of every lookup inside it.

A cached answer is only ever served inside the partition it was written in. The partition is made of everything
that shapes the answer besides the question (model and parameters, system prompt, earlier turns, tools: see
:class:`~frugal_chains.cache.CacheRequest`) **and** a scope the caller sets here: a tenant, optionally a user,
a namespace. When no ``cache_scope`` sets a tenant, the tenant of the current
:func:`frugal_chains.attribute` block is used, so a multi-tenant app that already attributes spend per tenant
never shares answers across tenants by accident.

Context variables follow every asyncio task and LangChain's own worker threads, so concurrent requests never mix
their scopes. A plain ``ThreadPoolExecutor`` or ``threading.Thread`` starts without them: send work there with
:class:`frugal_chains.ScopedThreadPoolExecutor` or :func:`frugal_chains.carry_scopes`, or a lookup in it runs in
the unscoped partition (a :class:`~frugal_chains.ScopeNotPropagatedWarning` says so once; an
``AnswerCache(tenant_required=True)`` then neither serves nor stores it).
"""

from __future__ import annotations

import contextvars
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from frugal_chains import scopes
from frugal_chains.errors import ConfigurationError

__all__ = ["CacheScope", "cache_scope", "current_cache_scope"]


@dataclass(frozen=True, kw_only=True)
class CacheScope:
    """The caller-set part of a cache partition.

    Example:
        >>> from frugal_chains.cache import CacheScope
        >>> CacheScope(tenant_id="acme").key()
        '{"ns": null, "tenant": "acme", "user": null}'
    """

    tenant_id: str | None = None
    """Answers are never served across tenants."""
    user_id: str | None = None
    """Set it to keep a cache per user (lower hit rate; use it for personalised answers)."""
    namespace: str | None = None
    """Any other partition you need: a feature, a locale, a prompt version."""
    tags: tuple[str, ...] = ()
    """Tags written on every entry stored inside the scope, for ``invalidate(tag=...)`` (not a partition)."""
    bypass: bool = False
    """True: neither read nor write the cache inside the block."""

    def key(self) -> str:
        """The partition part of this scope (tags and ``bypass`` are not part of it)."""
        return json.dumps(
            {"tenant": self.tenant_id, "user": self.user_id, "ns": self.namespace}, sort_keys=True
        )


_current: contextvars.ContextVar[CacheScope | None] = contextvars.ContextVar(
    "frugal_chains_cache_scope", default=None
)


def current_cache_scope() -> CacheScope:
    """The scope set by the innermost :func:`cache_scope` (the attribution's tenant when none sets one)."""
    found = _current.get()
    if found is None:
        scopes.unscoped("cache_scope")
    scope = found or CacheScope()
    if scope.tenant_id is None:
        from frugal_chains.accounting.context import current_attribution

        tenant = current_attribution().tenant_id
        if tenant is not None:
            scope = CacheScope(
                tenant_id=tenant,
                user_id=scope.user_id,
                namespace=scope.namespace,
                tags=scope.tags,
                bypass=scope.bypass,
            )
    return scope


@contextmanager
def cache_scope(
    *,
    tenant_id: str | None = None,
    user_id: str | None = None,
    namespace: str | None = None,
    tags: Sequence[str] = (),
    bypass: bool = False,
) -> Iterator[CacheScope]:
    """Partition every cache lookup and update inside the block. Nested blocks inherit what they do not set;
    tags add up; ``bypass=True`` turns the cache off for the block.

    Example:
        >>> from frugal_chains.cache import cache_scope, current_cache_scope
        >>> with cache_scope(tenant_id="acme"):
        ...     with cache_scope(namespace="faq", tags=["kb-v3"]):
        ...         s = current_cache_scope()
        >>> s.tenant_id, s.namespace, s.tags
        ('acme', 'faq', ('kb-v3',))
    """
    if isinstance(tags, str):
        raise ConfigurationError("cache_scope(tags=...) takes a list of tags, not a string", field="tags")
    outer = _current.get() or CacheScope()
    mine = CacheScope(
        tenant_id=tenant_id if tenant_id is not None else outer.tenant_id,
        user_id=user_id if user_id is not None else outer.user_id,
        namespace=namespace if namespace is not None else outer.namespace,
        tags=tuple(dict.fromkeys((*outer.tags, *tags))),
        bypass=bypass or outer.bypass,
    )
    token = _current.set(mine)
    try:
        with scopes.tracked("cache_scope"):
            yield mine
    finally:
        _current.reset(token)
