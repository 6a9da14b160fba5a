"""Answers held for refused calls under LangChain's cache: none is left behind when the call that would have taken
it is aborted by another run's provider error."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.globals import get_llm_cache, set_llm_cache
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

import frugal_chains.langchain._cache_first as cache_first
from frugal_chains import Budget, SQLiteLedger, attribute
from frugal_chains.langchain import SemanticCache, TokenBudgetHandler
from frugal_chains.testing import FakeUsageChatModel
from frugal_chains.testing.fake_embeddings import HashEmbeddings

CACHED = "How long is the refund window for shoes?"


class Flaky(FakeUsageChatModel):
    """Counts the calls that reach the provider; fails them once ``down``."""

    down: bool = False
    paid: int = 0

    def _answer(self, messages: list[BaseMessage], **kwargs: Any) -> AIMessage:
        self.paid += 1
        if self.down:
            raise RuntimeError("provider down")
        return super()._answer(messages, **kwargs)


@pytest.fixture(autouse=True)
def global_cache() -> Iterator[None]:
    before = get_llm_cache()
    logger = logging.getLogger("langchain_core.callbacks.manager")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        set_llm_cache(before)
        logger.setLevel(level)
        cache_first._held.clear()


def setup() -> tuple[Flaky, TokenBudgetHandler]:
    ledger = SQLiteLedger()
    set_llm_cache(SemanticCache(embedder=HashEmbeddings(), ledger=ledger))
    model = Flaky(responses=["30 days."], max_tokens=100)
    with attribute(user_id="u0"):
        model.invoke(CACHED)
    model.down, model.paid = True, 0
    # room for one call: the batch's first conversation is reserved, the second refused (its answer is cached)
    return model, TokenBudgetHandler([Budget(max_tokens=150, scope="user")], ledger=ledger)


@pytest.mark.parametrize("mode", ["generate", "agenerate"])
def test_a_batch_aborted_by_a_provider_error_leaves_no_answer_held(mode: str) -> None:
    model, handler = setup()
    batch = [[HumanMessage("A question nobody asked before?")], [HumanMessage(CACHED)]]
    with attribute(user_id="u1"), pytest.raises(RuntimeError, match="provider down"):
        if mode == "generate":
            model.generate(batch, callbacks=[handler])
        else:
            asyncio.run(model.agenerate(batch, callbacks=[handler]))
    assert model.paid == 1  # the reserved conversation only
    assert not cache_first._held


def test_a_failed_call_leaves_the_answers_held_for_other_calls() -> None:
    model, handler = setup()
    other = object()
    held = cache_first.Held(None, None, "", "", None, other)  # type: ignore[arg-type]
    cache_first._held[uuid.uuid4()] = held  # another call's, in flight
    with attribute(user_id="u1"), pytest.raises(RuntimeError):
        model.invoke("A question nobody asked before?", config={"callbacks": [handler]})
    assert list(cache_first._held.values()) == [held]


class LoggingCache(SemanticCache):
    """A subclass with a lookup of its own that never serves (a user's override that does not call ``super()``)."""

    def lookup(self, prompt: str, llm_string: str) -> Any:
        return None

    async def alookup(self, prompt: str, llm_string: str) -> Any:
        return None


@pytest.mark.parametrize("mode", ["invoke", "ainvoke"])
def test_a_cache_whose_lookup_is_overridden_is_not_trusted_to_serve_a_refused_call(mode: str) -> None:
    ledger = SQLiteLedger()
    cache = LoggingCache(embedder=HashEmbeddings(), ledger=ledger)
    model = Flaky(responses=["30 days."], max_tokens=100, cache=cache)
    cache.update(*_entry(model))  # the answer is in the cache, but its own lookup never serves it
    handler = TokenBudgetHandler([Budget(max_usd=1e-9, scope="user")], ledger=ledger)
    with attribute(user_id="u1"), pytest.raises(Exception, match="refused"):
        if mode == "invoke":
            model.invoke(CACHED, config={"callbacks": [handler]})
        else:
            asyncio.run(model.ainvoke(CACHED, config={"callbacks": [handler]}))
    assert model.paid == 0  # never called without a reservation
    assert not cache_first._held


def _entry(model: Flaky) -> tuple[str, str, Any]:
    """``(prompt, llm_string, generations)`` as LangChain stores an answer to CACHED from ``model``."""
    from langchain_core.load import dumps
    from langchain_core.outputs import ChatGeneration

    prompt = dumps([HumanMessage(CACHED)])
    return prompt, model._get_llm_string(), [ChatGeneration(message=AIMessage("30 days."))]
