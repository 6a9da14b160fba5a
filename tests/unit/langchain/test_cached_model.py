"""CachedChatModel: invoke and stream through the cache, child runs, budgets, tools and structured output."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any
from uuid import UUID

import pytest
from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    BaseCallbackHandler,
    CallbackManagerForLLMRun,
)
from langchain_core.messages import AIMessageChunk, BaseMessage, HumanMessage, SystemMessage
from langchain_core.outputs import ChatGenerationChunk
from langchain_core.tools import tool
from pydantic import BaseModel

from frugal_chains import ConfigurationError, SQLiteLedger
from frugal_chains.cache import AnswerCache, cache_scope
from frugal_chains.langchain.budget import TokenBudgetHandler
from frugal_chains.langchain.cache import SemanticCache
from frugal_chains.langchain.cached_model import CachedChatModel, with_cache
from frugal_chains.metadata import WRAPPER_KEY, cache_status
from frugal_chains.testing import FakeUsageChatModel
from frugal_chains.testing.fake_embeddings import HashEmbeddings

QUESTION = "What is the capital of France?"
ANSWERS = [f"Answer number {i} is a long enough sentence to stream." for i in range(20)]


def inner(**kwargs: Any) -> FakeUsageChatModel:
    kwargs.setdefault("responses", ANSWERS)
    return FakeUsageChatModel(**kwargs)


def cached(model: Any = None, **cache_kwargs: Any) -> CachedChatModel:
    return CachedChatModel(
        model=model if model is not None else inner(),
        cache=AnswerCache(embedder=HashEmbeddings(), **cache_kwargs),
    )


def is_hit(message: Any) -> bool:
    return bool(cache_status(message.response_metadata) == "hit")


class Runs(BaseCallbackHandler):
    """Records chat model runs: (run_id, parent_run_id, is_wrapper)."""

    def __init__(self) -> None:
        self.starts: list[tuple[UUID, UUID | None, bool]] = []
        self.ends: list[UUID] = []
        self.errors: list[tuple[UUID, BaseException]] = []
        self.tokens = 0

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self.starts.append((run_id, parent_run_id, bool((metadata or {}).get(WRAPPER_KEY))))

    def on_llm_end(self, response: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self.ends.append(run_id)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self.errors.append((run_id, error))

    def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
        self.tokens += 1


class Breaks(FakeUsageChatModel):
    """Streams two chunks, then fails."""

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        yield ChatGenerationChunk(message=AIMessageChunk(content="Half "))
        yield ChatGenerationChunk(message=AIMessageChunk(content="an answer"))
        raise RuntimeError("connection reset")

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        yield ChatGenerationChunk(message=AIMessageChunk(content="Half "))
        raise RuntimeError("connection reset")


# -- construction ------------------------------------------------------------------------------------------------
def test_wrapper_is_marked_and_does_not_use_langchains_cache() -> None:
    m = cached()
    assert m.metadata is not None and m.metadata[WRAPPER_KEY] is True
    assert m.cache is False
    assert isinstance(m.answer_cache, AnswerCache)
    assert m._llm_type == "frugal-fake-usage"
    assert m._get_ls_params()["ls_provider"] == "openai"
    assert m._get_ls_params(model="gpt-4o")["ls_model_name"] == "gpt-4o"


def test_user_metadata_is_kept() -> None:
    m = CachedChatModel(model=inner(), metadata={"feature": "faq"})
    assert m.metadata is not None
    assert m.metadata["feature"] == "faq" and m.metadata[WRAPPER_KEY] is True


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"model": inner(), "cache": True}, "cache"),
        ({"model": inner(), "cache": "cache"}, "cache"),
        ({"model": inner(), "answer_cache": object()}, "cache"),
        ({"model": "gpt-4o"}, "model"),
    ],
)
def test_bad_arguments_name_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigurationError) as e:
        CachedChatModel(**kwargs)
    assert e.value.field == field


def test_the_same_cache_twice_is_refused() -> None:
    sc = SemanticCache(embedder=HashEmbeddings())
    with pytest.raises(ConfigurationError) as e:
        CachedChatModel(model=inner(cache=sc), cache=sc)
    assert e.value.field == "cache"
    with pytest.raises(ConfigurationError):
        CachedChatModel(model=inner(cache=sc), cache=sc.core)


def test_with_cache() -> None:
    sc = SemanticCache(embedder=HashEmbeddings())
    m = with_cache(inner(), sc)
    assert m.answer_cache is sc and m.core is sc.core
    assert isinstance(with_cache(inner()).answer_cache, AnswerCache)
    with pytest.raises(ConfigurationError):
        with_cache("gpt-4o")  # type: ignore[arg-type]


# -- invoke ----------------------------------------------------------------------------------------------------
def test_invoke_miss_then_hit() -> None:
    m = cached()
    first = m.invoke(QUESTION)
    again = m.invoke(QUESTION.lower())
    assert first.content == again.content == ANSWERS[0]
    assert not is_hit(first) and is_hit(again)
    assert m.invoke("What is the capital of Italy?").content == ANSWERS[1]


async def test_ainvoke_miss_then_hit() -> None:
    m = cached()
    first = await m.ainvoke(QUESTION)
    again = await m.ainvoke(QUESTION)
    assert first.content == again.content == ANSWERS[0]
    assert is_hit(again)
    assert m.core.stats.hits == 1


def test_paraphrase_hit_and_system_prompt_partition() -> None:
    m = cached(threshold=0.6)
    m.invoke([SystemMessage("Be terse."), HumanMessage("How long is the refund window for shoes?")])
    hit = m.invoke(
        [SystemMessage("Be terse."), HumanMessage("how long is the refund window for shoes please")]
    )
    assert is_hit(hit) and hit.response_metadata["frugal"]["cache"]["tier"] == "semantic"
    other = m.invoke([SystemMessage("Be verbose."), HumanMessage("How long is the refund window for shoes?")])
    assert not is_hit(other)


def test_batch() -> None:
    m = cached()
    m.invoke(QUESTION)
    results = m.batch([QUESTION, QUESTION, "Where is Rome?"])
    assert [is_hit(r) for r in results] == [True, True, False]


def test_cache_scope_bypass_neither_reads_nor_writes() -> None:
    m = cached()
    m.invoke(QUESTION)
    with cache_scope(bypass=True):
        assert m.invoke(QUESTION).content == ANSWERS[1]
        m.invoke("Where is Rome?")
    assert len(m.core) == 1


def test_shares_entries_with_a_semantic_cache_on_the_model() -> None:
    sc = SemanticCache(embedder=HashEmbeddings())
    inner(cache=sc).invoke(QUESTION)
    hit = CachedChatModel(model=inner(responses=["not this"]), cache=sc).invoke(QUESTION)
    assert hit.content == ANSWERS[0] and is_hit(hit)


def test_inner_call_errors_propagate_and_nothing_is_stored() -> None:
    m = cached(inner(fail_with=lambda: RuntimeError("provider down")))
    with pytest.raises(RuntimeError, match="provider down"):
        m.invoke(QUESTION)
    assert len(m.core) == 0


# -- stream ----------------------------------------------------------------------------------------------------
def test_stream_miss_streams_the_inner_model_and_stores() -> None:
    m = cached()
    chunks = list(m.stream(QUESTION))
    assert len(chunks) > 2
    assert "".join(str(c.content) for c in chunks) == ANSWERS[0]
    assert not any(is_hit(c) for c in chunks)
    hit = m.invoke(QUESTION)
    assert hit.content == ANSWERS[0] and is_hit(hit)


def test_stream_replays_a_cached_answer() -> None:
    m = cached()
    original = m.invoke(QUESTION)
    chunks = list(m.stream(QUESTION))
    assert 1 < len(chunks) <= 4
    assert "".join(str(c.content) for c in chunks) == original.content
    last = chunks[-1]
    assert is_hit(last) and last.chunk_position == "last"
    assert last.usage_metadata == original.usage_metadata
    assert all(c.usage_metadata is None for c in chunks[:-1])
    merged = chunks[0]
    for c in chunks[1:]:
        merged += c
    assert merged.content == original.content


async def test_astream_miss_then_replay() -> None:
    m = cached()
    streamed = [c async for c in m.astream(QUESTION)]
    assert "".join(str(c.content) for c in streamed) == ANSWERS[0]
    replayed = [c async for c in m.astream(QUESTION)]
    assert len(replayed) > 1
    assert "".join(str(c.content) for c in replayed) == ANSWERS[0]
    assert is_hit(replayed[-1])


def test_a_stream_stopped_early_is_not_stored() -> None:
    m = cached()
    runs = Runs()
    stream = m.stream(QUESTION, config={"callbacks": [runs]})
    next(stream)
    stream.close()
    assert len(m.core) == 0
    assert m.invoke(QUESTION).content == ANSWERS[1]
    # both the wrapper run and the inner run were told the stream was interrupted
    assert len(runs.errors) == 2
    assert all(isinstance(e, GeneratorExit) for _, e in runs.errors)


async def test_an_async_stream_stopped_early_is_not_stored() -> None:
    m = cached()
    stream = m.astream(QUESTION)
    await stream.__anext__()
    await stream.aclose()
    assert len(m.core) == 0


def test_a_stream_that_fails_is_not_stored() -> None:
    m = cached(Breaks(responses=ANSWERS))
    runs = Runs()
    got: list[str] = []
    with pytest.raises(RuntimeError, match="connection reset"):
        for chunk in m.stream(QUESTION, config={"callbacks": [runs]}):
            got.append(str(chunk.content))
    assert got == ["Half ", "an answer"]
    assert len(m.core) == 0
    assert len(runs.errors) == 2


async def test_an_async_stream_that_fails_is_not_stored() -> None:
    m = cached(Breaks(responses=ANSWERS))
    with pytest.raises(RuntimeError, match="connection reset"):
        async for _ in m.astream(QUESTION):
            pass
    assert len(m.core) == 0


def test_streaming_disabled_falls_back_to_invoke() -> None:
    m = CachedChatModel(model=inner(), cache=AnswerCache(embedder=HashEmbeddings()), disable_streaming=True)
    chunks = list(m.stream(QUESTION))
    assert len(chunks) == 1 and chunks[0].content == ANSWERS[0]


# -- runs and budgets ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["invoke", "stream"])
def test_the_inner_call_is_a_child_run_of_the_wrapper(how: str) -> None:
    m = cached()
    runs = Runs()
    config: Any = {"callbacks": [runs]}
    if how == "invoke":
        m.invoke(QUESTION, config=config)
    else:
        list(m.stream(QUESTION, config=config))
    (outer, parent, outer_is_wrapper), (_child, child_parent, child_is_wrapper) = runs.starts
    assert parent is None and outer_is_wrapper
    assert child_parent == outer and not child_is_wrapper
    assert len(runs.ends) == 2
    runs.starts.clear()
    if how == "invoke":
        m.invoke(QUESTION, config=config)
    else:
        list(m.stream(QUESTION, config=config))
    assert len(runs.starts) == 1  # a hit: the wrapper only
    if how == "stream":
        assert runs.tokens > 0


@pytest.mark.parametrize("how", ["invoke", "stream"])
def test_budget_counts_a_miss_once_and_a_hit_as_a_saving(how: str) -> None:
    ledger = SQLiteLedger(":memory:")
    handler = TokenBudgetHandler(ledger=ledger)
    m = cached(ledger=ledger)
    config: Any = {"callbacks": [handler]}

    def call() -> None:
        if how == "invoke":
            m.invoke(QUESTION, config=config)
        else:
            list(m.stream(QUESTION, config=config))

    call()
    spent = ledger.records()
    assert [r.outcome for r in spent] == ["ok"]
    assert spent[0].model == "gpt-4o-mini" and spent[0].cost_usd > 0
    call()
    records = ledger.records()
    assert [r.outcome for r in records].count("ok") == 1
    (hit,) = [r for r in records if r.outcome == "cache_hit"]
    assert hit.cost_usd == 0.0
    assert hit.saved_usd == pytest.approx(spent[0].cost_usd)


async def test_async_budget_counts_a_miss_once() -> None:
    ledger = SQLiteLedger(":memory:")
    handler = TokenBudgetHandler(ledger=ledger)
    m = cached(ledger=ledger)
    await m.ainvoke(QUESTION, config={"callbacks": [handler]})
    [c async for c in m.astream(QUESTION, config={"callbacks": [handler]})]
    assert sorted(r.outcome for r in ledger.records()) == ["cache_hit", "ok"]


# -- tools and structured output -------------------------------------------------------------------------------
@tool
def lookup(query: str) -> str:
    """Look something up."""
    return "42"


class Capital(BaseModel):
    """The capital of a country."""

    city: str


def test_bind_tools_round_trips_tool_calls() -> None:
    m = cached(inner(tool_to_call="lookup"))
    bound = m.bind_tools([lookup])
    first = bound.invoke("find the order status")
    again = bound.invoke("find the order status")
    assert first.tool_calls and first.tool_calls[0]["args"] == {"query": "query 0"}
    assert again.tool_calls == first.tool_calls and is_hit(again)
    streamed = list(bound.stream("find the order status"))
    merged = streamed[0]
    for c in streamed[1:]:
        merged += c
    assert [c["args"] for c in merged.tool_calls] == [{"query": "query 0"}]
    # without the tools it is another partition
    assert not is_hit(m.invoke("find the order status"))


def test_with_structured_output_is_cached() -> None:
    m = cached(inner(tool_to_call="Capital"))
    structured = m.with_structured_output(Capital)
    first = structured.invoke(QUESTION)
    again = structured.invoke(QUESTION)
    assert isinstance(first, Capital) and first == again == Capital(city="query 0")
    assert m.core.stats.hits == 1


def test_bind_tools_of_a_model_that_does_not_bind_itself() -> None:
    class Odd(FakeUsageChatModel):
        def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
            return FakeUsageChatModel().bind(tools=[])

    with pytest.raises(NotImplementedError):
        cached(Odd()).bind_tools([lookup])
