"""Fan a request's work out to worker threads without losing its budget or its tenant.

`budget_scope`, `cache_scope` and `attribute` live in context variables: a plain `ThreadPoolExecutor` does not
carry them, `frugal_chains.ScopedThreadPoolExecutor` does. A token budget needs no price (a self-hosted model), and
a cache shared by tenants set to `tenant_required=True` never serves or stores a request that lost its tenant.

python cookbook/worker_threads_langchain.py
"""

from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor

from frugal_chains import (
    Budget,
    BudgetExceededError,
    ScopedThreadPoolExecutor,
    ScopeNotPropagatedWarning,
    cache_scope,
)
from frugal_chains.langchain import SemanticCache, budget_scope, with_cache
from frugal_chains.metadata import FRUGAL_KEY
from frugal_chains.testing import FakeUsageChatModel

# A self-hosted model: no public price, and none needed for a token budget.
model = FakeUsageChatModel(model="my-llama-70b", provider="vllm", max_tokens=300, output_tokens=120)
# One exact-match cache shared by every tenant (semantic=False: no embedding model needed here).
cache = SemanticCache(semantic=False, tenant_required=True)
bot = with_cache(model, cache)

QUESTIONS = [f"Summarise section {i} of the handbook." for i in range(8)]


def answer(question: str) -> str:
    try:
        msg = bot.invoke(question)
    except BudgetExceededError:
        return "refused (budget)"
    served = (msg.response_metadata.get(FRUGAL_KEY) or {}).get("cache") or {}
    status = served.get("status", "model")
    return f"{status}{' (' + served['reason'] + ')' if 'reason' in served else ''}"


def run(pool_class: type[ThreadPoolExecutor], tenant: str) -> tuple[list[str], int, list[str]]:
    # One request: 1,000 tokens for all of its work, whatever thread it runs in.
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always", ScopeNotPropagatedWarning)
        with budget_scope([Budget(max_tokens=1_000, scope="global")]) as scope, cache_scope(tenant_id=tenant):
            with pool_class(max_workers=4) as pool:
                results = list(pool.map(answer, QUESTIONS))
            recorded = sum(r.outcome != "refused" for r in scope.ledger.records())
    names = sorted(
        {type(w.message).__name__ for w in seen if issubclass(w.category, ScopeNotPropagatedWarning)}
    )
    return results, recorded, names


if __name__ == "__main__":
    plain, recorded, warned = run(ThreadPoolExecutor, "acme")
    print("plain ThreadPoolExecutor:")
    print(f"  answers: {sorted(set(plain))}")
    print(
        f"  calls recorded under the request's budget: {recorded} of {len(QUESTIONS)} (the scope stayed behind)"
    )
    print(f"  warned: {warned}")

    scoped, recorded, warned = run(ScopedThreadPoolExecutor, "acme")
    print("ScopedThreadPoolExecutor:")
    print(f"  answers: {scoped}")
    print(f"  calls recorded under the request's budget: {recorded} (the 1,000-token limit held)")
    print(f"  warned: {warned or 'nothing'}")

    again, _, _ = run(ScopedThreadPoolExecutor, "acme")
    other, _, _ = run(ScopedThreadPoolExecutor, "globex")
    print(f"acme again: {again.count('hit')} hits; globex: {other.count('hit')} hits (never acme's answers)")
    print(f"the first request's answers are cached for acme only: {scoped.count('model')} stored")
    print(f"cache: {cache.stats.no_tenant} tenantless requests neither served nor stored")
