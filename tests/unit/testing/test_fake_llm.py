"""FakeUsageLLM used the way a user would: inside a VectorStoreIndex query engine with the LlamaIndex budget handler
recording its usage, under CachedLLM and CascadeLLM, structured output, every call form."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.callbacks import CallbackManager
from llama_index.core.prompts import PromptTemplate
from pydantic import BaseModel

from frugal_chains import Budget
from frugal_chains.accounting import count_message_tokens
from frugal_chains.cache import AnswerCache
from frugal_chains.llama_index import CachedLLM, CascadeLLM, TokenBudgetHandler
from frugal_chains.routing import RegexGate
from frugal_chains.testing import FakeUsageLLM, HashEmbeddings


@pytest.fixture(autouse=True)
def settings() -> Iterator[Any]:
    saved = {f.name: getattr(Settings, f.name) for f in dataclasses.fields(Settings)}
    yield Settings
    for name, value in saved.items():
        setattr(Settings, name, value)


class City(BaseModel):
    name: str
    population: int


def handler() -> TokenBudgetHandler:
    return TokenBudgetHandler([Budget(max_usd=1.0, scope="global")])


def test_query_engine_usage_is_recorded_as_reported() -> None:
    h = handler()
    Settings.callback_manager = CallbackManager([h])
    Settings.embed_model = HashEmbeddings(dim=32).for_llama_index()
    index = VectorStoreIndex.from_documents(
        [Document(text="The answer is 42."), Document(text="Rome is old.")]
    )
    llm = FakeUsageLLM(model="gpt-4o", responses="42.", output_tokens=3)
    answer = index.as_query_engine(llm=llm).query("What is the answer?")
    assert str(answer) == "42."
    (record,) = h.ledger.records()
    assert record.model == "gpt-4o" and not record.usage_estimated
    assert record.usage.output_tokens == 3 and record.usage.input_tokens > 20  # the prompt with its context
    assert (record.cost_usd or 0) > 0


def test_every_call_form_reports_the_same_usage() -> None:
    h = handler()
    llm = FakeUsageLLM(responses=["one two three"], output_tokens=9, callback_manager=CallbackManager([h]))
    messages = [ChatMessage(role="user", content="hello there")]
    expected_input = count_message_tokens([{"role": "user", "content": "hello there"}])

    def drain(gen: Any) -> str:
        return "".join(r.delta for r in gen)

    async def adrain(gen: Any) -> str:
        return "".join([r.delta async for r in gen])

    async def run_async() -> list[str]:
        return [
            (await llm.achat(messages)).message.content or "",
            (await llm.acomplete("hello there")).text,
            await adrain(await llm.astream_chat(messages)),
            await adrain(await llm.astream_complete("hello there")),
        ]

    texts = [
        llm.chat(messages).message.content,
        llm.complete("hello there").text,
        drain(llm.stream_chat(messages)),
        drain(llm.stream_complete("hello there")),
        *asyncio.run(run_async()),
    ]
    assert texts == ["one two three"] * 8
    records = h.ledger.records()
    assert len(records) == 8
    assert {(r.usage.input_tokens, r.usage.output_tokens, r.usage_estimated) for r in records} == {
        (expected_input, 9, False)
    }
    response = llm.chat(messages)
    assert response.raw["usage"]["completion_tokens"] == 9
    assert response.additional_kwargs["prompt_tokens"] == expected_input


def test_answers_text_list_or_function_and_cap() -> None:
    assert FakeUsageLLM(responses="fixed").complete("x").text == "fixed"
    turns = FakeUsageLLM(responses=["a", "b"])
    assert [turns.complete("x").text for _ in range(3)] == ["a", "b", "a"]
    echo = FakeUsageLLM(responses=lambda prompt: prompt.upper())
    assert echo.chat([ChatMessage(role="user", content="hi")]).message.content == "HI"
    capped = FakeUsageLLM(max_tokens=5, output_tokens=40).complete("x")
    assert capped.raw["usage"]["completion_tokens"] == 5
    assert FakeUsageLLM(model="claude-3-5-haiku").metadata.model_name == "claude-3-5-haiku"
    with pytest.raises(TimeoutError):
        FakeUsageLLM(fail_with=lambda: TimeoutError("down")).complete("x")


def test_structured_predict_and_as_structured_llm() -> None:
    h = handler()
    llm = FakeUsageLLM(callback_manager=CallbackManager([h]))
    prompt = PromptTemplate("Extract the city from: {text}")
    assert llm.structured_predict(City, prompt, text="'Paris' has 2100000 people") == City(
        name="Paris", population=2100000
    )
    scripted = FakeUsageLLM(
        structured_responses=[City(name="Rome", population=1), {"name": "Oslo", "population": 2}]
    )
    assert scripted.structured_predict(City, prompt, text="anything").name == "Rome"
    assert asyncio.run(scripted.astructured_predict(City, prompt, text="anything")).name == "Oslo"
    structured = scripted.as_structured_llm(City)
    reply = structured.chat([ChatMessage(role="user", content="a city please")])
    assert reply.raw == City(name="Rome", population=1)
    parts = list(scripted.stream_structured_predict(City, prompt, text="anything"))
    assert parts[-1] == City(name="Oslo", population=2)
    # the structured call is a provider call like any other: its usage is recorded
    assert len(h.ledger.records()) == 1 and not h.ledger.records()[0].usage_estimated


def test_cached_and_cascade_llm_record_the_fake_usage() -> None:
    h = handler()
    Settings.callback_manager = CallbackManager([h])
    cached = CachedLLM(llm=FakeUsageLLM(responses="Paris."), cache=AnswerCache(embedder=HashEmbeddings()))
    assert cached.complete("Capital of France?").text == "Paris."
    assert cached.complete("Capital of France?").text == "Paris."  # a hit: no provider call
    assert len(h.ledger.records()) == 1
    cheap, strong = (
        FakeUsageLLM(model="gpt-4o-mini", responses="no idea"),
        FakeUsageLLM(model="gpt-4o", responses="42"),
    )
    cascade = CascadeLLM(tiers=[cheap, strong], gates=[RegexGate(r"\d")])
    assert cascade.complete("What is 6 x 7?").text == "42"  # the cheap answer fails the gate: escalated
    tiers = h.ledger.records()[1:]
    assert [r.model for r in tiers] == ["gpt-4o-mini", "gpt-4o"]
    assert all(not r.usage_estimated and r.usage.output_tokens == 40 for r in tiers)


def test_testing_imports_without_llama_index() -> None:
    code = (
        "import sys; sys.modules['llama_index'] = None; sys.modules['llama_index.core'] = None\n"
        "import frugal_chains.testing as t\n"
        "t.HashEmbeddings(); t.FakeUsageChatModel\n"
        "try:\n    t.FakeUsageLLM\nexcept ImportError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "frugal-chains[llama-index]" in out.stdout


def test_works_without_langchain() -> None:
    code = (
        "import sys\n"
        "for name in ('langchain_core', 'langchain', 'langgraph', 'langchain_tests'):\n"
        "    sys.modules[name] = None\n"
        "from frugal_chains.testing import FakeUsageLLM, HashEmbeddings\n"
        "print(FakeUsageLLM(responses='ok').complete('hi').text, len(HashEmbeddings().for_llama_index()"
        ".get_text_embedding('hi')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["ok", "64"]
