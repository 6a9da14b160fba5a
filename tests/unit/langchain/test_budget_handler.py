"""TokenBudgetHandler and budget_scope with real LangChain runs and fake providers."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.caches import InMemoryCache
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.fake import FakeListLLM
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatResult
from langchain_core.tools import tool

from frugal_chains import (
    Budget,
    BudgetExceededError,
    ConfigurationError,
    Price,
    UnknownModelPriceError,
    attribute,
)
from frugal_chains.accounting import count_message_tokens, count_text_tokens
from frugal_chains.langchain import TokenBudgetHandler, budget_scope
from frugal_chains.langchain._runs import achild_callbacks, child_callbacks
from frugal_chains.metadata import WRAPPER_KEY
from frugal_chains.testing import FakeUsageChatModel


@tool
def search(query: str) -> str:
    """Search the knowledge base."""
    return "A long result paragraph. " * 30


def committed_usd(handler: TokenBudgetHandler) -> float:
    return sum(r.cost_usd for r in handler.ledger.records())


@pytest.mark.parametrize("factor", [1.0, 1.04])
@pytest.mark.parametrize("limit", [0.004, 0.01, 0.023])
def test_agent_loop_stops_on_the_call_that_would_cross(limit: float, factor: float) -> None:
    """create_agent with a model that calls tools forever; the provider may count 4% more input tokens."""
    handler = TokenBudgetHandler([Budget(max_usd=limit, scope="task")])
    model = FakeUsageChatModel(
        model="gpt-4o", tool_to_call="search", max_tokens=200, output_tokens=120, input_token_factor=factor
    )
    calls: list[int] = []
    agent = create_agent(model, tools=[search])
    with pytest.raises(BudgetExceededError) as e:
        agent.invoke(
            {"messages": [("user", "find it")]}, config={"callbacks": [handler], "recursion_limit": 10_000}
        )
    records = handler.ledger.records()
    calls.append(len(records))
    assert len(records) >= 1
    assert committed_usd(handler) <= limit
    assert e.value.spent + e.value.requested > limit  # refused only because the worst case would cross
    assert len({r.attribution.task_id for r in records}) == 1  # one agent run = one task
    assert all(r.overshoot_usd == 0 for r in records)


def test_manual_tool_loop_with_inflated_input_never_overspends() -> None:
    budget = Budget(max_usd=0.02, scope="global")
    handler = TokenBudgetHandler([budget])
    model = FakeUsageChatModel(
        model="gpt-4o-mini", tool_to_call="search", max_tokens=500, output_tokens=500, input_token_factor=1.05
    ).bind_tools([search])
    messages: list[Any] = [("user", "start")]
    with pytest.raises(BudgetExceededError):
        for _ in range(10_000):
            ai = model.invoke(messages, config={"callbacks": [handler]})
            messages.append(ai)
            for call in ai.tool_calls:
                messages.append(search.invoke(call))
    assert committed_usd(handler) <= 0.02
    assert handler.core.spent(budget).reserved_nano == 0


async def test_fifty_concurrent_ainvoke_share_one_budget() -> None:
    budget = Budget(max_usd=0.001, scope="feature")
    handler = TokenBudgetHandler([budget])
    model = FakeUsageChatModel(model="gpt-4o-mini", max_tokens=1000, output_tokens=1000, latency_s=0.02)

    async def one(i: int) -> bool:
        try:
            await model.ainvoke(
                f"question {i}", config={"callbacks": [handler], "metadata": {"feature": "faq"}}
            )
        except BudgetExceededError:
            return False
        return True

    ok = await asyncio.gather(*(one(i) for i in range(50)))
    assert 0 < sum(ok) < 50
    assert committed_usd(handler) <= 0.001
    outcomes = [r.outcome for r in handler.ledger.records()]
    assert outcomes.count("ok") == sum(ok) and outcomes.count("refused") == 50 - sum(ok)
    assert handler.core.spent(budget).reserved_nano == 0


def test_threaded_batch_never_overspends() -> None:
    budget = Budget(max_tokens=5000, scope="global")
    handler = TokenBudgetHandler([budget])
    model = FakeUsageChatModel(max_tokens=300, output_tokens=300, latency_s=0.01)
    outs = model.batch(
        [f"q{i}" for i in range(40)],
        config={"callbacks": [handler], "max_concurrency": 8},
        return_exceptions=True,
    )
    refused = [o for o in outs if isinstance(o, BudgetExceededError)]
    assert refused and len(refused) < 40
    assert handler.core.spent(budget).committed_tokens <= 5000


def test_per_user_budget_stops_only_that_user() -> None:
    handler = TokenBudgetHandler([Budget(max_usd=0.0005, scope="user", window="day")])
    model = FakeUsageChatModel(model="gpt-4o-mini", max_tokens=256)
    ann = {"callbacks": [handler], "metadata": {"user_id": "ann", "feature": "chat"}}
    with pytest.raises(BudgetExceededError) as e:
        for _ in range(1000):
            model.invoke("hi", config=ann)
    assert e.value.scope_key == "ann"
    model.invoke("hi", config={"callbacks": [handler], "metadata": {"user_id": "bob"}})
    by_user = {row.key: row.calls for row in handler.ledger.summary("user")}
    assert by_user["bob"] == 1 and by_user["ann"] > 1
    assert {r.attribution.feature for r in handler.ledger.records(user_id="ann")} == {"chat"}


def test_attribution_from_context_and_tags() -> None:
    handler = TokenBudgetHandler()
    with attribute(feature="search", tenant_id="acme"):
        FakeUsageChatModel().invoke(
            "hi", config={"callbacks": [handler], "tags": ["beta"], "metadata": {"user_id": "u7"}}
        )
    (r,) = handler.ledger.records()
    assert (r.attribution.feature, r.attribution.tenant_id, r.attribution.user_id) == ("search", "acme", "u7")
    assert "beta" in r.attribution.tags


class Wrapper(BaseChatModel):
    """A wrapper model (like the cascade): calls an inner model as a child run, marks its own run."""

    inner: BaseChatModel

    def __init__(self, **kw: Any) -> None:
        super().__init__(metadata={WRAPPER_KEY: True}, **kw)

    @property
    def _llm_type(self) -> str:
        return "test-wrapper"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kw: Any,
    ) -> ChatResult:
        first = self.inner.invoke(messages, config={"callbacks": child_callbacks(run_manager, "try-1")})
        second = self.inner.invoke(messages, config={"callbacks": child_callbacks(run_manager, "try-2")})
        from langchain_core.outputs import ChatGeneration

        return ChatResult(generations=[ChatGeneration(message=second)], llm_output={"first": first.content})

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kw: Any,
    ) -> ChatResult:
        from langchain_core.outputs import ChatGeneration

        msg = await self.inner.ainvoke(messages, config={"callbacks": achild_callbacks(run_manager)})
        return ChatResult(generations=[ChatGeneration(message=msg)])


async def test_wrapper_runs_are_not_counted_twice() -> None:
    handler = TokenBudgetHandler()
    inner = FakeUsageChatModel(model="gpt-4o-mini")
    msg = Wrapper(inner=inner).invoke("hi", config={"callbacks": [handler]})
    records = handler.ledger.records()
    assert len(records) == 2  # the two leaf calls, not the wrapper
    assert all(r.model == "gpt-4o-mini" for r in records)
    assert sum(r.usage.output_tokens for r in records) == 2 * msg.usage_metadata["output_tokens"]
    assert len({r.attribution.task_id for r in records}) == 1
    await Wrapper(inner=inner).ainvoke("hi", config={"callbacks": [handler]})
    assert len(handler.ledger.records()) == 3


def test_unmarked_wrapper_would_count_twice() -> None:
    """The flag is what prevents double counting (the test above is not vacuous)."""
    handler = TokenBudgetHandler(prices={"test-wrapper": Price(input=1, output=1, max_output_tokens=100)})
    w = Wrapper(inner=FakeUsageChatModel())
    w.metadata = {}
    w.invoke("hi", config={"callbacks": [handler]})
    assert len(handler.ledger.records()) == 3


def test_langchain_cache_hit_costs_nothing_and_releases() -> None:
    budget = Budget(max_usd=1.0, scope="global")
    handler = TokenBudgetHandler([budget])
    model = FakeUsageChatModel(model="gpt-4o-mini", cache=InMemoryCache())
    model.invoke("same question", config={"callbacks": [handler]})
    model.invoke("same question", config={"callbacks": [handler]})
    miss, hit = handler.ledger.records()
    assert (miss.outcome, hit.outcome) == ("ok", "cache_hit")
    assert hit.cost_usd == 0 and hit.saved_usd == pytest.approx(miss.cost_usd)
    c = handler.core.spent(budget)
    assert c.reserved_nano == 0
    assert c.committed_nano == round(miss.cost_usd * 1e9)


def test_streaming_commits_once_with_reported_usage() -> None:
    handler = TokenBudgetHandler()
    chunks = list(
        FakeUsageChatModel(responses=["one two three"], output_tokens=9).stream(
            "hi", config={"callbacks": [handler]}
        )
    )
    assert len(chunks) == 3
    (r,) = handler.ledger.records()
    assert r.usage.output_tokens == 9 and not r.usage_estimated


async def test_async_streaming_commits_once() -> None:
    handler = TokenBudgetHandler()
    async for _ in FakeUsageChatModel(responses=["a b"]).astream("hi", config={"callbacks": [handler]}):
        pass
    assert len(handler.ledger.records()) == 1


def test_provider_error_releases_the_reservation() -> None:
    budget = Budget(max_usd=1.0, scope="global")
    handler = TokenBudgetHandler([budget])
    model = FakeUsageChatModel(fail_with=lambda: RuntimeError("provider down"))
    with pytest.raises(RuntimeError, match="provider down"):
        model.invoke("hi", config={"callbacks": [handler]})
    c = handler.core.spent(budget)
    assert (c.reserved_nano, c.committed_nano) == (0, 0)
    assert handler.ledger.records() == []


class CountingModel(FakeUsageChatModel):
    calls: int = 0

    def _generate(self, *a: Any, **k: Any) -> ChatResult:
        self.calls += 1
        return super()._generate(*a, **k)


def test_unknown_model_refused_before_the_call() -> None:
    model = CountingModel(model="my-private-llm")
    handler = TokenBudgetHandler([Budget(max_usd=1)])
    with pytest.raises(UnknownModelPriceError):
        model.invoke("hi", config={"callbacks": [handler]})
    assert model.calls == 0
    priced = TokenBudgetHandler(prices={"my-private-llm": Price(input=0.5, output=0.5)})
    model.invoke("hi", config={"callbacks": [priced]})
    assert model.calls == 1 and priced.ledger.records()[0].price_known


def test_refusal_happens_before_the_provider_is_called() -> None:
    model = CountingModel(max_tokens=1000)
    handler = TokenBudgetHandler([Budget(max_tokens=500, scope="global")])
    with pytest.raises(BudgetExceededError):
        model.invoke("hi", config={"callbacks": [handler]})
    assert model.calls == 0


def test_plain_llm_without_usage_is_estimated() -> None:
    llm = FakeListLLM(responses=["forty two is the answer"])
    handler = TokenBudgetHandler(prices={"fake-list": Price(input=1, output=1, max_output_tokens=50)})
    llm.invoke("what is it?", config={"callbacks": [handler]})
    (r,) = handler.ledger.records()
    counted = count_text_tokens("forty two is the answer")
    assert r.usage_estimated
    assert r.usage.output_tokens == math.ceil(counted * 1.25)  # default margin for a non-OpenAI provider
    assert r.usage.input_tokens == math.ceil(
        count_message_tokens([{"role": "user", "content": "what is it?"}]) * 1.25
    )


def test_budget_scope_applies_without_callbacks() -> None:
    model = FakeUsageChatModel(model="gpt-4o-mini", max_tokens=256)
    with budget_scope([Budget(max_usd=0.0005, scope="global")]) as scope, pytest.raises(BudgetExceededError):
        for _ in range(1000):
            model.invoke("hi")
    assert sum(r.cost_usd for r in scope.ledger.records()) <= 0.0005
    model.invoke("hi")  # outside the block: no budget
    assert len(scope.ledger.records()) > 1


def test_budget_scope_tasks_and_nesting() -> None:
    model = FakeUsageChatModel(model="gpt-4o-mini", max_tokens=100)
    with budget_scope() as scope:
        model.invoke("a")
        model.invoke("b")
    assert len({r.attribution.task_id for r in scope.ledger.records()}) == 2  # each root run is a task
    with budget_scope(one_task=True) as scope:
        model.invoke("a")
        model.invoke("b")
    assert len({r.attribution.task_id for r in scope.ledger.records()}) == 1
    with budget_scope([Budget(max_usd=10, scope="global")]) as outer:
        with budget_scope([Budget(max_tokens=250, scope="task")], one_task=True) as inner:
            assert inner.ledger is outer.ledger
            assert len(inner.budgets) == 2
            with pytest.raises(BudgetExceededError) as e:
                for _ in range(100):
                    model.invoke("hi")
            assert e.value.unit == "tokens"
        with pytest.raises(ConfigurationError) as ce, budget_scope(ledger=object()):  # type: ignore[arg-type]
            pass
        assert ce.value.field == "ledger"


def test_refused_runs_leave_no_state_behind() -> None:
    handler = TokenBudgetHandler([Budget(max_tokens=10, scope="global")])
    for _ in range(3):
        with pytest.raises(BudgetExceededError):
            FakeUsageChatModel().invoke("hi", config={"callbacks": [handler]})
    assert handler._roots == {} and handler._reservations == {}


def test_stream_closed_early_commits_the_worst_case() -> None:
    budget = Budget(max_usd=1.0, scope="global")
    handler = TokenBudgetHandler([budget])
    model = FakeUsageChatModel(model="gpt-4o-mini", responses=["one two three four"], max_tokens=300)
    for chunk in model.stream("hi", config={"callbacks": [handler]}):
        assert chunk.content
        break  # the consumer stops reading: the provider may already have billed part of the answer
    (r,) = handler.ledger.records()
    assert r.extra["interrupted"] == "GeneratorExit"
    assert r.usage_estimated and r.usage.output_tokens == 300
    assert r.cost_usd == pytest.approx(r.reserved_usd, abs=1e-9)
    assert handler.core.spent(budget).reserved_nano == 0


def test_cache_control_prices_the_worst_case_at_the_cache_write_rate() -> None:
    from langchain_core.messages import HumanMessage, SystemMessage

    text = "Policy text. " * 200
    plain = [SystemMessage(text), HumanMessage("question")]
    cached = [
        SystemMessage([{"type": "text", "text": text, "cache_control": {"type": "ephemeral", "ttl": "1h"}}]),
        HumanMessage("question"),
    ]
    reserved = []
    for messages in (plain, cached):
        handler = TokenBudgetHandler()
        model = FakeUsageChatModel(
            model="claude-sonnet-4-5", provider="anthropic", max_tokens=100, output_tokens=10
        )
        model.invoke(messages, config={"callbacks": [handler]})
        reserved.append(handler.ledger.records()[0].reserved_usd)
    # claude-sonnet-4-5: input $3/M, 1-hour cache write $6/M, output $15/M; same token estimate both times
    input_tokens = (reserved[0] * 1e6 - 100 * 15) / 3
    assert reserved[1] == pytest.approx((input_tokens * 6 + 100 * 15) / 1e6, rel=1e-6)


def test_several_choices_reserve_each_answer() -> None:
    handler = TokenBudgetHandler()
    model = FakeUsageChatModel(model="gpt-4o-mini", max_tokens=100)
    model.invoke("hi", n=3, config={"callbacks": [handler]})
    model.invoke("hi", config={"callbacks": [handler]})
    three, one = handler.ledger.records()
    # gpt-4o-mini output: $0.60/M; same prompt, 3 x 100 vs 1 x 100 output tokens in the worst case
    assert three.reserved_usd - one.reserved_usd == pytest.approx(200 * 0.60 / 1e6)


def test_llm_batch_usage_reported_once_is_not_double_counted() -> None:
    from langchain_core.language_models.llms import BaseLLM
    from langchain_core.outputs import Generation, LLMResult

    class BatchLLM(BaseLLM):
        @property
        def _llm_type(self) -> str:
            return "batch-llm"

        def _generate(
            self, prompts: list[str], stop: Any = None, run_manager: Any = None, **kw: Any
        ) -> LLMResult:
            return LLMResult(
                generations=[[Generation(text="answer")] for _ in prompts],
                llm_output={
                    "token_usage": {
                        "prompt_tokens": 10 * len(prompts),
                        "completion_tokens": 5 * len(prompts),
                    },
                    "model_name": "batch-llm",
                },
            )

    handler = TokenBudgetHandler(prices={"batch-llm": Price(input=1, output=1, max_output_tokens=50)})
    BatchLLM().batch(["a", "b", "c", "d"], config={"callbacks": [handler]})
    records = handler.ledger.records()
    assert len(records) == 4
    assert sum(r.usage.total_tokens for r in records) == 60  # what the provider billed, once
    assert sum(r.cost_usd for r in records) == pytest.approx(60 / 1e6)


class _NoUsageLLM(FakeListLLM):
    """A plain LLM whose provider reports token_usage={} (no usage at all)."""

    def _generate(self, prompts: list[str], stop: Any = None, run_manager: Any = None, **kw: Any) -> Any:
        result = super()._generate(prompts, stop=stop, run_manager=run_manager, **kw)
        result.llm_output = {"token_usage": {}}
        return result


def test_batch_without_any_reported_usage_is_estimated_not_free() -> None:
    handler = TokenBudgetHandler(prices={"fake-list": Price(input=1, output=1, max_output_tokens=50)})
    _NoUsageLLM(responses=["an answer"] * 3).batch(["a", "b", "c"], config={"callbacks": [handler]})
    records = handler.ledger.records()
    assert len(records) == 3
    assert all(r.usage_estimated and r.usage.total_tokens > 0 for r in records)


def test_chat_batch_runs_keep_their_own_usage() -> None:
    handler = TokenBudgetHandler()
    FakeUsageChatModel(output_tokens=7).batch(["a", "b", "c"], config={"callbacks": [handler]})
    records = handler.ledger.records()
    assert [r.usage.output_tokens for r in records] == [7, 7, 7]
    assert not any("usage_covers_batch" in r.extra for r in records)


async def test_cancelled_ainvoke_commits_the_worst_case() -> None:
    budget = Budget(max_usd=1.0, scope="global")
    handler = TokenBudgetHandler([budget])
    model = FakeUsageChatModel(model="gpt-4o-mini", max_tokens=300, latency_s=5)
    task = asyncio.create_task(model.ainvoke("hi", config={"callbacks": [handler]}))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (r,) = handler.ledger.records()
    assert r.extra["interrupted"] == "CancelledError"
    assert r.cost_usd == pytest.approx(r.reserved_usd, abs=1e-9)
    assert handler.core.spent(budget).reserved_nano == 0


async def test_finished_tasks_do_not_touch_finished_runs() -> None:
    handler = TokenBudgetHandler()
    await asyncio.create_task(FakeUsageChatModel().ainvoke("hi", config={"callbacks": [handler]}))
    await asyncio.sleep(0)
    (r,) = handler.ledger.records()
    assert "interrupted" not in r.extra and not r.usage_estimated


def test_interrupted_cached_prompt_commits_what_was_reserved() -> None:
    from langchain_core.messages import HumanMessage, SystemMessage

    handler = TokenBudgetHandler()
    messages = [
        SystemMessage([{"type": "text", "text": "Policy. " * 100, "cache_control": {"type": "ephemeral"}}]),
        HumanMessage("q"),
    ]
    model = FakeUsageChatModel(
        model="claude-sonnet-4-5", provider="anthropic", max_tokens=100, responses=["one two three"]
    )
    for _ in model.stream(messages, config={"callbacks": [handler]}):
        break
    (r,) = handler.ledger.records()
    assert r.cost_usd == pytest.approx(r.reserved_usd, abs=1e-9)
    assert r.usage.cache_write_1h_tokens == r.usage.input_tokens  # a 1-hour write is the dearest input rate


class _FailsMidStream(FakeUsageChatModel):
    def _stream(self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any) -> Any:
        from langchain_core.messages import AIMessageChunk
        from langchain_core.outputs import ChatGenerationChunk

        yield ChatGenerationChunk(message=AIMessageChunk(content="partial answer text"))
        raise RuntimeError("connection reset")


def test_provider_error_mid_stream_counts_the_part_sent() -> None:
    budget = Budget(max_usd=1.0, scope="global")
    handler = TokenBudgetHandler([budget])
    with pytest.raises(RuntimeError, match="connection reset"):
        for _ in _FailsMidStream(model="gpt-4o-mini").stream("hi", config={"callbacks": [handler]}):
            pass
    (r,) = handler.ledger.records()
    assert r.extra["error"] == "RuntimeError" and r.usage_estimated
    assert r.usage.output_tokens >= count_text_tokens("partial answer text")
    assert handler.core.spent(budget).reserved_nano == 0


def test_handlers_share_a_guard_or_build_their_own() -> None:
    from frugal_chains.budget import BudgetGuard
    from frugal_chains.llama_index import TokenBudgetHandler

    guard = BudgetGuard([Budget(max_usd=1.0, scope="global")])
    lc, li = TokenBudgetHandler(guard=guard), TokenBudgetHandler(guard=guard)
    assert lc.core is guard and li.core is guard and lc.ledger is li.ledger
    for make in (TokenBudgetHandler, TokenBudgetHandler):
        with pytest.raises(ConfigurationError) as e:
            make([Budget(max_usd=1.0)], guard=guard)
        assert e.value.field == "guard"
