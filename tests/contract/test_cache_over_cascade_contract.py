"""The cache-over-cascade contract: a cache wrapper around a cascade (LangChain ``with_cache(CascadeChatModel)``,
LlamaIndex ``CachedLLM(llm=CascadeLLM)``, what ``configure(tiers=..., cache=...)`` builds) stores the cascade's
answer at what the cascade paid for it (every attempt, each at its own tier's price) under the model of the tier
that answered, so each later hit records that saving; a cascade whose cost is unknown (a tier with no price) gives
hits that saved an unknown amount (``None``), in every call mode."""

from __future__ import annotations

import dataclasses
from typing import Any

from frugal_chains.cache import AnswerCache
from frugal_chains.routing import LengthGate
from frugal_chains.testing.fake_embeddings import HashEmbeddings
from tests.contract.wings import PRICES, Observation, Script, Target, Wing, cheap, cost, strong

SHORT, LONG = "No .", "It is forty-two , surely ."
GATE = LengthGate(min_chars=12)


def cached_cascade(wing: Wing, tiers: list[Script]) -> tuple[Target, AnswerCache]:
    """``wing``'s cascade over ``tiers`` behind the wing's cache wrapper; hits are recorded in the cascade's
    ledger."""
    target = wing.cascade(tiers, gates=[GATE])
    cache = AnswerCache(embedder=HashEmbeddings(), ledger=target.ledger, prices=PRICES)
    model: Any
    if wing.name == "langchain":
        from frugal_chains.langchain import with_cache

        model = with_cache(target.model, cache)
    else:
        from frugal_chains.llama_index import CachedLLM

        model = CachedLLM(llm=target.model, cache=cache, callback_manager=target.model.callback_manager)
    return dataclasses.replace(target, model=model), cache


def hit_record(obs: Observation) -> tuple[Any, ...]:
    (record,) = obs.records
    assert record[0] == "cache_hit", obs.records
    return record


def test_a_hit_saves_what_the_escalating_cascade_paid(wing: Wing, mode: str) -> None:
    target, _cache = cached_cascade(wing, [cheap(SHORT), strong(LONG)])
    first = target.ask(mode)
    assert first.error is None, repr(first.error)
    assert first.frugal is not None and first.outcomes == ["escalated", "accepted"]
    paid = first.frugal["cascade"]["cost_usd"]
    assert paid == round(cost("cheap-1", 10, 5) + cost("strong-1", 20, 8), 12)

    again = target.ask(mode)
    assert again.error is None and again.text == LONG
    _outcome, model, _tier, _inp, _out, spent, saved = hit_record(again)
    assert model == "strong-1"  # the tier that answered, not "cascade(...)"
    assert spent == 0.0 and saved == round(paid, 12)  # not the summed tokens at the strong tier's price
    assert target.tally == {"cheap-1": 1, "strong-1": 1}


def test_a_hit_of_a_first_tier_answer_saves_that_tier_s_call(wing: Wing, mode: str) -> None:
    target, _cache = cached_cascade(wing, [cheap(LONG), strong(LONG)])
    first = target.ask(mode)
    assert first.error is None and first.frugal is not None and first.outcomes == ["accepted"]
    again = target.ask(mode)
    assert hit_record(again)[1:] == ("cheap-1", None, 10, 5, 0.0, round(cost("cheap-1", 10, 5), 12))


def test_a_cascade_with_an_unpriced_tier_gives_hits_of_unknown_saving(wing: Wing, mode: str) -> None:
    house = Script("house-small-1", (SHORT,))  # self-hosted: no price anywhere
    target, _cache = cached_cascade(wing, [house, strong(LONG)])
    first = target.ask(mode)
    assert first.error is None and first.frugal is not None
    assert first.outcomes == ["escalated", "accepted"] and first.frugal["cascade"]["cost_usd"] is None
    again = target.ask(mode)
    _outcome, model, _tier, _inp, _out, spent, saved = hit_record(again)
    # the answering tier has a price, but what the cascade paid is unknown: not a partial sum, not $0
    assert model == "strong-1" and spent == 0.0 and saved is None
