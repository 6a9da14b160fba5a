"""ServerClient against FakeVLLMServer (no vLLM): answers, usage and cached tokens, streams, async, concurrent
batches, retries then VLLMServerError, 4xx at once, tools, structured output and vLLM-only parameters in the body,
model discovery; serve_command's flags and check_health."""

from __future__ import annotations

import asyncio
import shlex
import threading
from typing import Any

import pytest

from frugal_chains.errors import ConfigurationError, VLLMServerError
from frugal_chains.routing import default_escalates
from frugal_chains.testing import FakeVLLMServer
from frugal_chains.vllm import (
    ChatRequest,
    SamplingOptions,
    ServerClient,
    StructuredOutput,
    VLLMClient,
    check_health,
    client_for,
    serve_command,
)

SYSTEM = {"role": "system", "content": " ".join(f"rule{i}" for i in range(40))}


def _req(content: str = "Capital of France?", **kwargs: Any) -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": content}], **kwargs)


def _fast(server: FakeVLLMServer, **kwargs: Any) -> ServerClient:
    kwargs.setdefault("retry_backoff_s", 0.0)
    return ServerClient(server.base_url, **kwargs)


def test_answer_usage_and_protocol() -> None:
    with FakeVLLMServer(["Paris."], model="smollm2") as server, _fast(server) as client:
        assert isinstance(client, VLLMClient) and client.mode == "server"
        [answer] = client.generate([_req(options=SamplingOptions(max_tokens=8, temperature=0.0))])
    assert answer.text == "Paris." and answer.model == "smollm2" and answer.finish_reason == "stop"
    assert (answer.usage.input_tokens, answer.usage.output_tokens, answer.usage.cache_read_tokens) == (
        4,
        1,
        0,
    )
    assert answer.request_id and answer.request_id.startswith("chatcmpl-")
    body = server.requests[0]
    assert body["model"] == "smollm2" and body["max_tokens"] == 8 and body["temperature"] == 0.0
    assert "stream" not in body and "structured_outputs" not in body


def test_cached_tokens_from_prompt_tokens_details() -> None:
    with FakeVLLMServer(block_size=16) as server, _fast(server) as client:
        first, second = client.generate(
            [ChatRequest(messages=[SYSTEM, {"role": "user", "content": "one"}])]
        ) + client.generate([ChatRequest(messages=[SYSTEM, {"role": "user", "content": "two"}])])
    assert first.usage.cache_read_tokens == 0
    assert second.usage.cache_read_tokens == 32 and second.usage.input_tokens == 43


