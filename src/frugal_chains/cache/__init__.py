"""Semantic answer cache, framework-free: exact and embedding tiers, a hit guard, policies, threshold tuning.

Adapters: :class:`frugal_chains.langchain.SemanticCache` (a LangChain ``BaseCache``),
:class:`frugal_chains.langchain.CachedChatModel` (also caches streaming) and
:class:`frugal_chains.llama_index.CachedLLM`. Guide: ``docs/cache.md``.

Example:
    >>> from frugal_chains.cache import AnswerCache, CacheRequest, cache_scope
    >>> from frugal_chains.testing import HashEmbeddings
    >>> cache = AnswerCache(embedder=HashEmbeddings())
    >>> with cache_scope(tenant_id="acme"):
    ...     cache.update(CacheRequest.from_prompt("What is your return policy?"), "30 days.")
    ...     print(cache.lookup(CacheRequest.from_prompt("What is your return policy?")).answer)
    30 days.
    >>> with cache_scope(tenant_id="globex"):
    ...     print(cache.lookup(CacheRequest.from_prompt("What is your return policy?")))
    None
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from frugal_chains._lazy import lazy_exports

if TYPE_CHECKING:
    from frugal_chains.cache.core import AnswerCache as AnswerCache
    from frugal_chains.cache.core import CachePin as CachePin
    from frugal_chains.cache.core import CacheResult as CacheResult
    from frugal_chains.cache.core import CacheStats as CacheStats
    from frugal_chains.cache.embedded import EmbeddedIndex as EmbeddedIndex
    from frugal_chains.cache.guard import DEFAULT_THRESHOLD as DEFAULT_THRESHOLD
    from frugal_chains.cache.guard import CallableVerifier as CallableVerifier
    from frugal_chains.cache.guard import CrossEncoderVerifier as CrossEncoderVerifier
    from frugal_chains.cache.guard import GuardVerdict as GuardVerdict
    from frugal_chains.cache.guard import HitGuard as HitGuard
    from frugal_chains.cache.guard import LLMJudgeVerifier as LLMJudgeVerifier
    from frugal_chains.cache.guard import Verifier as Verifier
    from frugal_chains.cache.guard import bypass_reason as bypass_reason
    from frugal_chains.cache.index import CacheEntry as CacheEntry
    from frugal_chains.cache.index import Hit as Hit
    from frugal_chains.cache.index import VectorIndex as VectorIndex
    from frugal_chains.cache.keys import CacheRequest as CacheRequest
    from frugal_chains.cache.normalize import normalize as normalize
    from frugal_chains.cache.redis_index import RedisIndex as RedisIndex
    from frugal_chains.cache.scope import CacheScope as CacheScope
    from frugal_chains.cache.scope import cache_scope as cache_scope
    from frugal_chains.cache.scope import current_cache_scope as current_cache_scope
    from frugal_chains.shared.question import QuestionKey as QuestionKey
    from frugal_chains.shared.question import SelectedQuestion as SelectedQuestion

_EXPORTS = {
    "SelectedQuestion": "..shared.question",
    "QuestionKey": "..shared.question",
    "AnswerCache": ".core",
    "CacheEntry": ".index",
    "CachePin": ".core",
    "CacheRequest": ".keys",
    "CacheResult": ".core",
    "CacheScope": ".scope",
    "CacheStats": ".core",
    "CallableVerifier": ".guard",
    "CrossEncoderVerifier": ".guard",
    "DEFAULT_THRESHOLD": ".guard",
    "EmbeddedIndex": ".embedded",
    "GuardVerdict": ".guard",
    "Hit": ".index",
    "HitGuard": ".guard",
    "LLMJudgeVerifier": ".guard",
    "RedisIndex": ".redis_index",
    "VectorIndex": ".index",
    "Verifier": ".guard",
    "bypass_reason": ".guard",
    "cache_scope": ".scope",
    "current_cache_scope": ".scope",
    "normalize": ".normalize",
}
__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
