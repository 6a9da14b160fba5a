"""frugal-chains: cut LLM bills in LangChain and LlamaIndex apps, with spend you can measure.

Importing this package is cheap: every public name is loaded on first use (no litellm, llama_index, redis or
torch at import).

Example:
    >>> from frugal_chains import Budget, Price
    >>> Budget(max_usd=2.0, scope="user", window="day").scope
    'user'
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from frugal_chains._lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "SelectedQuestion": ".shared.question",
    "QuestionKey": ".shared.question",
    "AnswerCache": ".cache.core",
    "Attribution": ".accounting.usage",
    "Budget": ".budget.budget",
    "BudgetExceededError": ".errors",
    "BudgetGuard": ".budget.guard",
    "CallRecord": ".accounting.usage",
    "Cascade": ".routing.cascade",
    "CascadeExhaustedError": ".errors",
    "ConfigurationError": ".errors",
    "FrugalChainsError": ".errors",
    "LedgerUnavailableError": ".errors",
    "Price": ".accounting.usage",
    "PriceBook": ".accounting.pricing",
    "PrefixFormatter": ".prefix.planner",
    "PrefixPlan": ".prefix.planner",
    "PrefixReport": ".prefix.report",
    "ProviderRules": ".prefix.rules",
    "RedisLedger": ".accounting.redis",
    "SQLiteLedger": ".accounting.sqlite",
    "ScopeNotPropagatedWarning": ".scopes",
    "ScopedThreadPoolExecutor": ".scopes",
    "SpendLedger": ".accounting.ledger",
    "UnknownModelPriceError": ".errors",
    "VLLMServerError": ".errors",
    "Usage": ".accounting.usage",
    "attribute": ".accounting.context",
    "cache_scope": ".cache.scope",
    "carry_scopes": ".scopes",
}
__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from frugal_chains.accounting.context import (
        attribute as attribute,
    )
    from frugal_chains.accounting.ledger import (
        SpendLedger as SpendLedger,
    )
    from frugal_chains.accounting.pricing import (
        PriceBook as PriceBook,
    )
    from frugal_chains.accounting.redis import (
        RedisLedger as RedisLedger,
    )
    from frugal_chains.accounting.sqlite import (
        SQLiteLedger as SQLiteLedger,
    )
    from frugal_chains.accounting.usage import (
        Attribution as Attribution,
    )
    from frugal_chains.accounting.usage import (
        CallRecord as CallRecord,
    )
    from frugal_chains.accounting.usage import (
        Price as Price,
    )
    from frugal_chains.accounting.usage import (
        Usage as Usage,
    )
    from frugal_chains.budget.budget import (
        Budget as Budget,
    )
    from frugal_chains.budget.guard import (
        BudgetGuard as BudgetGuard,
    )
    from frugal_chains.cache.core import AnswerCache as AnswerCache
    from frugal_chains.cache.scope import cache_scope as cache_scope
    from frugal_chains.errors import (
        BudgetExceededError as BudgetExceededError,
    )
    from frugal_chains.errors import (
        CascadeExhaustedError as CascadeExhaustedError,
    )
    from frugal_chains.errors import (
        ConfigurationError as ConfigurationError,
    )
    from frugal_chains.errors import (
        FrugalChainsError as FrugalChainsError,
    )
    from frugal_chains.errors import (
        LedgerUnavailableError as LedgerUnavailableError,
    )
    from frugal_chains.errors import (
        UnknownModelPriceError as UnknownModelPriceError,
    )
    from frugal_chains.errors import (
        VLLMServerError as VLLMServerError,
    )
    from frugal_chains.prefix.planner import PrefixFormatter as PrefixFormatter
    from frugal_chains.prefix.planner import PrefixPlan as PrefixPlan
    from frugal_chains.prefix.report import PrefixReport as PrefixReport
    from frugal_chains.prefix.rules import ProviderRules as ProviderRules
    from frugal_chains.routing.cascade import Cascade as Cascade
    from frugal_chains.scopes import ScopedThreadPoolExecutor as ScopedThreadPoolExecutor
    from frugal_chains.scopes import ScopeNotPropagatedWarning as ScopeNotPropagatedWarning
    from frugal_chains.scopes import carry_scopes as carry_scopes
    from frugal_chains.shared.question import QuestionKey as QuestionKey
    from frugal_chains.shared.question import SelectedQuestion as SelectedQuestion