def test_cached_tokens_zero_when_the_server_omits_details() -> None:
    import httpx

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            json={
                "id": "x",
                "model": "m",
                "choices": [{"message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10},
            },
        )

    client = ServerClient("http://vllm.invalid:8000/v1", model="m")
    client._client = httpx.Client(transport=httpx.MockTransport(handler))
    [answer] = client.generate([_req()])
    assert answer.usage.input_tokens == 9 and answer.usage.cache_read_tokens == 0


def test_stream_chunks_then_final_usage() -> None:
    text = "The capital of France is Paris, on the Seine."
    with FakeVLLMServer([text]) as server, _fast(server) as client:
        chunks = list(client.stream(_req()))
    assert "".join(c.text for c in chunks) == text
    assert len([c for c in chunks if c.text]) >= 3
    assert all(c.usage is None and c.finish_reason is None for c in chunks[:-1])
    last = chunks[-1]
    assert last.finish_reason == "stop" and last.usage is not None
    assert last.usage.output_tokens == len(text.split()) and last.usage.input_tokens == 4
    body = server.requests[0]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


async def test_async_answer_and_stream() -> None:
    with FakeVLLMServer(["a b c d e f"]) as server:
        client = _fast(server)
        [answer] = await client.agenerate([_req()])
        chunks = [c async for c in client.astream(_req())]
    assert answer.text == "a b c d e f" and answer.model == "fake-vllm"
    assert "".join(c.text for c in chunks) == "a b c d e f"
    assert chunks[-1].usage is not None and chunks[-1].finish_reason == "stop"


async def test_async_does_not_block_the_event_loop() -> None:
    # the server answers only once a coroutine on the same loop releases it: a blocked loop never would
    released = threading.Event()
    arrived = asyncio.Event()
    loop = asyncio.get_running_loop()

    def answer(body: dict[str, Any]) -> str:
        loop.call_soon_threadsafe(arrived.set)
        return "released" if released.wait(10) else "the loop was blocked"

    async def release() -> None:
        await arrived.wait()
        released.set()

    with FakeVLLMServer(answer) as server:
        client = _fast(server, model="fake-vllm")
        [completion], _ = await asyncio.gather(client.agenerate([_req()]), release())
    assert completion.text == "released"


def _concurrency_probe(target: int) -> tuple[Any, dict[str, int]]:
    """An answer that holds each request until ``target`` requests are in the server at once (or 10 s pass:
    then the client did not send them together), counting the most seen at once."""
    state = {"now": 0, "peak": 0}
    lock = threading.Lock()
    together = threading.Event()

    def answer(body: dict[str, Any]) -> str:
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
            if state["now"] >= target:
                together.set()
        together.wait(10)
        with lock:
            state["now"] -= 1
        return "echo " + body["messages"][-1]["content"]

    return answer, state


def test_batch_is_sent_concurrently_and_answers_in_order() -> None:
    answer, state = _concurrency_probe(6)
    with FakeVLLMServer(answer) as server, _fast(server) as client:
        out = client.generate([_req(f"q{i}") for i in range(6)])
    assert [c.text for c in out] == [f"echo q{i}" for i in range(6)]
    assert state["peak"] == 6  # the whole batch was in the server at once


def test_batch_concurrency_is_bounded() -> None:
    answer, state = _concurrency_probe(2)
    with FakeVLLMServer(answer) as server, _fast(server, max_concurrency=2) as client:
        client.generate([_req(f"q{i}") for i in range(5)])
    assert state["peak"] == 2


async def test_async_batch_is_concurrent_and_bounded() -> None:
    answer, state = _concurrency_probe(3)
    with FakeVLLMServer(answer) as server:
        client = _fast(server, max_concurrency=3)
        out = await client.agenerate([_req(f"q{i}") for i in range(7)])
    assert [c.text for c in out] == [f"echo q{i}" for i in range(7)]
    assert state["peak"] == 3


@pytest.mark.parametrize("failure", ["503", "garbage", "close", "hang", "cut"])
def test_retries_then_answers(failure: str) -> None:
    with FakeVLLMServer(["ok"], fail_first=2, failure=failure) as server:  # type: ignore[arg-type]
        client = _fast(server, model="fake-vllm", max_retries=2, timeout=0.5)
        [answer] = client.generate([_req()])
        client.close()
    assert answer.text == "ok"
    assert len(server.requests) == 3


@pytest.mark.parametrize(
    ("failure", "status", "words"),
    [
        ("503", 503, "HTTP 503"),
        ("garbage", 502, "not JSON"),
        ("close", 503, "RemoteProtocolError"),
        ("hang", 503, "no answer in time"),
        ("cut", 502, "not JSON"),
    ],
)
def test_retries_exhausted_raise_vllm_server_error(failure: str, status: int, words: str) -> None:
    with FakeVLLMServer(["ok"], fail_first=10, failure=failure) as server:  # type: ignore[arg-type]
        client = _fast(server, model="fake-vllm", max_retries=2, timeout=0.5)
        with pytest.raises(VLLMServerError) as info:
            client.generate([_req()])
        client.close()
    error = info.value
    assert len(server.requests) == 3 and error.attempts == 3
    assert error.status_code == status and default_escalates(error)
    assert error.url == server.base_url + "/chat/completions"
    assert server.base_url in str(error) and "3 attempts" in str(error) and words in str(error)
    assert "Check" in str(error)


def test_down_server_raises_503_naming_the_url_and_what_to_check() -> None:
    server = FakeVLLMServer()
    server.stop()
    client = _fast(server, model="fake-vllm", max_retries=1)
    with pytest.raises(VLLMServerError) as info:
        client.generate([_req()])
    assert info.value.status_code == 503 and info.value.attempts == 2
    assert "frugal-chains vllm health" in str(info.value) and "vllm serve" in str(info.value)


def test_the_error_does_not_double_the_servers_full_stop() -> None:
    with FakeVLLMServer(["ok"], fail_first=10, failure="503") as server:
        client = _fast(server, model="fake-vllm", max_retries=0)
        with pytest.raises(VLLMServerError) as info:
            client.generate([_req()])
    assert "try again later. Check" in str(info.value) and ".." not in str(info.value)


async def test_async_retries_then_raises() -> None:
    with FakeVLLMServer(["ok"], fail_first=10, failure="503") as server:
        client = _fast(server, model="fake-vllm", max_retries=1)
        with pytest.raises(VLLMServerError) as info:
            await client.agenerate([_req()])
    assert info.value.attempts == 2 and len(server.requests) == 2


def test_retry_backoff_grows() -> None:
    with FakeVLLMServer(["ok"], fail_first=10, failure="503") as server:
        client = ServerClient(server.base_url, model="fake-vllm", max_retries=2, retry_backoff_s=0.1)
        with pytest.raises(VLLMServerError):
            client.generate([_req()])
    assert client._backoff(1) == pytest.approx(0.1) and client._backoff(2) == pytest.approx(0.2)


def test_4xx_is_not_retried_and_carries_the_server_message() -> None:
    with FakeVLLMServer(["ok"]) as server:
        client = _fast(server, max_retries=3)
        with pytest.raises(VLLMServerError) as info:
            client.generate([_req(options=SamplingOptions(max_tokens=5000))])
        wrong = _fast(server, model="gpt-4", max_retries=3)
        with pytest.raises(VLLMServerError) as missing:
            wrong.generate([_req()])
    assert info.value.status_code == 400 and info.value.attempts == 1
    assert "maximum context length" in str(info.value) and not default_escalates(info.value)
    assert missing.value.status_code == 404 and "gpt-4" in str(missing.value)
    assert len(server.requests) == 2


def test_stream_failing_before_its_first_chunk_is_retried() -> None:
    with FakeVLLMServer(["a b c d e f"], fail_first=2, failure="503") as server:
        client = _fast(server, model="fake-vllm")
        chunks = list(client.stream(_req()))
    assert "".join(c.text for c in chunks) == "a b c d e f"
    assert len(server.requests) == 3


def test_stream_cut_after_its_first_chunk_raises_without_repeating_text() -> None:
    with FakeVLLMServer(["a b c d e f g h"], fail_first=1, failure="cut") as server:
        client = _fast(server, model="fake-vllm", max_retries=3)
        got: list[str] = []
        with pytest.raises(VLLMServerError) as info:
            for chunk in client.stream(_req()):
                got.append(chunk.text)
    assert got and "".join(got) != "a b c d e f g h"
    assert len(server.requests) == 1 and info.value.attempts == 1
    assert "not retried" in str(info.value)


async def test_astream_cut_after_its_first_chunk_raises() -> None:
    with FakeVLLMServer(["a b c d e f g h"], fail_first=1, failure="cut") as server:
        client = _fast(server, model="fake-vllm", max_retries=3)
        with pytest.raises(VLLMServerError):
            async for _ in client.astream(_req()):
                pass
    assert len(server.requests) == 1


def test_stream_retries_exhausted_raise() -> None:
    with FakeVLLMServer(fail_first=10, failure="close") as server:
        client = _fast(server, model="fake-vllm", max_retries=1)
        with pytest.raises(VLLMServerError) as info:
            list(client.stream(_req()))
    assert info.value.status_code == 503 and len(server.requests) == 2


TOOL = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two numbers.",
        "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}},
    },
}


