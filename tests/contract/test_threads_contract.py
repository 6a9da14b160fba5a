"""The threads contract: a wing's call sent to a worker thread keeps its scopes with the helpers
(``ScopedThreadPoolExecutor``, ``carry_scopes``), and without them it is never silent: a
``ScopeNotPropagatedWarning`` names the fix, and a ``tenant_required`` cache refuses the tenantless call instead of
serving it from another partition.

The scopes used are the framework-neutral ones both wings read: ``attribute(tenant_id=...)`` (budget attribution,
per-tenant budgets) and ``cache_scope(tenant_id=...)`` (cache partitions). ``budget_scope`` is LangChain's only; it is
covered in ``tests/unit/test_scopes.py`` and ``tests/integration/test_threads_fanout.py``.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from frugal_chains import (
    Budget,
    ScopedThreadPoolExecutor,
    ScopeNotPropagatedWarning,
    SQLiteLedger,
    attribute,
    carry_scopes,
)
from frugal_chains.accounting.usage import Attribution, Usage
from frugal_chains.cache import AnswerCache, cache_scope
from frugal_chains.errors import BudgetExceededError
from frugal_chains.metadata import cache_status
from frugal_chains.scopes import _reset_warnings
from frugal_chains.testing.fake_embeddings import HashEmbeddings
from tests.contract.wings import PRICES, Observation, Target, Wing, cheap

ANSWER = "Paris is the capital of France ."
QUESTION = "What is the capital of France?"
PER_TENANT = Budget(max_usd=0.01, scope="tenant")


@pytest.fixture(autouse=True)
def fresh_warnings() -> Iterator[None]:
    """The warning is issued once per process: every scenario starts as a fresh process would."""
    _reset_warnings()
    yield
    _reset_warnings()


def in_plain_thread(fn: Callable[[], Observation]) -> Observation:
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(fn).result()


def in_scoped_thread(fn: Callable[[], Observation]) -> Observation:
    with ScopedThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(fn).result()


def in_carried_thread(fn: Callable[[], Observation]) -> Observation:
    out: list[Observation] = []
    worker = threading.Thread(target=carry_scopes(lambda: out.append(fn())))
    worker.start()
    worker.join()
    return out[0]


def quiet(run: Callable[[], Observation]) -> tuple[Observation, list[Any]]:
    """``run()`` and the scope warnings it issued (recorded, not raised)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        obs = run()
    return obs, [w for w in caught if issubclass(w.category, ScopeNotPropagatedWarning)]


def exhaust(target: Target, tenant: str) -> None:
    """Spend more than ``PER_TENANT`` for ``tenant`` through the wing's own guard."""
    core = target.handler.core
    plan = core.plan(
        [{"role": "user", "content": "x"}],
        model="cheap-1",
        max_output_tokens=1,
        attribution=Attribution(tenant_id=tenant),
    )
    core.commit(core.reserve(plan), Usage(input_tokens=20_000))


def tenants(target: Target) -> list[str | None]:
    """The tenant of every provider call the ledger recorded (``exhaust``'s record left out)."""
    return [
        r.attribution.tenant_id
        for r in target.ledger.records()
        if r.outcome == "ok" and r.usage.input_tokens != 20_000
    ]


# -- attribution and per-tenant budgets ---------------------------------------------------------------------------
def test_a_plain_worker_thread_loses_the_tenant_and_says_so(wing: Wing, mode: str) -> None:
    target = wing.plain(cheap(ANSWER), budgets=[PER_TENANT])
    exhaust(target, "acme")
    with attribute(tenant_id="acme"):
        obs, caught = quiet(lambda: in_plain_thread(lambda: target.ask(mode, QUESTION)))
    # the tenant did not reach the thread: its exhausted budget was not applied ...
    assert obs.error is None and obs.text == ANSWER
    assert tenants(target) == [None]
    # ... and that is not silent: the warning names the fix
    assert caught, "no ScopeNotPropagatedWarning"
    assert "ScopedThreadPoolExecutor" in str(caught[0].message)
    assert "carry_scopes" in str(caught[0].message)


@pytest.mark.parametrize("send", [in_scoped_thread, in_carried_thread], ids=["executor", "carry_scopes"])
def test_the_helpers_carry_the_tenant_and_its_budget_holds(
    wing: Wing, mode: str, send: Callable[[Callable[[], Observation]], Observation]
) -> None:
    target = wing.plain(cheap(ANSWER), budgets=[PER_TENANT])
    with attribute(tenant_id="globex"):
        first, caught = quiet(lambda: send(lambda: target.ask(mode, QUESTION)))
    assert first.error is None and tenants(target) == ["globex"]
    exhaust(target, "acme")
    with attribute(tenant_id="acme"):
        refused, more = quiet(lambda: send(lambda: target.ask(mode, QUESTION)))
    assert isinstance(refused.error, BudgetExceededError)
    assert refused.error.scope_key == "acme"
    assert refused.calls == {"cheap-1": 1}  # refused before the provider was called
    assert caught == [] and more == []


# -- tenant cache partitions ----------------------------------------------------------------------------------
def tenant_cache() -> AnswerCache:
    return AnswerCache(embedder=HashEmbeddings(), ledger=SQLiteLedger(), prices=PRICES, tenant_required=True)


def test_a_tenant_required_cache_refuses_a_call_whose_tenant_stayed_behind(wing: Wing, mode: str) -> None:
    cache = tenant_cache()
    target = wing.cached(cheap(ANSWER, "(paid again)"), cache)
    with cache_scope(tenant_id="acme"):
        assert target.ask("invoke", QUESTION).error is None  # stored for acme
        obs, caught = quiet(lambda: in_plain_thread(lambda: target.ask(mode, QUESTION)))
    assert obs.error is None
    assert obs.text == "(paid again)"  # the model answered: not served from any partition
    assert obs.frugal is not None and obs.frugal["cache"] == {"status": "bypass", "reason": "no-tenant"}
    assert cache_status({"frugal": obs.frugal}) == "bypass"
    assert obs.calls == {"cheap-1": 2}
    assert cache.stats.no_tenant == 1 and cache.stats.updates == 1  # nothing stored without a tenant
    assert caught and "ScopedThreadPoolExecutor" in str(caught[0].message)


def test_the_helpers_serve_each_tenant_its_own_answer(wing: Wing, mode: str) -> None:
    cache = tenant_cache()
    target = wing.cached(cheap(ANSWER, "Paris (globex) ."), cache)
    with cache_scope(tenant_id="acme"):
        assert target.ask("invoke", QUESTION).text == ANSWER
        hit, caught = quiet(lambda: in_scoped_thread(lambda: target.ask(mode, QUESTION)))
    with cache_scope(tenant_id="globex"):
        other, more = quiet(lambda: in_carried_thread(lambda: target.ask(mode, QUESTION)))
    assert hit.error is None and hit.text == ANSWER
    assert cache_status({"frugal": hit.frugal}) == "hit"
    assert other.error is None and other.text == "Paris (globex) ."  # never acme's answer
    assert cache_status({"frugal": other.frugal}) is None
    assert other.calls == {"cheap-1": 2}
    assert cache.stats.no_tenant == 0
    assert caught == [] and more == []
