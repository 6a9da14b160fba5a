"""Attribution from the surrounding code: a context manager any framework adapter reads.

LangChain calls carry attribution in run metadata (``feature``, ``user_id``, ``tenant_id``, ``task_id``);
LlamaIndex has no per-call metadata, so ``with attribute(...)`` is how its calls are attributed. In LangChain
both work; run metadata wins over the context. Context variables follow every asyncio task and LangChain's own
worker threads, so concurrent requests never mix; a plain ``ThreadPoolExecutor`` or ``threading.Thread`` starts
without them: send work there with :class:`frugal_chains.ScopedThreadPoolExecutor` or
:func:`frugal_chains.carry_scopes` (``docs/concurrency.md``).
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from frugal_chains import scopes
from frugal_chains.accounting.usage import Attribution

__all__ = ["attribute", "cascade_tier", "current_attribution", "current_tier", "set_default_attribution"]

_current: contextvars.ContextVar[Attribution | None] = contextvars.ContextVar(
    "frugal_chains_attribution", default=None
)
_tier: contextvars.ContextVar[str | None] = contextvars.ContextVar("frugal_chains_tier", default=None)
_default: Attribution | None = None
"""The process-wide defaults under every :func:`attribute` block (set by ``frugal_chains.llama_index.configure``:
LlamaIndex's ``Settings`` are process-wide too)."""


def current_attribution() -> Attribution:
    """The attribution set by the innermost :func:`attribute` block (empty outside any), over the process-wide
    defaults, if any were set (``frugal_chains.llama_index.configure(feature=...)``)."""
    found = _current.get()
    default = _default
    if found is None:
        scopes.unscoped("attribute")
        return default if default is not None else Attribution()
    return found if default is None else found.merged(default)


def set_default_attribution(default: Attribution | None) -> Attribution | None:
    """Set the process-wide defaults under every :func:`attribute` block (``None``: none); returns the previous
    ones. Fields an ``attribute(...)`` block sets win.

    Example:
        >>> from frugal_chains import Attribution, attribute
        >>> from frugal_chains.accounting.context import current_attribution, set_default_attribution
        >>> previous = set_default_attribution(Attribution(feature="docs-qa", tenant_id="acme"))
        >>> with attribute(feature="search"):
        ...     a = current_attribution()
        >>> a.feature, a.tenant_id
        ('search', 'acme')
        >>> set_default_attribution(previous).feature
        'docs-qa'
    """
    global _default
    previous, _default = _default, default
    return previous


@contextmanager
def attribute(
    *,
    feature: str | None = None,
    user_id: str | None = None,
    tenant_id: str | None = None,
    task_id: str | None = None,
    tags: Sequence[str] = (),
) -> Iterator[Attribution]:
    """Attribute every LLM call inside the block. Nested blocks inherit what they do not set.

    Example:
        >>> from frugal_chains import attribute
        >>> from frugal_chains.accounting import current_attribution
        >>> with attribute(feature="faq", user_id="u1"):
        ...     with attribute(user_id="u2"):
        ...         a = current_attribution()
        >>> a.feature, a.user_id
        ('faq', 'u2')
    """
    mine = Attribution(
        feature=feature, user_id=user_id, tenant_id=tenant_id, task_id=task_id, tags=tuple(tags)
    )
    combined = mine.merged(_current.get() or Attribution())
    token = _current.set(combined)
    try:
        with scopes.tracked("attribute"):
            yield combined
    finally:
        _current.reset(token)


def current_tier() -> str | None:
    """The cascade tier whose call is being made (set by the LlamaIndex cascade; LangChain uses run metadata)."""
    return _tier.get()


@contextmanager
def cascade_tier(name: str) -> Iterator[str]:
    """Mark the LLM calls inside the block as one cascade tier's (budget handlers write it to ``CallRecord.tier``).

    Example:
        >>> from frugal_chains.accounting.context import cascade_tier, current_tier
        >>> with cascade_tier("cheap"):
        ...     current_tier()
        'cheap'
        >>> current_tier() is None
        True
    """
    token = _tier.set(name)
    try:
        yield name
    finally:
        _tier.reset(token)
