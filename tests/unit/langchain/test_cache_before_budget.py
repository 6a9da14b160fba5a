"""Cache before budget under LangChain's own cache (``set_llm_cache(SemanticCache(...))`` or ``cache=``).

LangChain fires ``on_chat_model_start`` (where the budget handler reserves) before it looks the call up in its cache.
A user over budget must still get the answers that cache holds (they cost nothing), recorded as ``cache_hit`` at
$0, while a miss is refused before the model is called: the model is never called without a reservation.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from langchain_core.caches import BaseCache
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.globals import get_llm_cache, set_llm_cache
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field

import frugal_chains.langchain._cache_first as cache_first
from frugal_chains import Budget, SQLiteLedger, attribute
from frugal_chains.cache import AnswerCache
from frugal_chains.errors import BudgetExceededError
from frugal_chains.langchain import SemanticCache, TokenBudgetHandler
from frugal_chains.metadata import cache_status
from frugal_chains.testing import FakeUsageChatModel
from frugal_chains.testing.fake_embeddings import HashEmbeddings

QUESTION = "How long is the refund window for shoes?"
PARAPHRASE = "how long is the refund window for shoes please"
OTHER = "Which countries do you ship to?"
OVER = Budget(max_usd=1e-9, scope="user")
"""Smaller than any call's worst case: the user is over budget for any paid call."""
ROOMY = Budget(max_usd=1.0, scope="user")


class CountingChatModel(FakeUsageChatModel):
    """``FakeUsageChatModel`` that counts the calls that reach it (a paid provider call each)."""

    calls: list[str] = Field(default_factory=list, exclude=True)

    def _answer(self, messages: list[BaseMessage], **kwargs: Any) -> AIMessage:
        self.calls.append(str(messages[-1].content))
        return super()._answer(messages, **kwargs)


class GenerateOnlyChatModel(BaseChatModel):
    """A chat model with ``_generate`` only: its ``stream()`` is an ``invoke()``, which LangChain looks up."""

    calls: list[str] = Field(default_factory=list, exclude=True)
    max_tokens: int = 100

    @property
    def _llm_type(self) -> str:
        return "generate-only"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": "gpt-4o-mini", "max_tokens": self.max_tokens}

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self.calls.append(str(messages[-1].content))
        usage = {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15}
        message = AIMessage("30 days.", usage_metadata=usage, response_metadata={"model_name": "gpt-4o-mini"})
        return ChatResult(generations=[ChatGeneration(message=message)])


@pytest.fixture(autouse=True)
def no_global_cache() -> Iterator[None]:
    before = get_llm_cache()
    set_llm_cache(None)
    try:
        yield
    finally:
        set_llm_cache(before)
    assert not cache_first._held  # every held answer was taken by its own lookup


@pytest.fixture(autouse=True)
def quiet_refusals() -> Iterator[None]:
    # LangChain logs a warning for every exception a callback raises, refusals included
    logger = logging.getLogger("langchain_core.callbacks.manager")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


class Setup:
    """A semantic cache holding QUESTION's answer (asked by another user, u0, of tenant acme) and a handler over
    which user u1 is over budget."""

    def __init__(self, how: str, budget: Budget = OVER, tenant: str = "acme", **cache_kwargs: Any) -> None:
        self.ledger = SQLiteLedger()
        cache_kwargs.setdefault("threshold", 0.6)
        self.cache = SemanticCache(embedder=HashEmbeddings(), ledger=self.ledger, **cache_kwargs)
        self.how = how
        self.model = self.new_model()
        self.handler = TokenBudgetHandler([budget], ledger=self.ledger)
        with attribute(user_id="u0", tenant_id=tenant):
            assert self.model.invoke(QUESTION).content == "30 days."
        assert self.model.calls == [QUESTION]
        self.model.calls.clear()
        self.start = len(self.ledger.records())

    def new_model(self) -> Any:
        if self.how == "global":
            set_llm_cache(self.cache)
            return CountingChatModel(responses=["30 days.", "(paid)"], max_tokens=100)
        if self.how == "generate-only":
            set_llm_cache(self.cache)
            return GenerateOnlyChatModel()
        return CountingChatModel(responses=["30 days.", "(paid)"], max_tokens=100, cache=self.cache)

    @property
    def config(self) -> Any:
        return {"callbacks": [self.handler]}

    def records(self) -> list[tuple[str, float | None, str | None]]:
        """The spend and cache-hit records since the cache was filled (records of refused calls, which write no
        spend, are not compared here)."""
        return [
            (r.outcome, r.cost_usd, r.attribution.user_id)
            for r in self.ledger.records()[self.start :]
            if r.outcome in ("ok", "cache_hit")
        ]

    def nothing_reserved(self) -> None:
        with attribute(user_id="u1") as a:
            counter = self.handler.core.spent(OVER, a)
        assert (counter.committed_nano, counter.reserved_nano) == (0, 0)


