"""The guard's word classes in every wing: with an embedder that finds every pair of questions identical, a cached
answer for children is not served for adults (nor "ascending" for "descending", "free tier" for "paid tier"),
while a paraphrase naming the same audience still is."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from numpy.typing import NDArray

from frugal_chains import SQLiteLedger
from frugal_chains.cache import AnswerCache
from frugal_chains.metadata import cache_status
from tests.contract.wings import PRICES, Wing, cheap

CHILDREN = "What is the maximum daily dose of paracetamol for children?"


class SameVector:
    """Every text gets the same unit vector: similarity 1.0, so only the guard decides."""

    name = "same-vector-8"
    dim = 8

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        return np.tile(np.eye(1, 8, dtype=np.float32), (len(texts), 1))

    async def aembed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        return self.embed(texts)


def new_cache() -> AnswerCache:
    return AnswerCache(embedder=SameVector(), ledger=SQLiteLedger(), prices=PRICES)


@pytest.mark.parametrize(
    ("stored", "asked"),
    [
        (CHILDREN, "What is the maximum daily dose of paracetamol for adults?"),
        ("How do I sort the table ascending?", "How do I sort the table descending?"),
        ("What does the free tier include?", "What does the paid tier include?"),
        ("Which shipping option is cheaper?", "Which shipping option is more expensive?"),
    ],
)
def test_a_look_alike_of_another_class_value_is_not_served(
    wing: Wing, mode: str, stored: str, asked: str
) -> None:
    cache = new_cache()
    target = wing.cached(cheap("first answer", "second answer"), cache)
    assert target.ask(mode, stored).text == "first answer"
    obs = target.ask(mode, asked)
    assert obs.error is None and obs.text == "second answer"
    assert cache_status({"frugal": obs.frugal}) is None
    assert obs.calls == {"cheap-1": 2}
    assert cache.stats.hits == 0


def test_a_paraphrase_for_the_same_audience_is_served(wing: Wing, mode: str) -> None:
    cache = new_cache()
    target = wing.cached(cheap("first answer", "second answer"), cache)
    target.ask(mode, CHILDREN)
    obs = target.ask(mode, "What's the maximum daily dose of paracetamol for kids?")
    assert obs.error is None and obs.text == "first answer"
    assert cache_status({"frugal": obs.frugal}) == "hit"
    assert obs.frugal is not None and obs.frugal["cache"]["tier"] == "semantic"
    assert obs.calls == {"cheap-1": 1}
