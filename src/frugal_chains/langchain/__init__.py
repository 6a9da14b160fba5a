"""LangChain adapters: budgets, the semantic cache, the cascading router and prompt-prefix caching.

Example:
    >>> from frugal_chains.langchain import TokenBudgetHandler, budget_scope
    >>> TokenBudgetHandler.run_inline
    True
"""

from __future__ import annotations

try:
    import langchain_core  # noqa: F401
except ImportError as e:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        'frugal_chains.langchain needs langchain-core: pip install "frugal-chains[langchain]"'
    ) from e

from frugal_chains._deprecation import deprecated_attributes, old_metadata_keys
from frugal_chains.langchain._runs import achild_callbacks, child_callbacks
from frugal_chains.langchain.budget import (
    TokenBudgetHandler,
    budget_scope,
    is_wrapper_run,
    usage_from_message,
)
from frugal_chains.langchain.cache import SemanticCache
from frugal_chains.langchain.cached_chain import CachedChain, cache_chain
from frugal_chains.langchain.cached_model import CachedChatModel, with_cache
from frugal_chains.langchain.cascade import CascadeChatModel
from frugal_chains.langchain.judge import judge_verifier
from frugal_chains.langchain.prefix import PrefixCacheFormatter, PrefixCachingChatModel, with_prefix_caching
from frugal_chains.langchain.question import question_key_from
from frugal_chains.langchain.vllm import ChatVLLM

__all__ = [
    "CachedChain",
    "CachedChatModel",
    "CascadeChatModel",
    "ChatVLLM",
    "PrefixCacheFormatter",
    "PrefixCachingChatModel",
    "SemanticCache",
    "TokenBudgetHandler",
    "achild_callbacks",
    "budget_scope",
    "cache_chain",
    "child_callbacks",
    "is_wrapper_run",
    "judge_verifier",
    "question_key_from",
    "usage_from_message",
    "with_cache",
    "with_prefix_caching",
]


__getattr__ = deprecated_attributes(
    __name__,
    {
        "TokenBudgetCallbackHandler": (
            "frugal_chains.langchain.TokenBudgetHandler",
            lambda: TokenBudgetHandler,
        ),
        **old_metadata_keys("WRAPPER_METADATA_KEY", "TIER_METADATA_KEY", "CACHE_HIT_METADATA_KEY"),
    },
)
