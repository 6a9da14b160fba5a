"""The storage seam of the cache: one ``VectorIndex`` protocol, an embedded and a Redis implementation.

An index stores :class:`CacheEntry` rows and answers three questions, always **inside one partition**: the entry
with this exact key, the ``k`` nearest entries to a vector, and which entries carry a tag (for invalidation).
Both implementations pass the same contract tests (``tests/integration/test_cache_index_contract.py``).

Expiry: an entry past ``expires_at`` is never returned (the embedded index checks on read and sweeps; Redis
expires the key natively). Size bound: ``add(..., max_entries=N)`` evicts the least recently used entries.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from frugal_chains.shared.text import SURROGATE

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Vector = npt.NDArray[np.float32]
else:
    Vector = Any

__all__ = ["CacheEntry", "Hit", "VectorIndex"]


@dataclass(frozen=True, kw_only=True)
class CacheEntry:
    """One cached answer.

    Example:
        >>> from frugal_chains.cache import CacheEntry
        >>> e = CacheEntry(partition="p", exact_key="k", question="Hi?", normalized="hi", answer="Hello")
        >>> CacheEntry.from_json(e.to_json()).answer
        'Hello'
    """

    partition: str
    exact_key: str
    question: str
    """The raw question as asked (the hit guard compares raw texts)."""
    normalized: str
    answer: str
    """The stored answer: an opaque string the adapter wrote (serialised generations, a completion's text)."""
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    vector: Vector | None = None
    """The embedding of ``normalized`` (None for entries stored without a semantic tier)."""
    tags: tuple[str, ...] = ()
    created_at: float = 0.0
    expires_at: float | None = None
    """Unix time after which the entry is never served (None: no TTL)."""
    model: str | None = None
    """The model whose answer this is (for the saving recorded on a hit)."""
    cost_usd: float | None = 0.0
    """What producing the answer cost: the USD each hit saves; ``None`` when the model has no price (unknown,
    not $0). Entries stored by earlier versions read as they were written (``0.0`` when the field is absent)."""
    meta: Mapping[str, Any] = field(default_factory=dict)
    """JSON-serialisable extras (token usage of the original call, ...)."""

    def expired(self, now: float) -> bool:
        """True when the entry's TTL has passed."""
        return self.expires_at is not None and now >= self.expires_at

    def to_json(self) -> str:
        """Every field but the vector, as JSON (valid UTF-8: a lone surrogate in a text is written as a ``\\u``
        escape, which :meth:`from_json` reads back)."""
        text = json.dumps(
            {
                "id": self.id,
                "partition": self.partition,
                "exact_key": self.exact_key,
                "question": self.question,
                "normalized": self.normalized,
                "answer": self.answer,
                "tags": list(self.tags),
                "created_at": self.created_at,
                "expires_at": self.expires_at,
                "model": self.model,
                "cost_usd": self.cost_usd,
                "meta": dict(self.meta),
            },
            ensure_ascii=False,
        )
        return SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)

    @classmethod
    def from_json(cls, text: str | bytes, vector: Vector | None = None) -> CacheEntry:
        """Parse :meth:`to_json`'s output; raises ``ValueError`` (or ``KeyError``/``TypeError``) when corrupt."""
        d = json.loads(text)
        if not isinstance(d, dict):
            raise ValueError("a cache entry must be a JSON object")
        expires = d.get("expires_at")
        return cls(
            id=str(d["id"]),
            partition=str(d["partition"]),
            exact_key=str(d["exact_key"]),
            question=str(d["question"]),
            normalized=str(d["normalized"]),
            answer=_str(d["answer"], "answer"),
            tags=tuple(str(t) for t in d.get("tags") or ()),
            created_at=float(d.get("created_at") or 0.0),
            expires_at=None if expires is None else float(expires),
            model=None if d.get("model") is None else str(d["model"]),
            cost_usd=_cost(d),
            meta=dict(d.get("meta") or {}),
            vector=vector,
        )


def _cost(d: Mapping[str, Any]) -> float | None:
    """``cost_usd`` as stored: ``null`` is unknown (a model with no price); an absent field (an early entry) is
    read as ``0.0``, as it always was."""
    if "cost_usd" not in d:
        return 0.0
    value = d["cost_usd"]
    return None if value is None else float(value)


def _str(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"cache entry field {name!r} must be a string")
    return value


@dataclass(frozen=True)
class Hit:
    """A candidate the index returned: the entry and its cosine similarity to the query (1.0 for exact).

    Example:
        >>> from frugal_chains.cache import CacheEntry, Hit
        >>> e = CacheEntry(partition="p", exact_key="k", question="Hi?", normalized="hi", answer="Hello")
        >>> Hit(e, 0.93).similarity
        0.93
    """

    entry: CacheEntry
    similarity: float


@runtime_checkable
class VectorIndex(Protocol):
    """Where cache entries live. Every query is confined to one partition.

    Implementations: :class:`~frugal_chains.cache.EmbeddedIndex` (in process, SQLite-persisted) and
    :class:`~frugal_chains.cache.RedisIndex` (redisvl). A backend failure raises; :class:`AnswerCache` turns it
    into a miss (fail open).

    Example:
        >>> from frugal_chains.cache import EmbeddedIndex, VectorIndex
        >>> isinstance(EmbeddedIndex(dim=4), VectorIndex)
        True
    """

    dim: int | None
    """The vector size the index holds (None until the first vector, for indexes that can learn it)."""

    def add(self, entry: CacheEntry, *, max_entries: int | None = None) -> None:
        """Store ``entry`` (replacing one with the same partition and exact key), then evict the least
        recently used entries beyond ``max_entries``."""
        ...

    def get_exact(self, partition: str, exact_key: str, now: float) -> CacheEntry | None:
        """The live entry with this exact key in this partition."""
        ...

    def search(self, partition: str, vector: Vector, k: int, min_similarity: float, now: float) -> list[Hit]:
        """Up to ``k`` live entries of ``partition`` with cosine similarity >= ``min_similarity``, best first."""
        ...

    def touch(self, entry_id: str, now: float) -> None:
        """Mark an entry as used (for least-recently-used eviction)."""
        ...

    def delete(self, ids: Sequence[str]) -> int:
        """Remove entries by id; returns how many were removed."""
        ...

    def invalidate(self, *, tag: str) -> int:
        """Remove every entry carrying ``tag``; returns how many."""
        ...

    def count(self) -> int:
        """Live entries (expired ones may be counted until swept)."""
        ...

    def clear(self) -> None:
        """Remove every entry."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...

    async def aadd(self, entry: CacheEntry, *, max_entries: int | None = None) -> None: ...

    async def aget_exact(self, partition: str, exact_key: str, now: float) -> CacheEntry | None: ...

    async def asearch(
        self, partition: str, vector: Vector, k: int, min_similarity: float, now: float
    ) -> list[Hit]: ...

    async def atouch(self, entry_id: str, now: float) -> None: ...

    async def adelete(self, ids: Sequence[str]) -> int: ...

    async def ainvalidate(self, *, tag: str) -> int: ...

    async def aclear(self) -> None: ...
