"""A ``SemanticCache`` given to a ``CascadeChatModel`` (its ``cache=`` field) stores the cascade's answer at what the
cascade paid for it, under the model of the tier that answered; each hit records that saving."""

from __future__ import annotations

import asyncio

import pytest

from frugal_chains import Price, SQLiteLedger
from frugal_chains.cache import AnswerCache
from frugal_chains.langchain import CascadeChatModel, SemanticCache
from frugal_chains.routing import LengthGate
from frugal_chains.testing import FakeUsageChatModel, HashEmbeddings

PRICES = {"cheap-1": Price(input=1.0, output=2.0), "strong-1": Price(input=10.0, output=30.0)}
QUESTION = "What is 6 x 7?"


def cascade(ledger: SQLiteLedger, cheap_model: str = "cheap-1") -> CascadeChatModel:
    cache = SemanticCache(AnswerCache(embedder=HashEmbeddings(), ledger=ledger, prices=PRICES))
    return CascadeChatModel(
        tiers=[
            FakeUsageChatModel(model=cheap_model, responses=["No."]),
            FakeUsageChatModel(model="strong-1", responses=["It is forty-two, surely."]),
        ],
        gates=[LengthGate(min_chars=12)],
        prices=PRICES,
        cache=cache,
    )


@pytest.mark.parametrize("mode", ["invoke", "ainvoke"])
def test_a_hit_saves_what_the_cascade_paid(mode: str) -> None:
    ledger = SQLiteLedger()
    model = cascade(ledger)
    ask = model.invoke if mode == "invoke" else (lambda q: asyncio.run(model.ainvoke(q)))
    first = ask(QUESTION)
    info = first.response_metadata["frugal"]["cascade"]
    assert info["escalations"] == 1 and info["cost_usd"] > 0
    again = ask(QUESTION)
    assert again.response_metadata["frugal"]["cache"]["status"] == "hit"
    (hit,) = [r for r in ledger.records() if r.outcome == "cache_hit"]
    assert hit.model == "strong-1" and hit.cost_usd == 0.0
    assert hit.saved_usd == pytest.approx(info["cost_usd"])
    # the tokens the hit avoided: every call the cascade made
    assert hit.usage.input_tokens == first.usage_metadata["input_tokens"]


def test_an_unpriced_tier_makes_the_saving_unknown() -> None:
    ledger = SQLiteLedger()
    model = cascade(ledger, cheap_model="house-small-1")
    assert model.invoke(QUESTION).response_metadata["frugal"]["cascade"]["cost_usd"] is None
    model.invoke(QUESTION)
    (hit,) = [r for r in ledger.records() if r.outcome == "cache_hit"]
    assert hit.model == "strong-1" and hit.saved_usd is None and hit.price_known is False
