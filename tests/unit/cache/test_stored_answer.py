"""What a wrapper stores for an answer: a cascade's answer at what the cascade paid, under the answering tier's
model; an unknown cost stays unknown (never a price looked up for part of the calls, never $0)."""

from __future__ import annotations

from typing import Any

import pytest

from frugal_chains import Price, SQLiteLedger
from frugal_chains.accounting.usage import Usage
from frugal_chains.cache import AnswerCache, CacheRequest
from frugal_chains.cache.core import UNKNOWN_USD
from frugal_chains.cache.replay import StoredAnswer
from frugal_chains.testing import HashEmbeddings

PRICES = {"cheap-1": Price(input=1.0, output=2.0), "strong-1": Price(input=10.0, output=30.0)}
USAGE = Usage(input_tokens=30, output_tokens=13)


def attempt(
    tier: str, outcome: str, cost: float | None, *, usage: bool = True, error: bool = False
) -> dict[str, Any]:
    a: dict[str, Any] = {"tier": tier, "model": f"{tier}-1", "outcome": outcome, "cost_usd": cost}
    if usage:
        a["usage"] = {"input_tokens": 10, "output_tokens": 5}
    if error:
        a["error"] = "TimeoutError: slow"
    return a


def cascaded(cost: float | None, *attempts: dict[str, Any]) -> dict[str, Any]:
    return {"frugal": {"cascade": {"model": "strong-1", "cost_usd": cost, "attempts": list(attempts)}}}


def of(metadata: dict[str, Any] | None) -> StoredAnswer:
    return StoredAnswer.of("42", model="cascade(cheap-1,strong-1)", usage=USAGE, metadata=metadata)


def test_an_answer_no_cascade_gave_is_priced_from_its_model() -> None:
    stored = StoredAnswer.of("42", model="strong-1", usage=USAGE, metadata={"model_name": "strong-1"})
    assert (stored.model, stored.usage, stored.cost_usd) == ("strong-1", USAGE, None)


def test_a_cascade_answer_costs_what_the_cascade_paid() -> None:
    stored = of(
        cascaded(0.0005, attempt("cheap", "escalated", 0.0001), attempt("strong", "accepted", 0.0004))
    )
    assert (stored.model, stored.cost_usd) == ("strong-1", 0.0005)


def test_a_failed_call_is_no_uncounted_call() -> None:
    stored = of(
        cascaded(
            0.0004,
            attempt("cheap", "error", 0.0, usage=False, error=True),
            attempt("strong", "accepted", 0.0004),
        )
    )
    assert stored.cost_usd == 0.0004


def test_an_unpriced_tier_makes_the_cost_unknown() -> None:
    stored = of(cascaded(None, attempt("cheap", "escalated", None), attempt("strong", "accepted", 0.0004)))
    assert (stored.model, stored.cost_usd) == ("strong-1", UNKNOWN_USD)


def test_a_call_that_reported_no_usage_is_not_free() -> None:
    only = of(cascaded(0.0, attempt("strong", "accepted", 0.0, usage=False)))
    assert (only.model, only.cost_usd) == ("strong-1", None)  # the answer's own call: priced from its usage
    escalated = of(
        cascaded(
            0.0004, attempt("cheap", "escalated", 0.0, usage=False), attempt("strong", "accepted", 0.0004)
        )
    )
    assert escalated.cost_usd is UNKNOWN_USD


@pytest.mark.parametrize("bad", ["0.1", True, [1]])
def test_a_malformed_cost_is_priced_as_usual(bad: Any) -> None:
    assert of(cascaded(bad)).cost_usd is None  # type: ignore[arg-type]


@pytest.mark.parametrize("aio", [False, True])
def test_an_unknown_cost_is_stored_as_unknown_not_looked_up(aio: bool) -> None:
    import asyncio

    ledger = SQLiteLedger()
    cache = AnswerCache(embedder=HashEmbeddings(), ledger=ledger, prices=PRICES)
    request = CacheRequest.from_prompt("What is 6 x 7?", llm_string="m")
    stored = StoredAnswer("42", "strong-1", USAGE, UNKNOWN_USD)
    if aio:
        asyncio.run(stored.astore(cache, request))
    else:
        stored.store(cache, request)
    assert cache.lookup(request) is not None
    (hit,) = ledger.records()
    assert hit.model == "strong-1" and hit.saved_usd is None and hit.price_known is False