def ask(setup: Setup, mode: str, question: str, tenant: str = "acme") -> Any:
    with attribute(user_id="u1", tenant_id=tenant):
        if mode == "invoke":
            return setup.model.invoke(question, config=setup.config)
        if mode == "ainvoke":
            return asyncio.run(setup.model.ainvoke(question, config=setup.config))
        if mode == "batch":
            return setup.model.batch([question], config=setup.config)[0]
        if mode == "abatch":
            return asyncio.run(setup.model.abatch([question], config=setup.config))[0]
        if mode == "stream":
            return list(setup.model.stream(question, config=setup.config))[-1]
        raise ValueError(mode)


HOW = ["global", "cache-field"]
MODES = ["invoke", "ainvoke", "batch", "abatch"]


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("question", [QUESTION, PARAPHRASE], ids=["exact", "semantic"])
def test_a_user_over_budget_is_served_the_cached_answer_at_no_cost(
    how: str, mode: str, question: str
) -> None:
    setup = Setup(how)
    answer = ask(setup, mode, question)
    assert answer.content == "30 days."
    assert cache_status(answer.response_metadata) == "hit"
    assert setup.model.calls == []
    assert setup.records() == [("cache_hit", 0.0, "u1")]
    assert setup.cache.stats.hits == 1
    setup.nothing_reserved()


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("mode", MODES)
def test_a_miss_of_a_user_over_budget_is_refused_and_the_model_is_not_called(how: str, mode: str) -> None:
    setup = Setup(how)
    with pytest.raises(BudgetExceededError):
        ask(setup, mode, OTHER)
    assert setup.model.calls == []
    assert setup.records() == []
    assert setup.cache.stats.hits == 0
    setup.nothing_reserved()


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("mode", MODES)
def test_another_tenants_cached_answer_is_not_served_to_a_user_over_budget(how: str, mode: str) -> None:
    setup = Setup(how, tenant="globex")
    with pytest.raises(BudgetExceededError):
        ask(setup, mode, QUESTION, tenant="acme")
    assert setup.model.calls == []
    assert setup.records() == []
    assert setup.cache.stats.hits == 0


def test_a_streamed_call_is_refused_because_langchain_does_not_look_streams_up() -> None:
    setup = Setup("global")
    with pytest.raises(BudgetExceededError):
        ask(setup, "stream", QUESTION)
    assert setup.model.calls == []
    assert setup.records() == []


def test_a_model_without_native_streaming_streams_the_cached_answer() -> None:
    setup = Setup("generate-only")
    last = ask(setup, "stream", QUESTION)
    assert last.content == "30 days." and cache_status(last.response_metadata) == "hit"
    assert setup.model.calls == []
    assert setup.records() == [("cache_hit", 0.0, "u1")]


def test_a_batch_of_conversations_serves_each_cached_answer_under_one_generate() -> None:
    setup = Setup("global")
    with attribute(user_id="u1", tenant_id="acme"):
        result = setup.model.generate(
            [[HumanMessage(QUESTION)], [HumanMessage(PARAPHRASE)]], callbacks=[setup.handler]
        )
    assert [g[0].text for g in result.generations] == ["30 days.", "30 days."]
    assert setup.model.calls == []
    assert setup.records() == [("cache_hit", 0.0, "u1"), ("cache_hit", 0.0, "u1")]


def test_a_batch_with_one_miss_is_refused_whole_and_holds_nothing() -> None:
    setup = Setup("global")
    with attribute(user_id="u1", tenant_id="acme"), pytest.raises(BudgetExceededError):
        setup.model.generate([[HumanMessage(QUESTION)], [HumanMessage(OTHER)]], callbacks=[setup.handler])
    assert setup.model.calls == []
    assert setup.records() == []
    assert not cache_first._held  # the first conversation's answer is not left held: no lookup will take it


