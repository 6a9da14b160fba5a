"""Fan-out: 8 worker threads, 2 tenants, the embedded and the Redis cache (and ledger), a ``budget_scope`` limit.

Every job asks a ``CachedChatModel`` for one tenant; the fake provider answers with the tenant its job is for, so
an answer served to another tenant shows. With a plain ``ThreadPoolExecutor`` the scopes stay behind: a
``tenant_required`` cache then refuses every request (none is served across tenants, none is stored), the
``budget_scope`` limit does not reach the workers, and a ``ScopeNotPropagatedWarning`` names the fix. With
``ScopedThreadPoolExecutor`` each tenant is served its own answers and the limit holds.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage

from frugal_chains import (
    Budget,
    BudgetExceededError,
    RedisLedger,
    ScopedThreadPoolExecutor,
    ScopeNotPropagatedWarning,
    SQLiteLedger,
    scopes,
)
from frugal_chains.cache import AnswerCache, cache_scope
from frugal_chains.cache.redis_index import RedisIndex
from frugal_chains.langchain import CachedChatModel, budget_scope
from frugal_chains.metadata import entry
from frugal_chains.testing import FakeUsageChatModel
from frugal_chains.testing.fake_embeddings import HashEmbeddings

TENANTS = ("acme", "globex")
QUESTIONS = [f"What is the shipping time to zone {n}?" for n in ("north", "south", "east", "west")]
WORKERS = 8
LIMIT = Budget(max_tokens=1000, scope="global")
"""Each call reserves and spends about 309 tokens: three calls fit."""

_job = threading.local()


class TenantEcho(FakeUsageChatModel):
    """Answers with the tenant its job is for (set per job in a thread-local, not through any scope)."""

    def _answer(self, messages: list[BaseMessage], **kwargs: Any) -> AIMessage:
        base = super()._answer(messages, **kwargs)
        return base.model_copy(update={"content": f"{_job.tenant}: {messages[-1].content} -> 3 days"})


@pytest.fixture(autouse=True)
def fresh_warnings() -> Iterator[None]:
    scopes._reset_warnings()
    yield
    scopes._reset_warnings()


@pytest.fixture(params=["embedded", pytest.param("redis", marks=pytest.mark.redis)])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make(backend: str, request: pytest.FixtureRequest) -> Iterator[Callable[..., AnswerCache]]:
    """Builds caches on the backend (a Redis index per cache, closed after the test)."""
    made: list[AnswerCache] = []
    url = request.getfixturevalue("redis_url") if backend == "redis" else None

    def build(**kw: Any) -> AnswerCache:
        index = RedisIndex(url, name=f"fanout{len(made)}") if url is not None else None
        cache = AnswerCache(index=index, embedder=HashEmbeddings(), **kw)
        made.append(cache)
        return cache

    yield build
    for cache in made:
        cache.close()


@pytest.fixture
def ledger(backend: str, request: pytest.FixtureRequest) -> Iterator[Any]:
    if backend == "redis":
        redis_ledger = RedisLedger(request.getfixturevalue("redis_url"))
        yield redis_ledger
        redis_ledger.close()
    else:
        yield SQLiteLedger()


def fan_out(
    pool: Executor, model: CachedChatModel, questions: list[str], outer: Callable[[], Any] | None = None
) -> list[tuple[str, str, Any]]:
    """Every (tenant, question) as a job submitted inside that tenant's ``cache_scope``; ``(tenant, question,
    AIMessage or the error)`` for each."""

    def job(tenant: str, question: str) -> Any:
        _job.tenant = tenant
        try:
            return model.invoke(question)
        except BudgetExceededError as e:
            return e

    futures = []
    for tenant in TENANTS:
        with cache_scope(tenant_id=tenant):
            futures += [(tenant, q, pool.submit(job, tenant, q)) for q in questions]
    return [(t, q, f.result()) for t, q, f in futures]


def recorded(run: Callable[[], Any]) -> tuple[Any, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = run()
    return out, [str(w.message) for w in caught if issubclass(w.category, ScopeNotPropagatedWarning)]


def cross_tenant(results: list[tuple[str, str, Any]]) -> list[tuple[str, str]]:
    """Jobs answered with another tenant's answer."""
    return [
        (t, str(r.content))
        for t, _, r in results
        if isinstance(r, AIMessage) and not str(r.content).startswith(f"{t}: ")
    ]


