"""The in-process engine on a real model: vLLM's CPU build running SmolLM2-135M-Instruct (no mocks of vLLM).

One engine serves the whole session (``engine_client``); answers are greedy (temperature 0) and short."""

from __future__ import annotations

import asyncio
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from frugal_chains.vllm import (
    ChatRequest,
    EngineClient,
    SamplingOptions,
    StructuredOutput,
    VLLMClient,
)
from tests.vllm.conftest import ENGINE_DTYPE, ENGINE_MAX_MODEL_LEN

GREEDY = SamplingOptions(max_tokens=12, temperature=0.0)
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def ask(content: str, options: SamplingOptions = GREEDY, **kwargs: Any) -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": content}], options=options, **kwargs)


def prompt_len(client: EngineClient, messages: list[dict[str, Any]]) -> int:
    """The prompt's length in tokens, rendered by the model's chat template outside our client."""
    tokenizer = client.raw_llm().get_tokenizer()
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "input_ids"):  # a BatchEncoding
        ids = ids["input_ids"]
    return len(ids)


@pytest.fixture
def step_spy(engine_client: EngineClient, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many requests the engine holds at each step (the real step still runs)."""
    engine = engine_client.raw_llm().llm_engine
    real_step = engine.step
    seen: list[int] = []

    def step() -> Any:
        seen.append(engine.get_num_unfinished_requests())
        return real_step()

    monkeypatch.setattr(engine, "step", step)
    return seen


def test_is_a_vllm_client(engine_client: EngineClient) -> None:
    assert isinstance(engine_client, VLLMClient)
    assert engine_client.mode == "engine"


def test_answer_matches_raw_vllm_chat_and_usage_counts_its_tokens(engine_client: EngineClient) -> None:
    from vllm import SamplingParams

    answer = engine_client.generate([ChatRequest(messages=QUESTION, options=GREEDY)])[0]
    raw = engine_client.raw_llm().chat(
        [QUESTION], SamplingParams(max_tokens=12, temperature=0.0), use_tqdm=False
    )[0]

    assert answer.text and answer.text == raw.outputs[0].text
    assert answer.model == engine_client.model
    assert answer.usage.input_tokens == len(raw.prompt_token_ids) == prompt_len(engine_client, QUESTION)
    assert answer.usage.output_tokens == len(raw.outputs[0].token_ids)
    assert answer.finish_reason in ("stop", "length")
    assert answer.tool_calls == ()


def test_stream_yields_several_chunks_that_join_to_the_answer(engine_client: EngineClient) -> None:
    request = ChatRequest(messages=QUESTION, options=GREEDY)
    whole = engine_client.generate([request])[0]
    chunks = list(engine_client.stream(request))

    texts = [c.text for c in chunks if c.text]
    assert len(texts) >= 3  # token by token, not one block
    assert "".join(c.text for c in chunks) == whole.text
    assert all(c.usage is None and c.finish_reason is None for c in chunks[:-1])
    assert chunks[-1].finish_reason == whole.finish_reason
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.input_tokens == whole.usage.input_tokens
    assert chunks[-1].usage.output_tokens == whole.usage.output_tokens


async def test_agenerate_and_astream_match_sync_without_blocking_the_loop(
    engine_client: EngineClient,
) -> None:
    request = ChatRequest(messages=QUESTION, options=GREEDY)
    whole = engine_client.generate([request])[0]
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.001)

    ticking = asyncio.create_task(ticker())
    try:
        answer = (await engine_client.agenerate([request]))[0]
        chunks = [chunk async for chunk in engine_client.astream(request)]
    finally:
        stop.set()
        await ticking

    assert answer.text == whole.text
    assert "".join(c.text for c in chunks) == whole.text
    assert len([c for c in chunks if c.text]) >= 3
    assert chunks[-1].usage is not None and chunks[-1].usage.output_tokens == whole.usage.output_tokens
    assert ticks > 1  # the event loop ran while the engine worked


def test_batch_of_8_enters_the_engine_together_and_answers_in_order(
    engine_client: EngineClient, step_spy: list[int]
) -> None:
    contents = [f"Count to {n}." + " Please." * n for n in range(1, 9)]  # prompts of different lengths
    answers = engine_client.generate(
        [ask(c, SamplingOptions(max_tokens=6, temperature=0.0)) for c in contents]
    )

    assert len(answers) == 8
    assert step_spy[0] == 8  # all eight were added before the first step
    for content, answer in zip(contents, answers, strict=True):
        assert answer.usage.input_tokens == prompt_len(engine_client, [{"role": "user", "content": content}])
        assert 0 < answer.usage.output_tokens <= 6


def test_concurrent_threads_each_get_their_own_answer(engine_client: EngineClient) -> None:
    contents = [f"Say the number {n}." + " Thanks." * n for n in range(6)]
    barrier = threading.Barrier(len(contents))

    def one(content: str) -> Any:
        barrier.wait()
        return engine_client.generate([ask(content, SamplingOptions(max_tokens=6, temperature=0.0))])[0]

    with ThreadPoolExecutor(len(contents)) as pool:
        answers = list(pool.map(one, contents))
    for content, answer in zip(contents, answers, strict=True):
        assert answer.usage.input_tokens == prompt_len(engine_client, [{"role": "user", "content": content}])
        assert answer.text


async def test_asyncio_gather_of_requests_and_streams(engine_client: EngineClient) -> None:
    contents = [f"Name a colour number {n}." + " Now." * n for n in range(4)]
    options = SamplingOptions(max_tokens=6, temperature=0.0)

    async def streamed(content: str) -> str:
        return "".join([c.text async for c in engine_client.astream(ask(content, options))])

    results = await asyncio.gather(
        *(engine_client.agenerate([ask(c, options)]) for c in contents), *(streamed(c) for c in contents)
    )
    generated, streams = results[: len(contents)], results[len(contents) :]
    for content, answers, text in zip(contents, generated, streams, strict=True):
        assert isinstance(answers, list)
        assert answers[0].usage.input_tokens == prompt_len(
            engine_client, [{"role": "user", "content": content}]
        )
        assert text == answers[0].text


def test_repeated_long_system_prompt_is_served_from_the_prefix_cache(engine_client: EngineClient) -> None:
    system = "You are a careful assistant for a travel agency in Lyon. " * 20
    request = ChatRequest(
        messages=[{"role": "system", "content": system}, {"role": "user", "content": "Hi"}],
        options=SamplingOptions(max_tokens=4, temperature=0.0),
    )
    first = engine_client.generate([request])[0]
    second = engine_client.generate([request])[0]

    assert second.usage.cache_read_tokens > 0
    assert second.usage.cache_read_tokens <= second.usage.input_tokens == first.usage.input_tokens
    assert second.usage.input_tokens > 150


def test_structured_output_follows_the_json_schema(engine_client: EngineClient) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    answer = engine_client.generate(
        [
            ask(
                "Describe a person as JSON.",
                SamplingOptions(max_tokens=40, temperature=0.0),
                structured=StructuredOutput(json_schema=schema),
            )
        ]
    )[0]

    value = json.loads(answer.text)
    assert set(value) == {"name", "age"}
    assert isinstance(value["name"], str) and isinstance(value["age"], int)


def test_choice_decoding_answers_one_of_the_choices(engine_client: EngineClient) -> None:
    choices = ("red", "green", "blue")
    answers = engine_client.generate(
        [
            ask(
                f"Pick a colour ({n}).",
                SamplingOptions(max_tokens=5, temperature=0.0),
                structured=StructuredOutput(choice=choices),
            )
            for n in range(3)
        ]
    )
    assert all(a.text in choices for a in answers)


def test_logprobs_of_each_answer_token(engine_client: EngineClient) -> None:
    answer = engine_client.generate(
        [ChatRequest(messages=QUESTION, options=SamplingOptions(max_tokens=5, temperature=0.0, logprobs=2))]
    )[0]

    assert answer.logprobs is not None
    assert len(answer.logprobs) == answer.usage.output_tokens
    assert "".join(t.token for t in answer.logprobs).startswith(answer.text[:3])
    for token in answer.logprobs:
        assert token.logprob <= 0.0
        assert 1 <= len(token.top) <= 2
        assert token.top[0][0] == token.token  # greedy: the chosen token is the likeliest


def test_named_tool_choice_forces_a_valid_call(engine_client: EngineClient) -> None:
    request = ask(
        "What is the weather in Paris?",
        SamplingOptions(max_tokens=24, temperature=0.0),
        tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    answer = engine_client.generate([request])[0]

    assert answer.finish_reason == "tool_calls"
    assert [c.name for c in answer.tool_calls] == ["get_weather"]
    assert isinstance(answer.tool_calls[0].args["city"], str)
    assert answer.tool_calls[0].id

    chunks = list(engine_client.stream(request))
    pieces = [d for c in chunks for d in c.tool_calls]
    assert pieces[0].name == "get_weather" and pieces[0].id
    assert len(pieces) >= 3  # the arguments stream as they are decoded
    assert json.loads("".join(p.arguments for p in pieces)) == answer.tool_calls[0].args
    assert chunks[-1].finish_reason == "tool_calls"


def test_required_tool_choice_forces_a_call_among_the_tools(engine_client: EngineClient) -> None:
    answer = engine_client.generate(
        [
            ask(
                "What is the weather in Rome?",
                SamplingOptions(max_tokens=48, temperature=0.0),
                tools=[WEATHER_TOOL],
                tool_choice="required",
            )
        ]
    )[0]
    assert answer.tool_calls and all(c.name == "get_weather" for c in answer.tool_calls)
    assert "city" in answer.tool_calls[0].args


def test_auto_tool_choice_reads_calls_with_vllms_tool_parser(
    smollm2_dir: Path, engine_client: EngineClient
) -> None:
    # SmolLM2 was not trained to call tools: a regular expression makes it write the Hermes syntax, which the
    # "hermes" parser then reads, as it would for a model that calls tools by itself.
    client = EngineClient(
        str(smollm2_dir), dtype=ENGINE_DTYPE, max_model_len=ENGINE_MAX_MODEL_LEN, tool_parser="hermes"
    )
    call = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
    request = ask(
        "Weather in Oslo?",
        SamplingOptions(max_tokens=120, temperature=0.0),
        tools=[WEATHER_TOOL],
        tool_choice="auto",
        structured=StructuredOutput(regex=call.replace("{", r"\{").replace("}", r"\}")),
    )
    answer = client.generate([request])[0]
    assert [(c.name, c.args) for c in answer.tool_calls] == [("get_weather", {"city": "Oslo"})], answer
    assert answer.finish_reason == "tool_calls"
    assert "<tool_call>" not in answer.text

    # Streamed, the parser reads the whole answer, then the call comes in the last chunk.
    chunks = list(client.stream(request))
    pieces = [d for c in chunks for d in c.tool_calls]
    assert [(p.name, json.loads(p.arguments)) for p in pieces] == [("get_weather", {"city": "Oslo"})]
    assert "<tool_call>" not in "".join(c.text for c in chunks)
    assert chunks[-1].finish_reason == "tool_calls"


def test_clients_with_the_same_settings_share_one_engine(
    smollm2_dir: Path, engine_client: EngineClient
) -> None:
    same = EngineClient(str(smollm2_dir), dtype=ENGINE_DTYPE, max_model_len=ENGINE_MAX_MODEL_LEN)
    other = EngineClient(str(smollm2_dir), dtype=ENGINE_DTYPE, max_model_len=1024)

    assert same.raw_llm() is engine_client.raw_llm()
    assert same.started
    assert same.generate([ask("Hi", SamplingOptions(max_tokens=3))])[0].usage.output_tokens > 0
    assert not other.started  # a different configuration is a different engine, started only when used


def test_a_stream_closed_early_is_aborted_in_the_engine(engine_client: EngineClient) -> None:
    stream = engine_client.stream(
        ask("Tell me a long story about a dragon.", SamplingOptions(max_tokens=200))
    )
    first = next(stream)
    stream.close()
    assert first.finish_reason is None

    engine_client.generate([ask("Hi", SamplingOptions(max_tokens=2))])
    assert engine_client.raw_llm().llm_engine.get_num_unfinished_requests() == 0


def test_a_prompt_longer_than_the_model_fails_alone(engine_client: EngineClient) -> None:
    too_long = ask("word " * (ENGINE_MAX_MODEL_LEN + 100), SamplingOptions(max_tokens=2))
    with pytest.raises(Exception, match=r"(?i)length|long|token"):
        engine_client.generate([too_long])
    assert engine_client.generate([ask("Hi", SamplingOptions(max_tokens=2))])[0].usage.output_tokens > 0


def test_streamed_logprobs_cover_each_answer_token(engine_client: EngineClient) -> None:
    request = ChatRequest(
        messages=QUESTION, options=SamplingOptions(max_tokens=5, temperature=0.0, logprobs=1)
    )
    chunks = list(engine_client.stream(request))
    tokens = [t for c in chunks for t in (c.logprobs or ())]
    assert chunks[-1].usage is not None
    assert len(tokens) == chunks[-1].usage.output_tokens
    assert all(t.logprob <= 0.0 and len(t.top) == 1 for t in tokens)


def test_a_conversation_with_a_tool_call_and_its_result_renders(engine_client: EngineClient) -> None:
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "What is the weather in Paris?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 24 C"},
    ]
    answer = engine_client.generate(
        [
            ChatRequest(
                messages=messages,
                tools=[WEATHER_TOOL],
                options=SamplingOptions(max_tokens=8, temperature=0.0),
            )
        ]
    )[0]
    assert answer.usage.output_tokens > 0
    assert answer.usage.input_tokens > prompt_len(engine_client, messages[:1])
