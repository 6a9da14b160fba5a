"""What a new user builds in the first hour, end to end on the fakes: a streamed LCEL chain, a report after cache
hits, the demo's ledger file. Each test is a user's path that once gave a wrong figure."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.output_parsers import StrOutputParser

from frugal_chains import Budget, BudgetExceededError
from frugal_chains.budget import Alert
from frugal_chains.langchain import TokenBudgetHandler
from frugal_chains.testing import FakeUsageChatModel


def _chain_handler() -> tuple[Any, TokenBudgetHandler, list[Alert]]:
    alerts: list[Alert] = []
    handler = TokenBudgetHandler([Budget(max_usd=1.0, scope="global")], on_alert=alerts.append)
    model = FakeUsageChatModel(model="gpt-4o-mini", max_tokens=300, output_tokens=40)
    return model | StrOutputParser(), handler, alerts


@pytest.mark.parametrize("how", ["astream", "astream_events"])
def test_a_chain_streamed_async_commits_the_reported_usage(how: str) -> None:
    """LangChain's ``astream`` of a chain pulls each chunk in its own asyncio task: the task that started the model's
    run ends after the first chunk while the stream goes on. That is not an interrupted call: the run ends with
    its usage, not with its worst case."""
    chain, handler, alerts = _chain_handler()

    async def main() -> str:
        config: Any = {"callbacks": [handler]}
        if how == "astream":
            return "".join([c async for c in chain.astream("Where is my order?", config=config)])
        return "".join(
            [
                e["data"]["chunk"]
                async for e in chain.astream_events("Where is my order?", config=config, version="v2")
                if e["event"] == "on_parser_stream"
            ]
        )

    assert asyncio.run(main())
    (record,) = handler.ledger.records()
    assert (record.outcome, record.usage.output_tokens, record.usage_estimated) == ("ok", 40, False)
    assert "interrupted" not in record.extra
    assert record.overshoot_tokens == 0 and not record.overshoot_usd
    assert [a.kind for a in alerts if a.kind == "overshoot"] == []


def test_a_chain_stream_cancelled_mid_way_is_still_settled_as_interrupted() -> None:
    """The other side: a consumer that cancels the chain's stream after its first chunk still gets the call settled
    (the provider may have billed its answer), once, at exactly its worst case: that is no overshoot."""
    chain, handler, alerts = _chain_handler()

    async def main() -> None:
        async def consume() -> None:
            async for _ in chain.astream("Where is my order?", config={"callbacks": [handler]}):
                await asyncio.sleep(10)

        task = asyncio.ensure_future(consume())
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    (record,) = handler.ledger.records()
    assert record.outcome == "ok" and "interrupted" in record.extra
    assert record.usage_estimated and record.cost_usd == pytest.approx(record.reserved_usd)
    assert record.overshoot_usd == 0 and record.overshoot_tokens == 0
    assert [a for a in alerts if a.kind == "overshoot"] == []


def test_a_cascade_tier_refused_by_a_budget_is_recorded_under_that_tier_langchain() -> None:
    """``report --by tier`` puts a refused escalation under the tier that was refused, not under ``(none)``."""
    from frugal_chains.langchain import CascadeChatModel
    from frugal_chains.routing import RefusalGate

    # the cheap tier is unsure, so the cascade escalates; gpt-4o sets no max_tokens: its worst case is $0.16
    cheap = FakeUsageChatModel(model="gpt-4o-mini", max_tokens=100, responses=["I'm not sure."])
    strong = FakeUsageChatModel(model="gpt-4o", max_tokens=None)
    handler = TokenBudgetHandler([Budget(max_usd=0.02, scope="task")])
    model = CascadeChatModel(tiers=[cheap, strong], gates=[RefusalGate()])
    with pytest.raises(BudgetExceededError):
        model.invoke("What is the capital of France?", config={"callbacks": [handler]})
    assert [(r.outcome, r.tier) for r in handler.ledger.records()] == [
        ("ok", "gpt-4o-mini"),
        ("refused", "gpt-4o"),
    ]
    assert {r.key: r.refused for r in handler.ledger.summary("tier")} == {"gpt-4o-mini": 0, "gpt-4o": 1}


def test_a_cascade_tier_refused_by_a_budget_is_recorded_under_that_tier_llama_index() -> None:
    from llama_index.core.callbacks import CallbackManager

    from frugal_chains.llama_index import CascadeLLM
    from frugal_chains.llama_index import TokenBudgetHandler as LlamaBudgetHandler
    from frugal_chains.routing import RefusalGate
    from frugal_chains.testing import FakeUsageLLM

    cheap = FakeUsageLLM(model="gpt-4o-mini", max_tokens=100, responses="I'm not sure.")
    strong = FakeUsageLLM(model="gpt-4o", max_tokens=None)
    handler = LlamaBudgetHandler([Budget(max_usd=0.02, scope="task")])
    cascade = CascadeLLM(
        tiers=[cheap, strong],
        tier_names=["gpt-4o-mini", "gpt-4o"],
        gates=[RefusalGate()],
        callback_manager=CallbackManager([handler]),
    )
    with pytest.raises(BudgetExceededError):
        cascade.complete("What is the capital of France?")
    assert [(r.outcome, r.tier) for r in handler.ledger.records()] == [
        ("ok", "gpt-4o-mini"),
        ("refused", "gpt-4o"),
    ]
