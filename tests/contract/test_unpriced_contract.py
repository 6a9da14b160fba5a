"""The unpriced-model contract: under token budgets alone, both ``TokenBudgetHandler`` s let a model with no price
through (no ``prices=``, no ``unknown_model=``), reserve and commit it in tokens, record its USD as unknown
(``None``, never ``$0``), refuse the call that would pass the token limit and flag a token overshoot, whatever the
call mode and whether the call is bare, cascaded or behind a cache wrapper."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from frugal_chains import Budget, SQLiteLedger
from frugal_chains.cache import AnswerCache
from frugal_chains.errors import BudgetExceededError
from frugal_chains.routing import RegexGate
from frugal_chains.testing.fake_embeddings import HashEmbeddings
from tests.contract.test_cascade_contract import routed
from tests.contract.wings import PRICES, Script, Target, Wing

SMALL, LARGE = "house-small-1", "house-large-1"
"""Self-hosted models: in no price map (``PRICES`` and LiteLLM's)."""
TOKENS = Budget(max_tokens=2_000, scope="global")


def small(*answers: str, **kw: Any) -> Script:
    return Script(SMALL, answers or ("It is 42 .",), **kw)


def large(*answers: str, **kw: Any) -> Script:
    return Script(LARGE, answers or ("It is 42 .",), input_tokens=20, output_tokens=8, **kw)


def unpriced(script: Script, tier: str | None) -> tuple[Any, ...]:
    """The record of one call of ``script``: its tokens, its USD unknown."""
    return ("ok", script.model, tier, script.input_tokens, script.output_tokens, None, 0.0)


def tokens_spent(target: Target, budget: Budget = TOKENS) -> tuple[int, int, int]:
    """(committed tokens, still reserved tokens, committed nano-USD) of ``budget``."""
    c = target.handler.core.spent(budget)
    return c.committed_tokens, c.reserved_tokens, c.committed_nano


def test_a_token_budget_lets_an_unpriced_model_through(wing: Wing, mode: str) -> None:
    s = small()
    target = wing.plain(s, budgets=[TOKENS])
    obs = target.ask(mode)
    assert obs.error is None, repr(obs.error)
    assert obs.text == "It is 42 ."
    assert obs.records == [unpriced(s, None)]
    (record,) = target.ledger.records()
    assert record.price_known is False and record.reserved_usd is None and record.overshoot_usd is None
    assert tokens_spent(target) == (15, 0, 0)


def test_the_call_past_the_token_limit_is_refused(wing: Wing, mode: str) -> None:
    s = small(output_tokens=200)
    limit = Budget(
        max_tokens=400, scope="global"
    )  # one call's worst case (~280) fits, 210 spent + ~280 does not
    target = wing.plain(s, budgets=[limit])
    first = target.ask(mode)
    assert first.error is None, repr(first.error)
    second = target.ask(mode)
    assert isinstance(second.error, BudgetExceededError)
    assert second.error.unit == "tokens" and second.error.spent == 210
    assert second.calls == {SMALL: 1}  # the provider was not reached again
    assert second.records == [] and second.chunks == []
    assert tokens_spent(target, limit) == (210, 0, 0)


def test_a_token_overshoot_is_flagged(wing: Wing, mode: str, caplog: pytest.LogCaptureFixture) -> None:
    s = small(output_tokens=1_000)  # far past the 256-token output cap the reservation counted
    target = wing.plain(s, budgets=[TOKENS])
    with caplog.at_level(logging.WARNING, logger="frugal_chains.budget"):
        obs = target.ask(mode)
    assert obs.error is None, repr(obs.error)
    (record,) = target.ledger.records()
    assert record.cost_usd is None and record.overshoot_usd is None  # unknown, not 0.0
    assert 700 < record.overshoot_tokens < 1_010
    assert f"{record.overshoot_tokens} more than" in caplog.text and "USD unknown" in caplog.text
    assert tokens_spent(target) == (1_010, 0, 0)  # committed in full


def test_a_cascade_of_unpriced_tiers_commits_each_call_in_tokens(wing: Wing, mode: str) -> None:
    s, b = small("I am not sure ."), large()
    target = wing.cascade([s, b], gates=[RegexGate(r"\d")], budgets=[TOKENS])
    obs = target.ask(mode)
    assert obs.error is None, repr(obs.error)
    assert obs.outcomes == ["escalated", "accepted"]
    assert obs.records == [unpriced(s, SMALL), unpriced(b, LARGE), routed(LARGE)]
    assert tokens_spent(target) == (15 + 28, 0, 0)


def test_a_cache_wrapper_over_an_unpriced_model(wing: Wing, mode: str) -> None:
    s = small("Paris is the capital of France .")
    cache = AnswerCache(embedder=HashEmbeddings(), ledger=SQLiteLedger(), prices=PRICES)
    target = wing.cached(s, cache, budgets=[TOKENS])
    miss = target.ask(mode, "What is the capital of France?")
    assert miss.error is None, repr(miss.error)
    assert miss.records == [unpriced(s, None)]
    hit = target.ask(mode, "What is the capital of France?")
    assert hit.error is None and hit.text == "Paris is the capital of France ."
    assert hit.calls == {SMALL: 1}
    assert [r[0] for r in hit.records] == ["cache_hit"]
    assert tokens_spent(target) == (15, 0, 0)  # the hit spent nothing and holds nothing