NOW = {"type": "function", "function": {"name": "now", "description": "The time."}}
NAMED = {"type": "function", "function": {"name": "add"}}
ADD_ARGS = '{"a": 2, "b": 3}'
REQUIRED_ANSWER = '[{"name": "add", "parameters": {"a": 1, "b": 2}}, {"name": "now", "parameters": {}}]'


def _decoded(text: str) -> Any:
    """A stand-in for the server's guided decoding: ``text`` when the body asks for a JSON schema, else prose."""

    def answer(body: dict[str, Any]) -> str:
        return text if "json" in (body.get("structured_outputs") or {}) else "I would call a tool."

    return answer


def test_a_forced_named_call_is_guided_decoding_not_the_servers_tool_choice() -> None:
    """No tool-call parser needed on the server: the call is decoded against the tool's parameter schema, and
    the client turns the JSON into the call."""
    with FakeVLLMServer(_decoded(ADD_ARGS)) as server, _fast(server) as client:
        [answer] = client.generate([_req(tools=[TOOL, NOW], tool_choice=NAMED)])
    body = server.requests[0]
    assert body["structured_outputs"] == {"json": TOOL["function"]["parameters"]}  # type: ignore[index]
    assert body["tool_choice"] == "none"  # a missing tool_choice would read as "auto" (needs a parser)
    assert body["tools"] == [TOOL, NOW]  # still shown to the model by the chat template
    assert answer.text == "" and answer.finish_reason == "tool_calls"
    [call] = answer.tool_calls
    assert (call.name, call.args) == ("add", {"a": 2, "b": 3}) and call.id.startswith("call_")


