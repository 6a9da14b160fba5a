"""``llm.as_structured_llm(...)`` (what agents with an ``output_cls`` use) under a budget: the ``StructuredLLM`` sends
its own LLM event, but the call is the wrapped LLM's, with that LLM's model and output cap."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from llama_index.core.base.llms.types import CompletionResponse, CompletionResponseGen, LLMMetadata
from llama_index.core.callbacks import CallbackManager
from llama_index.core.llms import ChatMessage, MockLLM
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.core.llms.custom import CustomLLM
from pydantic import BaseModel, Field

from frugal_chains import Budget, Price
from frugal_chains.llama_index import TokenBudgetHandler


class Provider(CustomLLM):
    """A paid provider with an output cap of 64 tokens, answering JSON."""

    model: str = "acme-1"
    max_tokens: int | None = 64
    calls: int = Field(default=0, exclude=True)

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name=self.model)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        self.calls += 1
        return CompletionResponse(text='{"answer": "Paris"}')

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        raise NotImplementedError


class Answer(BaseModel):
    answer: str


QUESTION = [ChatMessage(role="user", content="What is the capital of France?")]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_structured_call_reserves_the_wrapped_llms_output_cap(mode: str) -> None:
    # 64 output tokens at $10/M fit $0.01; the model's whole output limit (10,000 tokens, $0.10) does not
    prices = {"acme-1": Price(input=1.0, output=10.0, max_output_tokens=10_000)}
    handler = TokenBudgetHandler([Budget(max_usd=0.01, scope="global")], prices=prices)
    manager = CallbackManager([handler])
    llm = Provider(callback_manager=manager)
    structured = llm.as_structured_llm(Answer)
    structured.callback_manager = manager
    response = structured.chat(QUESTION) if mode == "sync" else asyncio.run(structured.achat(QUESTION))
    assert response.raw == Answer(answer="Paris")
    assert llm.calls == 1
    assert [(r.model, r.outcome) for r in handler.ledger.records()] == [("acme-1", "ok")]


def test_a_structured_call_on_an_llm_priced_by_class_name_is_priced_as_that_llm() -> None:
    # MockLLM names no model: it is priced by its class name, which a StructuredLLM's event does not carry
    handler = TokenBudgetHandler(
        [Budget(max_usd=1.0, scope="global")], prices={"MockLLM": Price(input=1, output=1)}
    )
    manager = CallbackManager([handler])
    structured = MockLLM(max_tokens=8, callback_manager=manager).as_structured_llm(Answer)
    structured.callback_manager = manager
    with pytest.raises(ValueError, match="json"):  # MockLLM does not answer JSON; the call itself was allowed
        structured.chat(QUESTION)
    assert [(r.model, r.outcome) for r in handler.ledger.records()] == [("MockLLM", "ok")]
