"""Each provider call's usage is counted once by LangChain's own tools (``get_usage_metadata_callback``, a tracer that
sums the LLM runs of a run tree) through ``CascadeChatModel`` and ``CachedChatModel``: the tiers' (or the wrapped
model's) child runs report it, the wrapper's own run does not; the caller still reads the answer's total usage in
``usage_metadata``, and the budget handler still records each call once."""

from __future__ import annotations

import asyncio
from functools import reduce
from typing import Any

import pytest
from langchain_core.callbacks import get_usage_metadata_callback
from langchain_core.messages import BaseMessage, HumanMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.tracers.base import BaseTracer
from langchain_core.tracers.schemas import Run

from frugal_chains import SQLiteLedger
from frugal_chains.cache import AnswerCache
from frugal_chains.langchain import CachedChatModel, CascadeChatModel, TokenBudgetHandler
from frugal_chains.routing import RegexGate
from frugal_chains.testing import FakeUsageChatModel
from frugal_chains.testing.fake_embeddings import HashEmbeddings

PROMPT = "What is 6 x 7?"
MODES = ("invoke", "ainvoke", "stream", "astream", "batch", "abatch", "generate", "agenerate")


def cheap() -> FakeUsageChatModel:
    return FakeUsageChatModel(model="gpt-4o-mini", responses=["Hmm, hard to say."], output_tokens=30)


def strong() -> FakeUsageChatModel:
    return FakeUsageChatModel(model="gpt-4o", responses=["42"], output_tokens=40)


def billed(*models: FakeUsageChatModel) -> dict[str, UsageMetadata]:
    """What the provider bills for each model's call on the prompt (the model called on its own)."""
    out: dict[str, UsageMetadata] = {}
    for m in models:
        um = m.invoke(PROMPT).usage_metadata
        assert um is not None
        out[m.model] = um
    return out


def tokens(um: Any) -> tuple[int, int, int]:
    return (um["input_tokens"], um["output_tokens"], um["total_tokens"])


def total(usages: dict[str, UsageMetadata]) -> tuple[int, int, int]:
    found = [tokens(u) for u in usages.values()]
    return (sum(f[0] for f in found), sum(f[1] for f in found), sum(f[2] for f in found))


def answer(model: Any, mode: str, callbacks: list[Any] | None = None) -> BaseMessage:
    """One call in ``mode``; a stream's chunks merged."""
    config: Any = {"callbacks": callbacks or []}
    if mode == "invoke":
        return model.invoke(PROMPT, config=config)  # type: ignore[no-any-return]
    if mode == "ainvoke":
        return asyncio.run(model.ainvoke(PROMPT, config=config))  # type: ignore[no-any-return]
    if mode == "stream":
        return reduce(lambda a, b: a + b, model.stream(PROMPT, config=config))
    if mode == "astream":

        async def run() -> list[Any]:
            return [c async for c in model.astream(PROMPT, config=config)]

        return reduce(lambda a, b: a + b, asyncio.run(run()))
    if mode == "batch":
        return model.batch([PROMPT], config=config)[0]  # type: ignore[no-any-return]
    if mode == "abatch":
        return asyncio.run(model.abatch([PROMPT], config=config))[0]  # type: ignore[no-any-return]
    messages = [[HumanMessage(PROMPT)]]
    if mode == "generate":
        result = model.generate(messages, callbacks=callbacks)
    else:
        result = asyncio.run(model.agenerate(messages, callbacks=callbacks))
    return result.generations[0][0].message  # type: ignore[no-any-return]


class CollectingTracer(BaseTracer):
    """Keeps every finished run, as a tracer (LangSmith) records a run tree."""

    def __init__(self) -> None:
        super().__init__()
        self.llm_runs: list[Run] = []

    def _persist_run(self, run: Run) -> None:
        pass

    def _on_llm_end(self, run: Run) -> None:
        self.llm_runs.append(run)

    def _on_chat_model_end(self, run: Run) -> None:  # pragma: no cover - older langchain-core
        self.llm_runs.append(run)

    def usage(self) -> dict[str, tuple[int, int, int]]:
        """The traced usage of the LLM runs, summed per model (what a tracer's token totals add up)."""
        out: dict[str, tuple[int, int, int]] = {}
        for run in self.llm_runs:
            for generations in (run.outputs or {}).get("generations", []):
                for generation in generations:
                    kwargs = (generation.get("message") or {}).get("kwargs", {})
                    um = kwargs.get("usage_metadata")
                    if not um:
                        continue
                    model = (kwargs.get("response_metadata") or {}).get("model_name", "?")
                    before = out.get(model, (0, 0, 0))
                    out[model] = tuple(a + b for a, b in zip(before, tokens(um), strict=True))  # type: ignore[assignment]
        return out


