"""A caller that stops reading a wrapper's stream closes the provider's stream at once (sync ``close()`` and async
``aclose()``), so the connection is released and the budget handler ends the call before control returns."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import Field

from frugal_chains import Budget, Price, SQLiteLedger
from frugal_chains.cache import AnswerCache
from frugal_chains.langchain import CascadeChatModel, TokenBudgetHandler, with_cache
from frugal_chains.testing.fake_embeddings import HashEmbeddings

PIECES = ["one ", "two ", "three"]


class Tracking(BaseChatModel):
    """Streams three chunks and records when its stream is opened and closed."""

    events: list[str] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "tracking"

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> Any:
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content="".join(PIECES)))])

    def _stream(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> Iterator[ChatGenerationChunk]:
        self.events.append("open")
        try:
            for piece in PIECES:
                yield ChatGenerationChunk(message=AIMessageChunk(content=piece))
        finally:
            self.events.append("closed")

    async def _astream(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> AsyncIterator[ChatGenerationChunk]:
        self.events.append("open")
        try:
            for piece in PIECES:
                yield ChatGenerationChunk(message=AIMessageChunk(content=piece))
        finally:
            self.events.append("closed")


def wrappers() -> list[tuple[str, Any, Tracking]]:
    cheap, strong, alone = Tracking(), Tracking(), Tracking()
    return [
        ("cascade", CascadeChatModel(tiers=[cheap, strong], tier_names=["cheap", "strong"]), cheap),
        ("cache", with_cache(alone, AnswerCache(embedder=HashEmbeddings())), alone),
    ]


@pytest.mark.parametrize("which", ["cascade", "cache"])
def test_closing_a_stream_closes_the_provider_stream(which: str) -> None:
    _, wrapper, inner = next(w for w in wrappers() if w[0] == which)
    stream = wrapper.stream("q")
    assert next(stream).content == "one "
    stream.close()
    assert inner.events == ["open", "closed"]


@pytest.mark.parametrize("which", ["cascade", "cache"])
async def test_aclose_closes_the_provider_stream_before_it_returns(which: str) -> None:
    _, wrapper, inner = next(w for w in wrappers() if w[0] == which)
    handler = TokenBudgetHandler(
        [Budget(max_tokens=100_000, scope="global")],
        ledger=SQLiteLedger(),
        prices={"tracking": Price(input=1.0, output=2.0, max_output_tokens=4096)},
    )
    stream = wrapper.astream("q", config={"callbacks": [handler]})
    assert (await anext(stream)).content == "one "
    await stream.aclose()
    assert inner.events == ["open", "closed"]
    # the interrupted call is settled now (the reservation does not wait for the event loop's finalizer)
    records = handler.ledger.records()
    assert [r.extra.get("interrupted") for r in records] == ["GeneratorExit"]
