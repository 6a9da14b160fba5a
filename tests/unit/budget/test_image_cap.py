"""A hard token cap refuses, before any spend, a call whose images could cross it: images are reserved by their
provider's rule (one high-detail image of unknown size on gpt-4o-mini may cost 2,833 + 8 x 5,667 tokens), not by a
flat 1,600 tokens."""

from __future__ import annotations

from typing import Any

import pytest

from frugal_chains import Budget, BudgetExceededError
from frugal_chains.budget import BudgetGuard


def part(detail: str) -> dict[str, Any]:
    """An image given by URL (its size unknown before the call)."""
    return {"type": "image_url", "image_url": {"url": "https://example.com/photo.jpg", "detail": detail}}


def test_a_hard_token_cap_refuses_a_high_detail_image_of_unknown_size_before_spending() -> None:
    """One high-detail image by URL on gpt-4o-mini may cost 2,833 + 8 x 5,667 tokens: a 20,000-token cap refuses
    the call before it is made (the old flat 1,600 let it through and the first call crossed the cap)."""
    cap = Budget(max_tokens=20_000, scope="global")
    guard = BudgetGuard([cap])
    messages = [{"role": "user", "content": [{"type": "text", "text": "What is in it?"}, part("high")]}]
    plan = guard.plan(messages, model="gpt-4o-mini", provider="openai", max_output_tokens=100)
    assert plan.input_tokens > 48_000
    with pytest.raises(BudgetExceededError) as e:
        guard.reserve(plan)
    assert e.value.budget is cap and e.value.unit == "tokens"
    assert guard.spent(cap).committed_tokens == 0 and guard.spent(cap).reserved_tokens == 0
    # the same image at low detail (85 x 33.3 tokens on gpt-4o-mini) fits
    low = [{"role": "user", "content": [part("low")]}]
    guard.release(
        guard.reserve(guard.plan(low, model="gpt-4o-mini", provider="openai", max_output_tokens=100))
    )


def test_a_langchain_call_with_an_image_is_refused_before_the_provider_is_reached() -> None:
    from langchain_core.messages import HumanMessage

    from frugal_chains.langchain import TokenBudgetHandler
    from frugal_chains.testing import FakeUsageChatModel

    model = FakeUsageChatModel(model="gpt-4o-mini", max_tokens=100)
    handler = TokenBudgetHandler(Budget(max_tokens=20_000, scope="global"))
    message = HumanMessage(content=[{"type": "text", "text": "What is in it?"}, part("high")])
    with pytest.raises(BudgetExceededError):
        model.invoke([message], config={"callbacks": [handler]})
    assert [r.outcome for r in handler.core.ledger.records()] == ["refused"]  # nothing spent
    model.invoke("What is in it?", config={"callbacks": [handler]})  # without the image the call fits
    assert [r.outcome for r in handler.core.ledger.records()] == ["refused", "ok"]


def test_a_llama_index_call_with_an_image_is_refused_before_the_provider_is_reached() -> None:
    from llama_index.core.base.llms.types import ChatMessage, ImageBlock, TextBlock
    from llama_index.core.callbacks import CallbackManager
    from llama_index.core.llms.mock import MockLLM

    from frugal_chains import Price
    from frugal_chains.llama_index import TokenBudgetHandler

    handler = TokenBudgetHandler(
        Budget(max_tokens=20_000, scope="global"),
        prices={"gpt-4o-mini": Price(input=0.15, output=0.6, max_output_tokens=100)},
    )

    class Mini(MockLLM):
        @property
        def metadata(self) -> Any:
            meta = super().metadata
            return meta.model_copy(update={"model_name": "gpt-4o-mini"})

    llm = Mini(max_tokens=5, callback_manager=CallbackManager([handler]))
    message = ChatMessage(
        role="user",
        blocks=[TextBlock(text="What is in it?"), ImageBlock(url="https://example.com/photo.jpg")],
    )
    with pytest.raises(BudgetExceededError):
        llm.chat([message])
    assert [r.outcome for r in handler.core.ledger.records()] == ["refused"]  # nothing spent
    llm.chat([ChatMessage(role="user", content="What is in it?")])  # without the image the call fits
    assert [r.outcome for r in handler.core.ledger.records()] == ["refused", "ok"]
