"""FakeToolCallingChatModel: tool_choice, arguments from the prompt, structured output methods, stop."""

from __future__ import annotations

import json

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from pydantic import BaseModel

from frugal_chains.testing import FakeToolCallingChatModel


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool
def greet(name: str) -> str:
    """Greet someone."""
    return f"hi {name}"


class City(BaseModel):
    name: str
    population: int | None = None


def test_tool_choice_forces_forbids_and_names() -> None:
    model = FakeToolCallingChatModel()
    assert model.bind_tools([add, greet], tool_choice="none").invoke("What is 1 + 2?").tool_calls == []
    named = model.bind_tools([add, greet], tool_choice="greet").invoke("Say hi to 'Ada'")
    assert [(c["name"], c["args"]) for c in named.tool_calls] == [("greet", {"name": "Ada"})]
    forced = model.bind_tools([add, greet], tool_choice=True).invoke("1 and 2")
    assert forced.tool_calls[0]["name"] == "add" and forced.tool_calls[0]["args"] == {"a": 1, "b": 2}
    with pytest.raises(ValueError, match="not among the bound tools"):
        model.bind_tools([add], tool_choice="missing")


def test_auto_calls_on_the_user_turn_and_answers_after_a_tool_result() -> None:
    bound = FakeToolCallingChatModel(responses=["It is 3."]).bind_tools([add])
    question = HumanMessage("What is 1 + 2?")
    call = bound.invoke([question])
    assert isinstance(call, AIMessage) and call.tool_calls[0]["args"] == {"a": 1, "b": 2}
    result = add.invoke(call.tool_calls[0])
    assert isinstance(result, ToolMessage)
    final = bound.invoke([question, call, result])
    assert final.tool_calls == [] and final.content == "It is 3."


@pytest.mark.parametrize("method", ["function_calling", "json_schema", "json_mode"])
def test_structured_output_methods(method: str) -> None:
    model = FakeToolCallingChatModel(model="gpt-4o")
    out = model.with_structured_output(City, method=method).invoke("'Paris' has 2100000 people")  # type: ignore[arg-type]
    assert out == City(name="Paris", population=2100000)
    raw = model.with_structured_output(City.model_json_schema(), method=method, include_raw=True).invoke(
        "'Oslo'"
    )  # type: ignore[arg-type]
    assert raw["parsed"]["name"] == "Oslo" and raw["parsing_error"] is None
    assert raw["raw"].response_metadata["model_name"] == "gpt-4o"
    if method != "function_calling":
        assert json.loads(raw["raw"].content)["name"] == "Oslo"


def test_stop_cuts_the_text_when_streaming_too() -> None:
    model = FakeToolCallingChatModel(responses=["one two three"])
    assert "".join(str(c.content) for c in model.stream("go", stop=[" three"])) == "one two"


def test_a_json_text_turn_is_the_agents_structured_response() -> None:
    """docs/testing.md: in ``create_agent(..., response_format=Schema)`` a text turn of the script is the structured
    answer; a turn that is a JSON object is that answer as written (not filled from the prompt)."""
    from langchain.agents import create_agent
    from langchain_core.tools import tool
    from pydantic import BaseModel

    from frugal_chains.testing import FakeToolCallingChatModel

    class Weather(BaseModel):
        city: str
        sky: str

    @tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return f"Sunny in {city}"

    model = FakeToolCallingChatModel(
        turns=[{"name": "get_weather", "args": {"city": "Paris"}}, '{"city": "Paris", "sky": "sunny"}']
    )
    agent = create_agent(model, tools=[get_weather], response_format=Weather)
    out = agent.invoke({"messages": [("user", "Weather in Paris?")]})
    assert out["structured_response"] == Weather(city="Paris", sky="sunny")
    # a text turn that is not JSON still answers with the schema filled from the prompt
    filled = FakeToolCallingChatModel(turns=["It is sunny."]).with_structured_output(
        Weather, method="json_schema"
    )
    assert filled.invoke("Weather in 'Rome': 'rainy'") == Weather(city="Rome", sky="rainy")
