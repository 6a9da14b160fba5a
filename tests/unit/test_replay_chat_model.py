"""ReplayChatModel: recorded answers, token counts, keys, errors, tools, logprobs, streaming, thread safety."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from langchain_core.exceptions import (
    ContextOverflowError,
    ModelAPIError,
    ModelRateLimitError,
    ModelTimeoutError,
)
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.tools import tool

from frugal_chains import ConfigurationError
from frugal_chains.accounting import count_message_tokens, count_text_tokens, litellm_price
from frugal_chains.routing import default_escalates
from frugal_chains.testing.replay import ReplayChatModel, ReplayEntry, ReplayKeyError, replay_key


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return "sunny"


def test_invoke_answers_the_recorded_text_with_recorded_usage() -> None:
    model = ReplayChatModel(
        model="gpt-4o-mini",
        table={"q1": ReplayEntry(text="a1", input_tokens=100, output_tokens=7), "q2": "a2"},
    )
    msg = model.invoke("q1")
    assert msg.content == "a1"
    assert msg.usage_metadata == {"input_tokens": 100, "output_tokens": 7, "total_tokens": 107}
    assert msg.response_metadata["model_name"] == "gpt-4o-mini"
    assert msg.response_metadata["model_provider"] == "openai"
    assert model.invoke("q2").content == "a2"
    assert model.calls == 2


def test_unrecorded_token_counts_are_counted_from_prompt_and_answer() -> None:
    answer = "The capital of France is Paris, a city of about two million people."
    model = ReplayChatModel(model="gpt-4o", table={"capital?": answer})
    msg = model.invoke([SystemMessage("Be brief."), HumanMessage("capital?")])
    expected_in = count_message_tokens(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "capital?"}], model="gpt-4o"
    )
    assert msg.usage_metadata is not None
    assert msg.usage_metadata["input_tokens"] == expected_in
    assert msg.usage_metadata["output_tokens"] == count_text_tokens(answer, "gpt-4o")
    assert msg.usage_metadata["output_tokens"] > 5


def test_last_user_key_strips_whitespace_and_ignores_history() -> None:
    model = ReplayChatModel(table={"what now?": "this"})
    history = [HumanMessage("earlier"), AIMessage("reply"), HumanMessage("  what now?\n")]
    assert model.invoke(history).content == "this"
    assert model.invoke("what now?").content == "this"


def test_conversation_key_distinguishes_histories() -> None:
    first = [{"role": "user", "content": "Write a poem."}]
    a = [*first, {"role": "assistant", "content": "Roses."}, {"role": "user", "content": "Shorter."}]
    b = [*first, {"role": "assistant", "content": "Violets."}, {"role": "user", "content": "Shorter."}]
    model = ReplayChatModel(
        key="conversation",
        table={
            replay_key(first, "conversation"): "Roses.",
            replay_key(a, "conversation"): "R.",
            replay_key(b, "conversation"): "V.",
        },
    )
    assert model.invoke("Write a poem.").content == "Roses."
    assert (
        model.invoke([HumanMessage("Write a poem."), AIMessage("Roses."), HumanMessage("Shorter.")]).content
        == "R."
    )
    assert (
        model.invoke([HumanMessage("Write a poem."), AIMessage("Violets."), HumanMessage("Shorter.")]).content
        == "V."
    )
    # stable: LangChain messages and OpenAI dicts give the same key: compact JSON of role/content
    key = replay_key([HumanMessage("hi"), AIMessage("yo")], "conversation")
    assert key == replay_key(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}], "conversation"
    )
    assert json.loads(key) == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]


def test_missing_key_raises_a_key_error_naming_the_truncated_key() -> None:
    model = ReplayChatModel(model="m", table={"known": "x"})
    long_prompt = "why " * 200
    with pytest.raises(ReplayKeyError) as e:
        model.invoke(long_prompt)
    assert isinstance(e.value, KeyError)
    assert e.value.key == long_prompt.strip()
    text = str(e.value)
    assert "why why" in text and "(799 chars)" in text and len(text) < 400
    assert "missing='default'" in text
    assert not default_escalates(e.value)  # a hole in the table must not look like an outage
    assert model.calls == 1


def test_missing_default_answers_the_default_response() -> None:
    model = ReplayChatModel(table={}, missing="default", default_response="I don't know.")
    assert model.invoke("anything").content == "I don't know."
    entry_default = ReplayChatModel(
        missing="default", default_response=ReplayEntry(text="?", output_tokens=3)
    )
    usage = entry_default.invoke("x").usage_metadata
    assert usage is not None and usage["output_tokens"] == 3


@pytest.mark.parametrize(
    ("name", "cls", "escalates"),
    [
        ("rate_limit", ModelRateLimitError, True),
        ("timeout", ModelTimeoutError, True),
        ("context_overflow", ContextOverflowError, True),
        ("api", ModelAPIError, True),
    ],
)
def test_recorded_errors_raise_langchain_model_errors(
    name: str, cls: type[Exception], escalates: bool
) -> None:
    model = ReplayChatModel(model="weak", table={"q": ReplayEntry(error=name)})
    with pytest.raises(cls) as e:
        model.invoke("q")
    assert default_escalates(e.value) is escalates
    assert model.calls == 1


async def test_recorded_errors_raise_on_async_and_stream_too() -> None:
    model = ReplayChatModel(table={"q": ReplayEntry(error="rate_limit")})
    with pytest.raises(ModelRateLimitError):
        await model.ainvoke("q")
    with pytest.raises(ModelRateLimitError):
        list(model.stream("q"))
    with pytest.raises(ModelRateLimitError):
        async for _ in model.astream("q"):
            pass


def test_bind_tools_returns_recorded_tool_calls_and_counts_the_schemas() -> None:
    entry = ReplayEntry(tool_calls=[{"name": "get_weather", "args": {"city": "Paris"}, "id": "call_1"}])
    model = ReplayChatModel(model="gpt-4o", table={"weather in Paris?": entry})
    plain = model.invoke("weather in Paris?")
    bound = model.bind_tools([get_weather]).invoke("weather in Paris?")
    assert bound.tool_calls == [
        {"name": "get_weather", "args": {"city": "Paris"}, "id": "call_1", "type": "tool_call"}
    ]
    assert bound.response_metadata["finish_reason"] == "tool_calls"
    assert plain.usage_metadata is not None and bound.usage_metadata is not None
    assert bound.usage_metadata["input_tokens"] > plain.usage_metadata["input_tokens"] + 10  # the tool schema
    assert bound.usage_metadata["output_tokens"] > 0


def test_openai_format_tool_calls_are_accepted() -> None:
    entry = ReplayEntry(
        tool_calls=[{"id": "c9", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]
    )
    assert entry.tool_calls == ({"name": "get_weather", "args": {"city": "Oslo"}, "id": "c9"},)
    msg = ReplayChatModel(table={"q": entry}).invoke("q")
    assert msg.tool_calls[0]["args"] == {"city": "Oslo"} and msg.tool_calls[0]["id"] == "c9"


def test_logprobs_are_reported_like_openai() -> None:
    model = ReplayChatModel(table={"q": ReplayEntry(text="Yes", logprobs=[("Yes", -0.25), -1.5])})
    lp = model.invoke("q").response_metadata["logprobs"]
    assert lp == {"content": [{"token": "Yes", "logprob": -0.25}, {"token": "", "logprob": -1.5}]}
    assert "logprobs" not in ReplayChatModel(table={"q": "x"}).invoke("q").response_metadata


def test_samples_rotate_on_repeated_calls_of_the_same_prompt() -> None:
    model = ReplayChatModel(
        table={"q": ReplayEntry(text="A", output_tokens=50, samples=["B", "C"]), "r": "R"}
    )
    got = [model.invoke("q").content for _ in range(4)]
    assert got == ["A", "B", "C", "A"]
    assert model.invoke("r").content == "R"  # counters are per prompt
    model.reset_calls()
    assert model.calls == 0 and model.invoke("q").content == "A"


def test_stream_splits_the_answer_and_reports_usage_on_the_last_chunk() -> None:
    text = "one two three four five six seven"
    model = ReplayChatModel(
        model="gpt-4o-mini", table={"q": ReplayEntry(text=text, input_tokens=9, output_tokens=7)}
    )
    chunks = list(model.stream("q"))
    assert len(chunks) >= 2
    assert "".join(str(c.content) for c in chunks) == text
    assert all(c.usage_metadata is None for c in chunks[:-1])
    assert chunks[-1].usage_metadata is not None and chunks[-1].usage_metadata["output_tokens"] == 7
    assert chunks[-1].chunk_position == "last"
    merged = chunks[0]
    for c in chunks[1:]:
        merged = merged + c
    assert merged.response_metadata["model_name"] == "gpt-4o-mini"


async def test_ainvoke_and_astream() -> None:
    entry = ReplayEntry(
        text="alpha beta gamma", tool_calls=[{"name": "get_weather", "args": {"city": "Rome"}}]
    )
    model = ReplayChatModel(table={"q": entry})
    msg = await model.ainvoke("q")
    assert msg.content == "alpha beta gamma" and msg.tool_calls[0]["args"] == {"city": "Rome"}
    chunks = [c async for c in model.astream("q")]
    merged = chunks[0]
    for c in chunks[1:]:
        merged = merged + c
    assert merged.content == "alpha beta gamma"
    assert merged.tool_calls[0]["name"] == "get_weather"
    assert model.calls == 2


def test_from_records_and_from_jsonl(tmp_path: Path) -> None:
    records = [
        {"prompt": "2+2?", "response": "4", "input_tokens": 5, "output_tokens": 1, "subject": "ignored"},
        {
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "yo"},
                {"role": "user", "content": "bye"},
            ],
            "text": "ciao",
        },
    ]
    path = tmp_path / "rec.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n\n", encoding="utf-8")
    for model in (
        ReplayChatModel.from_records(records, model="mixtral"),
        ReplayChatModel.from_jsonl(path, model="mixtral"),
    ):
        msg = model.invoke("2+2?")
        assert msg.content == "4" and msg.response_metadata["model_name"] == "mixtral"
        assert model.invoke("bye").content == "ciao"
    conv = ReplayChatModel.from_records(records, model="m", key="conversation")
    with pytest.raises(ReplayKeyError):
        conv.invoke("bye")  # the conversation key needs the whole history
    assert conv.invoke([HumanMessage("hi"), AIMessage("yo"), HumanMessage("bye")]).content == "ciao"


def test_from_records_rejects_duplicate_keys_and_bad_records() -> None:
    with pytest.raises(ConfigurationError) as e:
        ReplayChatModel.from_records(
            [{"prompt": "q", "response": "a"}, {"prompt": " q ", "response": "b"}], model="m"
        )
    assert e.value.field == "records" and "samples" in str(e.value)
    with pytest.raises(ConfigurationError) as e:
        ReplayChatModel.from_records([{"response": "a"}], model="m")
    assert e.value.field == "records"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"error": "boom"}, "error"),
        ({"input_tokens": -1}, "input_tokens"),
        ({"output_tokens": 1.5}, "output_tokens"),
        ({"logprobs": [0.5]}, "logprobs"),
        ({"tool_calls": [{"args": {}}]}, "tool_calls"),
        ({"samples": "abc"}, "samples"),
    ],
)
def test_bad_entries_raise_configuration_errors_naming_the_field(
    kwargs: dict[str, object], field: str
) -> None:
    with pytest.raises(ConfigurationError) as e:
        ReplayEntry(**kwargs)  # type: ignore[arg-type]
    assert e.value.field == field


def test_bad_table_raises_configuration_error() -> None:
    with pytest.raises(ConfigurationError) as e:
        ReplayChatModel(table={"q": 42})
    assert e.value.field == "table"
    with pytest.raises(ConfigurationError) as e:
        ReplayChatModel(table={"q": {"txt": "typo"}})
    assert e.value.field == "table" and "txt" in str(e.value)
    with pytest.raises(ConfigurationError):
        replay_key("x", key="everything")  # type: ignore[arg-type]


def test_call_counter_is_thread_safe() -> None:
    model = ReplayChatModel(table={f"q{i}": f"a{i}" for i in range(10)})
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for i in range(50):
                assert model.invoke(f"q{i % 10}").content == f"a{i % 10}"
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert model.calls == 400


def test_ls_params_and_budget_pricing() -> None:
    from frugal_chains.langchain import TokenBudgetHandler

    model = ReplayChatModel(
        model="gpt-4o-mini",
        provider="openai",
        table={"q": ReplayEntry(text="a", input_tokens=1000, output_tokens=500)},
    )
    params = model._get_ls_params()
    assert params["ls_provider"] == "openai" and params["ls_model_name"] == "gpt-4o-mini"
    handler = TokenBudgetHandler()
    model.invoke("q", config={"callbacks": [handler]})
    (record,) = handler.ledger.records()
    price = litellm_price("gpt-4o-mini")
    assert price is not None
    assert record.model == "gpt-4o-mini"
    assert record.usage.input_tokens == 1000 and record.usage.output_tokens == 500
    assert record.cost_usd == pytest.approx((1000 * price.input + 500 * price.output) / 1e6)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"key": "first_user"}, "key"),
        ({"missing": "ignore"}, "missing"),
        ({"latency_s": -1}, "latency_s"),
        ({"model": ""}, "model"),
        ({"table": ["q"]}, "table"),
    ],
)
def test_bad_model_fields_raise_configuration_errors(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigurationError) as e:
        ReplayChatModel(**kwargs)
    assert e.value.field == field
