"""A LlamaIndex ``CustomLLM`` that does not stream (its ``stream_complete`` raises ``NotImplementedError``; its
inherited ``stream_chat``, ``astream_chat`` and ``astream_complete`` then raise too, some only on the stream's first
``next``): ``CascadeLLM`` and ``CachedLLM`` stream its whole answer as one chunk."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from llama_index.core.base.llms.types import ChatMessage, CompletionResponse, LLMMetadata
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.core.llms.custom import CustomLLM

from frugal_chains.cache import AnswerCache
from frugal_chains.llama_index import CachedLLM, CascadeLLM
from frugal_chains.routing import RegexGate
from frugal_chains.testing.fake_embeddings import HashEmbeddings

STREAMS = ("stream_chat", "astream_chat", "stream_complete", "astream_complete")


class InHouseLLM(CustomLLM):
    """An in-house model: ``complete`` only."""

    answer: str = "It is 42 ."
    name: str = "in-house"

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name=self.name)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return CompletionResponse(text=self.answer)

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> Any:
        raise NotImplementedError("this model does not stream")


def chunks(llm: Any, how: str) -> list[str]:
    arg: Any = [ChatMessage(role="user", content="What is 6 x 7?")] if "chat" in how else "What is 6 x 7?"
    if how.startswith("a"):

        async def run() -> list[str]:
            return [r.delta or "" async for r in await getattr(llm, how)(arg)]

        return asyncio.run(run())
    return [r.delta or "" for r in getattr(llm, how)(arg)]


@pytest.mark.parametrize("how", STREAMS)
def test_a_cascade_streams_its_whole_answer_after_escalating(how: str) -> None:
    llm = CascadeLLM(
        tiers=[InHouseLLM(answer="I am not sure .", name="small"), InHouseLLM(name="large")],
        gates=[RegexGate(r"\d")],
    )
    shown = chunks(llm, how)
    assert [c for c in shown if c] == ["It is 42 ."]  # one chunk, then the closing response (delta "")


@pytest.mark.parametrize("how", STREAMS)
def test_the_cache_wrapper_streams_stores_and_replays_it(how: str) -> None:
    with pytest.raises(NotImplementedError):  # the model itself cannot stream
        chunks(InHouseLLM(), how)
    cache = AnswerCache(embedder=HashEmbeddings())
    llm = CachedLLM(llm=InHouseLLM(), cache=cache)
    assert chunks(llm, how) == ["It is 42 ."]
    assert cache.stats.updates == 1
    assert "".join(chunks(llm, how)) == "It is 42 ." and cache.stats.hits == 1
