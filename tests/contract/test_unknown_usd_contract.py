"""The unknown-USD contract: a model with no price has no USD, in both wings and every call mode. A cascade of
unpriced tiers reports ``cost_usd=None`` (unknown, not $0) for every attempt and in total, in the answer's metadata
and in its ``routed`` record; a cache over an unpriced model records what a hit saved as ``None`` and leaves
``stats.saved_usd`` (known savings only) untouched."""

from __future__ import annotations

import pytest

from frugal_chains import SQLiteLedger
from frugal_chains.cache import AnswerCache
from frugal_chains.routing import RegexGate
from frugal_chains.testing.fake_embeddings import HashEmbeddings
from tests.contract.wings import PRICES, Script, Wing, routed_extra

SMALL, LARGE = "house-small-1", "house-large-1"
"""Self-hosted models: in no price map (``PRICES`` and LiteLLM's)."""


def test_a_cascade_of_unpriced_tiers_reports_its_usd_as_unknown(wing: Wing, mode: str) -> None:
    target = wing.cascade(
        [
            Script(SMALL, ("I am not sure .",)),
            Script(LARGE, ("It is 42 .",), input_tokens=20, output_tokens=8),
        ],
        gates=[RegexGate(r"\d")],
    )
    obs = target.ask(mode)
    assert obs.error is None, repr(obs.error)
    assert obs.text == "It is 42 ." and obs.outcomes == ["escalated", "accepted"]
    assert obs.frugal is not None
    info = obs.frugal["cascade"]
    assert "cost_usd" in info and info["cost_usd"] is None  # unknown, not 0.0
    assert [a["cost_usd"] for a in info["attempts"]] == [None, None]
    assert [a["usage"] for a in info["attempts"]] == [
        {"input_tokens": 10, "output_tokens": 5},
        {"input_tokens": 20, "output_tokens": 8},
    ]  # the tokens still count
    (extra,) = routed_extra(target.ledger)
    assert "cascade_cost_usd" in extra and extra["cascade_cost_usd"] is None


def test_a_cache_over_an_unpriced_model_saves_an_unknown_amount(wing: Wing, mode: str) -> None:
    question, answer = "What is the capital of France?", "Paris is the capital of France ."
    cache = AnswerCache(embedder=HashEmbeddings(), ledger=SQLiteLedger(), prices=PRICES)
    target = wing.cached(Script(SMALL, (answer,)), cache)
    miss = target.ask(mode, question)
    assert miss.error is None, repr(miss.error)
    hit = target.ask(mode, question)
    assert hit.error is None, repr(hit.error)
    assert hit.text == answer and hit.calls == {SMALL: 1}
    assert hit.frugal is not None and hit.frugal["cache"]["status"] == "hit"
    assert hit.records == [("cache_hit", SMALL, None, 10, 5, 0.0, None)]  # saved: unknown, not 0.0
    stats = cache.stats
    assert stats.hits == 1 and stats.saved_usd == pytest.approx(0.0)
