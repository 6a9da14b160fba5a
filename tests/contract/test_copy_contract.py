"""A deep copy of a cascade or a cache wrapper (``copy.deepcopy``, what ``model_copy(deep=True)`` and chains that
copy their models do) shares the original's budget handler, cache, router stats and ledger: a copy never bypasses a
budget nor fills a cache nobody reads."""

from __future__ import annotations

import copy
import dataclasses

import pytest

from frugal_chains import SQLiteLedger
from frugal_chains.cache import AnswerCache
from frugal_chains.metadata import cache_status
from frugal_chains.routing import RegexGate
from frugal_chains.testing.fake_embeddings import HashEmbeddings
from tests.contract.test_budget_contract import ROOMY, TINY, spent
from tests.contract.wings import PRICES, Target, Wing, cheap, strong

ANSWER = "Paris is the capital of France ."
QUESTION = "What is the capital of France?"


def twin_of(target: Target) -> Target:
    twin = dataclasses.replace(target, model=copy.deepcopy(target.model))
    assert twin.model is not target.model
    return twin


def test_a_deep_copied_cache_wrapper_reads_and_writes_the_same_cache(wing: Wing, mode: str) -> None:
    cache = AnswerCache(embedder=HashEmbeddings(), ledger=SQLiteLedger(), prices=PRICES)
    target = wing.cached(cheap(ANSWER, "Madrid is the capital of Spain ."), cache)
    target.ask("invoke", QUESTION)
    twin = twin_of(target)
    assert twin.model.core is cache
    hit = twin.ask(mode, QUESTION)  # stored through the original, served through the copy
    assert hit.error is None and hit.text == ANSWER and cache_status({"frugal": hit.frugal}) == "hit"
    twin.ask(mode, "What is the capital of Spain?")  # stored through the copy ...
    back = target.ask(mode, "What is the capital of Spain?")  # ... served through the original
    assert back.text == "Madrid is the capital of Spain ." and cache_status({"frugal": back.frugal}) == "hit"
    assert cache.stats.hits == 2 and cache.stats.updates == 2
    assert [r.outcome for r in target.ledger.records()].count("cache_hit") == 2


def test_a_deep_copied_cascade_shares_budget_stats_and_ledger(wing: Wing, mode: str) -> None:
    target = wing.cascade([cheap("I am not sure ."), strong()], gates=[RegexGate(r"\d")], budgets=[ROOMY])
    first = target.ask(mode)
    twin = twin_of(target)
    second = twin.ask(mode)
    assert first.error is None and second.error is None and second.text == first.text
    # both requests in one RouterStats: (attempts, escalations, errors, accepted) per tier
    assert target.tier_stats() == {"cheap-1": (2, 2, 0, 0), "strong-1": (2, 0, 0, 2)}
    assert [r.outcome for r in target.ledger.records()].count("routed") == 2
    committed, reserved = spent(target, ROOMY)  # both requests' spend in the original handler's budget
    assert reserved == 0
    assert first.frugal is not None
    assert committed / 1e9 == pytest.approx(2 * first.frugal["cascade"]["cost_usd"])


def test_a_deep_copied_cascade_is_refused_by_the_same_budget(wing: Wing, mode: str) -> None:
    from frugal_chains.errors import BudgetExceededError

    target = wing.cascade([cheap(), strong()], budgets=[TINY])
    obs = twin_of(target).ask(mode)
    assert type(obs.error) is BudgetExceededError
    assert obs.records == [] and spent(target, TINY) == (0, 0)
