"""A cache hit is attributed from run metadata (``feature``, ``user_id``, ``tenant_id``), like a paid call.

Both LangChain paths: the global or ``cache=`` :class:`SemanticCache` (LangChain passes its lookup no run manager)
and :func:`with_cache` (``CachedChatModel``), under invoke/ainvoke/stream/astream. Run metadata wins over an
enclosing ``attribute()`` block, whose values are kept for the keys the metadata does not set.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.globals import get_llm_cache, set_llm_cache
from langchain_core.language_models import BaseChatModel
from pydantic import Field

from frugal_chains import Budget, SQLiteLedger, attribute
from frugal_chains.accounting.report import spend_report
from frugal_chains.accounting.usage import CallRecord
from frugal_chains.langchain import SemanticCache, TokenBudgetHandler, with_cache
from frugal_chains.testing import FakeUsageChatModel
from frugal_chains.testing.fake_embeddings import HashEmbeddings

QUESTION = "What is the refund window for shoes?"
META = {"user_id": "u1", "feature": "rag", "tenant_id": "acme"}
PATHS = ["global", "cache-field", "with_cache"]
MODES = ["invoke", "ainvoke", "stream", "astream"]


class CountingChatModel(FakeUsageChatModel):
    """``FakeUsageChatModel`` that counts the calls that reach it."""

    calls: list[str] = Field(default_factory=list, exclude=True)

    def _answer(self, messages: Any, **kwargs: Any) -> Any:
        self.calls.append(str(messages[-1].content))
        return super()._answer(messages, **kwargs)


@pytest.fixture(autouse=True)
def no_global_cache() -> Iterator[None]:
    before = get_llm_cache()
    set_llm_cache(None)
    try:
        yield
    finally:
        set_llm_cache(before)


class Setup:
    def __init__(self, path: str, budgets: list[Budget] | None = None, mode: str = "invoke") -> None:
        self.ledger = SQLiteLedger()
        self.cache = SemanticCache(embedder=HashEmbeddings(), ledger=self.ledger)
        self.handler = TokenBudgetHandler(budgets or [Budget(max_usd=1.0, scope="user")], ledger=self.ledger)
        self.inner = CountingChatModel(
            model="gpt-4o-mini",
            max_tokens=100,
            responses=["30 days.", "(paid again)"],
            # LangChain's stream() looks its cache up only for a model that does not stream (it then invokes)
            disable_streaming=path != "with_cache" and "stream" in mode,
        )
        self.model: BaseChatModel
        if path == "global":
            set_llm_cache(self.cache)
            self.model = self.inner
        elif path == "cache-field":
            self.inner.cache = self.cache
            self.model = self.inner
        else:
            self.model = with_cache(self.inner, self.cache)

    def call(self, mode: str, metadata: dict[str, Any] | None = None) -> str:
        config: Any = {"callbacks": [self.handler]}
        if metadata is not None:
            config["metadata"] = metadata
        if mode == "invoke":
            return str(self.model.invoke(QUESTION, config=config).content)
        if mode == "ainvoke":
            return str(asyncio.run(self.model.ainvoke(QUESTION, config=config)).content)
        if mode == "stream":
            return "".join(str(c.content) for c in self.model.stream(QUESTION, config=config))

        async def collect() -> str:
            return "".join([str(c.content) async for c in self.model.astream(QUESTION, config=config)])

        return asyncio.run(collect())

    def hits(self) -> list[CallRecord]:
        return [r for r in self.ledger.records() if r.outcome == "cache_hit"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("path", PATHS)
def test_hit_record_is_attributed_from_run_metadata(path: str, mode: str) -> None:
    s = Setup(path, mode=mode)
    assert s.call(mode, META) == "30 days."
    assert s.call(mode, META) == "30 days."
    assert s.inner.calls == [QUESTION]  # the second call was a hit
    (hit,) = s.hits()
    a = hit.attribution
    assert (a.user_id, a.feature, a.tenant_id) == ("u1", "rag", "acme")
    (paid,) = [r for r in s.ledger.records() if r.outcome == "ok"]
    assert (paid.attribution.user_id, paid.attribution.feature) == ("u1", "rag")
    rows = {row.key: row for row in spend_report(s.ledger, by="user").rows}
    assert set(rows) == {("u1",)}
    assert rows[("u1",)].cache_hits == 1
    assert rows[("u1",)].saved_usd is not None and rows[("u1",)].saved_usd > 0


@pytest.mark.parametrize("mode", ["invoke", "ainvoke"])
@pytest.mark.parametrize("path", PATHS)
def test_enclosing_attribute_block_fills_what_metadata_does_not_set(path: str, mode: str) -> None:
    s = Setup(path, mode=mode)
    with attribute(user_id="u9", feature="faq", tenant_id="acme"):
        assert s.call(mode, {"user_id": "u1"}) == "30 days."
        assert s.call(mode, {"user_id": "u1"}) == "30 days."
    (hit,) = s.hits()
    assert (hit.attribution.user_id, hit.attribution.feature, hit.attribution.tenant_id) == (
        "u1",
        "faq",
        "acme",
    )


@pytest.mark.parametrize("mode", ["invoke", "astream"])
@pytest.mark.parametrize("path", PATHS)
def test_attribute_block_alone_still_attributes_the_hit(path: str, mode: str) -> None:
    s = Setup(path, mode=mode)
    with attribute(user_id="u2", feature="search"):
        s.call(mode)
        s.call(mode)
    (hit,) = s.hits()
    assert (hit.attribution.user_id, hit.attribution.feature) == ("u2", "search")
    assert {row.key for row in spend_report(s.ledger, by="user").rows} == {("u2",)}


@pytest.mark.parametrize("path", PATHS)
def test_metadata_tenant_partitions_the_cache_for_lookups_and_stores_alike(path: str) -> None:
    s = Setup(path)
    assert s.call("invoke", META) == "30 days."
    # another tenant asking the same question is not served the first tenant's answer
    assert s.call("invoke", {**META, "tenant_id": "globex"}) == "(paid again)"
    assert s.call("invoke", META) == "30 days."
    assert [r.attribution.tenant_id for r in s.hits()] == ["acme"]


@pytest.mark.parametrize("path", ["global", "cache-field"])
def test_refused_call_served_from_cache_under_its_metadata_tenant(path: str) -> None:
    """A call over budget is still served the answer its tenant's cache holds (probed in the partition its
    lookup uses), recorded under its user."""
    s = Setup(path, budgets=[Budget(max_usd=1e-9, scope="user")])
    filled = s.model.invoke(QUESTION, config={"metadata": {**META, "user_id": "u0"}})  # no budget handler
    assert filled.content == "30 days."
    logger = logging.getLogger("langchain_core.callbacks.manager")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        assert s.call("invoke", META) == "30 days."
    finally:
        logger.setLevel(level)
    assert s.inner.calls == [QUESTION]
    (hit,) = s.hits()
    assert (hit.attribution.user_id, hit.attribution.feature, hit.attribution.tenant_id) == (
        "u1",
        "rag",
        "acme",
    )