def test_required_decodes_a_list_and_gives_every_call() -> None:
    with FakeVLLMServer(_decoded(REQUIRED_ANSWER)) as server, _fast(server) as client:
        [answer] = client.generate([_req(tools=[TOOL, NOW], tool_choice="required")])
    schema = server.requests[0]["structured_outputs"]["json"]
    assert schema["type"] == "array" and schema["minItems"] == 1
    assert [v["properties"]["name"]["enum"] for v in schema["items"]["anyOf"]] == [["add"], ["now"]]
    assert server.requests[0]["tool_choice"] == "none"
    assert [(c.name, c.args) for c in answer.tool_calls] == [("add", {"a": 1, "b": 2}), ("now", {})]
    assert len({c.id for c in answer.tool_calls}) == 2
    assert answer.text == "" and answer.finish_reason == "tool_calls"


def test_a_streamed_named_call_streams_its_arguments_as_tool_call_deltas() -> None:
    with FakeVLLMServer(_decoded(ADD_ARGS)) as server, _fast(server) as client:
        chunks = list(client.stream(_req(tools=[TOOL], tool_choice=NAMED)))
    assert server.requests[0]["structured_outputs"] == {"json": TOOL["function"]["parameters"]}  # type: ignore[index]
    assert server.requests[0]["stream"] is True and server.requests[0]["tool_choice"] == "none"
    deltas = [d for c in chunks for d in c.tool_calls]
    assert len(deltas) >= 3  # the arguments arrive in pieces, as the server sends them
    assert deltas[0].name == "add" and deltas[0].id and deltas[0].id.startswith("call_")
    assert all(d.index == 0 and d.name is None and d.id is None for d in deltas[1:])
    assert "".join(d.arguments for d in deltas) == ADD_ARGS
    assert "".join(c.text for c in chunks) == ""
    assert chunks[-1].finish_reason == "tool_calls" and chunks[-1].usage is not None


def test_a_streamed_required_answer_gives_its_calls_whole_at_the_end() -> None:
    with FakeVLLMServer(_decoded(REQUIRED_ANSWER)) as server, _fast(server) as client:
        chunks = list(client.stream(_req(tools=[TOOL, NOW], tool_choice="required")))
    assert all(not c.tool_calls and not c.text for c in chunks[:-1])
    last = chunks[-1]
    assert [(d.index, d.name, d.arguments) for d in last.tool_calls] == [
        (0, "add", '{"a": 1, "b": 2}'),
        (1, "now", "{}"),
    ]
    assert all(d.id for d in last.tool_calls) and last.text == ""
    assert last.finish_reason == "tool_calls" and last.usage is not None


