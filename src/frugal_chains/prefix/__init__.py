"""Prompt-prefix caching, framework-free: put the stable prefix first, move dynamic values out of it, and add the
provider's cache breakpoints or key, priced right.

Adapters: ``frugal_chains.langchain.PrefixCacheFormatter`` and ``frugal_chains.llama_index.PrefixCacheFormatter``.
Guide: ``docs/prefix.md``.

Example:
    >>> from frugal_chains.prefix import PrefixFormatter
    >>> plan = PrefixFormatter(model="gpt-4o-mini").plan([
    ...     {"role": "system", "content": "Help with orders. Request id req_8f3a9c2d1e77."},
    ...     {"role": "user", "content": "Where is my order?"}])
    >>> print(plan.messages[0]["content"])
    Help with orders. Request id [see request context: request id].
    <BLANKLINE>
    Request context (values referred to above):
    - request id: req_8f3a9c2d1e77
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from frugal_chains._lazy import lazy_exports

_EXPORTS = {
    "Breakpoint": ".report",
    "CONTEXT_HEADER": ".context",
    "ChurnSpan": ".report",
    "ContextValue": ".context",
    "DEFAULT_DETECTORS": ".spans",
    "DynamicSpan": ".spans",
    "PrefixFormatter": ".planner",
    "PrefixPlan": ".planner",
    "PrefixReport": ".report",
    "ProviderRules": ".rules",
    "find_dynamic_spans": ".spans",
    "rules_for": ".rules",
    "split_context_block": ".context",
}
__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from frugal_chains.prefix.context import CONTEXT_HEADER as CONTEXT_HEADER
    from frugal_chains.prefix.context import ContextValue as ContextValue
    from frugal_chains.prefix.context import split_context_block as split_context_block
    from frugal_chains.prefix.planner import PrefixFormatter as PrefixFormatter
    from frugal_chains.prefix.planner import PrefixPlan as PrefixPlan
    from frugal_chains.prefix.report import Breakpoint as Breakpoint
    from frugal_chains.prefix.report import ChurnSpan as ChurnSpan
    from frugal_chains.prefix.report import PrefixReport as PrefixReport
    from frugal_chains.prefix.rules import ProviderRules as ProviderRules
    from frugal_chains.prefix.rules import rules_for as rules_for
    from frugal_chains.prefix.spans import DEFAULT_DETECTORS as DEFAULT_DETECTORS
    from frugal_chains.prefix.spans import DynamicSpan as DynamicSpan
    from frugal_chains.prefix.spans import find_dynamic_spans as find_dynamic_spans
