"""ServerClient against a real ``vllm serve`` of SmolLM2-135M-Instruct on vLLM's CPU build (no mocks of vLLM).

One server serves the whole session (``vllm_server`` in conftest.py, started with ``serve_command``'s flags);
answers are greedy and short."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Iterator

import pytest

from frugal_chains.errors import VLLMServerError
from frugal_chains.vllm import (
    ChatRequest,
    SamplingOptions,
    ServerClient,
    StructuredOutput,
    VLLMClient,
    VLLMServer,
    check_health,
)
from tests.vllm.conftest import SERVED_MODEL

GREEDY = SamplingOptions(max_tokens=12, temperature=0.0)
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture
def client(vllm_server: VLLMServer) -> Iterator[ServerClient]:
    c = ServerClient(vllm_server.base_url, timeout=120.0)
    yield c
    c.close()


def test_answer_and_usage(client: ServerClient) -> None:
    assert isinstance(client, VLLMClient) and client.mode == "server"
    [answer] = client.generate([ChatRequest(messages=QUESTION, options=GREEDY)])
    assert answer.text.strip()
    assert answer.model == SERVED_MODEL == client.model  # discovered from GET /v1/models
    assert answer.usage.input_tokens > 10  # the chat template wraps the question
    assert 0 < answer.usage.output_tokens <= 12
    assert answer.finish_reason in ("stop", "length")


def test_stream_joins_to_the_answer_with_usage_last(client: ServerClient) -> None:
    request = ChatRequest(messages=QUESTION, options=GREEDY)
    whole = client.generate([request])[0]
    chunks = list(client.stream(request))
    assert len([c for c in chunks if c.text]) >= 3
    assert "".join(c.text for c in chunks) == whole.text
    last = chunks[-1]
    assert last.usage is not None and last.usage.output_tokens == whole.usage.output_tokens
    assert last.usage.input_tokens == whole.usage.input_tokens
    assert last.finish_reason == whole.finish_reason
    assert all(c.usage is None for c in chunks[:-1])


async def test_async_answer_and_stream(client: ServerClient) -> None:
    request = ChatRequest(messages=QUESTION, options=GREEDY)
    whole = client.generate([request])[0]
    [answer], chunks = await asyncio.gather(client.agenerate([request]), _collect(client, request))
    assert answer.text == whole.text
    assert "".join(c.text for c in chunks) == whole.text and chunks[-1].usage is not None


async def _collect(client: ServerClient, request: ChatRequest) -> list:  # type: ignore[type-arg]
    return [c async for c in client.astream(request)]


def test_batch_answers_in_order(client: ServerClient) -> None:
    # different max_tokens per request, no stop: each answer's length shows which request it answers
    requests = [
        ChatRequest(
            messages=[{"role": "user", "content": f"Write a long story about a dragon number {i}."}],
            options=SamplingOptions(max_tokens=3 + i, temperature=0.0, extra={"ignore_eos": True}),
        )
        for i in range(6)
    ]
    answers = client.generate(requests)
    assert [a.usage.output_tokens for a in answers] == [3 + i for i in range(6)]
    assert all(a.finish_reason == "length" and a.text for a in answers)


async def test_async_batch(client: ServerClient) -> None:
    requests = [
        ChatRequest(
            messages=[{"role": "user", "content": f"Count to {i + 3}."}],
            options=SamplingOptions(max_tokens=2 + i, temperature=0.0, extra={"ignore_eos": True}),
        )
        for i in range(4)
    ]
    answers = await client.agenerate(requests)
    assert [a.usage.output_tokens for a in answers] == [2, 3, 4, 5]


def test_repeated_long_system_prompt_reports_cached_prompt_tokens(client: ServerClient) -> None:
    tag = uuid.uuid4().hex  # a prefix no earlier test has sent
    system = {
        "role": "system",
        "content": f"Session {tag}. "
        + "You are a careful assistant who answers in one short sentence. " * 20,
    }
    usages = [
        client.generate(
            [
                ChatRequest(
                    messages=[system, {"role": "user", "content": q}], options=SamplingOptions(max_tokens=4)
                )
            ]
        )[0].usage
        for q in ("Hi there", "Hello again")
    ]
    assert usages[0].input_tokens > 200
    assert usages[0].cache_read_tokens < 16  # at most a partial block of the chat template is shared
    assert usages[1].cache_read_tokens >= 128  # the system prompt's full blocks come from the prefix cache
    assert usages[1].cache_read_tokens < usages[1].input_tokens


def test_structured_output_choice_and_regex(client: ServerClient) -> None:
    ask = [{"role": "user", "content": "Is Paris in France? Answer yes or no."}]
    [choice] = client.generate(
        [ChatRequest(messages=ask, options=GREEDY, structured=StructuredOutput(choice=("yes", "no")))]
    )
    [digits] = client.generate(
        [
            ChatRequest(
                messages=[{"role": "user", "content": "Give a three-digit number."}],
                options=GREEDY,
                structured=StructuredOutput(regex="[0-9]{3}"),
            )
        ]
    )
    assert choice.text in ("yes", "no")
    assert re.fullmatch("[0-9]{3}", digits.text)


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
NAMED = {"type": "function", "function": {"name": "get_weather"}}


def test_forced_tool_call_with_a_named_tool_choice(client: ServerClient) -> None:
    """SmolLM2-135M cannot choose tools itself: this is a scripted request whose ``tool_choice`` names the
    function. The client sends it as guided decoding over the tool's parameter schema with ``tool_choice="none"``,
    so the server's tool-call parser plays no part (the fixture's server runs one for other tests; SmolLM2 cannot
    write its syntax): the answer is a JSON object of the tool's shape, and the client makes it the call, plain
    and streamed as argument pieces."""
    request = ChatRequest(
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[WEATHER],
        tool_choice=NAMED,
        options=SamplingOptions(max_tokens=24, temperature=0.0),
    )
    [answer] = client.generate([request])
    [call] = answer.tool_calls
    assert call.name == "get_weather" and call.id and isinstance(call.args.get("city"), str)
    assert answer.text == "" and answer.finish_reason == "tool_calls"
    chunks = list(client.stream(request))
    deltas = [d for c in chunks for d in c.tool_calls]
    assert deltas[0].name == "get_weather" and deltas[0].id
    assert all(d.index == 0 for d in deltas)
    assert json.loads("".join(d.arguments for d in deltas)) == call.args  # greedy: the same call
    assert chunks[-1].usage is not None and chunks[-1].finish_reason == "tool_calls"


def test_forced_required_tool_choice_without_a_parser(client: ServerClient) -> None:
    """``tool_choice="required"``: the model writes a list of calls under guided decoding; each comes back as a
    call of one of the tools."""
    request = ChatRequest(
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[WEATHER],
        tool_choice="required",
        options=SamplingOptions(max_tokens=48, temperature=0.0),
    )
    [answer] = client.generate([request])
    assert answer.tool_calls and all(c.name == "get_weather" for c in answer.tool_calls)
    assert answer.finish_reason == "tool_calls"


def test_health(vllm_server: VLLMServer, client: ServerClient) -> None:
    health = check_health(vllm_server.base_url)
    assert health.ok and health.models == (SERVED_MODEL,) and health.error is None
    assert client.health().ok
    assert vllm_server.process.poll() is None


def test_unknown_model_is_refused_at_once(vllm_server: VLLMServer) -> None:
    client = ServerClient(vllm_server.base_url, model="not-served", max_retries=3, retry_backoff_s=0.0)
    with pytest.raises(VLLMServerError) as info:
        client.generate([ChatRequest(messages=QUESTION, options=GREEDY)])
    assert info.value.status_code == 404 and info.value.attempts == 1
    assert "not-served" in str(info.value)