async def test_forced_calls_in_async_too() -> None:
    with FakeVLLMServer(_decoded(ADD_ARGS)) as server, _fast(server) as client:
        [answer] = await client.agenerate([_req(tools=[TOOL], tool_choice=NAMED)])
        chunks = [c async for c in client.astream(_req(tools=[TOOL], tool_choice=NAMED))]
    assert [(c.name, c.args) for c in answer.tool_calls] == [("add", {"a": 2, "b": 3})]
    assert answer.finish_reason == "tool_calls"
    assert "".join(d.arguments for c in chunks for d in c.tool_calls) == ADD_ARGS
    assert chunks[-1].finish_reason == "tool_calls"
    assert [b["tool_choice"] for b in server.requests] == ["none", "none"]


@pytest.mark.parametrize("choice", ["required", NAMED])
def test_an_answer_that_is_not_json_comes_back_as_plain_text(choice: Any) -> None:
    """A forced answer cut short (``max_tokens``) is not valid JSON: no tool call is made up, the text comes back
    as it is with the server's finish reason, as the engine does."""
    with FakeVLLMServer(_decoded('{"a": 2, "b"')) as server, _fast(server) as client:
        [answer] = client.generate([_req(tools=[TOOL], tool_choice=choice)])
        chunks = list(client.stream(_req(tools=[TOOL], tool_choice="required")))
    assert answer.tool_calls == () and answer.text == '{"a": 2, "b"' and answer.finish_reason == "stop"
    assert "".join(c.text for c in chunks) == '{"a": 2, "b"' and not any(c.tool_calls for c in chunks)
    assert chunks[-1].finish_reason == "stop"


@pytest.mark.parametrize("choice", ["auto", "none", None])
def test_auto_and_none_go_to_the_server_as_they_are(choice: str | None) -> None:
    with FakeVLLMServer(['{"a": 1}']) as server, _fast(server) as client:
        [answer] = client.generate([_req(tools=[TOOL], tool_choice=choice)])
    body = server.requests[0]
    assert body.get("tool_choice") == choice and "structured_outputs" not in body
    assert (
        answer.text == '{"a": 1}' and answer.tool_calls == ()
    )  # the server's parser decides, not the client


def _server_parsed(body: dict[str, Any]) -> dict[str, Any]:
    return {"tool_calls": [{"id": "call_7", "function": {"name": "add", "arguments": {"a": 2, "b": 3}}}]}


def test_tool_calls_the_server_parsed_itself_are_kept() -> None:
    with FakeVLLMServer(_server_parsed) as server, _fast(server) as client:
        [answer] = client.generate([_req(tools=[TOOL], tool_choice="auto")])
        [forced] = client.generate([_req(tools=[TOOL], tool_choice=NAMED)])
        chunks = list(client.stream(_req(tools=[TOOL], tool_choice="required")))
    for result in (answer, forced):
        [call] = result.tool_calls
        assert (call.id, call.name, call.args) == ("call_7", "add", {"a": 2, "b": 3})
        assert result.finish_reason == "tool_calls"
    deltas = [d for c in chunks for d in c.tool_calls]
    assert deltas[0].id == "call_7" and deltas[0].name == "add" and deltas[0].index == 0
    assert "".join(d.arguments for d in deltas) == '{"a": 2, "b": 3}'
    assert chunks[-1].finish_reason == "tool_calls"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "sub"}}}, "tool_choice"),
        (
            {"tools": [TOOL], "tool_choice": "required", "structured": StructuredOutput(regex="x")},
            "structured",
        ),
    ],
)
def test_bad_forced_calls_are_configuration_errors_before_any_request(kwargs: Any, field: str) -> None:
    with FakeVLLMServer(["ok"]) as server, _fast(server, model="fake-vllm") as client:
        with pytest.raises(ConfigurationError) as info:
            client.generate([_req(**kwargs)])
        with pytest.raises(ConfigurationError):
            list(client.stream(_req(**kwargs)))
    assert info.value.field == field and server.requests == []


