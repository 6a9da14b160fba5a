"""CascadeChatModel: routing, gates, escalation, tools, structured output, streaming, budgets, bad input."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler, CallbackManagerForLLMRun
from langchain_core.exceptions import ModelRateLimitError
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.tools import tool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel, PrivateAttr

from frugal_chains import Budget, BudgetExceededError, CascadeExhaustedError, ConfigurationError, Price
from frugal_chains.accounting import SQLiteLedger
from frugal_chains.langchain import CascadeChatModel, TokenBudgetHandler
from frugal_chains.routing import (
    CallableGate,
    CallableScorer,
    RefusalGate,
    RegexGate,
    RouterStats,
    SelfConsistencyGate,
    escalation_rates,
)
from frugal_chains.testing import FakeUsageChatModel

PRICES = {
    "cheap-model": Price(input=0.1, output=0.4, max_output_tokens=1000),
    "strong-model": Price(input=5.0, output=15.0, max_output_tokens=1000),
}


class Scripted(BaseChatModel):
    """Answers with scripted AIMessages in turn (tool calls included); reports usage; counts calls."""

    model: str = "cheap-model"
    script: Sequence[AIMessage] = ()
    fail: Callable[[], BaseException] | None = None

    _n: Any = PrivateAttr(default_factory=itertools.count)
    _calls: list[dict[str, Any]] = PrivateAttr(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "scripted"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.model}

    @property
    def calls(self) -> list[dict[str, Any]]:
        return self._calls

    def bind_tools(self, tools: Any, *, tool_choice: Any = None, **kwargs: Any) -> Any:
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], tool_choice=tool_choice, **kwargs)

    def _next(self, kwargs: dict[str, Any]) -> AIMessage:
        self._calls.append(kwargs)
        if self.fail is not None:
            raise self.fail()
        msg = self.script[next(self._n) % len(self.script)]
        return msg.model_copy(
            update={
                "usage_metadata": {"input_tokens": 100, "output_tokens": 10, "total_tokens": 110},
                "response_metadata": {"model_name": self.model},
            }
        )

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=self._next(kwargs))])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        msg = self._next(kwargs)
        words = str(msg.content).split(" ")
        for i, w in enumerate(words):
            last = i == len(words) - 1
            yield ChatGenerationChunk(
                message=AIMessageChunk(
                    content=w if i == 0 else " " + w,
                    usage_metadata=msg.usage_metadata if last else None,
                    response_metadata=msg.response_metadata if last else {},
                )
            )


def tiers(cheap: Sequence[str | AIMessage], strong: Sequence[str | AIMessage]) -> tuple[Scripted, Scripted]:
    def msgs(xs: Sequence[str | AIMessage]) -> list[AIMessage]:
        return [x if isinstance(x, AIMessage) else AIMessage(content=x) for x in xs]

    return Scripted(model="cheap-model", script=msgs(cheap)), Scripted(
        model="strong-model", script=msgs(strong)
    )


class Recorder(BaseCallbackHandler):
    def __init__(self) -> None:
        self.starts: list[tuple[Any, Any, list[str], dict[str, Any]]] = []

    def on_chat_model_start(
        self,
        serialized: Any,
        messages: Any,
        *,
        run_id: Any,
        parent_run_id: Any = None,
        tags: Any = None,
        metadata: Any = None,
        **kwargs: Any,
    ) -> None:
        self.starts.append((run_id, parent_run_id, list(tags or []), dict(metadata or {})))


# -- invoke ------------------------------------------------------------------------------------------------------
def test_failed_gate_escalates_and_metadata_sums_usage() -> None:
    cheap, strong = tiers(["I'm not sure."], ["42"])
    model = CascadeChatModel(
        tiers=[cheap, strong], tier_names=["cheap", "strong"], gates=[RegexGate(r"\d")], prices=PRICES
    )
    msg = model.invoke("What is 6 x 7?")
    frugal = msg.response_metadata["frugal"]
    assert msg.content == "42"
    assert frugal["tier"] == "strong" and frugal["start_tier"] == "cheap" and frugal["escalations"] == 1
    assert [a["outcome"] for a in frugal["attempts"]] == ["escalated", "accepted"]
    assert msg.usage_metadata is not None and msg.usage_metadata["input_tokens"] == 200
    cheap_cost = (100 * 0.1 + 10 * 0.4) / 1e6
    strong_cost = (100 * 5.0 + 10 * 15.0) / 1e6
    assert frugal["cost_usd"] == pytest.approx(cheap_cost + strong_cost)
    assert len(cheap.calls) == 1 and len(strong.calls) == 1


def test_passing_answer_stays_on_the_cheap_tier() -> None:
    cheap, strong = tiers(["The answer is 42."], ["42"])
    model = CascadeChatModel(tiers=[cheap, strong], gates=[RegexGate(r"\d")], prices=PRICES)
    msg = model.invoke("What is 6 x 7?")
    assert msg.content == "The answer is 42."
    assert msg.response_metadata["frugal"]["cascade"]["tier"] == "cheap-model"
    assert strong.calls == []


async def test_async_escalation() -> None:
    cheap, strong = tiers(["I can't help with that."], ["Sure: use a lookahead."])
    model = CascadeChatModel(tiers=[cheap, strong], gates=["refusal"], prices=PRICES)
    msg = await model.ainvoke("Write a regex for a password rule")
    assert msg.content == "Sure: use a lookahead."
    assert msg.response_metadata["frugal"]["cascade"]["escalations"] == 1


def test_scorer_picks_the_starting_tier() -> None:
    cheap, strong = tiers(["cheap answer"], ["strong answer"])
    scorer = CallableScorer(lambda messages: 0.9 if "prove" in str(messages[-1]["content"]) else 0.1)
    model = CascadeChatModel(tiers=[cheap, strong], scorer=scorer, thresholds=[0.5], prices=PRICES)
    assert model.invoke("hi").content == "cheap answer"
    hard = model.invoke("prove that sqrt(2) is irrational")
    assert hard.content == "strong answer"
    assert hard.response_metadata["frugal"]["cascade"]["start_tier"] == "strong-model"
    assert hard.response_metadata["frugal"]["cascade"]["scores"]["scorer"] == pytest.approx(0.9)
    assert len(cheap.calls) == 1 and len(strong.calls) == 1


def test_batch_runs_each_input() -> None:
    cheap, strong = tiers(["7"], ["8"])
    model = CascadeChatModel(tiers=[cheap, strong], gates=[RegexGate(r"\d")], prices=PRICES)
    outs = model.batch(["a", "b", "c"])
    assert [o.content for o in outs] == ["7", "7", "7"]


# -- errors ------------------------------------------------------------------------------------------------------
def test_rate_limit_escalates_and_exhaustion_carries_attempts() -> None:
    cheap = FakeUsageChatModel(model="cheap-model", fail_with=lambda: ModelRateLimitError("429 slow down"))
    strong = FakeUsageChatModel(model="strong-model", responses=["fine"])
    model = CascadeChatModel(tiers=[cheap, strong], prices=PRICES)
    msg = model.invoke("hello")
    assert msg.content == "fine"
    assert [a["outcome"] for a in msg.response_metadata["frugal"]["cascade"]["attempts"]] == [
        "error",
        "accepted",
    ]
    broken = FakeUsageChatModel(model="strong-model", fail_with=lambda: TimeoutError("read timed out"))
    model = CascadeChatModel(tiers=[cheap, broken], prices=PRICES)
    with pytest.raises(CascadeExhaustedError) as info:
        model.invoke("hello")
    assert [a.outcome for a in info.value.attempts] == ["error", "error"]
    assert isinstance(info.value.attempts[0].error, ModelRateLimitError)


def test_non_provider_error_propagates_without_escalating() -> None:
    cheap = Scripted(model="cheap-model", script=[AIMessage("x")], fail=lambda: ValueError("a bug"))
    strong = Scripted(model="strong-model", script=[AIMessage("y")])
    model = CascadeChatModel(tiers=[cheap, strong], prices=PRICES)
    with pytest.raises(ValueError, match="a bug"):
        model.invoke("hello")
    assert strong.calls == []


# -- child runs and budgets --------------------------------------------------------------------------------------
def test_each_tier_is_a_child_run_with_its_tier() -> None:
    cheap, strong = tiers(["no digits"], ["42"])
    model = CascadeChatModel(
        tiers=[cheap, strong], tier_names=["cheap", "strong"], gates=[RegexGate(r"\d")], prices=PRICES
    )
    rec = Recorder()
    model.invoke("6 x 7?", config={"callbacks": [rec]})
    (outer, outer_parent, _, outer_meta), *children = rec.starts
    assert outer_parent is None and outer_meta.get("frugal_chains_wrapper") is True
    assert [c[1] for c in children] == [outer, outer]
    assert [c[3].get("frugal_tier") for c in children] == ["cheap", "strong"]
    assert "frugal_tier:cheap" in children[0][2]
    assert not any(c[3].get("frugal_chains_wrapper") for c in children)


def test_budget_handler_counts_each_provider_call_once() -> None:
    ledger = SQLiteLedger()
    handler = TokenBudgetHandler(budgets=[Budget(max_usd=1.0)], ledger=ledger, prices=PRICES)
    cheap, strong = tiers(["not sure"], ["42"])
    model = CascadeChatModel(
        tiers=[cheap, strong],
        tier_names=["cheap", "strong"],
        gates=[RegexGate(r"\d")],
        prices=PRICES,
        ledger=ledger,
    )
    msg = model.invoke("6 x 7?", config={"callbacks": [handler]})
    calls = [r for r in ledger.records() if r.outcome == "ok"]
    assert sorted(r.model for r in calls) == ["cheap-model", "strong-model"]
    assert {r.model: r.tier for r in calls} == {"cheap-model": "cheap", "strong-model": "strong"}
    assert sum(r.cost_usd for r in calls) == pytest.approx(
        msg.response_metadata["frugal"]["cascade"]["cost_usd"]
    )
    by_tier = {row.key: row.calls for row in ledger.summary("tier")}
    assert by_tier == {"cheap": 1, "strong": 1}
    rates = escalation_rates(ledger.records())
    assert rates["cheap"].escalations == 1 and rates["strong"].accepted == 1


async def test_budget_handler_counts_async_and_stream_calls_once() -> None:
    ledger = SQLiteLedger()
    handler = TokenBudgetHandler(ledger=ledger, prices=PRICES)
    cheap, strong = tiers(["not sure"], ["the answer is 42"])
    model = CascadeChatModel(tiers=[cheap, strong], gates=[RegexGate(r"\d")], prices=PRICES)
    await model.ainvoke("q1", config={"callbacks": [handler]})
    chunks = [c async for c in model.astream("q2", config={"callbacks": [handler]})]
    assert "".join(str(c.content) for c in chunks) == "the answer is 42"
    calls = [r for r in ledger.records() if r.outcome == "ok"]
    assert len(calls) == 4  # two requests x (cheap + strong), the cascade's own runs never counted


# -- tools -------------------------------------------------------------------------------------------------------
@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"Sunny in {city}"


def _tool_call(city: str) -> AIMessage:
    return AIMessage(content="", tool_calls=[{"name": "get_weather", "args": {"city": city}, "id": "call_1"}])


def test_bind_tools_binds_every_tier_and_a_manual_tool_loop_runs() -> None:
    cheap, strong = tiers([_tool_call("Paris"), "It is sunny in Paris."], ["unused"])
    model = CascadeChatModel(tiers=[cheap, strong], gates=["refusal"], prices=PRICES).bind_tools(
        [get_weather]
    )
    messages: list[BaseMessage] = [HumanMessage("What's the weather in Paris?")]
    for _ in range(4):
        ai = model.invoke(messages)
        messages.append(ai)
        if not ai.tool_calls:
            break
        for call in ai.tool_calls:
            messages.append(ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"]))
    assert messages[-1].content == "It is sunny in Paris."
    assert [m.type for m in messages] == ["human", "ai", "tool", "ai"]
    assert cheap.calls[0]["tools"][0]["function"]["name"] == "get_weather"


def test_create_agent_runs_through_the_cascade() -> None:
    from langchain.agents import create_agent

    cheap, strong = tiers(
        ["I'm sorry, I can't help with that."], [_tool_call("Oslo"), "Sunny in Oslo today."]
    )
    model = CascadeChatModel(tiers=[cheap, strong], gates=["refusal"], prices=PRICES)
    agent = create_agent(model=model, tools=[get_weather])
    out = agent.invoke({"messages": [HumanMessage("Weather in Oslo?")]})
    assert out["messages"][-1].content == "Sunny in Oslo today."
    assert any(isinstance(m, ToolMessage) and m.content == "Sunny in Oslo" for m in out["messages"])
    assert strong.calls and strong.calls[0]["tools"][0]["function"]["name"] == "get_weather"


# -- structured output -------------------------------------------------------------------------------------------
class Person(BaseModel):
    name: str
    age: int


def _person_call(args: dict[str, Any]) -> AIMessage:
    return AIMessage(content="", tool_calls=[{"name": "Person", "args": args, "id": "call_p"}])


def test_structured_output_escalates_on_invalid_output() -> None:
    cheap, strong = tiers(
        [_person_call({"name": "Ada", "age": "old"})], [_person_call({"name": "Ada", "age": 36})]
    )
    model = CascadeChatModel(tiers=[cheap, strong], prices=PRICES)
    person = model.with_structured_output(Person).invoke("Ada Lovelace, 36")
    assert person == Person(name="Ada", age=36)
    raw = model.with_structured_output(Person, include_raw=True).invoke("Ada Lovelace, 36")
    assert raw["parsed"] == Person(name="Ada", age=36)
    assert (
        raw["raw"].response_metadata["frugal"]["cascade"]["attempts"][0]["gates"][0]["gate"]
        == "structured_output"
    )


async def test_structured_output_exhausted_raises() -> None:
    cheap, strong = tiers([_person_call({"name": "Ada"})], [_person_call({"age": 3})])
    model = CascadeChatModel(tiers=[cheap, strong], prices=PRICES)
    with pytest.raises(CascadeExhaustedError) as info:
        await model.with_structured_output(Person).ainvoke("Ada")
    assert [a.outcome for a in info.value.attempts] == ["escalated", "exhausted"]


def test_a_nested_cascade_whose_structured_output_never_parses_escalates_to_the_outer_next_tier() -> None:
    bad = [_person_call({"name": "Ada"})]
    inner = CascadeChatModel(
        tiers=[Scripted(model="cheap-model", script=bad), Scripted(model="cheap-model", script=bad)],
        prices=PRICES,
        name="inner",
    )
    strong = Scripted(model="strong-model", script=[_person_call({"name": "Ada", "age": 36})])
    outer = CascadeChatModel(tiers=[inner, strong], tier_names=["inner", "strong"], prices=PRICES)
    raw = outer.with_structured_output(Person, include_raw=True).invoke("Ada Lovelace, 36")
    assert raw["parsed"] == Person(name="Ada", age=36)
    attempts = raw["raw"].response_metadata["frugal"]["cascade"]["attempts"]
    assert [(a["tier"], a["outcome"]) for a in attempts] == [("inner", "error"), ("strong", "accepted")]
    assert "CascadeExhaustedError" in attempts[0]["error"]


# -- streaming ---------------------------------------------------------------------------------------------------
def test_stream_buffers_the_cheap_tier_until_it_passes() -> None:
    cheap, strong = tiers(["no idea at all"], ["the answer is 42"])
    model = CascadeChatModel(tiers=[cheap, strong], gates=[RegexGate(r"\d")], prices=PRICES)
    chunks = list(model.stream("6 x 7?"))
    assert "".join(str(c.content) for c in chunks) == "the answer is 42"
    assert len(chunks) > 2
    whole = chunks[0]
    for c in chunks[1:]:
        whole = whole + c
    assert whole.response_metadata["frugal"]["cascade"]["tier"] == "strong-model"
    assert whole.usage_metadata is not None and whole.usage_metadata["input_tokens"] == 200


def test_stream_without_gates_streams_live_and_escalates_on_an_early_error() -> None:
    cheap = FakeUsageChatModel(model="cheap-model", fail_with=lambda: ModelRateLimitError("429"))
    strong = FakeUsageChatModel(model="strong-model", responses=["one two three"])
    model = CascadeChatModel(tiers=[cheap, strong], prices=PRICES)
    chunks = list(model.stream("hi"))
    assert "".join(str(c.content) for c in chunks) == "one two three"
    assert chunks[-1].response_metadata["frugal"]["cascade"]["escalations"] == 1


async def test_astream_passes_on_the_cheap_tier() -> None:
    cheap, strong = tiers(["it is 42 of course"], ["unused"])
    model = CascadeChatModel(tiers=[cheap, strong], gates=[RegexGate(r"\d")], prices=PRICES)
    chunks = [c async for c in model.astream("6 x 7?")]
    assert "".join(str(c.content) for c in chunks) == "it is 42 of course"
    assert strong.calls == []


# -- gates that call models --------------------------------------------------------------------------------------
def test_self_consistency_samples_are_child_runs_counted_by_the_budget() -> None:
    ledger = SQLiteLedger()
    handler = TokenBudgetHandler(ledger=ledger, prices=PRICES)
    cheap, strong = tiers(["The answer is 5", "The answer is 5", "The answer is 5"], ["unused"])
    model = CascadeChatModel(
        tiers=[cheap, strong], gates=[SelfConsistencyGate(n=3, min_agreement=0.67)], prices=PRICES
    )
    msg = model.invoke("2 + 3?", config={"callbacks": [handler]})
    assert msg.response_metadata["frugal"]["cascade"]["tier"] == "cheap-model"
    assert len(cheap.calls) == 3
    assert len([r for r in ledger.records() if r.outcome == "ok"]) == 3
    assert msg.usage_metadata is not None and msg.usage_metadata["input_tokens"] == 300


def test_callable_gate_and_async_callable_gate() -> None:
    cheap, strong = tiers(["short"], ["a much longer answer"])

    async def long_enough(ctx: Any) -> bool:
        return len(ctx.answer.text) > 10

    model = CascadeChatModel(tiers=[cheap, strong], gates=[CallableGate(long_enough)], prices=PRICES)
    assert model.invoke("q").content == "a much longer answer"


# -- statistics and alerts ---------------------------------------------------------------------------------------
def test_escalation_alert_fires_past_the_threshold() -> None:
    alerts: list[Any] = []
    stats = RouterStats(min_samples=5, on_alert=alerts.append)
    cheap, strong = tiers(["no"], ["1"])
    model = CascadeChatModel(
        tiers=[cheap, strong],
        tier_names=["cheap", "strong"],
        gates=[RegexGate(r"\d")],
        stats=stats,
        prices=PRICES,
    )
    for _ in range(5):
        model.invoke("q")
    assert stats.tier("cheap").escalations == 5
    assert len(alerts) == 1 and alerts[0].tier == "cheap" and alerts[0].rate == 1.0


# -- bad input ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"tiers": [FakeUsageChatModel()]}, "tiers"),
        ({"tiers": [FakeUsageChatModel(), "gpt-4o"]}, "tiers"),
        ({"tiers": [FakeUsageChatModel(), FakeUsageChatModel().bind(stop=["x"])]}, "tiers"),
        ({"gates": ["no-such-gate"]}, "gates"),
        ({"gates": [object()]}, "gates"),
        ({"thresholds": [1.5]}, "thresholds"),
        ({"thresholds": [0.3, 0.6]}, "thresholds"),
        ({"scorer": "magic"}, "scorer"),
        ({"scorer": object()}, "scorer"),
        ({"tier_names": ["a"]}, "tier_names"),
        ({"tier_names": ["a", "a"]}, "tier_names"),
    ],
)
def test_bad_input_names_the_field(kwargs: dict[str, Any], field: str) -> None:
    args: dict[str, Any] = {"tiers": [FakeUsageChatModel(model="a"), FakeUsageChatModel(model="b")], **kwargs}
    with pytest.raises(ConfigurationError) as info:
        CascadeChatModel(**args)
    assert info.value.field == field


def test_refusal_gate_name_and_object_are_equivalent() -> None:
    cheap, strong = tiers(["I'm sorry, but I cannot assist with that."], ["ok"])
    a = CascadeChatModel(tiers=[cheap, strong], gates=["refusal"], prices=PRICES)
    assert isinstance(a.core.gates[0], RefusalGate)


# -- regressions found in review ---------------------------------------------------------------------------------
def test_callbacks_tags_and_metadata_set_on_the_cascade_reach_the_tier_calls() -> None:
    ledger = SQLiteLedger()
    handler = TokenBudgetHandler(budgets=[Budget(max_usd=1.0)], ledger=ledger, prices=PRICES)
    cheap, strong = tiers(["no digits"], ["42"])
    model = CascadeChatModel(
        tiers=[cheap, strong],
        gates=[RegexGate(r"\d")],
        prices=PRICES,
        callbacks=[handler],
        metadata={"feature": "faq"},
        tags=["mine"],
    )
    rec = Recorder()
    model.invoke("6 x 7?", config={"callbacks": [rec]})
    calls = [r for r in ledger.records() if r.outcome == "ok"]
    assert [r.model for r in calls] == ["cheap-model", "strong-model"]
    assert all(r.attribution.feature == "faq" for r in calls)
    children = rec.starts[1:]
    assert all("mine" in c[2] and c[3].get("feature") == "faq" for c in children)
    strict = TokenBudgetHandler(budgets=[Budget(max_tokens=10)], prices=PRICES)
    refused = CascadeChatModel(tiers=list(tiers(["a"], ["b"])), prices=PRICES, callbacks=[strict])
    with pytest.raises(BudgetExceededError):
        refused.invoke("hello there")


def test_structured_stream_yields_the_model_instance() -> None:
    cheap, strong = tiers([_person_call({"name": "Bo", "age": 3})], ["unused"])
    model = CascadeChatModel(tiers=[cheap, strong], prices=PRICES)
    chunks = list(model.with_structured_output(Person).stream("Bo, 3"))
    assert chunks[-1] == Person(name="Bo", age=3)


def test_typeddict_and_json_schema_output_is_validated() -> None:
    from typing_extensions import TypedDict

    class PersonDict(TypedDict):
        name: str
        age: int

    schema = {
        "title": "Person",
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    }
    for s, name in ((PersonDict, "PersonDict"), (schema, "Person")):

        def call(args: dict[str, Any], name: str = name) -> AIMessage:
            return AIMessage(content="", tool_calls=[{"name": name, "args": args, "id": "c1"}])

        cheap, strong = tiers([call({"name": "Bo"})], [call({"name": "Bo", "age": 3})])
        model = CascadeChatModel(tiers=[cheap, strong], prices=PRICES)
        assert model.with_structured_output(s).invoke("Bo, 3") == {"name": "Bo", "age": 3}
        assert len(strong.calls) == 1


def test_judge_calls_are_hidden_from_message_streams_and_recorded_under_the_tier() -> None:
    from frugal_chains.routing import LLMJudgeGate

    ledger = SQLiteLedger()
    handler = TokenBudgetHandler(ledger=ledger, prices={**PRICES, "judge-model": PRICES["cheap-model"]})
    judge = Scripted(model="judge-model", script=[AIMessage("Rating: [[9]]")])
    cheap, strong = tiers(["fine answer"], ["unused"])
    model = CascadeChatModel(
        tiers=[cheap, strong],
        tier_names=["cheap", "strong"],
        gates=[LLMJudgeGate(judge, threshold=0.7)],
        prices=PRICES,
    )
    rec = Recorder()
    model.invoke("q", config={"callbacks": [rec, handler]})
    judge_run = next(s for s in rec.starts if "frugal_judge" in s[2])
    assert "nostream" in judge_run[2] and judge_run[3]["frugal_tier"] == "cheap"
    assert {(r.model, r.tier) for r in ledger.records() if r.outcome == "ok"} == {
        ("cheap-model", "cheap"),
        ("judge-model", "cheap"),
    }


def test_configurable_fields_rebuild_with_thresholds() -> None:
    from langchain_core.runnables import ConfigurableField

    cheap, strong = tiers(["a"], ["b"])
    stats = RouterStats()
    model = CascadeChatModel(
        tiers=[cheap, strong],
        scorer=CallableScorer(lambda m: 0.9),
        thresholds=[0.5],
        stats=stats,
        prices=PRICES,
    ).configurable_fields(name=ConfigurableField(id="name"))
    msg = model.invoke("q", config={"configurable": {"name": "other"}})
    assert msg.content == "b" and stats.tier("b" if False else "strong-model").accepted == 1


def test_the_cascade_answer_itself_is_not_cached_by_a_global_cache() -> None:
    from langchain_core.caches import InMemoryCache
    from langchain_core.globals import set_llm_cache

    cache = InMemoryCache()
    set_llm_cache(cache)
    try:
        cheap, strong = tiers(["no digits"], ["42"])
        model = CascadeChatModel(tiers=[cheap, strong], gates=[RegexGate(r"\d")], prices=PRICES)
        model.invoke("6 x 7?")
        again = model.invoke("6 x 7?")
        assert (
            again.response_metadata["frugal"]["cascade"]["cost_usd"] == 0.0
        )  # both tiers were served from their cache
        assert len(cheap.calls) == 1 and len(strong.calls) == 1
    finally:
        set_llm_cache(None)


def test_a_refused_budget_in_a_stream_is_not_an_attempt_and_exhausted_is_counted() -> None:
    import pickle

    stats = RouterStats()
    cheap, strong = tiers(["no digits"], ["42"])
    strict = TokenBudgetHandler(budgets=[Budget(max_tokens=1100)], prices=PRICES)
    model = CascadeChatModel(
        tiers=[cheap, strong],
        tier_names=["cheap", "strong"],
        gates=[RegexGate(r"\d")],
        stats=stats,
        prices=PRICES,
    )
    with pytest.raises(BudgetExceededError):
        list(model.stream("6 x 7?", config={"callbacks": [strict]}))
    assert stats.tier("strong").attempts == 0 and stats.tier("cheap").escalations == 1
    c2, s2 = tiers([_person_call({"name": "Ada"})], [_person_call({"age": 3})])
    model = CascadeChatModel(tiers=[c2, s2], tier_names=["cheap", "strong"], stats=stats, prices=PRICES)
    with pytest.raises(CascadeExhaustedError) as info:
        model.with_structured_output(Person).invoke("Ada")
    assert stats.tier("strong").exhausted == 1 and stats.tier("strong").accepted == 0
    again = pickle.loads(pickle.dumps(info.value))
    assert [a.outcome for a in again.attempts] == ["escalated", "exhausted"]
