"""The keys frugal-chains writes into framework metadata, in one place for both adapters and the docs.

What a component did to an answer is told in **one** entry, :data:`FRUGAL_KEY` (``"frugal"``): LangChain's
``AIMessage.response_metadata["frugal"]``, LlamaIndex's ``response.additional_kwargs["frugal"]``. Its sub-keys
name the component: :data:`CACHE` (``{"status": "hit", "tier": "exact" | "semantic", "similarity": 0.97}``)
and :data:`CASCADE` (tier, model, escalations, scores, cost in USD, attempts). A cached answer that a cascade
returns carries both.

Run-level marks (never shown to users, read by the budget handlers):

* :data:`WRAPPER_KEY`: set on a model that only calls other models (a cascade, a cache wrapper): its own run is
  not counted, the calls it makes are. LangChain: the model's ``metadata`` field (local to its run);
  LlamaIndex: the LLM's ``to_payload()``.
* :data:`TIER_KEY`: the cascade tier a call belongs to (LangChain child-run metadata; LlamaIndex
  ``additional_kwargs`` of every response a cascade returns); budgets write it to ``CallRecord.tier``.

Example:
    >>> from frugal_chains.metadata import CACHE, CASCADE, cache_status, with_entry
    >>> meta = with_entry({}, CACHE, {"status": "hit", "tier": "exact", "similarity": 1.0})
    >>> meta = with_entry(meta, CASCADE, {"tier": "cheap"})
    >>> sorted(meta["frugal"]), cache_status(meta)
    (['cache', 'cascade'], 'hit')
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "CACHE",
    "CASCADE",
    "FRUGAL_KEY",
    "LEGACY_CACHE_KEYS",
    "PREFIX",
    "TIER_KEY",
    "USAGE",
    "WRAPPER_KEY",
    "cache_status",
    "entry",
    "mark_cache_bypass",
    "mark_cache_hit",
    "with_entry",
    "without_entry",
]

FRUGAL_KEY = "frugal"
"""The one metadata entry that says what frugal-chains did to an answer (a dict keyed by component)."""

CACHE = "cache"
"""Sub-key of :data:`FRUGAL_KEY` written by the semantic cache: ``status`` (``"hit"``), ``tier`` (``"exact"``
or ``"semantic"``) and ``similarity`` of the stored question; or, on an answer the cache refused to serve or
store, ``status`` ``"bypass"`` and the ``reason`` (``"no-tenant"``)."""

CASCADE = "cascade"
"""Sub-key of :data:`FRUGAL_KEY` written by the cascading router: ``tier``, ``tier_index``, ``model``,
``start_tier``, ``escalations``, ``accepted``, ``scores``, ``cost_usd``, ``attempts``."""

USAGE = "usage"
"""Sub-key of :data:`FRUGAL_KEY` on what a LangChain wrapper's own run outputs (a cascade, a cache miss): the usage
of the provider calls behind the answer, in ``usage_metadata`` form. The wrapper's run carries no
``usage_metadata`` (the calls it made report theirs, so usage callbacks and tracers count each call once); the
message returned to the caller has the usage back in ``usage_metadata``."""

PREFIX = "prefix"
"""Sub-key of :data:`FRUGAL_KEY` written by the prefix-caching wrappers on their answers: how the request was
formatted (``provider``, ``model``, ``total_tokens``, ``cacheable_tokens``, ``cacheable_share``, ``breakpoints``,
``ttl``, ``prefix_hash``, ``changed``, ``warnings``)."""

WRAPPER_KEY = "frugal_chains_wrapper"
"""Marks a model that only calls other models: budgets count the calls it makes, never its own run."""

TIER_KEY = "frugal_tier"
"""The cascade tier a call belongs to (budgets write it to ``CallRecord.tier``)."""

LEGACY_CACHE_KEYS = ("frugal_cache", "frugal_cache_tier", "frugal_cache_similarity")
"""The flat keys cache hits carried before :data:`CACHE` (``"frugal_cache": "hit"``, the tier, the similarity).
Still written for one release, next to ``frugal["cache"]``; read ``frugal["cache"]`` instead."""


def entry(metadata: Mapping[str, Any] | None, component: str) -> dict[str, Any] | None:
    """What ``component`` (:data:`CACHE`, :data:`CASCADE`) recorded in ``metadata``, or ``None``.

    Example:
        >>> entry({"frugal": {"cache": {"status": "hit"}}}, "cache")
        {'status': 'hit'}
        >>> entry({}, "cascade") is None
        True
    """
    frugal = (metadata or {}).get(FRUGAL_KEY)
    found = frugal.get(component) if isinstance(frugal, Mapping) else None
    return dict(found) if isinstance(found, Mapping) else None


def with_entry(
    metadata: Mapping[str, Any] | None,
    component: str,
    info: Mapping[str, Any],
    *,
    legacy: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A copy of ``metadata`` whose :data:`FRUGAL_KEY` entry has ``info`` under ``component`` (what other
    components recorded is kept). ``legacy`` keys are merged flat into the ``frugal`` entry (kept for one release
    for readers of the keys used before the components had sub-keys).

    Example:
        >>> with_entry({"model_name": "m", "frugal": {"cache": {"status": "hit"}}}, "cascade", {"tier": "t"})
        {'model_name': 'm', 'frugal': {'cache': {'status': 'hit'}, 'cascade': {'tier': 't'}}}
    """
    out = dict(metadata or {})
    previous = out.get(FRUGAL_KEY)
    frugal = dict(previous) if isinstance(previous, Mapping) else {}
    if legacy:
        frugal.update(legacy)
    frugal[component] = dict(info)
    out[FRUGAL_KEY] = frugal
    return out