@pytest.mark.parametrize(
    ("structured", "field", "value"),
    [
        (StructuredOutput(json_schema={"type": "object"}), "json", {"type": "object"}),
        (StructuredOutput(regex="[0-9]+"), "regex", "[0-9]+"),
        (StructuredOutput(choice=("yes", "no")), "choice", ["yes", "no"]),
        (StructuredOutput(grammar='root ::= "a"'), "grammar", 'root ::= "a"'),
    ],
)
def test_structured_output_goes_in_vllm_structured_outputs_field(
    structured: StructuredOutput, field: str, value: Any
) -> None:
    with FakeVLLMServer(["yes"]) as server, _fast(server) as client:
        client.generate([_req(structured=structured)])
    assert server.requests[0]["structured_outputs"] == {field: value}


def test_vllm_only_parameters_and_extra_go_at_the_top_level() -> None:
    options = SamplingOptions(
        max_tokens=8, top_k=20, min_p=0.05, repetition_penalty=1.1, stop=("\n",), seed=3,
        extra={"ignore_eos": True, "min_tokens": 2},
    )  # fmt: skip
    with FakeVLLMServer(["ok"]) as server, _fast(server) as client:
        client.generate([_req(options=options)])
    body = server.requests[0]
    assert body["top_k"] == 20 and body["min_p"] == 0.05 and body["repetition_penalty"] == 1.1
    assert body["ignore_eos"] is True and body["min_tokens"] == 2
    assert body["stop"] == ["\n"] and body["seed"] == 3 and "extra_body" not in body


def test_logprobs_are_parsed() -> None:
    with FakeVLLMServer(["Paris is"]) as server, _fast(server) as client:
        [answer] = client.generate([_req(options=SamplingOptions(logprobs=2))])
        chunks = list(client.stream(_req(options=SamplingOptions(logprobs=1))))
    assert server.requests[0]["logprobs"] is True and server.requests[0]["top_logprobs"] == 2
    assert answer.logprobs is not None and [t.token for t in answer.logprobs] == ["Paris", "is"]
    assert answer.logprobs[0].top == (("Paris", -0.25), ("PARIS", -2.5))
    streamed = [t.token for c in chunks for t in (c.logprobs or ())]
    assert streamed == ["Paris", "is"]


def test_model_is_discovered_once_from_v1_models() -> None:
    with FakeVLLMServer(["ok"], model="served-name") as server:
        client = _fast(server)
        out = client.generate([_req(), _req()])
        assert client.model == "served-name"
    assert [c.model for c in out] == ["served-name"] * 2
    assert [b["model"] for b in server.requests] == ["served-name"] * 2


async def test_model_is_discovered_in_async_too() -> None:
    with FakeVLLMServer(["ok"], model="served-name") as server:
        client = _fast(server)
        [answer] = await client.agenerate([_req()])
    assert answer.model == "served-name" and server.requests[0]["model"] == "served-name"


def test_api_key_and_headers_are_sent() -> None:
    with FakeVLLMServer(["ok"]) as server:
        client = _fast(server, api_key="sk-local", headers={"X-Team": "search"})
        client.generate([_req()])
    headers = server.request_headers[0]
    assert headers["authorization"] == "Bearer sk-local" and headers["x-team"] == "search"


def test_thread_safe_under_many_threads() -> None:
    with FakeVLLMServer(lambda body: body["messages"][-1]["content"]) as server, _fast(server) as client:
        results: dict[int, str] = {}

        def work(i: int) -> None:
            results[i] = client.generate([_req(f"n{i}")])[0].text

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert results == {i: f"n{i}" for i in range(8)}
    assert len([h for h in server.request_headers if h]) == 8


def test_health_of_a_client() -> None:
    with FakeVLLMServer(model="smollm2") as server:
        health = ServerClient(server.base_url).health()
    assert health.ok and health.models == ("smollm2",) and health.latency_s is not None


def test_base_url_normalised_and_validated() -> None:
    assert ServerClient("http://127.0.0.1:8000/v1/").base_url == "http://127.0.0.1:8000/v1"
    assert ServerClient("http://127.0.0.1:8000").base_url == "http://127.0.0.1:8000/v1"
    assert client_for(None, base_url="http://h:1/v1").mode == "server"
    with pytest.raises(ConfigurationError, match="base_url"):
        ServerClient("127.0.0.1:8000")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"timeout": 0}, "timeout"),
        ({"max_retries": -1}, "max_retries"),
        ({"retry_backoff_s": -1}, "retry_backoff_s"),
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"model": ""}, "model"),
    ],
)
def test_bad_arguments_name_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        ServerClient("http://127.0.0.1:8000/v1", **kwargs)
    assert info.value.field == field


