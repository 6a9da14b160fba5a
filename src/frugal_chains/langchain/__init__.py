"""LangChain adapters: budgets, the semantic cache and the cascading router; compressor and formatter as they land.

Example:
    >>> from frugal_chains.langchain import TokenBudgetCallbackHandler, budget_scope
    >>> TokenBudgetCallbackHandler.run_inline
    True
"""

from __future__ import annotations

try:
    import langchain_core  # noqa: F401
except ImportError as e:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        'frugal_chains.langchain needs langchain-core: pip install "frugal-chains[langchain]"'
    ) from e

from frugal_chains.langchain.budget import (
    CACHE_HIT_METADATA_KEY,
    TIER_METADATA_KEY,
    WRAPPER_METADATA_KEY,
    TokenBudgetCallbackHandler,
    budget_scope,
    is_wrapper_run,
    usage_from_message,
)
from frugal_chains.langchain.cache import SemanticCache
from frugal_chains.langchain.cached_model import CachedChatModel, with_cache
from frugal_chains.langchain.cascade import CascadeChatModel

__all__ = [
    "CACHE_HIT_METADATA_KEY",
    "CachedChatModel",
    "CascadeChatModel",
    "SemanticCache",
    "TIER_METADATA_KEY",
    "WRAPPER_METADATA_KEY",
    "TokenBudgetCallbackHandler",
    "budget_scope",
    "is_wrapper_run",
    "usage_from_message",
    "with_cache",
]
