"""``CacheRequest.from_inputs``, ``SpendTally`` and the LangChain ``CachedChain``: keys, stored outputs, errors."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.documents import Document
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.runnables import RunnableLambda

from frugal_chains import Price, SQLiteLedger
from frugal_chains.accounting import PriceBook
from frugal_chains.accounting.usage import Usage
from frugal_chains.cache import AnswerCache, CacheRequest
from frugal_chains.cache.core import UNKNOWN_USD
from frugal_chains.cache.spend import SpendTally
from frugal_chains.errors import ConfigurationError
from frugal_chains.langchain import CachedChain, cache_chain
from frugal_chains.testing import FakeUsageChatModel, HashEmbeddings


# -- CacheRequest.from_inputs -------------------------------------------------------------------------------------
def test_the_question_is_semantic_and_the_rest_exact() -> None:
    a = CacheRequest.from_inputs({"question": "Hours?", "lang": "en", "k": 3})
    assert a.question == "Hours?" and a.semantic
    assert a.partition == CacheRequest.from_inputs({"k": 3, "lang": "en", "question": "Days?"}).partition
    assert a.partition != CacheRequest.from_inputs({"question": "Hours?", "lang": "en", "k": 4}).partition
    assert (
        a.partition
        != CacheRequest.from_inputs({"question": "Hours?", "lang": "en", "k": 3}, version="v2").partition
    )
    assert (
        a.partition
        != CacheRequest.from_inputs({"question": "Hours?", "lang": "en", "k": 3}, name="b").partition
    )


def test_exact_names_the_keys_that_matter_and_a_callable_picks_the_question() -> None:
    a = CacheRequest.from_inputs({"question": "Hours?", "trace": 1}, exact=["lang"])
    b = CacheRequest.from_inputs({"question": "Hours?", "trace": 2}, exact=["lang"])
    assert a.partition == b.partition
    c = CacheRequest.from_inputs({"messages": ["hi", "Hours?"]}, question=lambda x: x["messages"][-1])
    assert c.question == "Hours?"


def test_a_chain_key_never_meets_a_model_key() -> None:
    assert CacheRequest.from_inputs("Hours?").partition != CacheRequest.from_prompt("Hours?").partition


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"inputs": {"q": "x"}}, "question"),
        ({"inputs": {"question": 3}}, "question"),
        ({"inputs": 3}, "inputs"),
        ({"inputs": "x", "version": 2}, "version"),
        ({"inputs": "x", "exact": "lang"}, "exact"),
        ({"inputs": "x", "question": 5}, "question"),
    ],
)
def test_bad_inputs_name_the_field(kwargs: dict[str, Any], field: str) -> None:
    inputs = kwargs.pop("inputs")
    with pytest.raises(ConfigurationError) as err:
        CacheRequest.from_inputs(inputs, **kwargs)
    assert err.value.field == field


# -- SpendTally -----------------------------------------------------------------------------------------------------
def test_the_tally_sums_the_calls_and_unknown_stays_unknown() -> None:
    book = PriceBook({"m": Price(input=1.0, output=1.0)}, use_litellm=False, unknown_model="warn")
    tally = SpendTally()
    tally.add("m", Usage(input_tokens=1_000_000))
    tally.add("m", None, 0.5)
    assert tally.stored("x", book).cost_usd == pytest.approx(1.5)
    tally.add("unpriced-model", Usage(input_tokens=10))
    stored = tally.stored("x", book)
    assert stored.cost_usd is UNKNOWN_USD and stored.model == "m,unpriced-model"
    assert SpendTally().stored("x", book).cost_usd == 0.0  # no paid call: saves $0


# -- CachedChain ----------------------------------------------------------------------------------------------------
def counting(output: Any) -> tuple[RunnableLambda[Any, Any], list[Any]]:
    calls: list[Any] = []
    return RunnableLambda(lambda x: calls.append(x) or output), calls


def test_langchain_objects_in_the_output_round_trip() -> None:
    output = {
        "answer": AIMessage("Yes.", response_metadata={"model_name": "m"}),
        "docs": [Document("d", metadata={"s": 1})],
    }
    chain, calls = counting(output)
    cached = cache_chain(chain, AnswerCache(semantic=False))
    cached.invoke({"question": "Q?"})
    again = cached.invoke({"question": "Q?"})
    assert again == output and isinstance(again["docs"][0], Document) and len(calls) == 1


def test_an_output_that_does_not_serialise_is_not_stored() -> None:
    chain, calls = counting({"answer": object()})
    cached = cache_chain(chain, AnswerCache(semantic=False))
    cached.invoke("Q?")
    cached.invoke("Q?")
    assert len(calls) == 2


@pytest.mark.parametrize("output", [("a", 1), {"pair": ("a", 1)}, [("a", 1)]])
def test_an_output_that_would_come_back_as_another_type_is_not_stored(output: Any) -> None:
    # JSON has no tuple: a hit would hand back a list where the chain returned a tuple
    chain, calls = counting(output)
    cached = cache_chain(chain, AnswerCache(semantic=False))
    assert cached.invoke("Q?") == output
    assert cached.invoke("Q?") == output and len(calls) == 2


def test_a_message_output_streams_as_chunks_on_a_hit() -> None:
    chain = RunnableLambda(lambda x: x["q"]) | FakeUsageChatModel(
        responses=["Paris is the capital of France."]
    )
    cached = cache_chain(chain, AnswerCache(semantic=False), question=lambda x: x["q"])
    first = "".join(str(c.content) for c in cached.stream({"q": "Capital?"}))
    chunks = list(cached.stream({"q": "Capital?"}))
    assert all(isinstance(c, AIMessageChunk) for c in chunks) and len(chunks) > 1
    assert "".join(str(c.content) for c in chunks) == first == "Paris is the capital of France."
    whole = cached.invoke({"q": "Capital?"})  # the streamed miss was stored as one message
    assert type(whole) is AIMessage and whole.content == first


def test_ainvoke_and_abatch_are_real() -> None:
    chain, calls = counting("A.")
    cached = cache_chain(chain, AnswerCache(semantic=False))

    async def run() -> list[Any]:
        return [await cached.ainvoke("Q?"), *(await cached.abatch(["Q?", "Q?"]))]

    assert asyncio.run(run()) == ["A.", "A.", "A."] and len(calls) == 1


def test_the_hit_record_prices_every_model_call_of_the_run() -> None:
    prices = {"gpt-4o-mini": Price(input=1.0, output=2.0)}
    ledger = SQLiteLedger()
    cache = AnswerCache(semantic=False, ledger=ledger, prices=prices)
    first = FakeUsageChatModel(responses=["draft"], output_tokens=10)
    second = FakeUsageChatModel(responses=["final"], output_tokens=20)
    chain = first | (lambda m: m.content) | second | (lambda m: m.content)
    cached = cache_chain(chain, cache)
    cached.invoke("Q?")
    cached.invoke("Q?")
    [hit] = [r for r in ledger.records() if r.outcome == "cache_hit"]
    assert hit.usage.output_tokens == 30  # both calls
    assert hit.saved_usd == pytest.approx((hit.usage.input_tokens * 1.0 + 30 * 2.0) / 1e6)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"chain": "not a runnable"}, "chain"),
        ({"cache": "nope"}, "cache"),
        ({"exact": "lang"}, "exact"),
        ({"question": 3}, "question"),
        ({"version": 1}, "version"),
    ],
)
def test_bad_configuration_names_the_field(kwargs: dict[str, Any], field: str) -> None:
    base: dict[str, Any] = {"chain": RunnableLambda(lambda x: x), "cache": AnswerCache(semantic=False)}
    with pytest.raises(ConfigurationError) as err:
        CachedChain(**{**base, **kwargs})
    assert err.value.field == field


def test_it_needs_a_cache() -> None:
    with pytest.raises(ConfigurationError) as err:
        CachedChain(chain=RunnableLambda(lambda x: x))
    assert err.value.field == "cache"


def test_the_input_schema_is_the_chains() -> None:
    from langchain_core.prompts import ChatPromptTemplate

    chain = ChatPromptTemplate.from_template("{question} in {lang}") | FakeUsageChatModel()
    cached = cache_chain(chain, AnswerCache(embedder=HashEmbeddings()))
    assert set(cached.get_input_schema().model_json_schema()["properties"]) == {"question", "lang"}


def test_a_stream_whose_chunks_do_not_add_up_or_that_fails_is_not_stored() -> None:
    def odd(_: Any) -> Any:
        yield {"a": 1}
        yield 2

    def failing(_: Any) -> Any:
        yield "par"
        raise RuntimeError("stream broke")

    cache = AnswerCache(semantic=False)
    assert list(cache_chain(RunnableLambda(odd), cache).stream("Q?")) == [{"a": 1}, 2]
    with pytest.raises(RuntimeError, match="stream broke"):
        list(cache_chain(RunnableLambda(failing), cache, name="f").stream("Q?"))
    assert len(cache) == 0