def cascade() -> CascadeChatModel:
    return CascadeChatModel(tiers=[cheap(), strong()], gates=[RegexGate(r"\d")])


@pytest.mark.parametrize("mode", MODES)
def test_a_cascade_that_escalates_is_counted_once_per_tier_call(mode: str) -> None:
    expected = billed(cheap(), strong())
    ledger = SQLiteLedger()
    with get_usage_metadata_callback() as cb:
        message = answer(cascade(), mode, [TokenBudgetHandler([], ledger=ledger)])
    assert message.text == "42"
    assert {m: tokens(u) for m, u in cb.usage_metadata.items()} == {m: tokens(u) for m, u in expected.items()}
    # the caller reads the total of the cascade's answer
    assert tokens(getattr(message, "usage_metadata", None)) == total(expected)
    # our own accounting: one record per provider call
    spend = [
        (r.model, r.usage.input_tokens, r.usage.output_tokens) for r in ledger.records() if r.outcome == "ok"
    ]
    assert sorted(spend) == sorted((m, u["input_tokens"], u["output_tokens"]) for m, u in expected.items())


@pytest.mark.parametrize("mode", MODES)
def test_a_tracer_sums_a_cascades_run_tree_to_the_billed_usage(mode: str) -> None:
    expected = billed(cheap(), strong())
    tracer = CollectingTracer()
    answer(cascade(), mode, [tracer])
    assert tracer.usage() == {m: tokens(u) for m, u in expected.items()}
    assert len(tracer.llm_runs) == 3  # the cascade's run and its two tier runs: only the tiers carry usage


def cached(cache: AnswerCache) -> CachedChatModel:
    return CachedChatModel(model=cheap(), cache=cache)


@pytest.mark.parametrize("mode", MODES)
def test_a_cache_miss_is_counted_once_and_a_hit_not_at_all(mode: str) -> None:
    expected = billed(cheap())
    cache = AnswerCache(embedder=HashEmbeddings())
    tracer = CollectingTracer()
    with get_usage_metadata_callback() as cb:
        miss = answer(cached(cache), mode, [tracer])
    assert {m: tokens(u) for m, u in cb.usage_metadata.items()} == {m: tokens(u) for m, u in expected.items()}
    assert tracer.usage() == {m: tokens(u) for m, u in expected.items()}
    assert tokens(getattr(miss, "usage_metadata", None)) == total(expected)  # the caller still reads it

    tracer = CollectingTracer()
    with get_usage_metadata_callback() as cb:
        hit = answer(cached(cache), mode, [tracer])
    assert hit.response_metadata["frugal"]["cache"]["status"] == "hit"
    assert cb.usage_metadata == {}  # no provider call
    assert tracer.usage() == {}


def nested_cascade() -> CascadeChatModel:
    return CascadeChatModel(
        tiers=[cascade(), FakeUsageChatModel(model="gpt-4.1", responses=["43"])],
        tier_names=["inner", "outer-strong"],
        gates=[RegexGate(r"\d")],
    )


def cached_cascade() -> CachedChatModel:
    return CachedChatModel(model=cascade(), cache=AnswerCache(embedder=HashEmbeddings()))


def cascade_of_cached() -> CascadeChatModel:
    cached_cheap = CachedChatModel(model=cheap(), cache=AnswerCache(embedder=HashEmbeddings()))
    return CascadeChatModel(
        tiers=[cached_cheap, strong()], tier_names=["cheap", "strong"], gates=[RegexGate(r"\d")]
    )


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("build", "tier"),
    [(nested_cascade, "inner"), (cached_cascade, "gpt-4o"), (cascade_of_cached, "strong")],
    ids=["cascade-of-gated-cascade", "cache-of-cascade", "cascade-of-cache"],
)
def test_nested_wrappers_answer_once_with_the_outer_cascade_metadata(
    mode: str, build: Any, tier: str
) -> None:
    """A wrapper inside another (streams merged chunk by chunk): the answer carries the outermost cascade's
    ``frugal["cascade"]`` (an inner cascade's is replaced) and the billed usage once; each call is counted once."""
    expected = billed(cheap(), strong())
    tracer = CollectingTracer()
    with get_usage_metadata_callback() as cb:
        message = answer(build(), mode, [tracer])
    assert message.text == "42"
    info = message.response_metadata["frugal"]["cascade"]
    assert (info["tier"], info["model"]) == (tier, "gpt-4o")
    assert [a["outcome"] for a in info["attempts"]] == (
        ["accepted"] if tier == "inner" else ["escalated", "accepted"]
    )
    assert message.response_metadata["frugal"]["tier"] == tier  # the legacy flat keys are the outer's too
    assert tokens(getattr(message, "usage_metadata", None)) == total(expected)
    assert {m: tokens(u) for m, u in cb.usage_metadata.items()} == {m: tokens(u) for m, u in expected.items()}
    assert tracer.usage() == {m: tokens(u) for m, u in expected.items()}


