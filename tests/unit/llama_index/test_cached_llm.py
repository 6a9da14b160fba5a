"""CachedLLM: LlamaIndex chat/complete (sync, async, streaming) through the semantic cache; budgets; Settings."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    CompletionResponse,
    CompletionResponseGen,
    TextBlock,
    ToolCallBlock,
)
from llama_index.core.callbacks import CallbackManager
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.mock import MockLLM
from pydantic import Field

from frugal_chains import ConfigurationError, Price, SQLiteLedger
from frugal_chains.accounting.pricing import PriceBook
from frugal_chains.cache import AnswerCache, CacheRequest, cache_scope
from frugal_chains.langchain.cache import SemanticCache
from frugal_chains.llama_index import TokenBudgetHandler
from frugal_chains.llama_index.cached_llm import CachedLLM
from frugal_chains.metadata import WRAPPER_KEY, cache_status
from frugal_chains.testing.fake_embeddings import HashEmbeddings

QUESTION = "What is the capital of France?"
MOCK_PRICE = Price(input=1.0, output=2.0)


class CountingLLM(MockLLM):
    """MockLLM whose answers say which call produced them (a repeated answer can only come from the cache)."""

    calls: int = Field(default=0, exclude=True)  # state, not configuration: not part of the partition

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        self.calls += 1
        return CompletionResponse(text=f"Answer {self.calls} to your question.")

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        self.calls += 1
        words = ["Answer", f" {self.calls}", " to", " your", " question."]

        def gen() -> CompletionResponseGen:
            text = ""
            for word in words:
                text += word
                yield CompletionResponse(text=text, delta=word)

        return gen()


class KeyedLLM(CountingLLM):
    api_key: str = "sk-1"


class ToolLLM(CountingLLM):
    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        self.calls += 1
        block = ToolCallBlock(tool_call_id=f"call_{self.calls}", tool_name="lookup", tool_kwargs={"q": "x"})
        return ChatResponse(message=ChatMessage(role="assistant", blocks=[TextBlock(text=""), block]))


def cached(inner: Any = None, **cache_kwargs: Any) -> CachedLLM:
    cache_kwargs.setdefault("embedder", HashEmbeddings())
    return CachedLLM(llm=inner if inner is not None else CountingLLM(), cache=AnswerCache(**cache_kwargs))


def user(text: str) -> list[ChatMessage]:
    return [ChatMessage(role="user", content=text)]


def is_hit(response: Any) -> bool:
    return bool(cache_status(response.additional_kwargs) == "hit")


@pytest.fixture
def settings() -> Iterator[Any]:
    saved = {f.name: getattr(Settings, f.name) for f in dataclasses.fields(Settings)}
    yield Settings
    for name, value in saved.items():
        setattr(Settings, name, value)


# -- construction and identity ---------------------------------------------------------------------------------
def test_metadata_payload_and_prompt_settings_come_from_the_wrapped_llm() -> None:
    inner = MockLLM(max_tokens=7, system_prompt="Be terse.")
    llm = CachedLLM(llm=inner)
    assert llm.metadata.num_output == 7
    assert llm.metadata.is_function_calling_model is False
    assert llm.system_prompt == "Be terse."
    assert llm.completion_to_prompt is inner.completion_to_prompt
    payload = llm.to_payload()
    assert payload[WRAPPER_KEY] is True and payload["class_name"] == "MockLLM"
    assert isinstance(llm.cache, AnswerCache)
    assert llm.callback_manager is inner.callback_manager


def test_a_semantic_cache_is_accepted() -> None:
    sc = SemanticCache(embedder=HashEmbeddings())
    assert CachedLLM(llm=MockLLM(), cache=sc).cache is sc.core


@pytest.mark.parametrize(
    ("kwargs", "field"), [({"llm": "gpt-4o"}, "llm"), ({"llm": MockLLM(), "cache": 1}, "cache")]
)
def test_bad_arguments_name_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigurationError) as e:
        CachedLLM(**kwargs)
    assert e.value.field == field


def test_a_new_callback_manager_reaches_the_wrapped_llm() -> None:
    llm = cached()
    manager = CallbackManager([])
    llm.callback_manager = manager
    assert llm.llm.callback_manager is manager


# -- complete and chat -----------------------------------------------------------------------------------------
def test_complete_miss_then_hit() -> None:
    llm = cached()
    first = llm.complete(QUESTION)
    again = llm.complete("what is the capital of france")
    assert first.text == again.text == "Answer 1 to your question."
    assert not is_hit(first) and is_hit(again)
    assert again.additional_kwargs["frugal"]["cache"]["tier"] == "exact"
    assert llm.llm.calls == 1
    assert llm.complete(QUESTION, formatted=True).text == "Answer 2 to your question."  # another partition


def test_chat_miss_then_hit_and_semantic_hit() -> None:
    llm = cached(threshold=0.6)
    first = llm.chat(user("How long is the refund window for shoes?"))
    hit = llm.chat(user("how long is the refund window for shoes please"))
    assert hit.message.content == first.message.content == "Answer 1 to your question."
    assert is_hit(hit) and hit.additional_kwargs["frugal"]["cache"]["tier"] == "semantic"
    assert llm.llm.calls == 1


def test_system_prompt_and_earlier_turns_are_exact_partitions() -> None:
    llm = cached(threshold=0.5)
    terse = [ChatMessage(role="system", content="Be terse."), *user(QUESTION)]
    verbose = [ChatMessage(role="system", content="Be verbose."), *user(QUESTION)]
    llm.chat(terse)
    assert not is_hit(llm.chat(verbose))
    about_a = [
        *user("Tell me about plan A"),
        ChatMessage(role="assistant", content="Basic."),
        *user("Price?"),
    ]
    about_b = [
        *user("Tell me about plan B"),
        ChatMessage(role="assistant", content="Premium."),
        *user("Price?"),
    ]
    llm.chat(about_a)
    assert not is_hit(llm.chat(about_b))
    assert is_hit(llm.chat(about_a)) and is_hit(llm.chat(terse))


def test_tenants_never_share_answers() -> None:
    llm = cached()
    with cache_scope(tenant_id="acme"):
        llm.complete(QUESTION)
    with cache_scope(tenant_id="globex"):
        assert not is_hit(llm.complete(QUESTION))
    with cache_scope(tenant_id="acme"):
        assert is_hit(llm.complete(QUESTION))


def test_call_kwargs_are_part_of_the_partition_and_unstable_ones_bypass() -> None:
    llm = cached()
    llm.complete(QUESTION, temperature=0.0)
    assert not is_hit(llm.complete(QUESTION, temperature=1.0))
    assert is_hit(llm.complete(QUESTION, temperature=0.0))
    marker = object()
    llm.complete(QUESTION, handle=marker)
    assert not is_hit(llm.complete(QUESTION, handle=marker))
    assert llm.llm.calls == 4


def test_secrets_are_not_part_of_the_partition() -> None:
    cache = AnswerCache(embedder=HashEmbeddings())
    old, new = KeyedLLM(), KeyedLLM()
    old.api_key, new.api_key = "sk-old", "sk-new"
    CachedLLM(llm=old, cache=cache).complete(QUESTION)
    assert is_hit(CachedLLM(llm=new, cache=cache).complete(QUESTION))
    # a real configuration change is a miss
    assert not is_hit(CachedLLM(llm=KeyedLLM(max_tokens=5), cache=cache).complete(QUESTION))


def test_tool_call_blocks_round_trip() -> None:
    llm = cached(ToolLLM())
    first = llm.chat(user("look it up"))
    again = llm.chat(user("look it up"))
    assert is_hit(again)
    calls = [b for b in again.message.blocks if isinstance(b, ToolCallBlock)]
    assert [(c.tool_call_id, c.tool_name, c.tool_kwargs) for c in calls] == [("call_1", "lookup", {"q": "x"})]
    assert again.message.blocks == first.message.blocks


def test_a_corrupted_entry_is_deleted_and_skipped() -> None:
    llm = cached()
    request = llm._completion_request(QUESTION, False, {})
    assert isinstance(request, CacheRequest)
    llm.cache.update(request, '{"kind": "chat"}')
    assert not is_hit(llm.complete(QUESTION))
    assert llm.stats.corrupted == 1


def test_empty_answers_are_not_stored() -> None:
    class Silent(CountingLLM):
        @llm_completion_callback()
        def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
            return CompletionResponse(text="  ")

    llm = cached(Silent())
    llm.complete(QUESTION)
    assert len(llm.cache) == 0


# -- streaming -------------------------------------------------------------------------------------------------
def test_stream_complete_miss_is_stored_and_replayed() -> None:
    llm = cached()
    streamed = list(llm.stream_complete(QUESTION))
    assert "".join(r.delta or "" for r in streamed) == "Answer 1 to your question."
    assert not any(is_hit(r) for r in streamed)
    replayed = list(llm.stream_complete(QUESTION))
    assert len(replayed) > 1
    assert "".join(r.delta or "" for r in replayed) == replayed[-1].text == "Answer 1 to your question."
    assert is_hit(replayed[-1])
    assert is_hit(llm.complete(QUESTION))
    assert llm.llm.calls == 1


def test_stream_chat_replays_a_chat_answer() -> None:
    llm = cached()
    answer = llm.chat(user(QUESTION)).message.content
    replayed = list(llm.stream_chat(user(QUESTION)))
    assert len(replayed) > 1
    assert "".join(r.delta or "" for r in replayed) == replayed[-1].message.content == answer
    assert is_hit(replayed[-1])


def test_a_stream_stopped_early_is_not_stored() -> None:
    llm = cached()
    stream = llm.stream_chat(user(QUESTION))
    next(stream)
    stream.close()
    assert len(llm.cache) == 0
    assert not is_hit(llm.chat(user(QUESTION)))


async def test_async_paths() -> None:
    llm = cached()
    first = await llm.achat(user(QUESTION))
    assert is_hit(await llm.achat(user(QUESTION)))
    assert not is_hit(first)
    await llm.acomplete("Where is Rome?")
    assert is_hit(await llm.acomplete("Where is Rome?"))
    stream = await llm.astream_chat(user("Where is Berlin?"))
    streamed = [r async for r in stream]
    assert "".join(r.delta or "" for r in streamed) == "Answer 3 to your question."
    stream = await llm.astream_chat(user("Where is Berlin?"))
    replayed = [r async for r in stream]
    assert is_hit(replayed[-1]) and replayed[-1].message.content == "Answer 3 to your question."
    stream = await llm.astream_complete("Where is Madrid?")
    [r async for r in stream]
    stream = await llm.astream_complete("Where is Madrid?")
    replayed_c = [r async for r in stream]
    assert is_hit(replayed_c[-1]) and replayed_c[-1].text == "Answer 4 to your question."
    assert llm.llm.calls == 4


async def test_an_async_stream_stopped_early_is_not_stored() -> None:
    llm = cached()
    stream = await llm.astream_complete(QUESTION)
    await stream.__anext__()
    await stream.aclose()
    assert len(llm.cache) == 0


# -- budgets and Settings --------------------------------------------------------------------------------------
def test_budget_counts_a_miss_once_and_a_hit_as_a_saving() -> None:
    ledger = SQLiteLedger(":memory:")
    handler = TokenBudgetHandler(ledger=ledger, prices={"MockLLM": MOCK_PRICE})
    inner = CountingLLM(callback_manager=CallbackManager([handler]))
    llm = CachedLLM(
        llm=inner,
        cache=AnswerCache(
            embedder=HashEmbeddings(), ledger=ledger, prices=PriceBook({"MockLLM": MOCK_PRICE})
        ),
    )
    llm.chat(user(QUESTION))
    spent = ledger.records()
    assert [r.outcome for r in spent] == ["ok"]
    assert is_hit(llm.chat(user(QUESTION)))
    list(llm.stream_chat(user(QUESTION)))
    records = ledger.records()
    assert [r.outcome for r in records].count("ok") == 1
    hits = [r for r in records if r.outcome == "cache_hit"]
    assert len(hits) == 2
    assert all(r.cost_usd == 0.0 and r.saved_usd > 0 and r.model == "MockLLM" for r in hits)


def test_settings_llm_and_a_query_engine(settings: Any) -> None:
    ledger = SQLiteLedger(":memory:")
    handler = TokenBudgetHandler(ledger=ledger, prices={"MockLLM": MOCK_PRICE})
    inner = CountingLLM()
    Settings.llm = CachedLLM(llm=inner, cache=AnswerCache(embedder=HashEmbeddings()))
    Settings.embed_model = MockEmbedding(embed_dim=8)
    Settings.callback_manager = CallbackManager([handler])
    assert Settings.llm.complete("hello").text == "Answer 1 to your question."
    assert inner.callback_manager is Settings.callback_manager
    docs = ["Paris is the capital of France.", "Rome is the capital of Italy."]
    engine = VectorStoreIndex.from_documents([Document(text=t) for t in docs]).as_query_engine(
        similarity_top_k=1
    )
    first = engine.query(QUESTION)
    again = engine.query(QUESTION)
    assert str(first) == str(again) == "Answer 2 to your question."
    assert inner.calls == 2
    assert [r.outcome for r in ledger.records()] == ["ok", "ok"]  # the hit is not spend


def test_a_new_image_under_the_same_path_is_a_new_question(tmp_path: Any) -> None:
    from llama_index.core.base.llms.types import ImageBlock, TextBlock
    from llama_index.core.llms import ChatMessage
    from llama_index.core.llms.mock import MockLLM

    from frugal_chains.cache import AnswerCache
    from frugal_chains.llama_index import CachedLLM
    from frugal_chains.testing import HashEmbeddings

    picture = tmp_path / "upload.png"
    llm = CachedLLM(llm=MockLLM(), cache=AnswerCache(embedder=HashEmbeddings()))

    def ask() -> Any:
        return llm.chat(
            [
                ChatMessage(
                    role="user", blocks=[TextBlock(text="What is in this picture?"), ImageBlock(path=picture)]
                )
            ]
        )

    picture.write_bytes(b"\x89PNG first picture")
    ask()
    assert ask().additional_kwargs.get("frugal_cache") == "hit"  # the same file again
    picture.write_bytes(b"\x89PNG another picture")
    assert ask().additional_kwargs.get("frugal_cache") != "hit"
