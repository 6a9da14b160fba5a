"""Scopes in worker threads: the helpers carry them, a lost one is warned about once, asyncio tasks are left
alone, and a ``tenant_required`` cache refuses tenantless requests."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pytest

from frugal_chains import (
    ConfigurationError,
    ScopedThreadPoolExecutor,
    ScopeNotPropagatedWarning,
    attribute,
    cache_scope,
    carry_scopes,
    scopes,
)
from frugal_chains.accounting import current_attribution
from frugal_chains.cache import AnswerCache, CacheRequest, CacheScope, current_cache_scope
from frugal_chains.testing import HashEmbeddings

T = TypeVar("T")


@pytest.fixture(autouse=True)
def fresh_warnings() -> Iterator[None]:
    scopes._reset_warnings()
    yield
    scopes._reset_warnings()


def recorded(run: Callable[[], T]) -> tuple[T, list[warnings.WarningMessage]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = run()
    return out, [w for w in caught if issubclass(w.category, ScopeNotPropagatedWarning)]


def in_plain_thread(fn: Callable[[], T]) -> T:
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(fn).result()


def tenant() -> str | None:
    return current_cache_scope().tenant_id


# -- the helpers ----------------------------------------------------------------------------------------------
def test_a_plain_executor_loses_the_scopes_and_the_scoped_one_carries_them() -> None:
    with cache_scope(tenant_id="acme", namespace="faq"), attribute(feature="search", user_id="u1"):
        lost, _ = recorded(lambda: in_plain_thread(lambda: (tenant(), current_attribution().feature)))
        with ScopedThreadPoolExecutor(max_workers=3) as pool:
            one = pool.submit(lambda: (current_cache_scope().namespace, current_attribution().user_id))
            many = list(pool.map(lambda i: (i, tenant(), current_attribution().feature), range(6)))
    assert lost == (None, None)
    assert one.result() == ("faq", "u1")
    assert many == [(i, "acme", "search") for i in range(6)]


def test_each_submit_carries_the_scope_active_when_it_was_submitted() -> None:
    with ScopedThreadPoolExecutor(max_workers=2) as pool:
        futures = []
        for name in ("acme", "globex", "initech"):
            with cache_scope(tenant_id=name):
                futures.append(pool.submit(tenant))
        outside = pool.submit(tenant)
    assert [f.result() for f in futures] == ["acme", "globex", "initech"]
    assert outside.result() is None


def test_carry_scopes_for_a_thread_target_and_run_in_executor() -> None:
    seen: list[Any] = []
    with attribute(tenant_id="acme"):
        worker = threading.Thread(target=carry_scopes(lambda: seen.append(current_attribution().tenant_id)))
    worker.start()
    worker.join()

    async def main() -> tuple[Any, Any]:
        loop = asyncio.get_running_loop()
        with cache_scope(tenant_id="globex"):
            carried = await loop.run_in_executor(None, carry_scopes(tenant))
            plain = await loop.run_in_executor(None, tenant)
        return carried, plain

    (carried, plain), _ = recorded(lambda: asyncio.run(main()))
    assert seen == ["acme"]
    assert (carried, plain) == ("globex", None)


def test_a_carried_function_runs_in_several_threads_at_once() -> None:
    """Each call gets its own copy of the context (one context cannot be entered by two threads)."""
    barrier = threading.Barrier(4)

    def work() -> str | None:
        barrier.wait(timeout=10)
        with cache_scope(namespace="mine"):  # each call's own changes stay in its copy
            return tenant()

    with cache_scope(tenant_id="acme"):
        fn = carry_scopes(work)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = [f.result() for f in [pool.submit(fn) for _ in range(4)]]
    assert results == ["acme"] * 4
    assert carry_scopes(work).__name__ == "work"


# -- the warning ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "open_scope", "probe"),
    [
        ("cache_scope", lambda: cache_scope(namespace="faq"), current_cache_scope),
        ("attribute", lambda: attribute(feature="faq"), current_attribution),
    ],
)
def test_a_call_in_a_plain_thread_warns_once_naming_the_fix(
    kind: str, open_scope: Callable[[], Any], probe: Callable[[], Any]
) -> None:
    with open_scope():
        _, first = recorded(lambda: in_plain_thread(probe))
        _, second = recorded(lambda: in_plain_thread(probe))
    assert len(first) == 1, first
    message = str(first[0].message)
    assert kind in message and "another thread" in message
    assert "ScopedThreadPoolExecutor" in message and "carry_scopes" in message
    assert second == []  # once per kind per process


def test_a_tenantless_cache_lookup_in_a_plain_thread_warns() -> None:
    cache = AnswerCache(embedder=HashEmbeddings())
    with cache_scope(tenant_id="acme"):
        cache.update(CacheRequest.from_prompt("What are your opening hours?"), "9 to 5.")
        found, caught = recorded(
            lambda: in_plain_thread(
                lambda: cache.lookup(CacheRequest.from_prompt("What are your opening hours?"))
            )
        )
    assert found is None  # acme's answer is not in the unscoped partition
    assert any("no cache_scope is active" in str(w.message) for w in caught)


def test_no_warning_without_any_open_scope_or_in_the_scopes_own_thread() -> None:
    _, outside = recorded(lambda: in_plain_thread(tenant))
    with cache_scope(tenant_id="acme"):
        _, same_thread = recorded(lambda: asyncio.run(asyncio.to_thread(tenant)))  # to_thread copies context
    assert outside == [] and same_thread == []
    assert not scopes.open_elsewhere("cache_scope")


def test_asyncio_tasks_without_a_scope_next_to_tasks_with_one_do_not_warn() -> None:
    """Tasks copy the context they are created in: a task without a scope was started outside any."""

    async def scoped(name: str) -> str | None:
        with cache_scope(tenant_id=name), attribute(tenant_id=name):
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            return tenant()

    async def unscoped() -> tuple[Any, Any]:
        await asyncio.sleep(0)
        return tenant(), current_attribution().tenant_id

    async def main() -> list[Any]:
        return list(await asyncio.gather(scoped("acme"), unscoped(), scoped("globex"), unscoped()))

    results, caught = recorded(lambda: asyncio.run(main()))
    assert results == ["acme", (None, None), "globex", (None, None)]
    assert caught == []


def test_run_in_executor_without_the_helper_warns() -> None:
    async def main() -> Any:
        with cache_scope(tenant_id="acme"):
            return await asyncio.get_running_loop().run_in_executor(None, tenant)

    result, caught = recorded(lambda: asyncio.run(main()))
    assert result is None and len(caught) == 1


def test_the_warning_can_be_filtered_by_its_class() -> None:
    with cache_scope(tenant_id="acme"), warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", category=ScopeNotPropagatedWarning)
        assert in_plain_thread(tenant) is None


def test_nested_and_finished_scopes_are_counted_per_thread() -> None:
    with cache_scope(tenant_id="a"), cache_scope(namespace="b"):
        assert scopes._open["cache_scope"] == {threading.get_ident(): 2}
    assert scopes._open["cache_scope"] == {}
    with pytest.raises(RuntimeError), cache_scope(tenant_id="a"):
        raise RuntimeError("boom")
    assert scopes._open["cache_scope"] == {}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
def test_a_forked_child_forgets_the_scopes_of_threads_that_did_not_follow() -> None:
    started, release = threading.Event(), threading.Event()

    def hold() -> None:
        with cache_scope(tenant_id="acme"):
            started.set()
            release.wait(timeout=30)

    holder = threading.Thread(target=hold)
    holder.start()
    started.wait(timeout=30)
    try:
        assert scopes.open_elsewhere("cache_scope")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # fork() with threads (Python 3.12+)
            pid = os.fork()
        if pid == 0:  # the child: only this thread exists here
            os._exit(1 if scopes.open_elsewhere("cache_scope") else 0)
    finally:
        release.set()
        holder.join()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


# -- tenant_required --------------------------------------------------------------------------------------------
def test_a_tenant_required_cache_neither_serves_nor_stores_without_a_tenant(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cache = AnswerCache(embedder=HashEmbeddings(), tenant_required=True)
    question = "What is your refund window?"
    with cache_scope(tenant_id="acme"):
        cache.update(CacheRequest.from_prompt(question), "30 days.")
        assert cache.lookup(CacheRequest.from_prompt(question)).answer == "30 days."  # type: ignore[union-attr]
    with caplog.at_level(logging.WARNING, logger="frugal_chains.cache"):
        no_tenant = CacheRequest.from_prompt(question)
        assert cache.skip_reason(no_tenant) == "no-tenant"
        assert cache.lookup(no_tenant) is None
        cache.update(no_tenant, "stored without a tenant?")
        assert asyncio.run(cache.alookup(no_tenant)) is None
        asyncio.run(cache.aupdate(no_tenant, "stored without a tenant?"))
    assert len(cache) == 1
    stats = cache.stats
    assert (stats.no_tenant, stats.hits, stats.updates) == (2, 1, 1)
    assert stats.to_dict()["no_tenant"] == 2
    assert len([r for r in caplog.records if "without a tenant" in r.message]) == 1  # logged once
    # a tenant set through attribute() counts; an explicit bypass is not a refusal
    with attribute(tenant_id="acme"):
        assert cache.lookup(CacheRequest.from_prompt(question)) is not None
    assert cache.skip_reason(CacheRequest.from_prompt(question, scope=CacheScope(bypass=True))) is None


def test_the_default_cache_still_serves_the_unscoped_partition() -> None:
    cache = AnswerCache(embedder=HashEmbeddings())
    cache.update(CacheRequest.from_prompt("Hours?"), "9 to 5.")
    assert cache.skip_reason(CacheRequest.from_prompt("Hours?")) is None
    assert cache.lookup(CacheRequest.from_prompt("Hours?")) is not None


def test_tenant_required_must_be_a_bool() -> None:
    with pytest.raises(ConfigurationError) as e:
        AnswerCache(embedder=HashEmbeddings(), tenant_required="yes")  # type: ignore[arg-type]
    assert e.value.field == "tenant_required"


def test_langchain_semantic_cache_passes_tenant_required_to_the_core() -> None:
    from frugal_chains.langchain import SemanticCache

    cache = SemanticCache(embedder=HashEmbeddings(), tenant_required=True)
    with cache_scope(tenant_id="acme"):
        cache.update("What are your hours?", "llm-a", [_generation("9 to 5.")])
        assert cache.lookup("What are your hours?", "llm-a") is not None
    assert (
        cache.lookup("What are your hours?", "llm-a") is None
    )  # no tenant: refused, not the unscoped partition
    cache.update("What are your hours?", "llm-a", [_generation("stored?")])
    assert cache.core.stats.no_tenant == 1 and len(cache.core) == 1


def _generation(text: str) -> Any:
    from langchain_core.outputs import Generation

    return Generation(text=text)


# -- copied contexts without a scope, coroutine functions -----------------------------------------------------
@pytest.mark.parametrize("path", ["to_thread", "batch"])
def test_an_unscoped_task_next_to_a_scoped_one_does_not_warn_in_threads_that_copy_its_context(
    path: str,
) -> None:
    """``asyncio.to_thread`` and LangChain's ``batch`` copy the context: a task that had no scope lost none."""
    from frugal_chains import Budget
    from frugal_chains.langchain import budget_scope
    from frugal_chains.testing import FakeUsageChatModel

    model = FakeUsageChatModel()
    opened = asyncio.Event()

    async def scoped() -> None:
        with budget_scope([Budget(max_tokens=10**6, scope="global")]), cache_scope(tenant_id="acme"):
            opened.set()
            await asyncio.sleep(0.2)

    async def unscoped() -> None:
        await opened.wait()
        if path == "to_thread":
            await asyncio.to_thread(model.invoke, "hi")
            await asyncio.to_thread(current_cache_scope)
        else:
            model.batch(["a", "b"])

    async def main() -> None:
        await asyncio.gather(scoped(), unscoped())

    _, warned = recorded(lambda: asyncio.run(main()))
    assert warned == []


def test_a_scope_open_in_a_thread_still_warns_for_a_plain_thread_started_elsewhere() -> None:
    """The mark of a known context does not hide a thread that started from an empty one."""
    inside = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with cache_scope(tenant_id="acme"):
            inside.set()
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    inside.wait(5)
    try:
        _, warned = recorded(lambda: in_plain_thread(current_cache_scope))
    finally:
        release.set()
        holder.join()
    assert len(warned) == 1


def test_carry_scopes_runs_a_coroutine_function_in_the_carried_context() -> None:
    """``run_coroutine_threadsafe(carry_scopes(job)(), loop)``: the job's body sees the scope it was wrapped in."""
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever)
    runner.start()

    async def job() -> str | None:
        await asyncio.sleep(0)
        return tenant()

    try:
        with cache_scope(tenant_id="acme"):
            carried = carry_scopes(job)
        plain = asyncio.run_coroutine_threadsafe(job(), loop).result(5)
        seen = asyncio.run_coroutine_threadsafe(carried(), loop).result(5)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        runner.join()
        loop.close()
    assert plain is None
    assert seen == "acme"
    assert asyncio.iscoroutinefunction(carried)