def status(message: AIMessage) -> dict[str, Any] | None:
    return entry(message.response_metadata, "cache")


def test_plain_threads_are_refused_by_a_tenant_required_cache_and_warned(
    make: Callable[..., AnswerCache],
) -> None:
    cache = make(tenant_required=True)
    model = CachedChatModel(model=TenantEcho(), cache=cache)
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        rounds, caught = recorded(lambda: [fan_out(pool, model, QUESTIONS) for _ in range(2)])
    results = rounds[0] + rounds[1]
    assert len(results) == 2 * len(TENANTS) * len(QUESTIONS)
    assert cross_tenant(results) == []
    assert all(status(r) == {"status": "bypass", "reason": "no-tenant"} for _, _, r in results)
    assert len(cache) == 0 and cache.stats.hits == 0 and cache.stats.no_tenant == len(results)
    assert any("cache_scope" in m and "ScopedThreadPoolExecutor" in m for m in caught)


def test_plain_threads_with_an_ordinary_cache_warn(make: Callable[..., AnswerCache]) -> None:
    model = CachedChatModel(model=TenantEcho(), cache=make())
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        _, caught = recorded(lambda: fan_out(pool, model, QUESTIONS))
    assert len(caught) == 1 and "ScopedThreadPoolExecutor" in caught[0]


def test_scoped_threads_serve_each_tenant_its_own_answers(make: Callable[..., AnswerCache]) -> None:
    cache = make(tenant_required=True)
    model = CachedChatModel(model=TenantEcho(), cache=cache)
    with ScopedThreadPoolExecutor(max_workers=WORKERS) as pool:
        (first, second), caught = recorded(lambda: [fan_out(pool, model, QUESTIONS) for _ in range(2)])
    assert cross_tenant(first + second) == []
    assert all(status(r) is None for _, _, r in first)  # misses, stored per tenant
    assert all(status(r) is not None and status(r)["status"] == "hit" for _, _, r in second)  # type: ignore[index]
    assert len(cache) == len(TENANTS) * len(QUESTIONS)
    assert cache.stats.no_tenant == 0
    assert caught == []


def test_a_budget_scope_limit_in_worker_threads(make: Callable[..., AnswerCache], ledger: Any) -> None:
    questions = [f"Question number {n}?" for n in range(4)]  # 8 jobs, all misses: each one calls the model
    echo = TenantEcho(model="gpt-4o-mini", max_tokens=300, output_tokens=300)
    model = CachedChatModel(model=echo, cache=make(tenant_required=True))

    # a plain pool: the limit and the ledger stay behind, and the warning names the fix
    with budget_scope([LIMIT], ledger=ledger), ThreadPoolExecutor(max_workers=WORKERS) as pool:
        plain, caught = recorded(lambda: fan_out(pool, model, questions))
    assert [type(r) for _, _, r in plain] == [AIMessage] * 8
    assert ledger.records() == []
    assert any("budget_scope" in m and "ScopedThreadPoolExecutor" in m for m in caught)
    assert cross_tenant(plain) == []  # the tenant_required cache refused them all

    # the helper: three calls fit, the other five are refused before the provider is called
    model = CachedChatModel(model=echo, cache=make(tenant_required=True))
    with budget_scope([LIMIT], ledger=ledger), ScopedThreadPoolExecutor(max_workers=WORKERS) as pool:
        scoped, more = recorded(lambda: fan_out(pool, model, questions))
    kinds = [type(r).__name__ for _, _, r in scoped]
    assert sorted(kinds) == ["AIMessage"] * 3 + ["BudgetExceededError"] * 5
    records = [r for r in ledger.records() if r.outcome == "ok"]
    assert len(records) == 3 and sum(r.usage.total_tokens for r in records) <= 1000
    assert cross_tenant(scoped) == []
    assert more == []
