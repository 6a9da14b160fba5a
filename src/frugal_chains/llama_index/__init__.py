"""LlamaIndex adapters: budgets, the semantic cache and the cascading router.

Needs ``llama-index-core``: ``pip install "frugal-chains[llama-index]"``.

Example:
    >>> from frugal_chains.llama_index import TokenBudgetHandler
    >>> TokenBudgetHandler().budgets
    ()
"""

from __future__ import annotations

from typing import Any

try:
    import llama_index.core  # noqa: F401
except ImportError as e:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        'frugal_chains.llama_index needs llama-index-core: pip install "frugal-chains[llama-index]"'
    ) from e

from frugal_chains.llama_index.budget import TokenBudgetHandler
from frugal_chains.llama_index.cached_llm import CachedLLM
from frugal_chains.llama_index.cascade import CascadeLLM

__all__ = ["CachedLLM", "CascadeLLM", "TokenBudgetHandler"]


def __getattr__(name: str) -> Any:
    # Old names (WRAPPER_PAYLOAD_KEY): one release with a warning.
    from frugal_chains.llama_index import budget

    return getattr(budget, name)
