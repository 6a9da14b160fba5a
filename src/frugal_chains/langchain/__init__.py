"""LangChain adapters: budgets now; cache, cascade, compressor and formatter as they land.

Example:
    >>> from frugal_chains.langchain import TokenBudgetCallbackHandler, budget_scope
    >>> TokenBudgetCallbackHandler.run_inline
    True
"""

from __future__ import annotations

from frugal_chains.langchain.budget import (
    CACHE_HIT_METADATA_KEY,
    WRAPPER_METADATA_KEY,
    TokenBudgetCallbackHandler,
    budget_scope,
    is_wrapper_run,
    usage_from_message,
)

__all__ = [
    "CACHE_HIT_METADATA_KEY",
    "WRAPPER_METADATA_KEY",
    "TokenBudgetCallbackHandler",
    "budget_scope",
    "is_wrapper_run",
    "usage_from_message",
]
