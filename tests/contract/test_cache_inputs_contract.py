"""Odd questions through ``CachedChatModel`` and ``CachedLLM``: an empty or punctuation-only question is never cached
(neither served nor stored: they would all share one answer), and a lone surrogate in a question is input, not a
backend outage (the answer is stored and served, nothing is logged)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pytest

from frugal_chains import SQLiteLedger
from frugal_chains.cache import AnswerCache
from frugal_chains.metadata import cache_status
from frugal_chains.testing.fake_embeddings import HashEmbeddings
from tests.contract.wings import MODES, PRICES, Wing, cheap

ANSWER = "Paris is the capital of France ."


class Utf8Embeddings:
    """A LangChain-style embedding model that sends its texts out as UTF-8, like every remote embedding API (a
    lone surrogate does not encode)."""

    model = "utf8-fake"

    def __init__(self) -> None:
        self._fake = HashEmbeddings()

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        return [
            [float(x) for x in row] for row in self._fake.embed([t.encode("utf-8").decode() for t in texts])
        ]


def new_cache() -> AnswerCache:
    return AnswerCache(embedder=Utf8Embeddings(), ledger=SQLiteLedger(), prices=PRICES)


@pytest.mark.parametrize(("first", "second"), [("", "?"), ("?", ""), ("...", "¿?"), (" ?! ", "?")])
def test_empty_and_punctuation_only_questions_are_never_cached(
    wing: Wing, mode: str, first: str, second: str
) -> None:
    cache = new_cache()
    target = wing.cached(cheap(ANSWER, "(paid again)"), cache)
    miss = target.ask(mode, first)
    assert miss.error is None and miss.text == ANSWER
    again = target.ask(mode, second)
    assert again.error is None
    assert again.text == "(paid again)"  # not the answer to another empty question
    assert cache_status({"frugal": again.frugal}) is None
    assert again.calls == {"cheap-1": 2}
    assert [r.outcome for r in target.ledger.records()] == ["ok", "ok"]
    stats = cache.stats
    assert (stats.updates, stats.hits, stats.bypassed, stats.errors) == (0, 0, 2, 0)
    assert len(cache) == 0  # nothing stored


@pytest.mark.parametrize("first", MODES)
def test_a_question_with_content_next_to_an_empty_one_is_still_cached(
    wing: Wing, mode: str, first: str
) -> None:
    cache = new_cache()
    target = wing.cached(cheap("Ask me something .", ANSWER), cache)
    target.ask(first, "?")
    target.ask(first, "Capital of France?")
    hit = target.ask(mode, "capital of france")
    assert hit.text == ANSWER and cache_status({"frugal": hit.frugal}) == "hit"
    assert hit.calls == {"cheap-1": 2}
    assert cache.stats.updates == 1 and cache.stats.bypassed == 1


@pytest.mark.parametrize("first", MODES)
def test_a_lone_surrogate_is_input_not_an_outage(
    wing: Wing, mode: str, first: str, caplog: pytest.LogCaptureFixture
) -> None:
    cache = new_cache()
    target = wing.cached(cheap(ANSWER, "(paid again)"), cache)
    question = "What is the capital of France \ud800?"
    with caplog.at_level(logging.WARNING, logger="frugal_chains"):
        miss = target.ask(first, question)
        hit = target.ask(mode, question)
    assert miss.error is None and miss.text == ANSWER
    assert hit.error is None and hit.text == ANSWER
    assert cache_status({"frugal": hit.frugal}) == "hit"
    assert hit.calls == {"cheap-1": 1}
    assert cache.stats.errors == 0 and cache.stats.updates == 1
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
