"""``budget_scope`` and threads: LangChain's own paths (``batch``, ``RunnableParallel``, ``abatch``) carry it, the
helpers carry it into plain threads, and a run in a thread the scope did not reach warns."""

from __future__ import annotations

import asyncio
import threading
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pytest
from langchain_core.runnables import RunnableLambda, RunnableParallel

from frugal_chains import (
    Budget,
    BudgetExceededError,
    ScopedThreadPoolExecutor,
    ScopeNotPropagatedWarning,
    carry_scopes,
    scopes,
)
from frugal_chains.langchain import budget_scope
from frugal_chains.testing import FakeUsageChatModel

T = TypeVar("T")
LIMIT = Budget(max_tokens=1000, scope="global")
"""Each call reserves and spends about 309 tokens: three calls fit, the fourth is refused."""


@pytest.fixture(autouse=True)
def fresh_warnings() -> Iterator[None]:
    scopes._reset_warnings()
    yield
    scopes._reset_warnings()


def model() -> FakeUsageChatModel:
    return FakeUsageChatModel(model="gpt-4o-mini", max_tokens=300, output_tokens=300)


def recorded(run: Callable[[], T]) -> tuple[T, list[warnings.WarningMessage]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = run()
    return out, [w for w in caught if issubclass(w.category, ScopeNotPropagatedWarning)]


def spend(ledger: Any) -> list[Any]:
    """The ledger's records of calls made (refused calls are recorded too, as ``refused``)."""
    return [r for r in ledger.records() if r.outcome != "refused"]


def outcomes(pool: ThreadPoolExecutor, m: FakeUsageChatModel, n: int) -> list[str]:
    def one(_: int) -> str:
        try:
            m.invoke("hi")
            return "ok"
        except BudgetExceededError:
            return "refused"

    return list(pool.map(one, range(n)))


def test_a_plain_executor_escapes_the_scope_and_warns() -> None:
    m = model()
    with budget_scope([LIMIT]) as scope, ThreadPoolExecutor(max_workers=4) as pool:
        results, caught = recorded(lambda: outcomes(pool, m, 8))
    assert results == ["ok"] * 8  # the limit was not applied in the workers ...
    assert scope.ledger.records() == []  # ... nor was anything recorded
    assert len(caught) == 1  # ... but it is not silent
    message = str(caught[0].message)
    assert "budget_scope" in message and "ScopedThreadPoolExecutor" in message and "carry_scopes" in message


def test_the_scoped_executor_carries_the_scope_and_the_limit_holds() -> None:
    m = model()
    with budget_scope([LIMIT]) as scope, ScopedThreadPoolExecutor(max_workers=4) as pool:
        results, caught = recorded(lambda: outcomes(pool, m, 8))
    assert sorted(results) == ["ok"] * 3 + ["refused"] * 5
    assert len(spend(scope.ledger)) == 3
    assert sum(r.usage.total_tokens for r in scope.ledger.records()) <= 1000
    assert caught == []


def test_carry_scopes_for_thread_targets_and_run_in_executor() -> None:
    m = model()
    errors: list[BaseException] = []

    def call() -> None:
        try:
            m.invoke("hi")
        except BudgetExceededError as e:
            errors.append(e)

    async def in_executor() -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, carry_scopes(call))

    with budget_scope([LIMIT]) as scope:
        workers = [threading.Thread(target=carry_scopes(call)) for _ in range(2)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        _, caught = recorded(lambda: asyncio.run(in_executor()))
        _, caught2 = recorded(lambda: asyncio.run(in_executor()))
    assert len(spend(scope.ledger)) == 3 and len(errors) == 1
    assert caught == [] and caught2 == []


def test_langchain_batch_and_parallel_carry_the_scope() -> None:
    """LangChain's ``batch`` and ``RunnableParallel`` run in its ``ContextThreadPoolExecutor``: no helper needed."""
    m = model()
    with budget_scope([Budget(max_tokens=100_000, scope="global")]) as scope:
        (_, _), caught = recorded(
            lambda: (
                m.batch(["a", "b", "c", "d"], config={"max_concurrency": 4}),
                RunnableParallel(x=m, y=m, z=RunnableLambda(lambda s: m.invoke(s))).invoke("hi"),
            )
        )
    assert len(scope.ledger.records()) == 7
    assert caught == []
    with budget_scope([LIMIT]) as scope, pytest.raises(BudgetExceededError):
        m.batch(["a", "b", "c", "d", "e"], config={"max_concurrency": 2})
    assert len(spend(scope.ledger)) == 3


def test_async_tasks_without_a_scope_next_to_one_with_it_do_not_warn() -> None:
    m = model()

    async def scoped() -> int:
        with budget_scope([LIMIT]) as scope:
            await m.ainvoke("hi")
            await asyncio.sleep(0)
            await m.ainvoke("hi")
            return len(scope.ledger.records())

    async def unscoped() -> str:
        await asyncio.sleep(0)
        return str((await m.ainvoke("hi")).content)

    async def main() -> list[Any]:
        return list(await asyncio.gather(scoped(), unscoped(), unscoped()))

    results, caught = recorded(lambda: asyncio.run(main()))
    assert results[0] == 2
    assert caught == []
    with budget_scope([LIMIT]) as scope:
        asyncio.run(m.abatch(["a", "b"]))  # abatch's tasks copy the context
    assert len(scope.ledger.records()) == 2


def test_sync_callbacks_of_async_runs_see_the_scopes() -> None:
    """LangChain runs a sync (not inline) handler of an async run in a worker thread, with a copy of the context."""
    from langchain_core.callbacks import BaseCallbackHandler

    from frugal_chains import attribute
    from frugal_chains.accounting import current_attribution

    seen: list[tuple[str | None, int]] = []

    class Spy(BaseCallbackHandler):
        def on_llm_end(self, response: Any, **kwargs: Any) -> None:
            seen.append((current_attribution().tenant_id, threading.get_ident()))

    m = model()
    with budget_scope([LIMIT]) as scope, attribute(tenant_id="acme"):
        _, caught = recorded(lambda: asyncio.run(m.ainvoke("hi", config={"callbacks": [Spy()]})))
    assert [tenant for tenant, _ in seen] == ["acme"]
    assert seen[0][1] != threading.get_ident()  # it did run in another thread
    assert len(scope.ledger.records()) == 1 and scope.ledger.records()[0].attribution.tenant_id == "acme"
    assert caught == []
