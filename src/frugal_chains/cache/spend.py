"""What a whole chain's run cost, so a hit on its cached answer reports what it saved.

A chain or query engine cached as a whole makes several calls on a miss (an embedding of the question, one LLM
call or a few). The adapters tell a :class:`SpendTally` about each paid model call of the run (the LangChain
wrapper through a callback handler on the chain's run, the LlamaIndex one through LlamaIndex's instrumentation
events); :meth:`SpendTally.stored` prices them with the cache's prices and gives the
:class:`~frugal_chains.cache.replay.StoredAnswer` to store. A hit on it then records ``cache_hit`` with the sum in
``saved_usd``, or ``None`` when a call's price is unknown (unknown is not $0). Answers a cache served inside the
run (a model-level cache hit) cost nothing and are not told.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Literal

from frugal_chains.cache.core import UNKNOWN_USD, _Unknown
from frugal_chains.cache.replay import StoredAnswer

if TYPE_CHECKING:
    from frugal_chains.accounting.pricing import PriceBook
    from frugal_chains.accounting.usage import Usage

__all__ = ["SpendTally", "current_tally", "tallying"]

_active: contextvars.ContextVar[SpendTally | None] = contextvars.ContextVar(
    "frugal_chains_spend_tally", default=None
)


class SpendTally:
    """The paid model calls of one run of a cached chain (thread-safe).

    Example:
        >>> from frugal_chains.accounting import PriceBook, Price
        >>> from frugal_chains.accounting.usage import Usage
        >>> tally = SpendTally()
        >>> tally.add("gpt-4o-mini", Usage(input_tokens=1000, output_tokens=100))
        >>> tally.add("gpt-4o-mini", Usage(input_tokens=500, output_tokens=50))
        >>> stored = tally.stored("Yes.", PriceBook({"gpt-4o-mini": Price(input=1.0, output=2.0)}))
        >>> stored.model, stored.usage.input_tokens, round(stored.cost_usd, 6)
        ('gpt-4o-mini', 1500, 0.0018)
    """

    def __init__(self) -> None:
        self._calls: list[tuple[str, Usage | None, float | Literal[_Unknown.USD] | None]] = []
        self._lock = threading.Lock()

    def add(
        self, model: str, usage: Usage | None, cost_usd: float | Literal[_Unknown.USD] | None = None
    ) -> None:
        """One paid call: its model and usage (priced later), or what it cost when that is known
        (``UNKNOWN_USD``: known to be unknown)."""
        with self._lock:
            self._calls.append((model, usage, cost_usd))

    @property
    def calls(self) -> int:
        """The calls told so far."""
        with self._lock:
            return len(self._calls)

    def stored(self, answer: str, prices: PriceBook) -> StoredAnswer:
        """The answer to store, priced at the sum of the calls: ``cost_usd`` unknown when any call's price is
        unknown, ``0.0`` for a run that made no paid call."""
        with self._lock:
            calls = list(self._calls)
        total: float | None = 0.0
        usage: Usage | None = None
        models: list[str] = []
        for model, used, cost in calls:
            if model not in models:
                models.append(model)
            if used is not None:
                usage = used if usage is None else usage + used
            if cost is None:
                price = prices.lookup(model, required=False)[0] if used is not None else None
                cost = price.cost(used) if price is not None and used is not None else UNKNOWN_USD
            if cost is UNKNOWN_USD or total is None:
                total = None
            else:
                total += float(cost)
        model_name = ",".join(models) if models else None
        return StoredAnswer(answer, model_name, usage, UNKNOWN_USD if total is None else total)


def current_tally() -> SpendTally | None:
    """The tally of the cached run in progress in this context, if any."""
    return _active.get()


@contextmanager
def tallying(tally: SpendTally) -> Iterator[SpendTally]:
    """Inside the block, adapters that observe model calls globally (LlamaIndex instrumentation) tell ``tally``."""
    token = _active.set(tally)
    try:
        yield tally
    finally:
        _active.reset(token)
