"""Accounting: usage, prices, token counting and spend ledgers (framework-free).

Example:
    >>> from frugal_chains.accounting import Price, Usage
    >>> Price(input=3, output=15).cost(Usage(input_tokens=1000, output_tokens=100))
    0.0045
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from frugal_chains._lazy import lazy_exports

_EXPORTS = {
    "Attribution": ".usage",
    "CallRecord": ".usage",
    "Claim": ".ledger",
    "CommitResult": ".ledger",
    "Counter": ".ledger",
    "DEFAULT_MARGINS": ".tokens",
    "TEMPLATE_TOKENS": ".tokens",
    "Price": ".usage",
    "PriceBook": ".pricing",
    "RedisLedger": ".redis",
    "ReportRow": ".report",
    "ReserveResult": ".ledger",
    "SQLiteLedger": ".sqlite",
    "SpendLedger": ".ledger",
    "SpendReport": ".report",
    "SpendRow": ".ledger",
    "TokenEstimator": ".tokens",
    "Usage": ".usage",
    "attribute": ".context",
    "count_message_tokens": ".tokens",
    "count_text_tokens": ".tokens",
    "current_attribution": ".context",
    "get_encoding": ".tokens",
    "image_tokens": ".tokens",
    "usage_from_provider": ".provider_usage",
    "litellm_price": ".pricing",
    "spend_report": ".report",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from frugal_chains.accounting.context import (
        attribute as attribute,
    )
    from frugal_chains.accounting.context import (
        current_attribution as current_attribution,
    )
    from frugal_chains.accounting.ledger import (
        Claim as Claim,
    )
    from frugal_chains.accounting.ledger import (
        CommitResult as CommitResult,
    )
    from frugal_chains.accounting.ledger import (
        Counter as Counter,
    )
    from frugal_chains.accounting.ledger import (
        ReserveResult as ReserveResult,
    )
    from frugal_chains.accounting.ledger import (
        SpendLedger as SpendLedger,
    )
    from frugal_chains.accounting.ledger import (
        SpendRow as SpendRow,
    )
    from frugal_chains.accounting.pricing import (
        PriceBook as PriceBook,
    )
    from frugal_chains.accounting.pricing import (
        litellm_price as litellm_price,
    )
    from frugal_chains.accounting.provider_usage import (
        usage_from_provider as usage_from_provider,
    )
    from frugal_chains.accounting.redis import (
        RedisLedger as RedisLedger,
    )
    from frugal_chains.accounting.report import (
        ReportRow as ReportRow,
    )
    from frugal_chains.accounting.report import (
        SpendReport as SpendReport,
    )
    from frugal_chains.accounting.report import (
        spend_report as spend_report,
    )
    from frugal_chains.accounting.sqlite import (
        SQLiteLedger as SQLiteLedger,
    )
    from frugal_chains.accounting.tokens import (
        DEFAULT_MARGINS as DEFAULT_MARGINS,
    )
    from frugal_chains.accounting.tokens import (
        TEMPLATE_TOKENS as TEMPLATE_TOKENS,
    )
    from frugal_chains.accounting.tokens import (
        TokenEstimator as TokenEstimator,
    )
    from frugal_chains.accounting.tokens import (
        count_message_tokens as count_message_tokens,
    )
    from frugal_chains.accounting.tokens import (
        count_text_tokens as count_text_tokens,
    )
    from frugal_chains.accounting.tokens import (
        get_encoding as get_encoding,
    )
    from frugal_chains.accounting.tokens import (
        image_tokens as image_tokens,
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
