"""The error contract: an error frugal-chains raises while a call runs reaches the caller, in every wing and call
mode, bare, cascaded or cached, and nothing is spent or recorded for the call it stopped.

None of our errors is a ``ValueError`` or a ``TypeError``: hosts catch those around LLM calls (LlamaIndex's refine
synthesizers answer "Empty Response", see ``tests/unit/llama_index/test_errors_reach_query.py``), so each one
asserts that too. What can be checked when an object is built is checked then: a cache whose embedder cannot load
fails when the cache is built, not on every lookup.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

import pytest

from frugal_chains import (
    Budget,
    BudgetExceededError,
    ConfigurationError,
    FrugalChainsError,
    UnknownModelPriceError,
)
from frugal_chains.cache import AnswerCache
from frugal_chains.routing import LLMJudgeGate
from frugal_chains.testing.fake_embeddings import HashEmbeddings
from tests.contract.wings import Observation, Script, Target, Wing, cheap, strong

ROOMY = Budget(max_usd=1.0, scope="global")
TINY = Budget(max_usd=1e-9, scope="global")


class NoVectors:
    """A LangChain-style embedding model that returns no vectors (a broken deployment): found at call time."""

    model = "broken-embeddings"

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return []


# (the failing call's first provider, budget, cache embedder) -> (error, field)
CASES: dict[str, tuple[Script, Budget, Callable[[], Any], type[FrugalChainsError], str | None]] = {
    "unpriced": (Script("unpriced-1"), ROOMY, HashEmbeddings, UnknownModelPriceError, "prices"),
    "refused": (cheap(), TINY, HashEmbeddings, BudgetExceededError, None),
    "uncapped": (cheap(max_tokens=None), ROOMY, HashEmbeddings, ConfigurationError, "max_tokens"),
    "embedder": (cheap(), ROOMY, NoVectors, ConfigurationError, "embedder"),
}
BUILDS = ("plain", "cascade", "cached")
COMBOS = [(c, b) for c in CASES for b in BUILDS if c != "embedder" or b == "cached"]


def build(wing: Wing, case: str, how: str) -> Target:
    first, budget, embedder, _, _ = CASES[case]
    if how == "plain":
        return wing.plain(first, budgets=[budget])
    if how == "cascade":
        return wing.cascade([first, strong()], budgets=[budget])
    return wing.cached(first, AnswerCache(embedder=embedder()), budgets=[budget])


def stopped(obs: Observation, error: type[FrugalChainsError], field: str | None) -> None:
    """The call raised ``error`` to the caller, showed nothing and spent nothing."""
    assert isinstance(obs.error, error), repr(obs.error)
    assert not isinstance(obs.error, (ValueError, TypeError))  # no host catches it by accident
    assert getattr(obs.error, "field", None) == field
    assert obs.chunks == []
    assert obs.calls == {}  # no provider was reached
    assert obs.records == []


@pytest.mark.parametrize(("case", "how"), COMBOS)
def test_an_error_raised_during_a_call_reaches_the_caller(wing: Wing, mode: str, case: str, how: str) -> None:
    target = build(wing, case, how)
    obs = target.ask(mode)
    stopped(obs, CASES[case][3], CASES[case][4])
    committed = target.handler.core.spent(CASES[case][1])
    assert (committed.committed_nano, committed.reserved_nano) == (0, 0)


def test_a_judge_without_a_price_stops_the_cascade_instead_of_failing_its_gate(wing: Wing, mode: str) -> None:
    """A gate's own call refused for a missing price is no failed gate: counted as one, every request would
    escalate (and pay the strong tier) in silence."""
    c = cheap("It is 42 .")
    target = wing.cascade(
        [c, strong()],
        gates=[lambda judge: LLMJudgeGate(judge)],
        judge=Script("unpriced-judge"),
        budgets=[ROOMY],
    )
    obs = target.ask(mode)
    assert isinstance(obs.error, UnknownModelPriceError) and obs.error.model == "unpriced-judge"
    assert obs.calls == {"cheap-1": 1}  # the cheap answer was paid for; the strong tier was never called
    assert obs.chunks == []  # a judged tier is buffered: nothing was shown
    assert [r[:2] for r in obs.records] == [("ok", "cheap-1")]


@pytest.mark.parametrize("bad", ["x", 42, object()], ids=["unknown-name", "int", "object"])
def test_a_cache_whose_embedder_cannot_load_fails_when_it_is_built(wing: Wing, bad: Any) -> None:
    with pytest.raises(ConfigurationError) as e:
        wing.cached(cheap(), AnswerCache(embedder=bad))
    assert e.value.field == "embedder"
    assert "embed_documents" in str(e.value)  # says what an embedder is


def test_a_cache_whose_default_embedder_is_not_installed_fails_when_it_is_built(
    wing: Wing, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the ``embeddings`` extra the default model cannot load: the cache says so when it is built (every
    lookup would miss otherwise); ``semantic=False`` needs no embedder."""
    import frugal_chains.embeddings.minilm as minilm

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a)
    )
    monkeypatch.setattr(minilm, "_default", None)
    with pytest.raises(ConfigurationError) as e:
        wing.cached(cheap(), AnswerCache())
    assert e.value.field == "embedder"
    assert 'pip install "frugal-chains[embeddings]"' in str(e.value) and "semantic=False" in str(e.value)
    assert isinstance(e.value.__cause__, ImportError)
    exact_only = wing.cached(cheap(), AnswerCache(semantic=False))
    assert exact_only.ask("invoke").text == "It is 42 ."