def without_entry(metadata: Mapping[str, Any] | None, component: str) -> dict[str, Any]:
    """A copy of ``metadata`` without what ``component`` recorded: its entry under :data:`FRUGAL_KEY` and the
    legacy flat keys written with it (the same keys, flat in the ``frugal`` entry). What other components recorded
    is kept; an emptied ``frugal`` entry is removed. A wrapper relaying another one's stream uses it: its own entry
    (on its last chunk) is the one the answer carries.

    Example:
        >>> meta = with_entry({"frugal": {"cache": {"status": "hit"}}}, "cascade", {"tier": "t"}, legacy={"tier": "t"})
        >>> without_entry(meta, "cascade")
        {'frugal': {'cache': {'status': 'hit'}}}
        >>> without_entry({"frugal": {"cascade": {"tier": "t"}, "tier": "t"}}, "cascade")
        {}
    """
    out = dict(metadata or {})
    previous = out.get(FRUGAL_KEY)
    if not isinstance(previous, Mapping) or component not in previous:
        return out
    recorded = previous[component]
    legacy = (set(recorded) if isinstance(recorded, Mapping) else set()) - {CACHE, CASCADE, USAGE}
    rest = {k: v for k, v in previous.items() if k != component and k not in legacy}
    if rest:
        out[FRUGAL_KEY] = rest
    else:
        del out[FRUGAL_KEY]
    return out


def cache_status(metadata: Mapping[str, Any] | None) -> str | None:
    """``"hit"`` when the answer was served by frugal-chains' cache (also read from the legacy flat key).

    Example:
        >>> cache_status({"frugal": {"cache": {"status": "hit"}}}), cache_status({"frugal_cache": "hit"})
        ('hit', 'hit')
        >>> cache_status({"model_name": "gpt-4o"}) is None
        True
    """
    found = entry(metadata, CACHE)
    if found is not None and isinstance(found.get("status"), str):
        return str(found["status"])
    legacy = (metadata or {}).get(LEGACY_CACHE_KEYS[0])
    return legacy if isinstance(legacy, str) else None


def mark_cache_hit(metadata: Mapping[str, Any] | None, *, tier: str, similarity: float) -> dict[str, Any]:
    """``metadata`` of an answer served by the cache: ``frugal["cache"]`` (status, tier, similarity) and, for
    one release, the legacy flat keys :data:`LEGACY_CACHE_KEYS`.

    Example:
        >>> meta = mark_cache_hit({}, tier="semantic", similarity=0.912345)
        >>> meta["frugal"]["cache"], meta["frugal_cache"]
        ({'status': 'hit', 'tier': 'semantic', 'similarity': 0.9123}, 'hit')
    """
    similarity = round(float(similarity), 4)
    out = with_entry(metadata, CACHE, {"status": "hit", "tier": tier, "similarity": similarity})
    out.update(zip(LEGACY_CACHE_KEYS, ("hit", tier, similarity), strict=True))
    return out


def mark_cache_bypass(metadata: Mapping[str, Any] | None, reason: str) -> dict[str, Any]:
    """``metadata`` of an answer the model gave because the cache refused the request (neither served nor stored):
    ``frugal["cache"] == {"status": "bypass", "reason": reason}``.

    Example:
        >>> mark_cache_bypass({}, "no-tenant")["frugal"]["cache"]
        {'status': 'bypass', 'reason': 'no-tenant'}
    """
    return with_entry(metadata, CACHE, {"status": "bypass", "reason": reason})