def test_an_entry_evicted_between_the_probe_and_the_lookup_is_still_served_as_pinned(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    setup = Setup("global")
    pin = SemanticCache._pin

    def pin_then_evict(self: SemanticCache, prompt: str, llm_string: str) -> Any:
        found = pin(self, prompt, llm_string)
        self.clear()  # evicted (or expired) right after the probe found it
        return found

    monkeypatch.setattr(SemanticCache, "_pin", pin_then_evict)
    answer = ask(setup, "invoke", QUESTION)
    assert answer.content == "30 days." and cache_status(answer.response_metadata) == "hit"
    assert setup.model.calls == []
    assert len(setup.cache) == 0


@pytest.mark.parametrize("mode", ["invoke", "ainvoke"])
def test_a_lookup_that_cannot_serve_the_held_answer_raises_the_refusal(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fail closed: the answer was held for another prompt than the one looked up (here: one byte more), so the
    lookup raises the refusal instead of letting the model run unreserved."""
    setup = Setup("global")
    dumps = cache_first.dumps
    monkeypatch.setattr(cache_first, "dumps", lambda value: dumps(value) + " ")
    misses = setup.cache.stats.misses
    with pytest.raises(BudgetExceededError):
        ask(setup, mode, QUESTION)
    assert setup.cache.stats.misses == misses  # the probe found the answer; the lookup refused to serve it
    assert setup.model.calls == []
    assert setup.records() == []
    setup.nothing_reserved()


def test_a_lookup_whose_pin_cannot_be_served_raises_the_refusal(monkeypatch: pytest.MonkeyPatch) -> None:
    setup = Setup("global")
    monkeypatch.setattr(AnswerCache, "serve_pin", lambda self, pin, request: None)
    with pytest.raises(BudgetExceededError):
        ask(setup, "invoke", QUESTION)
    assert setup.model.calls == []
    assert setup.records() == []


def test_a_call_within_budget_is_reserved_as_before_and_never_probed(monkeypatch: pytest.MonkeyPatch) -> None:
    setup = Setup("global", budget=ROOMY)

    def no_probe(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("probed a call its budget did not refuse")

    monkeypatch.setattr(AnswerCache, "probe", no_probe)
    assert ask(setup, "invoke", QUESTION).content == "30 days."  # a hit: its reservation is released
    assert ask(setup, "invoke", OTHER).content == "(paid)"  # a miss: paid and committed
    assert [r[0] for r in setup.records()] == ["cache_hit", "ok"]
    with attribute(user_id="u1") as a:
        assert setup.handler.core.spent(ROOMY, a).reserved_nano == 0


def test_a_cache_that_fails_while_probing_leaves_the_refusal_standing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    setup = Setup("global")

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("index down")

    monkeypatch.setattr(AnswerCache, "probe", broken)
    with pytest.raises(BudgetExceededError):
        ask(setup, "invoke", QUESTION)
    assert setup.model.calls == []


def test_another_cache_than_ours_is_not_probed() -> None:
    class PlainCache(BaseCache):
        def lookup(self, prompt: str, llm_string: str) -> Any:
            return None

        def update(self, prompt: str, llm_string: str, return_val: Any) -> None:
            pass

        def clear(self, **kwargs: Any) -> None:
            pass

    handler = TokenBudgetHandler([OVER])
    model = CountingChatModel(max_tokens=100, cache=PlainCache())
    with attribute(user_id="u1"), pytest.raises(BudgetExceededError):
        model.invoke(QUESTION, config={"callbacks": [handler]})
    assert model.calls == []


def test_concurrent_users_over_budget_get_the_cached_answers_and_no_miss_is_paid() -> None:
    setup = Setup("global")
    questions = [QUESTION, OTHER, PARAPHRASE, f"{OTHER} (2)"] * 8

    def one(question: str) -> str:
        with attribute(user_id="u1", tenant_id="acme"):
            try:
                return str(setup.model.invoke(question, config=setup.config).content)
            except BudgetExceededError:
                return "refused"

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(one, questions))
    assert answers == ["30 days.", "refused", "30 days.", "refused"] * 8
    assert setup.model.calls == []
    assert setup.records() == [("cache_hit", 0.0, "u1")] * 16
    setup.nothing_reserved()
