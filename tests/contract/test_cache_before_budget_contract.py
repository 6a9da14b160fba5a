"""Cache before budget: a user over budget still gets the answers the cache holds (they cost nothing), recorded as
``cache_hit`` at $0, while a miss is still refused before any money is spent, in every wing and call mode.

``CachedChatModel`` and ``CachedLLM`` look the call up first and start the wrapped model's call (the one the budget
reserves) only on a miss, so a hit never asks the budget. (LangChain's own cache, ``set_llm_cache``, is looked up
after the budget handler's start event: see ``tests/unit/langchain/test_cache_before_budget.py``.)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from frugal_chains import Budget, SQLiteLedger, attribute
from frugal_chains.cache import AnswerCache
from frugal_chains.errors import BudgetExceededError
from frugal_chains.metadata import cache_status
from frugal_chains.testing.fake_embeddings import HashEmbeddings
from tests.contract.wings import PRICES, Observation, Target, Wing, cheap, cost

ANSWER = "Paris is the capital of France ."
QUESTION = "What is the capital of France?"
OVER = Budget(max_usd=1e-9, scope="user")
"""Smaller than any call's worst case: the user is over budget for any paid call."""
HIT = ("cache_hit", "cheap-1", None, 10, 5, 0.0, round(cost("cheap-1", 10, 5), 12))


def paid_or_served(obs: Observation) -> list[tuple[Any, ...]]:
    """The spend and cache-hit records of a call (records of refused calls, which write no spend, are not compared
    here)."""
    return [r for r in obs.records if r[0] in ("ok", "cache_hit")]


def new_cache() -> AnswerCache:
    return AnswerCache(embedder=HashEmbeddings(), ledger=SQLiteLedger(), prices=PRICES)


def as_user(user: str, tenant: str = "acme") -> contextlib.AbstractContextManager[object]:
    @contextlib.contextmanager
    def block() -> Iterator[object]:
        with attribute(user_id=user, tenant_id=tenant) as a:  # the tenant also scopes the cache
            yield a

    return block()


def seeded(wing: Wing, cache: AnswerCache, tenant: str = "acme") -> None:
    """Another user of ``tenant``, with no budget, asked QUESTION: its answer is in the cache."""
    seed = wing.cached(cheap(ANSWER), cache)
    obs = seed.ask("invoke", QUESTION, around=lambda: as_user("u0", tenant))
    assert obs.error is None and obs.calls == {"cheap-1": 1}


def nothing_held(target: Target) -> None:
    with as_user("u1") as a:
        counter = target.handler.core.spent(OVER, a)
    assert (counter.committed_nano, counter.reserved_nano) == (0, 0)


def test_a_user_over_budget_is_served_a_cached_answer_at_no_cost(wing: Wing, mode: str) -> None:
    cache = new_cache()
    seeded(wing, cache)
    target = wing.cached(cheap(ANSWER), cache, budgets=[OVER])
    obs = target.ask(mode, QUESTION, around=lambda: as_user("u1"))
    assert obs.error is None, repr(obs.error)
    assert obs.text == ANSWER
    assert cache_status({"frugal": obs.frugal}) == "hit"
    assert obs.calls == {}  # the model was not called
    assert paid_or_served(obs) == [HIT]
    assert target.ledger.records()[-1].attribution.user_id == "u1"
    assert cache.stats.hits == 1
    nothing_held(target)


def test_a_miss_of_a_user_over_budget_is_refused_before_the_model_is_called(wing: Wing, mode: str) -> None:
    cache = new_cache()
    seeded(wing, cache)
    target = wing.cached(cheap(ANSWER), cache, budgets=[OVER])
    obs = target.ask(mode, "What is the capital of Spain?", around=lambda: as_user("u1"))
    assert isinstance(obs.error, BudgetExceededError)
    assert obs.calls == {}
    assert obs.chunks == []
    assert paid_or_served(obs) == []
    assert cache.stats.hits == 0
    nothing_held(target)


def test_another_tenants_cached_answer_is_not_served_to_a_user_over_budget(wing: Wing, mode: str) -> None:
    cache = new_cache()
    seeded(wing, cache, tenant="globex")
    target = wing.cached(cheap(ANSWER), cache, budgets=[OVER])
    obs = target.ask(mode, QUESTION, around=lambda: as_user("u1", "acme"))
    assert isinstance(obs.error, BudgetExceededError)
    assert obs.calls == {}
    assert paid_or_served(obs) == []
    assert cache.stats.hits == 0