# -- serve_command / check_health ---------------------------------------------------------------------------------


def test_serve_command_recommended_flags() -> None:
    cmd = serve_command("m")
    assert cmd[:3] == ["vllm", "serve", "m"]
    assert "--enable-prefix-caching" in cmd and "--enable-prompt-tokens-details" in cmd
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1" and cmd[cmd.index("--port") + 1] == "8000"
    assert "--tool-call-parser" not in cmd and "--enable-auto-tool-choice" not in cmd
    assert "--quantization" not in cmd and "--api-key" not in cmd


def test_serve_command_options() -> None:
    cmd = serve_command(
        "org/m-awq",
        host="0.0.0.0",
        port=9000,
        served_model_name="cheap",
        dtype="bfloat16",
        max_model_len=4096,
        quantization="awq",
        tool_call_parser="hermes",
        enable_prefix_caching=False,
        api_key="k",
        extra_args=["--enforce-eager"],
    )
    text = shlex.join(cmd)
    for part in (
        "--host 0.0.0.0",
        "--port 9000",
        "--served-model-name cheap",
        "--dtype bfloat16",
        "--max-model-len 4096",
        "--quantization awq",
        "--enable-auto-tool-choice --tool-call-parser hermes",
        "--no-enable-prefix-caching",
        "--api-key k",
    ):
        assert part in text, part
    assert cmd[-1] == "--enforce-eager"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"port": 0}, "port"),
        ({"max_model_len": -5}, "max_model_len"),
        ({"extra_args": "--x 1"}, "extra_args"),
    ],
)
def test_serve_command_bad_arguments(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        serve_command("m", **kwargs)
    assert info.value.field == field


def test_check_health_down_is_not_an_exception() -> None:
    server = FakeVLLMServer()
    server.stop()
    health = check_health(server.base_url, timeout=1.0)
    assert not health.ok and health.models == () and health.error
    assert str(health).startswith("down: " + server.base_url)


def test_check_health_up() -> None:
    with FakeVLLMServer(model="a") as server:
        health = check_health(server.base_url.removesuffix("/v1"))
    assert health.ok and health.base_url == server.base_url and "serves a" in str(health)


def test_check_health_hanging_server_times_out() -> None:
    import socket

    with socket.socket() as listener:  # accepts connections, never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        health = check_health(f"http://127.0.0.1:{port}/v1", timeout=0.3)
    assert not health.ok and "no answer within" in (health.error or "")


def test_launch_server_that_dies_while_starting_raises_with_its_log(tmp_path: Any) -> None:
    """The server exits at once (no vLLM in this venv; with vLLM, an unknown flag), and the error carries its log's
    tail."""
    from frugal_chains.vllm import launch_server
    from frugal_chains.vllm.serve import _launch_args

    log = tmp_path / "serve.log"
    with pytest.raises(VLLMServerError) as info:
        launch_server("some/model", wait_s=120, log_file=log, extra_args=["--not-a-vllm-flag"])
    message = str(info.value)
    assert "exited with code" in message and "vllm serve some/model" in message
    last_line = log.read_text().strip().splitlines()[-1]
    assert last_line and last_line in message and str(log) in message
    assert info.value.status_code == 503
    args = _launch_args(serve_command("some/model", port=8123))
    assert "some/model" in args and args[args.index("--port") + 1] == "8123"


def test_a_client_dropped_without_close_closes_its_connections() -> None:
    """A ChatVLLM that goes out of scope never calls close(): its pooled sockets must not be left to the garbage
    collector (a ResourceWarning at a random later point, in someone else's code)."""
    import gc
    import warnings

    with FakeVLLMServer(["Paris."], model="m") as server:
        client = ServerClient(server.base_url, model="m")
        client.generate([ChatRequest(messages=[{"role": "user", "content": "Capital?"}])])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            del client
            gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []
