"""TokenBudgetHandler with real LlamaIndex objects: Settings, VectorStoreIndex query engines, MockLLM, CustomLLM."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from types import SimpleNamespace
from typing import Any

import pytest
from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    CompletionResponse,
    CompletionResponseGen,
    LLMMetadata,
)
from llama_index.core.callbacks import CallbackManager, CBEventType, EventPayload
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.custom import CustomLLM
from llama_index.core.llms.mock import MockLLM
from pydantic import Field

from frugal_chains import (
    Budget,
    BudgetExceededError,
    ConfigurationError,
    Price,
    SQLiteLedger,
    UnknownModelPriceError,
    Usage,
    attribute,
)
from frugal_chains.accounting import count_message_tokens, count_text_tokens
from frugal_chains.llama_index import TokenBudgetHandler
from frugal_chains.metadata import WRAPPER_KEY

MOCK_PRICES = {"MockLLM": Price(input=1.0, output=2.0)}
ACME = Price(input=3.0, output=15.0, cache_read=0.3, cache_write=3.75, reasoning=20.0)
ACME_PRICES = {"acme-1": ACME}
DOCS = [
    "Paris is the capital of France.",
    "Berlin is the capital of Germany.",
    "Rome is the capital of Italy.",
]
QUESTION = "What is the capital of France?"


# -- fixtures and fakes -------------------------------------------------------------------------------------------
@pytest.fixture
def settings() -> Iterator[Any]:
    """LlamaIndex's global Settings, restored after the test."""
    saved = {f.name: getattr(Settings, f.name) for f in dataclasses.fields(Settings)}
    yield Settings
    for name, value in saved.items():
        setattr(Settings, name, value)


def query_engine(handler: TokenBudgetHandler, max_tokens: int = 20, **engine_kwargs: Any) -> Any:
    Settings.llm = MockLLM(max_tokens=max_tokens)
    Settings.embed_model = MockEmbedding(embed_dim=8)
    Settings.callback_manager = CallbackManager([handler])
    index = VectorStoreIndex.from_documents([Document(text=t) for t in DOCS])
    return index.as_query_engine(similarity_top_k=1, **engine_kwargs)


class AcmeLLM(CustomLLM):
    """A provider whose responses carry ``raw`` and ``additional_kwargs`` usage; counts provider calls. Its
    output cap is its ``max_tokens`` field (what the provider enforces); its ``num_output`` is left at
    LlamaIndex's default of 256, which is no cap."""

    model: str = "acme-1"
    max_tokens: int | None = 100
    additional_kwargs: dict[str, Any] = Field(default_factory=dict)
    raw: Any = None
    extra: dict[str, Any] = Field(default_factory=dict)
    fail: bool = False
    calls: int = 0

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name=self.model)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        self.calls += 1
        if self.fail:
            raise RuntimeError("provider down")
        return CompletionResponse(text="The answer is 42.", raw=self.raw, additional_kwargs=dict(self.extra))

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        self.calls += 1

        def gen() -> CompletionResponseGen:
            words = ["The", " answer", " is", " 42."]
            text = ""
            for i, word in enumerate(words):
                if self.fail and i == 2:
                    raise RuntimeError("connection reset")
                text += word
                # like OpenAI with stream_options={"include_usage": True}: usage in the last chunk only
                yield CompletionResponse(text=text, delta=word, raw=self.raw if i == len(words) - 1 else None)

        return gen()


class AcmeChatLLM(AcmeLLM):
    """``chat`` is the provider call itself (not CustomLLM's delegation to ``complete``)."""

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        self.calls += 1
        return ChatResponse(message=ChatMessage(role="assistant", content="42"), raw=self.raw)


class UncappedLLM(CustomLLM):
    """A CustomLLM with no output cap at all (``num_output`` is LlamaIndex's default 256, advice only): it
    answers with as many tokens as it likes, here 3,005, and reports them in ``raw``."""

    calls: int = 0

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="uncapped-1")

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        self.calls += 1
        usage = {"prompt_tokens": 10, "completion_tokens": 3005, "total_tokens": 3015}
        return CompletionResponse(text="word " * 3005, raw={"usage": usage})

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        raise NotImplementedError


class CascadeLLM(CustomLLM):
    """A wrapper that only calls another LLM, marked so its own events are not counted."""

    inner: AcmeLLM

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="cascade-without-a-price", num_output=100)

    def to_payload(self) -> dict[str, Any]:
        return {**super().to_payload(), WRAPPER_KEY: True}

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return self.inner.complete(prompt, formatted=formatted, **kwargs)

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        return self.inner.stream_complete(prompt, formatted=formatted, **kwargs)


def committed_usd(handler: TokenBudgetHandler) -> float:
    return sum(r.cost_usd for r in handler.ledger.records())


def reserved_nano(handler: TokenBudgetHandler, budget: Budget, **attribution: Any) -> int:
    from frugal_chains import Attribution

    return handler.core.spent(budget, Attribution(**attribution)).reserved_nano


def planned_output_caps(handler: TokenBudgetHandler, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The output cap of every call the handler plans (the worst case it reserves for)."""
    caps: list[int] = []
    plan = handler.core.plan

    def spy(*args: Any, **kwargs: Any) -> Any:
        result = plan(*args, **kwargs)
        caps.append(result.max_output_tokens)
        return result

    monkeypatch.setattr(handler.core, "plan", spy)
    return caps


def per_query_worst_case() -> float:
    probe = TokenBudgetHandler(prices=MOCK_PRICES)
    query_engine(probe).query(QUESTION)
    (record,) = probe.ledger.records()
    return record.reserved_usd


def prompt_estimate(messages: list[dict[str, Any]], margin: float = 0.25) -> int:
    return math.ceil(count_message_tokens(messages) * (1 + margin))


# -- query engines through Settings ---------------------------------------------------------------------------------
def test_query_engine_stops_on_the_query_that_would_cross(settings: Any) -> None:
    worst = per_query_worst_case()
    limit = worst * 3.5
    budget = Budget(max_usd=limit, scope="global")
    handler = TokenBudgetHandler([budget], prices=MOCK_PRICES)
    engine = query_engine(handler)
    answered = 0
    with pytest.raises(BudgetExceededError) as e:
        for _ in range(100):
            engine.query(QUESTION)
            answered += 1
    assert answered == 3
    records = [r for r in handler.ledger.records() if r.outcome != "refused"]
    assert len(records) == 3
    assert committed_usd(handler) <= limit
    assert e.value.spent + e.value.requested > limit  # refused only because the worst case would cross
    assert e.value.unit == "usd"
    assert reserved_nano(handler, budget) == 0
    assert all(r.usage_estimated and r.model == "MockLLM" for r in records)  # MockLLM reports no usage
    assert all(r.usage.output_tokens == 20 for r in records)  # "text" x max_tokens, counted


def test_records_carry_attribution_and_the_query_as_task(settings: Any) -> None:
    handler = TokenBudgetHandler(prices=MOCK_PRICES)
    engine = query_engine(handler)
    with attribute(feature="faq", user_id="u1", tenant_id="acme"):
        engine.query(QUESTION)
    engine.query(QUESTION)
    first, second = sorted(handler.ledger.records(), key=lambda r: r.ts)
    assert (first.attribution.feature, first.attribution.user_id, first.attribution.tenant_id) == (
        "faq",
        "u1",
        "acme",
    )
    assert second.attribution.feature is None and second.attribution.user_id is None
    assert first.attribution.task_id and first.attribution.task_id.startswith("query-")
    assert first.attribution.task_id != second.attribution.task_id


def test_per_user_budget_stops_only_that_user(settings: Any) -> None:
    worst = per_query_worst_case()
    budget = Budget(max_usd=worst * 2.5, scope="user")
    handler = TokenBudgetHandler([budget], prices=MOCK_PRICES)
    engine = query_engine(handler)
    with attribute(user_id="u1"):
        engine.query(QUESTION)
        engine.query(QUESTION)
        with pytest.raises(BudgetExceededError) as e:
            engine.query(QUESTION)
    assert e.value.scope_key == "u1"
    with attribute(user_id="u2"):
        engine.query(QUESTION)
        engine.query(QUESTION)
    by_user = [r.attribution.user_id for r in handler.ledger.records() if r.outcome == "ok"]
    assert sorted(by_user) == ["u1", "u1", "u2", "u2"]
    assert reserved_nano(handler, budget, user_id="u1") == 0


def test_task_budget_applies_per_query(settings: Any) -> None:
    worst = per_query_worst_case()
    budget = Budget(max_usd=worst * 1.5, scope="task")
    handler = TokenBudgetHandler([budget], prices=MOCK_PRICES)
    engine = query_engine(handler)
    for _ in range(4):  # each query is its own task: one call each fits
        engine.query(QUESTION)
    tasks = {r.attribution.task_id for r in handler.ledger.records()}
    assert len(tasks) == 4
    with attribute(task_id="report-7"):  # one task across queries: the second would cross
        engine.query(QUESTION)
        with pytest.raises(BudgetExceededError) as e:
            engine.query(QUESTION)
    assert e.value.scope_key == "report-7"


def test_streaming_query_is_checked_when_its_stream_is_consumed(settings: Any) -> None:
    """llama-index-core 0.14 starts a streaming query's LLM call lazily, when the response stream is consumed
    (after query() returned): the check, the refusal and the attribution happen there."""
    worst = per_query_worst_case()
    budget = Budget(max_usd=worst * 1.5, scope="global")
    handler = TokenBudgetHandler([budget], prices=MOCK_PRICES)
    engine = query_engine(handler, streaming=True)
    with attribute(user_id="u1"):
        answer = "".join(engine.query(QUESTION).response_gen)
        assert answer.startswith("text text")
        pending = engine.query(QUESTION)  # no LLM call yet
        assert handler.ledger.records()[0].attribution.user_id == "u1"
        with pytest.raises(BudgetExceededError):
            "".join(pending.response_gen)
    assert [r.outcome for r in handler.ledger.records()] == ["ok", "refused"]
    assert reserved_nano(handler, budget) == 0


def test_task_is_the_outermost_trace() -> None:
    probe = TokenBudgetHandler(prices=MOCK_PRICES)
    MockLLM(max_tokens=50, callback_manager=CallbackManager([probe])).complete("hi")
    worst = probe.ledger.records()[0].reserved_usd
    budget = Budget(max_usd=worst * 1.5, scope="task")
    handler = TokenBudgetHandler([budget], prices=MOCK_PRICES)
    manager = CallbackManager([handler])
    llm = MockLLM(max_tokens=50, callback_manager=manager)
    llm.complete("hi")
    llm.complete("hi")  # a bare call is its own trace, so its own task
    with manager.as_trace("job"):
        llm.complete("hi")
        with pytest.raises(BudgetExceededError):
            llm.complete("hi")
    tasks = [r.attribution.task_id or "" for r in handler.ledger.records() if r.outcome == "ok"]
    assert len(set(tasks)) == 3
    assert sum(t.startswith("job-") for t in tasks) == 1


# -- usage reported by the provider -----------------------------------------------------------------------------------
OPENAI_USAGE = {
    "prompt_tokens": 1000,
    "completion_tokens": 200,
    "total_tokens": 1200,
    "prompt_tokens_details": {"cached_tokens": 400},
    "completion_tokens_details": {"reasoning_tokens": 50},
}
OPENAI_EXPECTED = Usage(input_tokens=1000, output_tokens=200, cache_read_tokens=400, reasoning_tokens=50)
# 600 uncached x $3 + 400 cached x $0.3 + 150 output x $15 + 50 reasoning x $20, per million
OPENAI_COST = (600 * 3.0 + 400 * 0.3 + 150 * 15.0 + 50 * 20.0) / 1e6
ANTHROPIC_USAGE = {
    "input_tokens": 100,
    "output_tokens": 20,
    "cache_read_input_tokens": 1000,
    "cache_creation_input_tokens": 200,
}
ANTHROPIC_EXPECTED = Usage(
    input_tokens=1300, output_tokens=20, cache_read_tokens=1000, cache_write_tokens=200
)
# 100 uncached x $3 + 1000 cache reads x $0.3 + 200 cache writes x $3.75 + 20 output x $15, per million
ANTHROPIC_COST = (100 * 3.0 + 1000 * 0.3 + 200 * 3.75 + 20 * 15.0) / 1e6


def ns(d: dict[str, Any]) -> SimpleNamespace:
    return SimpleNamespace(**{k: ns(v) if isinstance(v, dict) else v for k, v in d.items()})


USAGE_CASES = {
    "openai-dict": ({"raw": {"usage": OPENAI_USAGE}}, OPENAI_EXPECTED, OPENAI_COST),
    "openai-object": ({"raw": ns({"model": "acme-1", "usage": OPENAI_USAGE})}, OPENAI_EXPECTED, OPENAI_COST),
    "anthropic-dict": ({"raw": {"usage": ANTHROPIC_USAGE}}, ANTHROPIC_EXPECTED, ANTHROPIC_COST),
    # LlamaIndex's Anthropic integration: raw=dict(response), so the usage is an SDK object
    "anthropic-object": ({"raw": {"usage": ns(ANTHROPIC_USAGE)}}, ANTHROPIC_EXPECTED, ANTHROPIC_COST),
    "additional-kwargs": (
        {"extra": {"prompt_tokens": 30, "completion_tokens": 7, "total_tokens": 37}},
        Usage(input_tokens=30, output_tokens=7),
        (30 * 3.0 + 7 * 15.0) / 1e6,
    ),
}


@pytest.mark.parametrize(
    ("case", "method"),
    [
        (case, method)
        for case in USAGE_CASES
        for method in ("complete", "chat", "achat", "stream_complete", "astream_complete")
        if not ("stream" in method and case == "additional-kwargs")  # the fake streams usage in raw only
    ],
)
def test_reported_usage_is_committed_exactly(case: str, method: str) -> None:
    fields, expected, cost = USAGE_CASES[case]
    handler = TokenBudgetHandler([Budget(max_usd=1.0, scope="global")], prices=ACME_PRICES)
    llm = AcmeLLM(callback_manager=CallbackManager([handler]), **fields)
    user = [ChatMessage(role="user", content="hi")]
    if method == "complete":
        llm.complete("hi")
    elif method == "chat":  # CustomLLM.chat delegates to complete: two nested LLM events, one provider call
        llm.chat(user)
    elif method == "achat":  # achat -> chat -> complete
        asyncio.run(llm.achat(user))
    elif method == "stream_complete":
        assert list(llm.stream_complete("hi"))[-1].text == "The answer is 42."
    else:  # astream_complete iterates stream_complete lazily, when the async stream is consumed

        async def consume() -> None:
            async for _ in await llm.astream_complete("hi"):
                pass

        asyncio.run(consume())
    (record,) = handler.ledger.records()
    assert llm.calls == 1
    assert record.usage == expected
    assert not record.usage_estimated
    assert record.model == "acme-1"
    assert record.cost_usd == pytest.approx(cost, rel=1e-9)


def test_chat_messages_are_estimated_as_openai_messages() -> None:
    handler = TokenBudgetHandler(prices=ACME_PRICES)
    llm = AcmeChatLLM(raw={"usage": ANTHROPIC_USAGE}, callback_manager=CallbackManager([handler]))
    llm.chat([ChatMessage(role="system", content="Be brief."), ChatMessage(role="user", content="hi")])
    (record,) = handler.ledger.records()
    estimate = prompt_estimate(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    )
    # max_tokens = 100 output tokens at the highest output rate (reasoning, $20)
    assert record.reserved_usd == pytest.approx((estimate * 3.0 + 100 * 20.0) / 1e6)
    assert record.usage == ANTHROPIC_EXPECTED


def test_call_max_tokens_raises_the_worst_case() -> None:
    handler = TokenBudgetHandler(prices=ACME_PRICES)
    llm = AcmeLLM(raw={"usage": OPENAI_USAGE}, callback_manager=CallbackManager([handler]))
    llm.complete("hi", max_tokens=500)
    (record,) = handler.ledger.records()
    estimate = prompt_estimate([{"role": "user", "content": "hi"}])
    # 500 output tokens at the highest output rate (reasoning, $20), not the LLM's max_tokens of 100
    assert record.reserved_usd == pytest.approx((estimate * 3.0 + 500 * 20.0) / 1e6)


def test_refused_before_the_provider_is_called() -> None:
    handler = TokenBudgetHandler([Budget(max_tokens=50, scope="global")], prices=ACME_PRICES)
    llm = AcmeLLM(callback_manager=CallbackManager([handler]))
    with pytest.raises(BudgetExceededError) as e:
        llm.complete("hi")  # 100 output tokens of worst case alone exceed 50
    assert e.value.unit == "tokens"
    assert llm.calls == 0
    assert [r.outcome for r in handler.ledger.records()] == ["refused"]  # nothing spent


# -- the output cap ----------------------------------------------------------------------------------------------------
UNCAPPED_PRICE = Price(input=1.0, output=2.0, max_output_tokens=4096)


def test_num_output_is_not_a_cap_the_price_cap_covers_the_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    """The reviewer's repro: a CustomLLM with no cap answers 3,005 tokens. num_output (256) is not what the
    provider enforces, so the price's max_output_tokens (4,096) is the worst case, and the answer fits it."""
    handler = TokenBudgetHandler(
        [Budget(max_tokens=10_000, scope="global")], prices={"uncapped-1": UNCAPPED_PRICE}
    )
    caps = planned_output_caps(handler, monkeypatch)
    llm = UncappedLLM(callback_manager=CallbackManager([handler]))
    assert llm.metadata.num_output == 256
    llm.complete("hi")
    (record,) = handler.ledger.records()
    assert caps == [4096]
    assert record.usage.output_tokens == 3005
    assert record.overshoot_usd == 0 and record.cost_usd <= record.reserved_usd


def test_uncapped_llm_is_refused_by_a_smaller_token_budget_before_the_call() -> None:
    """Before the fix the worst case was ~10 + 256 tokens: the call went ahead and committed 3,015 tokens
    against a 1,000-token budget. Now its worst case (4,096 output tokens) is refused before the call."""
    budget = Budget(max_tokens=1000, scope="global")
    handler = TokenBudgetHandler([budget], prices={"uncapped-1": UNCAPPED_PRICE})
    llm = UncappedLLM(callback_manager=CallbackManager([handler]))
    with pytest.raises(BudgetExceededError) as e:
        llm.complete("hi")
    assert e.value.unit == "tokens"
    assert llm.calls == 0
    assert [r.outcome for r in handler.ledger.records()] == ["refused"]  # nothing spent
    assert handler.core.spent(budget).committed_tokens == 0


def test_uncapped_llm_without_a_price_cap_names_max_tokens() -> None:
    handler = TokenBudgetHandler(
        [Budget(max_usd=1.0, scope="global")], prices={"uncapped-1": Price(input=1.0, output=2.0)}
    )
    llm = UncappedLLM(callback_manager=CallbackManager([handler]))
    with pytest.raises(ConfigurationError) as e:
        llm.complete("hi")
    assert e.value.field == "max_tokens"
    assert llm.calls == 0


def test_mock_llm_max_tokens_is_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    handler = TokenBudgetHandler(prices=MOCK_PRICES)
    caps = planned_output_caps(handler, monkeypatch)
    llm = MockLLM(max_tokens=64, callback_manager=CallbackManager([handler]))
    llm.complete("hi")
    llm.chat([ChatMessage(role="user", content="hi")])  # chat -> complete: the inner call is counted
    list(llm.stream_complete("hi"))
    assert caps == [64, 64, 64, 64]  # the outer chat event plans too, then hands its reservation on
    assert [r.usage.output_tokens for r in handler.ledger.records()] == [64, 64, 64]


@pytest.mark.parametrize(
    ("llm_fields", "call_kwargs", "cap"),
    [
        ({"max_tokens": 100}, {"n": 3}, 300),
        ({"max_tokens": 100}, {"best_of": 3, "n": 2}, 300),  # best_of answers are generated and billed
        ({"max_tokens": 100, "additional_kwargs": {"n": 3}}, {}, 300),
        ({"max_tokens": 100}, {"max_tokens": 40, "n": 3}, 300),  # the largest cap any source names
        ({"max_tokens": None}, {"max_completion_tokens": 50, "n": 3}, 150),
        ({"max_tokens": 100, "additional_kwargs": {"max_tokens": 250}}, {}, 250),
        ({"max_tokens": None, "additional_kwargs": {"num_predict": 70}}, {}, 70),
        ({"max_tokens": None}, {}, 4096),  # no cap anywhere: the price's, not num_output's 256
        ({"max_tokens": None}, {"n": 2}, 8192),
    ],
)
def test_output_cap_comes_from_the_llm_instance_and_the_call(
    llm_fields: dict[str, Any], call_kwargs: dict[str, Any], cap: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    handler = TokenBudgetHandler(prices={"acme-1": dataclasses.replace(ACME, max_output_tokens=4096)})
    caps = planned_output_caps(handler, monkeypatch)
    llm = AcmeLLM(raw={"usage": OPENAI_USAGE}, callback_manager=CallbackManager([handler]), **llm_fields)
    llm.complete("hi", **call_kwargs)
    (record,) = handler.ledger.records()
    assert caps == [cap]
    estimate = prompt_estimate([{"role": "user", "content": "hi"}])
    assert record.reserved_usd == pytest.approx((estimate * 3.0 + cap * 20.0) / 1e6)


def test_num_output_counts_only_for_llms_where_it_is_max_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    """An event not sent by LlamaIndex's LLM decorators (no LLM instance on the call stack): num_output is
    trusted only for classes whose num_output is their max_tokens (MockLLM), never LlamaIndex's default."""
    prices = {**MOCK_PRICES, "uncapped-1": UNCAPPED_PRICE}
    handler = TokenBudgetHandler(prices=prices)
    caps = planned_output_caps(handler, monkeypatch)
    for i, llm in enumerate([MockLLM(max_tokens=64), UncappedLLM()]):
        payload: dict[str, Any] = {EventPayload.PROMPT: "hi", EventPayload.SERIALIZED: llm.to_payload()}
        handler.on_event_start(CBEventType.LLM, payload, event_id=f"e{i}")
        handler.on_event_end(CBEventType.LLM, {EventPayload.EXCEPTION: RuntimeError()}, event_id=f"e{i}")
    assert caps == [64, 4096]


def test_unknown_model_is_refused_before_the_call() -> None:
    handler = TokenBudgetHandler([Budget(max_usd=1.0, scope="global")])
    llm = AcmeLLM(model="acme-unpriced", callback_manager=CallbackManager([handler]))
    with pytest.raises(UnknownModelPriceError):
        llm.complete("hi")
    assert llm.calls == 0


# -- errors and streams -----------------------------------------------------------------------------------------------
def test_llm_error_releases_its_reservation() -> None:
    budget = Budget(max_usd=1.0, scope="global")
    handler = TokenBudgetHandler([budget], prices=ACME_PRICES)
    llm = AcmeLLM(fail=True, callback_manager=CallbackManager([handler]))
    with pytest.raises(RuntimeError, match="provider down"):
        llm.complete("hi")
    with pytest.raises(RuntimeError, match="provider down"):
        llm.chat([ChatMessage(role="user", content="hi")])
    with pytest.raises(RuntimeError, match="connection reset"):
        list(llm.stream_complete("hi"))
    spent = handler.core.spent(budget)
    assert (spent.reserved_nano, spent.committed_nano) == (0, 0)
    assert handler.ledger.records() == []


def test_refusal_by_another_handler_releases_the_orphaned_reservation() -> None:
    """The first handler reserves, the second refuses: LlamaIndex sends no end event for the LLM call, only a
    CBEventType.EXCEPTION event as the exception leaves the call's trace."""
    budget = Budget(max_usd=1.0, scope="global")
    first = TokenBudgetHandler([budget], prices=ACME_PRICES)
    strict = TokenBudgetHandler([Budget(max_usd=0.0, scope="user")], prices=ACME_PRICES)
    llm = AcmeLLM(callback_manager=CallbackManager([first, strict]))
    with pytest.raises(BudgetExceededError):
        llm.complete("hi")
    with pytest.raises(BudgetExceededError):
        llm.chat([ChatMessage(role="user", content="hi")])  # nested: the orphan is the inner call's
    assert llm.calls == 0
    assert reserved_nano(first, budget) == 0
    assert first.ledger.records() == []


def test_stream_commits_once_when_exhausted() -> None:
    budget = Budget(max_usd=1.0, scope="global")
    handler = TokenBudgetHandler([budget], prices=MOCK_PRICES)
    llm = MockLLM(max_tokens=16, callback_manager=CallbackManager([handler]))
    stream = llm.stream_complete("hello there")
    first = next(stream)
    assert first.delta == "text "
    assert reserved_nano(handler, budget) > 0  # reserved at the start, before the first chunk
    assert handler.ledger.records() == []
    chunks = [first, *stream]
    (record,) = handler.ledger.records()
    assert reserved_nano(handler, budget) == 0
    assert record.usage_estimated
    counted = count_text_tokens(chunks[-1].text)
    assert record.usage.output_tokens == min(math.ceil(counted * 1.25), max(16, counted))
    assert record.usage.input_tokens == prompt_estimate([{"role": "user", "content": "hello there"}])


def test_stream_closed_early_is_committed_at_its_worst_case() -> None:
    budget = Budget(max_usd=1.0, scope="global")
    handler = TokenBudgetHandler([budget], prices=MOCK_PRICES)
    llm = MockLLM(max_tokens=16, callback_manager=CallbackManager([handler]))
    stream = llm.stream_complete("hello there")
    next(stream)
    stream.close()
    (record,) = handler.ledger.records()
    assert record.usage.output_tokens == 16
    assert record.cost_usd == pytest.approx(record.reserved_usd)
    assert record.extra == {"interrupted": "GeneratorExit"}
    assert reserved_nano(handler, budget) == 0


class SlowAsyncLLM(AcmeLLM):
    """A provider call that takes a while, natively async (so it can be cancelled mid-call)."""

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        self.calls += 1
        await asyncio.sleep(5)
        return CompletionResponse(text="late")


async def test_cancelled_async_call_is_committed_at_its_worst_case() -> None:
    budget = Budget(max_usd=1.0, scope="global")
    handler = TokenBudgetHandler([budget], prices=ACME_PRICES)
    llm = SlowAsyncLLM(callback_manager=CallbackManager([handler]))
    task = asyncio.create_task(llm.acomplete("hello"))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (record,) = handler.ledger.records()
    assert record.extra == {"interrupted": "CancelledError"}
    assert record.cost_usd == pytest.approx(record.reserved_usd)
    assert reserved_nano(handler, budget) == 0


async def test_async_calls_are_counted_once() -> None:
    handler = TokenBudgetHandler(prices=MOCK_PRICES)
    llm = MockLLM(max_tokens=8, callback_manager=CallbackManager([handler]))
    await llm.acomplete("hi")  # acomplete -> complete
    await llm.achat([ChatMessage(role="user", content="hi")])  # achat -> chat -> complete
    async for _ in await llm.astream_chat([ChatMessage(role="user", content="hi")]):  # -> stream_chat -> ...
        pass
    records = handler.ledger.records()
    assert len(records) == 3
    assert all(r.usage.output_tokens == 8 and r.model == "MockLLM" for r in records)


def test_wrapper_llm_is_not_counted_its_inner_calls_are() -> None:
    handler = TokenBudgetHandler([Budget(max_usd=1.0, scope="global")], prices=ACME_PRICES)
    manager = CallbackManager([handler])
    inner = AcmeLLM(raw={"usage": OPENAI_USAGE}, callback_manager=manager)
    cascade = CascadeLLM(inner=inner, callback_manager=manager)
    with attribute(feature="cascade"):
        cascade.complete("hi")
        list(cascade.stream_complete("hi"))
    records = handler.ledger.records()
    assert [r.model for r in records] == ["acme-1", "acme-1"]  # "cascade-without-a-price" was never priced
    assert all(r.usage == OPENAI_EXPECTED and r.attribution.feature == "cascade" for r in records)


# -- concurrency and configuration -------------------------------------------------------------------------------------
def test_threads_never_overspend_a_shared_budget() -> None:
    probe = TokenBudgetHandler(prices=MOCK_PRICES)
    MockLLM(max_tokens=30, callback_manager=CallbackManager([probe])).complete("hi")
    worst = probe.ledger.records()[0].reserved_usd
    limit = worst * 10.5
    budget = Budget(max_usd=limit, scope="global")
    handler = TokenBudgetHandler([budget], ledger=SQLiteLedger(":memory:"), prices=MOCK_PRICES)
    llm = MockLLM(max_tokens=30, callback_manager=CallbackManager([handler]))
    refused: list[int] = []

    def work() -> None:
        for _ in range(10):
            try:
                llm.complete("hi")
            except BudgetExceededError:
                refused.append(1)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    outcomes = [r.outcome for r in handler.ledger.records()]
    assert outcomes.count("ok") == 10 and outcomes.count("refused") == 70
    assert len(refused) == 70
    assert committed_usd(handler) <= limit
    assert reserved_nano(handler, budget) == 0


def test_guard_and_budgets_are_exclusive() -> None:
    handler = TokenBudgetHandler(prices=MOCK_PRICES)
    with pytest.raises(ConfigurationError):
        TokenBudgetHandler([Budget(max_usd=1.0)], guard=handler.core)
    shared = TokenBudgetHandler(guard=handler.core)
    assert shared.ledger is handler.ledger
    assert "TokenBudgetHandler(budgets=[]" in repr(shared)


def test_missing_llama_index_names_the_extra() -> None:
    code = (
        "import sys\n"
        "sys.modules['llama_index'] = None\n"
        "sys.modules['llama_index.core'] = None\n"
        "try:\n"
        "    import frugal_chains.llama_index\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert 'pip install "frugal-chains[llama-index]"' in out
