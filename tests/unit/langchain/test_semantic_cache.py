"""SemanticCache: LangChain's BaseCache contract, chat and plain-LLM prompts, isolation, guard, TTL, budgets."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from langchain_core.caches import BaseCache
from langchain_core.globals import get_llm_cache, set_llm_cache
from langchain_core.language_models.fake import FakeListLLM
from langchain_core.load import dumps
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.outputs import ChatGeneration, Generation
from langchain_core.tools import tool
from langchain_tests.integration_tests.cache import AsyncCacheTestSuite, SyncCacheTestSuite

import frugal_chains.cache.core as core_module
from frugal_chains import ConfigurationError, SQLiteLedger
from frugal_chains.cache import DEFAULT_THRESHOLD, AnswerCache, CacheRequest, cache_scope
from frugal_chains.langchain.budget import TokenBudgetHandler
from frugal_chains.langchain.cache import SemanticCache
from frugal_chains.metadata import cache_status, mark_cache_hit
from frugal_chains.testing import FakeUsageChatModel
from frugal_chains.testing.fake_embeddings import HashEmbeddings

QUESTION = "How long is the refund window for shoes?"
PARAPHRASE = "how long is the refund window for shoes please"


def semantic_cache(**kwargs: Any) -> SemanticCache:
    return SemanticCache(embedder=HashEmbeddings(), **kwargs)


def model(cache: BaseCache | None = None, **kwargs: Any) -> FakeUsageChatModel:
    """A fake chat model whose answers differ call by call: a repeated answer can only come from the cache."""
    kwargs.setdefault("responses", [f"answer {i}" for i in range(20)])
    return FakeUsageChatModel(cache=cache, **kwargs)


def is_hit(message: Any) -> bool:
    return bool(cache_status(message.response_metadata) == "hit")


@pytest.fixture
def global_cache() -> Iterator[None]:
    before = get_llm_cache()
    try:
        yield
    finally:
        set_llm_cache(before)


# -- LangChain's standard cache suites (embedded index, fake embeddings) ----------------------------------------
class TestSemanticCacheSyncSuite(SyncCacheTestSuite):
    @pytest.fixture
    def cache(self) -> BaseCache:
        return semantic_cache()


class TestSemanticCacheAsyncSuite(AsyncCacheTestSuite):
    @pytest.fixture
    async def cache(self) -> BaseCache:
        return semantic_cache()


# -- construction ------------------------------------------------------------------------------------------------
def test_no_arguments_uses_the_core_defaults() -> None:
    cache = SemanticCache()
    assert cache.core.threshold == DEFAULT_THRESHOLD
    assert cache.core.guard is not None
    assert len(cache) == 0


def test_a_given_core_is_used_as_is() -> None:
    core = AnswerCache(embedder=HashEmbeddings(), threshold=0.9)
    assert SemanticCache(core).core is core


@pytest.mark.parametrize(
    ("args", "kwargs", "field"),
    [
        ((AnswerCache(embedder=HashEmbeddings()),), {"threshold": 0.5}, "cache"),
        (("not a cache",), {}, "cache"),
        ((), {"threshold": 1.5}, "threshold"),
    ],
)
def test_bad_arguments_name_the_field(args: tuple[Any, ...], kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigurationError) as e:
        SemanticCache(*args, **kwargs)
    assert e.value.field == field


def test_from_redis_refuses_an_index() -> None:
    with pytest.raises(ConfigurationError) as e:
        SemanticCache.from_redis("redis://localhost:1", index=object())
    assert e.value.field == "index"


def test_async_methods_are_native() -> None:
    for name in ("alookup", "aupdate", "aclear"):
        assert getattr(SemanticCache, name) is not getattr(BaseCache, name)


# -- chat models ---------------------------------------------------------------------------------------------
def test_exact_hit_on_a_chat_model() -> None:
    cache = semantic_cache()
    m = model(cache)
    first = m.invoke(QUESTION)
    again = m.invoke("  how long is the REFUND window for shoes ")
    assert first.content == again.content == "answer 0"
    assert not is_hit(first)
    assert is_hit(again)
    assert again.response_metadata["frugal"]["cache"]["tier"] == "exact"
    assert again.response_metadata["model_name"] == "gpt-4o-mini"
    assert again.usage_metadata is not None and again.usage_metadata["output_tokens"] == 40
    assert cache.stats.hits_exact == 1 and cache.stats.misses == 1


def test_a_hit_does_not_carry_the_first_runs_message_id() -> None:
    m = model(semantic_cache())
    first = m.invoke(QUESTION)
    again = m.invoke(QUESTION)
    assert first.id is not None
    assert again.id != first.id


def test_set_llm_cache_makes_every_model_use_it(global_cache: None) -> None:
    cache = semantic_cache()
    set_llm_cache(cache)
    m = model()
    assert m.invoke(QUESTION).content == "answer 0"
    assert m.invoke(QUESTION).content == "answer 0"
    assert cache.stats.hits == 1


def test_paraphrase_is_a_semantic_hit_with_a_lowered_threshold() -> None:
    cache = semantic_cache(threshold=0.6)
    m = model(cache)
    m.invoke(QUESTION)
    hit = m.invoke(PARAPHRASE)
    assert hit.content == "answer 0"
    assert hit.response_metadata["frugal"]["cache"]["tier"] == "semantic"
    assert 0.6 <= hit.response_metadata["frugal_cache_similarity"] < 1.0


def test_paraphrase_below_the_default_threshold_is_a_miss() -> None:
    cache = semantic_cache(threshold=0.99)
    m = model(cache)
    m.invoke(QUESTION)
    assert m.invoke(PARAPHRASE).content == "answer 1"


def test_earlier_turns_are_an_exact_partition() -> None:
    cache = semantic_cache(threshold=0.5)
    m = model(cache)
    about_a = [
        HumanMessage("Tell me about plan A"),
        AIMessage("Plan A is basic."),
        HumanMessage("How much is it?"),
    ]
    about_b = [
        HumanMessage("Tell me about plan B"),
        AIMessage("Plan B is premium."),
        HumanMessage("How much is it?"),
    ]
    assert m.invoke(about_a).content == "answer 0"
    assert m.invoke(about_b).content == "answer 1"
    assert m.invoke(about_a).content == "answer 0"


def test_system_prompt_is_an_exact_partition() -> None:
    cache = semantic_cache()
    m = model(cache)
    assert m.invoke([SystemMessage("You are terse."), HumanMessage(QUESTION)]).content == "answer 0"
    assert m.invoke([SystemMessage("You are verbose."), HumanMessage(QUESTION)]).content == "answer 1"
    assert m.invoke([HumanMessage(QUESTION)]).content == "answer 2"
    assert m.invoke([SystemMessage("You are terse."), HumanMessage(QUESTION)]).content == "answer 0"


def test_tenants_never_share_answers() -> None:
    cache = semantic_cache()
    m = model(cache)
    with cache_scope(tenant_id="acme"):
        assert m.invoke(QUESTION).content == "answer 0"
    with cache_scope(tenant_id="globex"):
        assert m.invoke(QUESTION).content == "answer 1"
    with cache_scope(tenant_id="acme"):
        assert m.invoke(QUESTION).content == "answer 0"


def test_model_parameters_are_an_exact_partition() -> None:
    cache = semantic_cache()
    assert model(cache, max_tokens=256).invoke(QUESTION).content == "answer 0"
    assert model(cache, max_tokens=100).invoke(QUESTION).content == "answer 0"  # a new model: a miss
    assert cache.stats.misses == 2
    m = model(cache, max_tokens=256)
    m.invoke(QUESTION, stop=["\n"])
    assert cache.stats.misses == 3
    assert is_hit(model(cache, max_tokens=256, responses=["other"]).invoke(QUESTION))


@pytest.mark.parametrize(
    ("stored", "asked"),
    [
        ("Is the store open on Sunday?", "Is the store not open on Sunday?"),
        ("What is the capital of France?", "What is the capital of Spain?"),
        ("Can I return shoes after 30 days?", "Can I return shoes after 60 days?"),
    ],
)
def test_the_guard_rejects_negations_entities_and_numbers(stored: str, asked: str) -> None:
    cache = semantic_cache(threshold=0.5)
    m = model(cache)
    m.invoke(stored)
    assert not is_hit(m.invoke(asked))
    assert cache.stats.guard_rejections >= 1
    assert cache.stats.hits == 0


def test_ttl_expiry(monkeypatch: pytest.MonkeyPatch) -> None:
    cache = semantic_cache(ttl=60)
    m = model(cache)
    m.invoke(QUESTION)
    assert is_hit(m.invoke(QUESTION))

    class Later:
        @staticmethod
        def time() -> float:
            import time

            return time.time() + 61

    monkeypatch.setattr(core_module, "time", Later)
    assert m.invoke(QUESTION).content == "answer 1"


def test_invalidate_by_tag() -> None:
    cache = semantic_cache()
    m = model(cache)
    with cache_scope(tags=["kb-v3"]):
        m.invoke(QUESTION)
    m.invoke("Do you ship to Canada?")
    assert cache.invalidate(tag="kb-v3") == 1
    assert m.invoke(QUESTION).content == "answer 2"
    assert is_hit(m.invoke("Do you ship to Canada?"))


def test_clear_with_a_tag_and_unknown_arguments() -> None:
    cache = semantic_cache()
    m = model(cache)
    with cache_scope(tags=["faq"]):
        m.invoke(QUESTION)
    m.invoke("Do you ship to Canada?")
    cache.clear(tag="faq")
    assert len(cache) == 1
    with pytest.raises(ConfigurationError) as e:
        cache.clear(llm_string="x")
    assert e.value.field == "llm_string"
    cache.clear()
    assert len(cache) == 0


def test_tool_calls_round_trip() -> None:
    @tool
    def lookup(query: str) -> str:
        """Look something up."""
        return "42"

    cache = semantic_cache()
    bound = model(cache, tool_to_call="lookup").bind_tools([lookup])
    first = bound.invoke("find the order status")
    again = bound.invoke("find the order status")
    assert first.tool_calls and again.tool_calls == first.tool_calls
    assert is_hit(again)
    # the tools are part of the partition: the same question without them is a miss
    assert not is_hit(model(cache).invoke("find the order status"))


def test_empty_answers_and_served_answers_are_not_stored() -> None:
    cache = semantic_cache()
    prompt = dumps([HumanMessage(QUESTION)])
    cache.update(prompt, "llm", [ChatGeneration(message=AIMessage(""))])
    cache.update(prompt, "llm", [])
    assert len(cache) == 0
    served = AIMessage("cached", response_metadata=mark_cache_hit({}, tier="exact", similarity=1.0))
    cache.update(prompt, "llm", [ChatGeneration(message=served)])
    assert len(cache) == 0


def test_a_plain_generation_served_to_a_chat_model_is_marked() -> None:
    cache = semantic_cache()
    prompt = dumps([HumanMessage(QUESTION)])
    cache.update(prompt, "llm", [Generation(text="30 days")])
    (served,) = cache.lookup(prompt, "llm") or []
    assert isinstance(served, ChatGeneration)
    assert served.text == "30 days"
    assert is_hit(served.message)


def test_a_corrupted_entry_is_deleted_and_skipped() -> None:
    cache = semantic_cache()
    request = CacheRequest.from_messages([{"role": "user", "content": QUESTION}], llm_string="llm")
    cache.core.update(request, "this is not a list of generations")
    assert len(cache) == 1
    assert cache.lookup(dumps([HumanMessage(QUESTION)]), "llm") is None
    assert cache.stats.corrupted == 1
    assert len(cache) == 0


@pytest.mark.parametrize("prompt", ["Sample prompt for testing.", "[1, 2]", '{"lc": 1}', "42", "[not json"])
def test_plain_text_prompts_including_json_looking_ones(prompt: str) -> None:
    cache = semantic_cache()
    assert cache.lookup(prompt, "llm") is None
    cache.update(prompt, "llm", [Generation(text="ok")])
    assert cache.lookup(prompt, "llm") == [Generation(text="ok")]


def test_plain_llm_prompts() -> None:
    cache = semantic_cache()
    llm = FakeListLLM(responses=["one", "two", "three"], cache=cache)
    assert llm.invoke(QUESTION) == "one"
    assert llm.invoke(QUESTION) == "one"
    assert llm.invoke("Do you ship to Canada?") == "two"
    assert cache.stats.hits == 1


def test_plain_llm_saving_is_estimated_from_the_model_in_the_llm_string() -> None:
    cache = semantic_cache()
    llm_string = str(sorted({"_type": "openai", "model_name": "gpt-4o-mini", "stop": None}.items()))
    cache.update(QUESTION, llm_string, [Generation(text="Thirty days from delivery.")])
    assert cache.lookup(QUESTION, llm_string) == [Generation(text="Thirty days from delivery.")]
    assert cache.stats.saved_usd > 0


# -- async ---------------------------------------------------------------------------------------------------
async def test_async_chat_model_paths() -> None:
    cache = semantic_cache(threshold=0.6)
    m = model(cache)
    assert (await m.ainvoke(QUESTION)).content == "answer 0"
    hit = await m.ainvoke(PARAPHRASE)
    assert hit.content == "answer 0" and is_hit(hit)
    with cache_scope(tags=["kb"]):
        await m.ainvoke("Do you ship to Canada?")
    assert await cache.ainvalidate(tag="kb") == 1
    await cache.aclear()
    assert len(cache) == 0


async def test_concurrent_async_lookups() -> None:
    cache = semantic_cache()
    m = model(cache)
    await m.ainvoke(QUESTION)
    results = await asyncio.gather(*(m.ainvoke(QUESTION) for _ in range(10)))
    assert all(r.content == "answer 0" and is_hit(r) for r in results)


# -- threads -------------------------------------------------------------------------------------------------
def test_concurrent_writers_and_readers() -> None:
    cache = semantic_cache()
    questions = [f"What is the shipping cost to zone {i}?" for i in range(40)]
    llm_string = "model=fake"

    def write(i: int) -> None:
        prompt = dumps([HumanMessage(questions[i % len(questions)])])
        cache.update(prompt, llm_string, [ChatGeneration(message=AIMessage(f"cost {i % len(questions)}"))])

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(write, range(160)))
    assert len(cache) == len(questions)

    def read(i: int) -> str:
        found = cache.lookup(dumps([HumanMessage(questions[i])]), llm_string)
        assert found is not None
        return found[0].text

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert list(pool.map(read, range(len(questions)))) == [f"cost {i}" for i in range(len(questions))]


# -- budgets -------------------------------------------------------------------------------------------------
def test_a_served_hit_is_one_cache_hit_record_and_no_spend() -> None:
    ledger = SQLiteLedger(":memory:")
    handler = TokenBudgetHandler(ledger=ledger)
    cache = semantic_cache(ledger=ledger)
    m = model(cache)
    m.invoke(QUESTION, config={"callbacks": [handler]})
    spent = ledger.records()
    assert [r.outcome for r in spent] == ["ok"]
    hit = m.invoke(QUESTION, config={"callbacks": [handler]})
    assert is_hit(hit)
    records = ledger.records()
    assert len(records) == 2
    cache_hits = [r for r in records if r.outcome == "cache_hit"]
    assert len(cache_hits) == 1
    (record,) = cache_hits
    assert record.cost_usd == 0.0
    assert record.saved_usd == pytest.approx(spent[0].cost_usd)
    assert record.saved_usd > 0
    assert record.extra["cache_tier"] == "exact"
    assert sum(r.cost_usd for r in records) == pytest.approx(spent[0].cost_usd)


async def test_a_served_async_hit_is_one_cache_hit_record() -> None:
    ledger = SQLiteLedger(":memory:")
    handler = TokenBudgetHandler(ledger=ledger)
    m = model(semantic_cache(ledger=ledger))
    await m.ainvoke(QUESTION, config={"callbacks": [handler]})
    await m.ainvoke(QUESTION, config={"callbacks": [handler]})
    assert sorted(r.outcome for r in ledger.records()) == ["cache_hit", "ok"]
