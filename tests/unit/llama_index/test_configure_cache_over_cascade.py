"""``configure(tiers=..., cache=...)`` puts the cache over the cascade: a hit is recorded under the model of the
tier that answered and saves what the cascade paid, through a real ``VectorStoreIndex`` query engine."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.base.llms.types import CompletionResponse, CompletionResponseGen, LLMMetadata
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.core.llms.custom import CustomLLM

import frugal_chains.llama_index.settings as configure_module
from frugal_chains import Budget, Price
from frugal_chains.cache import AnswerCache
from frugal_chains.llama_index import FrugalSettings, configure
from frugal_chains.routing import RegexGate
from frugal_chains.testing import HashEmbeddings

QUESTION = "What is the capital of France?"
PRICES = {"acme-1": Price(input=1.0, output=2.0), "acme-strong": Price(input=10.0, output=30.0)}


class Provider(CustomLLM):
    """A provider answering ``answer``; with ``usage`` it reports ``(prompt, completion)`` tokens in ``raw`` as
    OpenAI does, without it it reports none."""

    model: str = "acme-1"
    answer: str = "Paris."
    usage: tuple[int, int] | None = None
    max_tokens: int | None = 64

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name=self.model)

    def _response(self, **kw: Any) -> CompletionResponse:
        raw = None
        if self.usage is not None:
            raw = {
                "model": self.model,
                "usage": {"prompt_tokens": self.usage[0], "completion_tokens": self.usage[1]},
            }
        return CompletionResponse(text=self.answer, raw=raw, **kw)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return self._response()

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        def gen() -> CompletionResponseGen:
            yield self._response(delta=self.answer)

        return gen()


@pytest.fixture(autouse=True)
def settings() -> Iterator[Any]:
    saved = {f.name: getattr(Settings, f.name) for f in dataclasses.fields(Settings)}
    Settings.embed_model = MockEmbedding(embed_dim=8)
    Settings._llm, Settings._callback_manager = None, None
    yield Settings
    if configure_module._active is not None:
        configure_module._active.reset()
    for name, value in saved.items():
        setattr(Settings, name, value)


def ask_twice(cheap: Provider, strong: Provider, *, streaming: bool) -> tuple[FrugalSettings, Any]:
    """The same question twice through a query engine; returns the settings and the hit's record."""
    frugal = configure(
        tiers=[cheap, strong],
        gates=[RegexGate(r"Paris")],
        cache=AnswerCache(embedder=HashEmbeddings()),
        budgets=[Budget(max_usd=1.0, scope="global")],
        prices=PRICES,
    )
    index = VectorStoreIndex.from_documents([Document(text="Paris is the capital of France.")])
    engine = index.as_query_engine(similarity_top_k=1, streaming=streaming)
    for _ in range(2):
        response = engine.query(QUESTION)
        text = "".join(response.response_gen) if streaming else str(response)
        assert text == "Paris."
    hits = [r for r in frugal.ledger.records() if r.outcome == "cache_hit"]
    assert len(hits) == 1
    return frugal, hits[0]


@pytest.mark.parametrize("streaming", [False, True])
def test_a_hit_saves_what_the_cascade_paid_under_the_answering_tier(streaming: bool) -> None:
    cheap = Provider(answer="I am not sure.", usage=(40, 5))
    strong = Provider(model="acme-strong", usage=(40, 2))
    frugal, hit = ask_twice(cheap, strong, streaming=streaming)
    paid = (40 * 1.0 + 5 * 2.0 + 40 * 10.0 + 2 * 30.0) / 1e6
    (routed,) = [r for r in frugal.ledger.records() if r.outcome == "routed"]
    assert routed.extra["cascade_cost_usd"] == pytest.approx(paid)
    assert hit.model == "acme-strong" and hit.cost_usd == 0.0
    assert hit.saved_usd == pytest.approx(paid)


@pytest.mark.parametrize("streaming", [False, True])
def test_a_first_tier_answer_with_no_reported_usage_is_priced_from_its_estimate(streaming: bool) -> None:
    _frugal, hit = ask_twice(Provider(), Provider(model="acme-strong"), streaming=streaming)
    assert hit.model == "acme-1"  # not "cascade(acme-1,acme-strong)", which has no price
    assert hit.saved_usd is not None and hit.saved_usd > 0


def test_an_escalation_through_tiers_with_no_reported_usage_saves_an_unknown_amount() -> None:
    """The cascade counted $0 for calls that reported no usage: that is not what the hit saved."""
    cheap = Provider(answer="I am not sure.")
    _frugal, hit = ask_twice(cheap, Provider(model="acme-strong"), streaming=False)
    assert hit.model == "acme-strong" and hit.saved_usd is None
