"""Attribution from LangChain run metadata (``feature``, ``user_id``, ``tenant_id``, ``task_id``) and tags.

The budget handler reads it from the run's start event; the caches read it from the run's manager and make their
lookups and stores inside :func:`frugal_chains.attribute` with it, so a ``cache_hit`` record (and the cache's tenant
partition) follows run metadata the way a paid call's record does. In both, run metadata wins over an enclosing
``attribute(...)`` block, whose values are kept for the keys the metadata does not set.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from frugal_chains.accounting.context import attribute
from frugal_chains.accounting.usage import Attribution

__all__ = ["attribution_from_run", "manager_attribution", "run_attribution"]


def attribution_from_run(metadata: Mapping[str, Any] | None, tags: Sequence[str] | None) -> Attribution:
    """The attribution a run's own metadata and tags set (nothing from any enclosing block)."""
    metadata = metadata or {}

    def text(key: str) -> str | None:
        v = metadata.get(key)
        return str(v) if v is not None and v != "" else None

    return Attribution(
        task_id=text("task_id"),
        feature=text("feature"),
        user_id=text("user_id"),
        tenant_id=text("tenant_id"),
        tags=tuple(tags or ()),
    )


@contextlib.contextmanager
def run_attribution(metadata: Mapping[str, Any] | None, tags: Sequence[str] | None) -> Iterator[None]:
    """Inside an :func:`~frugal_chains.attribute` block with the run's metadata and tags (none when they set
    nothing): keys the metadata does not set keep the enclosing block's values."""
    own = attribution_from_run(metadata, tags)
    if own == Attribution():
        yield
        return
    with attribute(
        feature=own.feature, user_id=own.user_id, tenant_id=own.tenant_id, task_id=own.task_id, tags=own.tags
    ):
        yield


def manager_attribution(run_manager: Any) -> contextlib.AbstractContextManager[None]:
    """:func:`run_attribution` of a LangChain run manager (its own and inherited metadata and tags); no block for
    ``None``."""
    if run_manager is None:
        return contextlib.nullcontext()
    metadata = {**(getattr(run_manager, "inheritable_metadata", None) or {}), **(run_manager.metadata or {})}
    tags = list(
        dict.fromkeys([*(run_manager.tags or ()), *(getattr(run_manager, "inheritable_tags", None) or ())])
    )
    return run_attribution(metadata, tags)
