"""The LlamaIndex VLLM translates types only (a scripted client stands in for vLLM): chat and completion,
streams with the usage on the last chunk, tools for agents, metadata."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from llama_index.core.base.llms.types import ChatMessage, ToolCallBlock
from llama_index.core.tools import FunctionTool

from frugal_chains import ConfigurationError, Usage
from frugal_chains.llama_index import VLLM
from frugal_chains.vllm import ToolCall
from tests.unit._vllm_fake_client import ScriptedClient, attach


def llm(client: ScriptedClient | None = None, **kw: Any) -> tuple[VLLM, ScriptedClient]:
    client = client or ScriptedClient(["one two", "three four"])
    return attach(VLLM(model="smol", base_url="http://127.0.0.1:9/v1", **kw), client), client


def test_chat_sends_openai_messages_and_reports_usage_in_raw() -> None:
    model, client = llm(
        ScriptedClient(["Paris ."], usage=Usage(input_tokens=30, output_tokens=2, cache_read_tokens=16))
    )
    r = model.chat(
        [ChatMessage(role="system", content="Be brief."), ChatMessage(role="user", content="Capital?")],
        max_tokens=8,
    )
    assert r.message.content == "Paris ."
    assert r.raw == {
        "model": "smol",
        "usage": {
            "prompt_tokens": 30,
            "completion_tokens": 2,
            "total_tokens": 32,
            "prompt_tokens_details": {"cached_tokens": 16},
        },
    }
    (request,) = client.batches[0]
    assert request.messages == (
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Capital?"},
    )
    assert request.options.max_tokens == 8


def test_complete_is_a_one_message_chat() -> None:
    model, client = llm()
    assert model.complete("Say hi").text == "one two"
    assert client.batches[0][0].messages == ({"role": "user", "content": "Say hi"},)
    assert asyncio.run(model.acomplete("again")).text == "three four"


@pytest.mark.parametrize("api", ["chat", "complete"])
def test_streams_give_deltas_and_the_usage_once_on_the_last(api: str) -> None:
    model, _ = llm(ScriptedClient(["a b c"]))
    if api == "chat":
        chunks = list(model.stream_chat([ChatMessage(role="user", content="hi")]))
    else:
        chunks = list(model.stream_complete("hi"))
    assert [c.delta for c in chunks if c.delta] == ["a", " b", " c"]
    assert [c.raw is not None for c in chunks] == [False, False, False, True]
    assert chunks[-1].raw["usage"]["prompt_tokens"] == 20

    async def collect() -> list[Any]:
        gen = await (
            model.astream_chat([ChatMessage(role="user", content="hi")])
            if api == "chat"
            else model.astream_complete("hi")
        )
        return [c async for c in gen]

    assert "".join(c.delta or "" for c in asyncio.run(collect())) == "a b c"


def test_tools_for_agents_forced_or_chosen() -> None:
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    tool = FunctionTool.from_defaults(add)
    call = ToolCall(id="call_1", name="add", arguments='{"a": 1, "b": 2}')
    model, client = llm(ScriptedClient([""], tool_calls=[call]))
    response = model.chat_with_tools([tool], user_msg="add 1 and 2", tool_required=True)
    request = client.batches[0][0]
    assert request.tool_choice == "required"
    assert request.tools[0]["function"]["name"] == "add"
    (selection,) = model.get_tool_calls_from_response(response)
    assert (selection.tool_id, selection.tool_name, selection.tool_kwargs) == (
        "call_1",
        "add",
        {"a": 1, "b": 2},
    )
    model.chat_with_tools([tool], user_msg="add 1 and 2")
    assert client.batches[1][0].tool_choice == "auto"
    # the call goes back to the model as an OpenAI tool call
    model.chat(
        [
            response.message,
            ChatMessage(role="tool", content="3", additional_kwargs={"tool_call_id": "call_1"}),
        ]
    )
    sent = client.batches[2][0].messages
    assert sent[0]["tool_calls"][0]["function"] == {"name": "add", "arguments": '{"a": 1, "b": 2}'}
    assert sent[1]["tool_call_id"] == "call_1"
    streamed = list(model.stream_chat_with_tools([tool], user_msg="add", tool_required=True))
    blocks = [b for b in streamed[-1].message.blocks if isinstance(b, ToolCallBlock)]
    assert blocks[0].tool_kwargs == {"a": 1, "b": 2}


def test_no_tool_call_is_a_clear_error() -> None:
    model, _ = llm()
    response = model.chat([ChatMessage(role="user", content="hi")])
    assert model.get_tool_calls_from_response(response, error_on_no_tool_call=False) == []
    with pytest.raises(ConfigurationError, match="tool_required"):
        model.get_tool_calls_from_response(response)


def test_metadata_and_output_reservation() -> None:
    server = VLLM(model="m", base_url="http://127.0.0.1:9/v1")
    assert (server.metadata.model_name, server.metadata.context_window, server.metadata.num_output) == (
        "m",
        4096,
        256,
    )
    assert server.metadata.is_chat_model and server.metadata.is_function_calling_model
    assert server.max_output_tokens == 4096
    engine = VLLM(model="m", max_model_len=2048, max_tokens=64)
    assert (engine.metadata.context_window, engine.metadata.num_output, engine.max_output_tokens) == (
        2048,
        64,
        64,
    )
    assert not engine.metadata.is_function_calling_model  # no tool parser: it cannot choose a tool itself
    assert VLLM(model="m", max_model_len=2048).max_output_tokens == 2048


def test_bad_settings_and_arguments_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="model="):
        VLLM()
    with pytest.raises(ConfigurationError, match="top_p"):
        VLLM(model="m", base_url="http://127.0.0.1:9/v1", top_p=2.0)
    model, _ = llm()
    with pytest.raises(ConfigurationError, match="extra_body"):
        model.chat([ChatMessage(role="user", content="hi")], guided_choice=["a"])
