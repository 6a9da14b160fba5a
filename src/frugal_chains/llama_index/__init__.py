"""LlamaIndex adapters: budgets, the semantic cache, the cascading router, prompt-prefix caching, and
:func:`configure` to put them all on ``Settings`` in one call.

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

from frugal_chains._deprecation import deprecated_attributes, old_metadata_keys
from frugal_chains.llama_index.attachment import BudgetNotAttachedWarning, LLMNotAttachedWarning
from frugal_chains.llama_index.budget import TokenBudgetHandler
from frugal_chains.llama_index.cached_llm import CachedLLM
from frugal_chains.llama_index.cached_query_engine import CachedQueryEngine
from frugal_chains.llama_index.cascade import CascadeLLM
from frugal_chains.llama_index.judge import judge_verifier
from frugal_chains.llama_index.prefix import PrefixCacheFormatter, PrefixCachingLLM, with_prefix_caching
from frugal_chains.llama_index.question import question_key_from
from frugal_chains.llama_index.settings import FrugalSettings, configure
from frugal_chains.llama_index.vllm import VLLM

__all__ = [
    "BudgetNotAttachedWarning",
    "CachedLLM",
    "CachedQueryEngine",
    "CascadeLLM",
    "FrugalSettings",
    "LLMNotAttachedWarning",
    "PrefixCacheFormatter",
    "PrefixCachingLLM",
    "TokenBudgetHandler",
    "VLLM",
    "configure",
    "judge_verifier",
    "question_key_from",
    "with_prefix_caching",
]


# Old names: one release with a DeprecationWarning naming the new one.
__getattr__ = deprecated_attributes(__name__, old_metadata_keys("WRAPPER_PAYLOAD_KEY"))
