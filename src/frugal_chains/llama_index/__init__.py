"""LlamaIndex adapters: budgets and the semantic cache now; cascade and compressor as they land.

Needs ``llama-index-core``: ``pip install "frugal-chains[llama-index]"``.

Example:
    >>> from frugal_chains.llama_index import TokenBudgetHandler
    >>> TokenBudgetHandler().budgets
    ()
"""

from __future__ import annotations

try:
    import llama_index.core  # noqa: F401
except ImportError as e:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        'frugal_chains.llama_index needs llama-index-core: pip install "frugal-chains[llama-index]"'
    ) from e

from frugal_chains.llama_index.budget import WRAPPER_PAYLOAD_KEY, TokenBudgetHandler
from frugal_chains.llama_index.cached_llm import CachedLLM

__all__ = ["WRAPPER_PAYLOAD_KEY", "CachedLLM", "TokenBudgetHandler"]
