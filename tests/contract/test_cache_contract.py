"""The cache contract: ``CachedChatModel`` and ``CachedLLM`` serve a repeated question from the cache in every call
mode (a stream replays it in chunks), record the saving once, bypass what must not be cached, and store a streamed
answer only once its stream finished."""

from __future__ import annotations

import pytest

from frugal_chains import SQLiteLedger
from frugal_chains.cache import AnswerCache, cache_scope
from frugal_chains.cache.replay import replay_pieces
from frugal_chains.metadata import cache_status
from frugal_chains.testing.fake_embeddings import HashEmbeddings
from tests.contract.test_cascade_contract import ok
from tests.contract.wings import MODES, PRICES, Observation, Target, Wing, cheap, cost, pieces

ANSWER = "Paris is the capital of France ."
QUESTION = "What is the capital of France?"
STREAMS = ("stream", "astream")


def new_cache() -> AnswerCache:
    return AnswerCache(embedder=HashEmbeddings(), ledger=SQLiteLedger(), prices=PRICES)


def served(wing: Wing, obs: Observation) -> None:
    """A hit: no spend, one ``cache_hit`` record with what the original call cost, the answer marked."""
    assert obs.error is None
    assert obs.text == ANSWER
    assert cache_status({"frugal": obs.frugal}) == "hit"
    assert obs.frugal is not None and obs.frugal["cache"]["tier"] == "exact"
    assert obs.records == [("cache_hit", "cheap-1", None, 10, 5, 0.0, round(cost("cheap-1", 10, 5), 12))]
    # see the package docstring: LangChain keeps the original token counts on a hit (its own cache does too)
    assert obs.usage == ((10, 5) if wing.name == "langchain" else None)


@pytest.mark.parametrize("first", MODES)
def test_a_miss_is_stored_and_the_same_question_is_then_served(wing: Wing, first: str, mode: str) -> None:
    cache = new_cache()
    target = wing.cached(cheap(ANSWER, "(paid again)"), cache)
    miss = target.ask(first, QUESTION)
    assert miss.error is None and miss.text == ANSWER
    assert cache_status({"frugal": miss.frugal}) is None
    assert miss.calls == {"cheap-1": 1}
    assert miss.records == ok(cheap(ANSWER), None)  # the wrapped call is counted once, the wrapper never

    hit = target.ask(mode, QUESTION)
    served(wing, hit)
    assert hit.calls == {"cheap-1": 1}  # the model was not called again
    assert hit.chunks == (replay_pieces(ANSWER) if mode in STREAMS else [])
    assert cache.stats.hits == 1 and cache.stats.saved_usd == pytest.approx(cost("cheap-1", 10, 5))


def check_bypassed(target: Target, obs: Observation) -> None:
    assert obs.error is None and obs.text == ANSWER
    assert cache_status({"frugal": obs.frugal}) is None
    assert obs.calls == {"cheap-1": 2}
    assert [r.outcome for r in target.ledger.records()] == ["ok", "ok"]  # both paid, no cache_hit


def test_cache_scope_bypass_calls_the_model(wing: Wing, mode: str) -> None:
    target = wing.cached(cheap(ANSWER), new_cache())
    target.ask(mode, QUESTION)
    check_bypassed(target, target.ask(mode, QUESTION, around=lambda: cache_scope(bypass=True)))


def test_a_time_sensitive_question_is_not_served_by_meaning(wing: Wing, mode: str) -> None:
    target = wing.cached(cheap(ANSWER), new_cache())
    target.ask(mode, "What time is it now?")
    check_bypassed(target, target.ask(mode, "what time is it right now?"))
    assert target.model.core.stats.bypassed >= 1


@pytest.mark.parametrize("mode", STREAMS)
def test_a_streamed_miss_is_stored_only_after_the_stream_finished(wing: Wing, mode: str) -> None:
    cache = new_cache()
    target = wing.cached(cheap(ANSWER), cache)
    obs = target.ask(mode, QUESTION, probe=lambda: cache.stats.updates)
    assert obs.error is None and obs.chunks == pieces(ANSWER)
    assert obs.probe == 0  # nothing stored while the answer was still streaming
    assert cache.stats.updates == 1
    served(wing, target.ask("invoke", QUESTION))


@pytest.mark.parametrize("mode", STREAMS)
def test_a_stream_closed_early_is_not_stored(wing: Wing, mode: str) -> None:
    cache = new_cache()
    target = wing.cached(cheap(ANSWER), cache)
    obs = target.ask(mode, QUESTION, stop_after=2)
    assert obs.error is None and len(obs.chunks) == 2
    assert cache.stats.updates == 0
    again = target.ask("invoke", QUESTION)
    assert cache_status({"frugal": again.frugal}) is None and again.calls == {"cheap-1": 2}