# -- LangGraph's stream_mode="messages": the app sees the usage, callbacks and tracers still count each call once --
def agent_model(wrapper: str) -> Any:
    from frugal_chains.langchain import with_cache
    from frugal_chains.testing import FakeToolCallingChatModel

    if wrapper == "cascade":
        cheap_tier = FakeToolCallingChatModel(model="gpt-4o-mini", responses=["Hmm"], output_tokens=5)
        strong_tier = FakeToolCallingChatModel(model="gpt-4o", responses=["The answer is 7"], output_tokens=7)
        return CascadeChatModel(tiers=[cheap_tier, strong_tier], gates=[RegexGate(r"\d")])
    inner = FakeToolCallingChatModel(model="gpt-4o-mini", responses=["The answer is 7"], output_tokens=7)
    return with_cache(inner, AnswerCache(semantic=False))


def messages_mode(graph: Any, inputs: Any, config: Any, asynchronous: bool) -> list[Any]:
    """The AI message chunks ``stream_mode="messages"`` shows the app."""
    if asynchronous:

        async def run() -> list[Any]:
            return [m async for m, _ in graph.astream(inputs, config, stream_mode="messages")]

        shown = asyncio.run(run())
    else:
        shown = [m for m, _ in graph.stream(inputs, config, stream_mode="messages")]
    return [m for m in shown if m.type in ("ai", "AIMessageChunk")]


def shown_total(chunks: list[Any]) -> int:
    return sum((c.usage_metadata or {}).get("total_tokens", 0) for c in chunks)


def counted_total(cb: Any) -> int:
    return sum(u["total_tokens"] for u in cb.usage_metadata.values())


@pytest.mark.parametrize("asynchronous", [False, True], ids=["stream", "astream"])
@pytest.mark.parametrize("wrapper", ["cascade", "with_cache"])
def test_an_agent_in_messages_mode_shows_the_usage_each_call_counted_once(
    wrapper: str, asynchronous: bool
) -> None:
    """``create_agent`` in ``stream_mode="messages"``: the messages the app sees carry the usage of the calls behind
    them (what ``get_usage_metadata_callback`` and a tracer count, each call once); a cascade shows its accepted
    answers once each, never a tier's rejected answer."""
    from langchain.agents import create_agent
    from langchain_core.tools import tool

    @tool
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    agent = create_agent(agent_model(wrapper), tools=[add])
    tracer = CollectingTracer()
    with get_usage_metadata_callback() as cb:
        chunks = messages_mode(
            agent, {"messages": [("user", "What is 3 + 4?")]}, {"callbacks": [tracer]}, asynchronous
        )
    counted = counted_total(cb)
    assert counted > 0
    assert shown_total(chunks) == counted
    assert sum(t[2] for t in tracer.usage().values()) == counted
    assert "Hmm" not in "".join(c.text for c in chunks)
    by_id: dict[str, str] = {}
    for c in chunks:
        by_id[c.id] = by_id.get(c.id, "") + c.text
    assert sorted(by_id.values()) == [
        "",
        "The answer is 7",
    ]  # the tool call round, then the answer: once each


@pytest.mark.parametrize("asynchronous", [False, True], ids=["stream", "astream"])
def test_a_cascade_streamed_in_a_graph_node_shows_its_usage_in_messages_mode(asynchronous: bool) -> None:
    """A node that streams the cascade (``model.stream``): its chunks in ``stream_mode="messages"`` carry the total
    on the last one; the cascade's run output, which usage callbacks and tracers read, carries none."""
    from langgraph.graph import START, MessagesState, StateGraph

    model = cascade()

    def node(state: MessagesState) -> dict[str, Any]:
        return {"messages": [reduce(lambda a, b: a + b, model.stream(state["messages"]))]}

    async def anode(state: MessagesState) -> dict[str, Any]:
        return {"messages": [reduce(lambda a, b: a + b, [c async for c in model.astream(state["messages"])])]}

    builder = StateGraph(MessagesState)
    builder.add_node("model", anode if asynchronous else node)
    builder.add_edge(START, "model")
    graph = builder.compile()
    expected = billed(cheap(), strong())
    tracer = CollectingTracer()
    with get_usage_metadata_callback() as cb:
        chunks = messages_mode(graph, {"messages": [("user", PROMPT)]}, {"callbacks": [tracer]}, asynchronous)
    assert "".join(c.text for c in chunks) == "42"
    assert shown_total(chunks) == total(expected)[2]
    assert {m: tokens(u) for m, u in cb.usage_metadata.items()} == {m: tokens(u) for m, u in expected.items()}
    assert tracer.usage() == {m: tokens(u) for m, u in expected.items()}
