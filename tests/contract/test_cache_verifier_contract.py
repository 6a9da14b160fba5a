"""The cache verifier contract: ``CachedChatModel`` and ``CachedLLM`` with a verifier behave the same in every call
mode. Under ``preset="strict"`` a paraphrase is served only on the verifier's yes and an exact repeat without
asking it; a verifier may add a hit below the threshold; the wing's LLM judge (``judge_verifier``) records its own
call in the ledger, and a judge that fails is a miss the model answers."""

from __future__ import annotations

from typing import Any

import pytest

from frugal_chains import SQLiteLedger
from frugal_chains.cache import AnswerCache, CallableVerifier
from frugal_chains.cache.guard import VERIFIER_PURPOSE
from frugal_chains.metadata import cache_status
from frugal_chains.testing.fake_embeddings import HashEmbeddings
from tests.contract.wings import PRICES, Observation, Wing, cheap, cost

ANSWER = "The refund window is 30 days ."
STORED = "How long is the refund window?"
ASKED = "How long is the refund window please?"


class Recorder:
    """A verifier that says ``answer`` and records which path asked it."""

    def __init__(self, answer: bool) -> None:
        self.answer = answer
        self.asked: list[str] = []

    def verify(self, query: str, cached: str, similarity: float) -> bool:
        self.asked.append("sync")
        return self.answer

    async def averify(self, query: str, cached: str, similarity: float) -> bool:
        self.asked.append("async")
        return self.answer


def strict(verifier: Any, **kw: Any) -> AnswerCache:
    return AnswerCache(
        embedder=HashEmbeddings(),
        ledger=SQLiteLedger(),
        prices=PRICES,
        preset="strict",
        verifier=verifier,
        **kw,
    )


def path(mode: str) -> str:
    return "async" if mode.startswith("a") else "sync"


def hit(obs: Observation, tier: str) -> bool:
    assert obs.error is None and obs.text == ANSWER
    return (
        cache_status({"frugal": obs.frugal}) == "hit"
        and obs.frugal is not None
        and obs.frugal["cache"]["tier"] == tier
    )


@pytest.mark.parametrize("says", [True, False], ids=["yes", "no"])
def test_strict_serves_a_paraphrase_only_on_the_verifiers_yes(wing: Wing, mode: str, says: bool) -> None:
    verifier = Recorder(says)
    target = wing.cached(cheap(ANSWER), strict(verifier))
    target.ask("invoke", STORED)
    obs = target.ask(mode, ASKED)
    assert verifier.asked == [path(mode)]  # the wing's sync or async path reached the verifier's own
    assert hit(obs, "semantic") is says
    assert obs.calls == {"cheap-1": 1 if says else 2}


def test_strict_serves_an_exact_repeat_without_asking_the_verifier(wing: Wing, mode: str) -> None:
    verifier = Recorder(False)
    target = wing.cached(cheap(ANSWER), strict(verifier))
    target.ask("invoke", STORED)
    obs = target.ask(mode, STORED)
    assert hit(obs, "exact")
    assert verifier.asked == [] and obs.calls == {"cheap-1": 1}


def test_a_verifier_adds_a_hit_below_the_threshold(wing: Wing, mode: str) -> None:
    cache = AnswerCache(
        embedder=HashEmbeddings(),
        prices=PRICES,
        threshold=0.95,
        verifier=CallableVerifier(lambda q, c, s: True),
    )
    target = wing.cached(cheap(ANSWER), cache)
    target.ask("invoke", STORED)
    obs = target.ask(mode, ASKED)
    assert hit(obs, "semantic") and obs.frugal is not None and obs.frugal["cache"]["similarity"] < 0.95
    assert (cache.stats.verifier_added, cache.stats.verifier_calls) == (1, 1)


def wing_judge(wing: Wing, answer: str, *, fail: bool = False) -> Any:
    """The wing's own judge model behind that wing's ``judge_verifier`` (model ``judge-1``, priced in PRICES)."""
    error = (lambda: TimeoutError("judge timed out")) if fail else None
    if wing.name == "langchain":
        from frugal_chains.langchain import judge_verifier as lc_judge_verifier
        from frugal_chains.testing import FakeUsageChatModel

        return lc_judge_verifier(
            FakeUsageChatModel(model="judge-1", responses=[answer], output_tokens=1, fail_with=error)
        )
    from frugal_chains.llama_index import judge_verifier as li_judge_verifier
    from frugal_chains.testing import FakeUsageLLM

    return li_judge_verifier(
        FakeUsageLLM(model="judge-1", responses=answer, output_tokens=1, fail_with=error)
    )


def test_the_llm_judges_call_is_recorded_in_the_ledger(wing: Wing, mode: str) -> None:
    cache = strict(wing_judge(wing, "Yes."))
    target = wing.cached(cheap(ANSWER), cache)
    target.ask("invoke", STORED)
    obs = target.ask(mode, ASKED)
    assert hit(obs, "semantic") and obs.calls == {"cheap-1": 1}
    assert cache.ledger is not None
    judged = [r for r in cache.ledger.records() if r.extra.get("purpose") == VERIFIER_PURPOSE]
    assert len(judged) == 1
    [r] = judged
    assert (r.outcome, r.model, r.usage.output_tokens, r.usage_estimated) == ("ok", "judge-1", 1, False)
    assert r.usage.input_tokens > 0
    assert r.cost_usd == pytest.approx(cost("judge-1", r.usage.input_tokens, 1))
    assert [x[0] for x in obs.records] == [
        "ok",
        "cache_hit",
    ]  # the judge's call and the hit: nothing else paid


def test_a_failing_llm_judge_is_a_miss_the_model_answers(wing: Wing, mode: str) -> None:
    cache = strict(wing_judge(wing, "Yes.", fail=True))
    target = wing.cached(cheap(ANSWER), cache)
    target.ask("invoke", STORED)
    obs = target.ask(mode, ASKED)
    assert obs.error is None and obs.text == ANSWER
    assert cache_status({"frugal": obs.frugal}) != "hit"
    assert obs.calls == {"cheap-1": 2}
    assert cache.stats.errors == 1 and cache.stats.hits == 0
