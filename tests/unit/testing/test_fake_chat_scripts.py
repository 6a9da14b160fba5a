"""The LangChain fakes used the way a user would: a scripted agent turn inside ``create_agent`` with the budget
handler recording usage, and structured output with scripted or filled answers."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import tool
from pydantic import BaseModel

from frugal_chains import Budget, ConfigurationError
from frugal_chains.langchain import TokenBudgetHandler
from frugal_chains.testing import FakeToolCallingChatModel, FakeUsageChatModel


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"Sunny in {city}"


@tool
def get_time(city: str) -> str:
    """The local time in a city."""
    return f"Noon in {city}"


class Weather(BaseModel):
    city: str
    sky: str


def ask(agent: Any, text: str, **config: Any) -> dict[str, Any]:
    out: dict[str, Any] = agent.invoke({"messages": [{"role": "user", "content": text}]}, config=config)
    return out


def test_scripted_turn_runs_in_create_agent_and_reports_usage() -> None:
    model = FakeToolCallingChatModel(
        model="gpt-4o",
        turns=[
            {"name": "get_weather", "args": {"city": "Paris"}},
            [
                {"name": "get_time", "args": {"city": "Paris"}},
                {"name": "get_weather"},
            ],  # parallel; args filled
            "Sunny, and it is noon.",
        ],
    )
    handler = TokenBudgetHandler([Budget(max_usd=1.0, scope="global")])
    out = ask(create_agent(model, tools=[get_weather, get_time]), "Weather in 'Lyon'?", callbacks=[handler])
    messages = out["messages"]
    calls = [[c["name"] for c in m.tool_calls] for m in messages if isinstance(m, AIMessage)]
    assert calls == [["get_weather"], ["get_time", "get_weather"], []]
    assert [m.content for m in messages if isinstance(m, ToolMessage)] == [
        "Sunny in Paris",
        "Noon in Paris",
        "Sunny in Lyon",
    ]
    assert messages[-1].content == "Sunny, and it is noon."
    records = handler.ledger.records()
    assert len(records) == 3 and {r.model for r in records} == {"gpt-4o"}
    assert all(
        not r.usage_estimated and r.usage.output_tokens == 40 and (r.cost_usd or 0) > 0 for r in records
    )
    assert records[0].usage.input_tokens < records[1].usage.input_tokens < records[2].usage.input_tokens


def test_script_repeats_and_works_async() -> None:
    model = FakeToolCallingChatModel(turns=[{"name": "get_weather", "args": {"city": "Oslo"}}, "Cold."])
    agent = create_agent(model, tools=[get_weather])
    assert ask(agent, "Oslo?")["messages"][-1].content == "Cold."

    async def again() -> Any:
        return await agent.ainvoke({"messages": [{"role": "user", "content": "Oslo?"}]})

    assert asyncio.run(again())["messages"][-1].content == "Cold."


def test_structured_agent_answer_from_the_script() -> None:
    model = FakeToolCallingChatModel(
        turns=[{"name": "get_weather", "args": {"city": "Paris"}}, "done"],
        structured_responses=[Weather(city="Paris", sky="sunny")],
    )
    out = ask(create_agent(model, tools=[get_weather], response_format=Weather), "Weather in Paris?")
    assert out["structured_response"] == Weather(city="Paris", sky="sunny")


def test_a_script_calling_an_unbound_tool_or_malformed_is_refused() -> None:
    model = FakeToolCallingChatModel(turns=[{"name": "get_wether", "args": {}}])
    with pytest.raises(ConfigurationError, match="get_wether") as e:
        model.bind_tools([get_weather]).invoke("hi")
    assert e.value.field == "turns"
    with pytest.raises(ConfigurationError, match=r"turns\[1\]"):
        FakeToolCallingChatModel(turns=["ok", {"args": {}}])


@pytest.mark.parametrize("cls", [FakeUsageChatModel, FakeToolCallingChatModel])
@pytest.mark.parametrize("method", ["function_calling", "json_schema", "json_mode"])
def test_with_structured_output_on_both_fakes(cls: type[FakeUsageChatModel], method: str) -> None:
    filled = cls().with_structured_output(Weather, method=method).invoke("Weather in 'Rome': 'rainy'")  # type: ignore[arg-type]
    assert filled == Weather(city="Rome", sky="rainy")
    scripted = cls(structured_responses=[{"city": "Oslo", "sky": "snow"}, Weather(city="Nice", sky="sun")])
    chain = scripted.with_structured_output(Weather, method=method)  # type: ignore[arg-type]
    assert [chain.invoke("x"), chain.invoke("x"), chain.invoke("x")] == [
        Weather(city="Oslo", sky="snow"),
        Weather(city="Nice", sky="sun"),
        Weather(city="Oslo", sky="snow"),
    ]
    raw = scripted.with_structured_output(Weather, method=method, include_raw=True).invoke("x")  # type: ignore[arg-type]
    assert raw["raw"].usage_metadata["output_tokens"] == 40 and raw["parsing_error"] is None


def test_plain_answers_unchanged_by_structured_responses() -> None:
    model = FakeUsageChatModel(responses=["plain"], structured_responses=[{"city": "Oslo", "sky": "snow"}])
    assert model.invoke("hi").content == "plain"
