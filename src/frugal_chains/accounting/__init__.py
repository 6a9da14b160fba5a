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
    "Price": ".usage",
    "PriceBook": ".pricing",
    "RedisLedger": ".redis",
    "ReserveResult": ".ledger",
    "SQLiteLedger": ".sqlite",
    "SpendLedger": ".ledger",
    "SpendRow": ".ledger",
    "TokenEstimator": ".tokens",
    "Usage": ".usage",
    "attribute": ".context",
    "count_message_tokens": ".tokens",
    "count_text_tokens": ".tokens",
    "current_attribution": ".context",
    "get_encoding": ".tokens",
    "litellm_price": ".pricing",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from frugal_chains.accounting.context import attribute, current_attribution
    from frugal_chains.accounting.ledger import (
        Claim,
        CommitResult,
        Counter,
        ReserveResult,
        SpendLedger,
        SpendRow,
    )
    from frugal_chains.accounting.pricing import PriceBook, litellm_price
    from frugal_chains.accounting.redis import RedisLedger
    from frugal_chains.accounting.sqlite import SQLiteLedger
    from frugal_chains.accounting.tokens import (
        DEFAULT_MARGINS,
        TokenEstimator,
        count_message_tokens,
        count_text_tokens,
        get_encoding,
    )
    from frugal_chains.accounting.usage import Attribution, CallRecord, Price, Usage
