"""CascadeLLM: the LlamaIndex cascade (chat, complete, streams, structured output, tools), budgets and Settings."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    TextBlock,
    ToolCallBlock,
)
from llama_index.core.callbacks import CallbackManager
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import ToolSelection
from llama_index.core.llms.mock import MockLLM
from llama_index.core.prompts import PromptTemplate
from llama_index.core.tools import FunctionTool
from llama_index.core.types import PydanticProgramMode
from pydantic import BaseModel, Field

from frugal_chains import (
    Budget,
    CascadeExhaustedError,
    ConfigurationError,
    Price,
    SQLiteLedger,
    Usage,
    attribute,
)
from frugal_chains.accounting.provider_usage import usage_from_provider
from frugal_chains.llama_index import TokenBudgetHandler
from frugal_chains.llama_index.cascade import CascadeLLM
from frugal_chains.metadata import CASCADE, FRUGAL_KEY, TIER_KEY, WRAPPER_KEY
from frugal_chains.routing import (
    CallableScorer,
    GateContext,
    GateResult,
    RegexGate,
    RouterStats,
    RoutingPolicy,
    SelfConsistencyGate,
    TierAnswer,
)

CHEAP = Price(input=1.0, output=2.0)
STRONG = Price(input=10.0, output=30.0)
PRICES = {"cheap-1": CHEAP, "strong-1": STRONG}
CHEAP_USAGE = Usage(input_tokens=10, output_tokens=5)
STRONG_USAGE = Usage(input_tokens=20, output_tokens=8)
QUESTION = "What is the capital of France?"


class RateLimitError(Exception):
    """Named like the OpenAI / Anthropic SDKs' rate-limit error."""


class Tier(FunctionCallingLLM):
    """A provider with native sync, async and streaming chat and completion and function calling. It reports
    OpenAI-style usage in ``raw`` (the last chunk of a stream, as with ``include_usage``), answers from
    ``answers`` in turn (the last one repeats), and can fail before answering (``error``) or mid-stream
    (``fail_after`` chunks)."""

    model: str = "cheap-1"
    answers: list[str] = Field(default_factory=lambda: ["Paris."])
    prompt_tokens: int = 10
    completion_tokens: int = 5
    cached_tokens: int = 0
    error: Any = Field(default=None, exclude=True)
    fail_after: int | None = None
    tool_call: dict[str, Any] | None = None
    """When set and the call has tools (and no tool result yet): answer with this tool call."""
    max_tokens: int = 50
    context_window: int = 8000
    num_output: int = 50
    calls: int = Field(default=0, exclude=True)
    finished: int = Field(default=0, exclude=True)
    """Streams that ran to their end."""
    seen: list[dict[str, Any]] = Field(default_factory=list, exclude=True)

    @classmethod
    def class_name(cls) -> str:
        return "Tier"

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(
            model_name=self.model,
            context_window=self.context_window,
            num_output=self.num_output,
            is_chat_model=True,
            is_function_calling_model=True,
        )

    # -- behaviour --
    def _next(self, kwargs: dict[str, Any]) -> str:
        self.seen.append(dict(kwargs))
        answer = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        if self.error is not None:
            raise self.error
        return answer

    def _raw(self) -> dict[str, Any]:
        usage: dict[str, Any] = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }
        if self.cached_tokens:
            usage["prompt_tokens_details"] = {"cached_tokens": self.cached_tokens}
        return {"usage": usage, "model": self.model}

    def _message(self, text: str, messages: Sequence[ChatMessage], kwargs: dict[str, Any]) -> ChatMessage:
        answered = any(m.role.value == "tool" for m in messages)
        if self.tool_call is not None and kwargs.get("tools") and not answered:
            block = ToolCallBlock(
                tool_call_id=f"call_{self.calls}",
                tool_name=self.tool_call["name"],
                tool_kwargs=self.tool_call["args"],
            )
            return ChatMessage(role="assistant", blocks=[TextBlock(text=""), block])
        return ChatMessage(role="assistant", content=text)

    def _words(self, text: str) -> list[str]:
        words = text.split(" ")
        return [w if i == 0 else " " + w for i, w in enumerate(words)]

    # -- chat --
    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        text = self._next({**kwargs, "history": [m.content for m in messages]})
        return ChatResponse(message=self._message(text, messages, kwargs), raw=self._raw())

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        text = self._next({**kwargs, "history": [m.content for m in messages]})
        return ChatResponse(message=self._message(text, messages, kwargs), raw=self._raw())

    def _chat_chunks(
        self, text: str, messages: Sequence[ChatMessage], kwargs: dict[str, Any]
    ) -> list[ChatResponse]:
        message = self._message(text, messages, kwargs)
        if message.content == "":
            return [ChatResponse(message=message, delta="", raw=self._raw())]
        words = self._words(text)
        out = []
        so_far = ""
        for i, word in enumerate(words):
            so_far += word
            last = i == len(words) - 1
            out.append(
                ChatResponse(
                    message=ChatMessage(role="assistant", content=so_far),
                    delta=word,
                    raw=self._raw() if last else None,
                )
            )
        return out

    def _checked(self, chunks: list[Any]) -> Iterator[Any]:
        for i, chunk in enumerate(chunks):
            if self.fail_after is not None and i == self.fail_after:
                raise RateLimitError("connection reset mid-stream")
            yield chunk
        self.finished += 1

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        chunks = self._chat_chunks(
            self._next({**kwargs, "history": [m.content for m in messages]}), messages, kwargs
        )
        return (c for c in self._checked(chunks))

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        chunks = self._chat_chunks(
            self._next({**kwargs, "history": [m.content for m in messages]}), messages, kwargs
        )

        async def gen() -> ChatResponseAsyncGen:
            for c in self._checked(chunks):
                yield c

        return gen()

    # -- complete --
    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return CompletionResponse(text=self._next({**kwargs, "prompt": prompt}), raw=self._raw())

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return CompletionResponse(text=self._next({**kwargs, "prompt": prompt}), raw=self._raw())

    def _completion_chunks(self, text: str) -> list[CompletionResponse]:
        words = self._words(text)
        out = []
        so_far = ""
        for i, word in enumerate(words):
            so_far += word
            out.append(
                CompletionResponse(text=so_far, delta=word, raw=self._raw() if i == len(words) - 1 else None)
            )
        return out

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        chunks = self._completion_chunks(self._next({**kwargs, "prompt": prompt}))
        return (c for c in self._checked(chunks))

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        chunks = self._completion_chunks(self._next({**kwargs, "prompt": prompt}))

        async def gen() -> CompletionResponseAsyncGen:
            for c in self._checked(chunks):
                yield c

        return gen()

    # -- function calling --
    def _prepare_chat_with_tools(
        self,
        tools: Sequence[Any],
        user_msg: str | ChatMessage | None = None,
        chat_history: list[ChatMessage] | None = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        **kwargs: Any,
    ) -> dict[str, Any]:
        messages = list(chat_history or [])
        if isinstance(user_msg, str):
            messages.append(ChatMessage(role="user", content=user_msg))
        elif user_msg is not None:
            messages.append(user_msg)
        return {"messages": messages, "tools": [t.metadata.name for t in tools], **kwargs}

    def get_tool_calls_from_response(
        self, response: ChatResponse, error_on_no_tool_call: bool = True, **kwargs: Any
    ) -> list[ToolSelection]:
        calls = [
            ToolSelection(tool_id=b.tool_call_id or "", tool_name=b.tool_name, tool_kwargs=b.tool_kwargs)
            for b in response.message.blocks
            if isinstance(b, ToolCallBlock)
        ]
        if not calls and error_on_no_tool_call:
            raise ValueError("no tool call")
        return calls


def cheap(*answers: str, **kwargs: Any) -> Tier:
    kwargs.setdefault("model", "cheap-1")
    return Tier(answers=list(answers) or ["Paris."], **kwargs)


def strong(*answers: str, **kwargs: Any) -> Tier:
    kwargs.setdefault("prompt_tokens", 20)
    kwargs.setdefault("completion_tokens", 8)
    kwargs.setdefault("context_window", 128000)
    kwargs.setdefault("num_output", 400)
    kwargs.setdefault("model", "strong-1")
    return Tier(answers=list(answers) or ["Paris."], **kwargs)


def cascade(*tiers: Any, **kwargs: Any) -> CascadeLLM:
    kwargs.setdefault("prices", PRICES)
    return CascadeLLM(tiers=list(tiers), **kwargs)


def user(text: str) -> list[ChatMessage]:
    return [ChatMessage(role="user", content=text)]


def frugal(response: Any) -> dict[str, Any]:
    found: dict[str, Any] = response.additional_kwargs[FRUGAL_KEY][CASCADE]
    return found


def outcomes(response: Any) -> list[str]:
    return [a["outcome"] for a in frugal(response)["attempts"]]


DIGIT = RegexGate(r"\d")


class StreamSafeGate:
    """A gate that does not need the whole answer (none of the built-ins is one)."""

    name = "stream_safe"
    needs_full_answer = False

    def check(self, ctx: GateContext) -> GateResult:
        return GateResult(gate=self.name, passed=False, reason="never called on a live stream")

    async def acheck(self, ctx: GateContext) -> GateResult:
        return self.check(ctx)


@pytest.fixture
def settings() -> Iterator[Any]:
    saved = {f.name: getattr(Settings, f.name) for f in dataclasses.fields(Settings)}
    yield Settings
    for name, value in saved.items():
        setattr(Settings, name, value)


# -- construction ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"tiers": [Tier()]}, "tiers"),
        ({"tiers": []}, "tiers"),
        ({"tiers": "gpt-4o"}, "tiers"),
        ({"tiers": [Tier(), "gpt-4o"]}, "tiers"),
        ({"gates": ["no-such-gate"]}, "gates"),
        ({"gates": [42]}, "gates"),
        ({"thresholds": [1.5]}, "thresholds"),
        ({"thresholds": [0.2, 0.4]}, "thresholds"),
        ({"thresholds": [0.5], "policy": RoutingPolicy(thresholds=(0.5,))}, "thresholds"),
        ({"tier_names": ["only-one"]}, "tier_names"),
        ({"tier_names": ["same", "same"]}, "tier_names"),
        ({"scorer": "magic"}, "scorer"),
        ({"scorer": object()}, "scorer"),
        ({"stats": {}}, "stats"),
        ({"ledger": "ledger.db"}, "ledger"),
        ({"prices": 3}, "prices"),
        ({"escalate_on": "RateLimitError"}, "escalate_on"),
        ({"name": ""}, "name"),
    ],
)
def test_bad_input_names_the_field(kwargs: dict[str, Any], field: str) -> None:
    kwargs.setdefault("tiers", [cheap(), strong()])
    with pytest.raises(ConfigurationError) as e:
        CascadeLLM(**kwargs)
    assert e.value.field == field


def test_a_langchain_model_is_not_a_tier() -> None:
    from frugal_chains.testing import FakeUsageChatModel

    with pytest.raises(ConfigurationError, match="LlamaIndex LLM") as e:
        CascadeLLM(tiers=[cheap(), FakeUsageChatModel()])
    assert e.value.field == "tiers"


def test_names_metadata_and_payload() -> None:
    llm = cascade(cheap(), strong())
    assert llm.tier_names == ["cheap-1", "strong-1"]
    meta = llm.metadata
    assert meta.model_name == "cascade(cheap-1,strong-1)"
    assert (meta.context_window, meta.num_output) == (8000, 400)
    assert meta.is_chat_model and meta.is_function_calling_model
    payload = llm.to_payload()
    assert payload[WRAPPER_KEY] is True and payload["tiers"] == ["cheap-1", "strong-1"]
    # MockLLM is neither a chat nor a function-calling model; names from class names are made unique
    mixed = CascadeLLM(tiers=[MockLLM(), MockLLM(), strong()])
    assert mixed.tier_names == ["MockLLM", "MockLLM#2", "strong-1"]
    assert not mixed.metadata.is_chat_model and not mixed.metadata.is_function_calling_model


def test_serialized_config_names_each_tiers_model() -> None:
    one, other = cascade(cheap(), strong()).to_dict(), cascade(cheap(), strong(model="strong-2")).to_dict()
    assert [t["model"] for t in one["tiers"]] == ["cheap-1", "strong-1"]
    assert one != other  # e.g. a CachedLLM over each keeps their answers apart


def test_thresholds_and_stats_are_the_engines() -> None:
    stats = RouterStats()
    llm = cascade(cheap(), strong(), thresholds=[0.3], stats=stats, scorer="heuristic")
    assert llm.core.policy.thresholds == (0.3,) and llm.thresholds == (0.3,)
    assert llm.stats is stats and llm.core.stats is stats


# -- chat and complete -----------------------------------------------------------------------------------------
def test_a_failed_gate_escalates_and_the_response_carries_metadata_and_summed_usage() -> None:
    c, s = cheap("I am not sure."), strong("42")
    llm = cascade(c, s, gates=[DIGIT])
    response = llm.chat(user("What is 6 x 7?"))
    assert response.message.content == "42"
    assert (c.calls, s.calls) == (1, 1)
    meta = frugal(response)
    assert meta["tier"] == "strong-1" and meta["escalations"] == 1 and meta["start_tier"] == "cheap-1"
    assert outcomes(response) == ["escalated", "accepted"]
    assert meta["scores"]["gates"]["cheap-1"][0]["gate"] == "regex"
    assert meta["cost_usd"] == pytest.approx(CHEAP.cost(CHEAP_USAGE) + STRONG.cost(STRONG_USAGE))
    assert response.additional_kwargs[TIER_KEY] == "strong-1"
    total = CHEAP_USAGE + STRONG_USAGE
    assert usage_from_provider(response.raw["usage"]) == total
    assert response.raw["model"] == "strong-1"  # the tier's own raw dict is kept
    extra = response.additional_kwargs
    assert (extra["prompt_tokens"], extra["completion_tokens"], extra["total_tokens"]) == (30, 13, 43)


def test_passing_answer_stays_on_the_cheap_tier() -> None:
    c, s = cheap("It is 42."), strong("42")
    response = cascade(c, s, gates=[DIGIT]).chat(user("What is 6 x 7?"))
    assert response.message.content == "It is 42." and (c.calls, s.calls) == (1, 0)
    assert outcomes(response) == ["accepted"]
    assert usage_from_provider(response.raw["usage"]) == CHEAP_USAGE


async def test_async_chat_escalates_on_a_failed_gate() -> None:
    c, s = cheap("I am not sure."), strong("42")
    response = await cascade(c, s, gates=[DIGIT]).achat(user("What is 6 x 7?"))
    assert response.message.content == "42" and (c.calls, s.calls) == (1, 1)
    assert outcomes(response) == ["escalated", "accepted"]


def test_complete_goes_through_each_tiers_own_complete() -> None:
    c, s = cheap("no idea"), strong("Paris, 1 city")
    response = cascade(c, s, gates=[DIGIT]).complete(QUESTION, formatted=True, temperature=0)
    assert isinstance(response, CompletionResponse)
    assert response.text == "Paris, 1 city" and frugal(response)["tier"] == "strong-1"
    assert c.seen == [{"temperature": 0, "prompt": QUESTION}] == s.seen
    assert usage_from_provider(response.raw["usage"]) == CHEAP_USAGE + STRONG_USAGE


async def test_async_complete() -> None:
    c, s = cheap("no idea"), strong("Paris, 1 city")
    response = await cascade(c, s, gates=[DIGIT]).acomplete(QUESTION)
    assert response.text == "Paris, 1 city" and outcomes(response) == ["escalated", "accepted"]


def test_the_strongest_tiers_answer_is_not_gated() -> None:
    c, s = cheap("no"), strong("still no digits")
    response = cascade(c, s, gates=[DIGIT]).chat(user("6 x 7?"))
    assert response.message.content == "still no digits" and outcomes(response) == ["escalated", "accepted"]


def test_scorer_keeps_easy_requests_on_the_cheap_tier_and_sends_hard_ones_up() -> None:
    c, s = cheap("cheap answer"), strong("strong answer")
    hard = CallableScorer(lambda msgs: 0.9 if "prove" in msgs[-1]["content"] else 0.1, name="prove")
    llm = cascade(c, s, scorer=hard)
    easy = llm.chat(user("What is 2 + 2?"))
    assert easy.message.content == "cheap answer" and (c.calls, s.calls) == (1, 0)
    assert frugal(easy)["scores"]["scorer"] == 0.1
    proof = llm.chat(user("Please prove that there are infinitely many primes."))
    assert proof.message.content == "strong answer" and (c.calls, s.calls) == (1, 1)
    assert frugal(proof)["start_tier"] == "strong-1" and frugal(proof)["escalations"] == 0
    assert llm.stats.tier("strong-1").started == 1


async def test_async_scorer_routes_too() -> None:
    async def score(msgs: Sequence[Any]) -> float:
        return 0.95

    c, s = cheap(), strong("strong answer")
    response = await cascade(c, s, scorer=CallableScorer(score)).achat(user("hi"))
    assert response.message.content == "strong answer" and c.calls == 0


# -- provider errors ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("error", [RateLimitError("429 slow down"), TimeoutError("read timeout")])
def test_a_rate_limited_tier_escalates(error: Exception) -> None:
    c, s = cheap(error=error), strong("Paris.")
    response = cascade(c, s).chat(user(QUESTION))
    assert response.message.content == "Paris." and outcomes(response) == ["error", "accepted"]
    assert type(error).__name__ in frugal(response)["attempts"][0]["error"]


async def test_all_tiers_failing_raise_cascade_exhausted_with_every_attempt() -> None:
    llm = cascade(cheap(error=RateLimitError("429")), strong(error=TimeoutError("timeout")))
    with pytest.raises(CascadeExhaustedError) as e:
        llm.chat(user(QUESTION))
    assert [(a.tier, a.outcome, type(a.error).__name__) for a in e.value.attempts] == [
        ("cheap-1", "error", "RateLimitError"),
        ("strong-1", "error", "TimeoutError"),
    ]
    with pytest.raises(CascadeExhaustedError):
        await llm.acomplete(QUESTION)


def test_a_non_provider_error_propagates_at_once() -> None:
    c, s = cheap(error=KeyError("bug")), strong()
    with pytest.raises(KeyError):
        cascade(c, s).chat(user(QUESTION))
    assert s.calls == 0


def test_escalate_on_decides_which_errors_escalate() -> None:
    c, s = cheap(error=KeyError("flaky")), strong("Paris.")
    llm = cascade(c, s, escalate_on=lambda e: isinstance(e, KeyError))
    assert llm.chat(user(QUESTION)).message.content == "Paris."


# -- streaming -------------------------------------------------------------------------------------------------
def test_stream_without_full_answer_gates_is_live_from_the_chosen_tier() -> None:
    c, s = cheap("Paris is the capital."), strong("Strong.")
    llm = cascade(c, s, gates=[StreamSafeGate()])
    assert not llm.core.needs_full_answer
    stream = llm.stream_chat(user(QUESTION))
    first = next(stream)
    assert first.delta == "Paris" and c.finished == 0  # live: the cheap tier is still streaming
    rest = list(stream)
    *chunks, closing = [first, *rest]
    assert "".join(r.delta or "" for r in chunks) == "Paris is the capital."
    assert all(r.additional_kwargs[TIER_KEY] == "cheap-1" for r in chunks)
    assert closing.delta == "" and closing.message.content == "Paris is the capital."
    assert frugal(closing)["tier"] == "cheap-1" and outcomes(closing) == ["accepted"]
    assert usage_from_provider(closing.raw["usage"]) == CHEAP_USAGE
    assert s.calls == 0


def test_stream_with_a_full_answer_gate_buffers_the_cheap_tier_and_streams_the_strong_one() -> None:
    c, s = cheap("I am not sure."), strong("It is 42 .")
    stream = cascade(c, s, gates=[DIGIT]).stream_chat(user("6 x 7?"))
    first = next(stream)
    assert first.additional_kwargs[TIER_KEY] == "strong-1" and c.finished == 1 and s.finished == 0
    *chunks, closing = [first, *stream]
    assert "".join(r.delta or "" for r in chunks) == "It is 42 ."
    assert outcomes(closing) == ["escalated", "accepted"]
    assert usage_from_provider(closing.raw["usage"]) == CHEAP_USAGE + STRONG_USAGE


def test_a_buffered_answer_that_passes_is_replayed() -> None:
    c, s = cheap("It is 42 ."), strong()
    responses = list(cascade(c, s, gates=[DIGIT]).stream_complete("6 x 7?"))
    *chunks, closing = responses
    assert [r.delta for r in chunks] == ["It", " is", " 42", " ."]
    assert [r.text for r in chunks][-1] == "It is 42 ."
    assert closing.text == "It is 42 ." and frugal(closing)["tier"] == "cheap-1" and s.calls == 0


async def test_async_streams_live_and_buffered() -> None:
    c, s = cheap("Paris is the capital."), strong("It is 42 .")
    live = cascade(c, s)
    got = [r async for r in await live.astream_chat(user(QUESTION))]
    assert got[-1].message.content == "Paris is the capital." and frugal(got[-1])["tier"] == "cheap-1"

    c, s = cheap("I am not sure."), strong("It is 42 .")
    buffered = cascade(c, s, gates=[DIGIT])
    stream = await buffered.astream_complete("6 x 7?")
    first = await stream.__anext__()
    assert first.additional_kwargs[TIER_KEY] == "strong-1" and c.finished == 1
    rest = [r async for r in stream]
    assert rest[-1].text == "It is 42 ." and outcomes(rest[-1]) == ["escalated", "accepted"]
    assert "".join(r.delta or "" for r in [first, *rest]) == "It is 42 ."


def test_a_buffered_tier_failing_mid_stream_escalates() -> None:
    c, s = cheap("one two three", fail_after=1), strong("It is 42 .")
    responses = list(cascade(c, s, gates=[DIGIT]).stream_chat(user("6 x 7?")))
    assert responses[-1].message.content == "It is 42 ." and outcomes(responses[-1]) == ["error", "accepted"]
    assert all(r.additional_kwargs[TIER_KEY] == "strong-1" for r in responses)


def test_a_live_stream_failing_after_tokens_were_sent_raises() -> None:
    c, s = cheap("one two three", fail_after=1), strong()
    stream = cascade(c, s).stream_chat(user(QUESTION))
    assert next(stream).delta == "one"
    with pytest.raises(RateLimitError):
        next(stream)
    assert s.calls == 0


def test_a_live_stream_that_fails_before_any_token_escalates() -> None:
    c, s = cheap(error=RateLimitError("429")), strong("Paris.")
    responses = list(cascade(c, s).stream_chat(user(QUESTION)))
    assert responses[-1].message.content == "Paris." and outcomes(responses[-1]) == ["error", "accepted"]


async def test_async_streams_raise_cascade_exhausted() -> None:
    llm = cascade(cheap(error=RateLimitError("429")), strong(error=TimeoutError()))
    with pytest.raises(CascadeExhaustedError):
        async for _ in await llm.astream_chat(user(QUESTION)):
            pass


# -- self-consistency samples the same tier ------------------------------------------------------------------------
def test_self_consistency_samples_the_same_tier_and_counts_the_samples() -> None:
    c, s = cheap("#### 18", "#### 20", "#### 21"), strong("#### 18")
    gate = SelfConsistencyGate(n=3, min_agreement=0.67)
    response = cascade(c, s, gates=[gate]).chat(user("9 x 2?"))
    assert c.calls == 3 and s.calls == 1  # the answer + 2 samples, then the strong tier
    cheap_attempt = frugal(response)["attempts"][0]
    assert cheap_attempt["outcome"] == "escalated"
    assert cheap_attempt["cost_usd"] == pytest.approx(3 * CHEAP.cost(CHEAP_USAGE))


async def test_async_self_consistency_in_a_buffered_stream() -> None:
    c, s = cheap("#### 18"), strong("#### 99")
    gate = SelfConsistencyGate(n=3)
    got = [r async for r in await cascade(c, s, gates=[gate]).astream_chat(user("9 x 2?"))]
    assert got[-1].message.content == "#### 18" and c.calls == 3 and s.calls == 0
    assert frugal(got[-1])["attempts"][0]["cost_usd"] == pytest.approx(3 * CHEAP.cost(CHEAP_USAGE))


# -- structured output ---------------------------------------------------------------------------------------------
class Person(BaseModel):
    name: str
    age: int


PERSON_PROMPT = PromptTemplate("Extract the person from: {text}")
ADA = json.dumps({"name": "Ada", "age": 36})


def parsing(tier: Tier) -> Tier:
    tier.pydantic_program_mode = PydanticProgramMode.LLM  # parse the text answer (LLMTextCompletionProgram)
    return tier


@pytest.mark.parametrize("bad", ["not json at all", json.dumps({"name": "Ada", "age": "thirty-six"})])
def test_structured_predict_escalates_when_the_output_does_not_parse_or_validate(bad: str) -> None:
    ledger = SQLiteLedger(":memory:")
    c, s = parsing(cheap(bad)), parsing(strong(ADA))
    llm = cascade(c, s, ledger=ledger)
    person = llm.structured_predict(Person, PERSON_PROMPT, text="Ada Lovelace, 36")
    assert person == Person(name="Ada", age=36)
    assert (c.calls, s.calls) == (1, 1)
    (record,) = ledger.records()
    assert record.outcome == "routed" and record.tier == "strong-1"
    assert [a["outcome"] for a in record.extra["attempts"]] == ["escalated", "accepted"]
    assert record.extra["attempts"][0]["gate"] == "structured_output"
    # the usage of each tier's call was collected for the cost
    assert record.extra["cascade_cost_usd"] == pytest.approx(
        CHEAP.cost(CHEAP_USAGE) + STRONG.cost(STRONG_USAGE)
    )


def test_structured_predict_stays_on_the_cheap_tier_when_it_parses() -> None:
    c, s = parsing(cheap(ADA)), parsing(strong(ADA))
    assert cascade(c, s).structured_predict(Person, PERSON_PROMPT, text="Ada") == Person(name="Ada", age=36)
    assert (c.calls, s.calls) == (1, 0)


def test_structured_predict_raises_cascade_exhausted_when_the_last_tier_fails_to_parse() -> None:
    llm = cascade(parsing(cheap("nope")), parsing(strong("still nope")))
    with pytest.raises(CascadeExhaustedError) as e:
        llm.structured_predict(Person, PERSON_PROMPT, text="Ada")
    assert [a.outcome for a in e.value.attempts] == ["escalated", "exhausted"]
    assert "structured_output" in str(e.value)


def test_structured_predict_escalates_on_provider_errors_and_propagates_bugs() -> None:
    c, s = parsing(cheap(error=RateLimitError("429"))), parsing(strong(ADA))
    assert cascade(c, s).structured_predict(Person, PERSON_PROMPT, text="Ada").name == "Ada"
    c, s = parsing(cheap(error=KeyError("bug"))), parsing(strong(ADA))
    with pytest.raises(KeyError):
        cascade(c, s).structured_predict(Person, PERSON_PROMPT, text="Ada")
    assert s.calls == 0


async def test_async_structured_predict_and_its_streams() -> None:
    c, s = parsing(cheap("not json")), parsing(strong(ADA))
    llm = cascade(c, s)
    assert await llm.astructured_predict(Person, PERSON_PROMPT, text="Ada") == Person(name="Ada", age=36)
    assert (c.calls, s.calls) == (1, 1)
    streamed = [p async for p in await llm.astream_structured_predict(Person, PERSON_PROMPT, text="Ada")]
    assert streamed == [Person(name="Ada", age=36)]
    assert list(llm.stream_structured_predict(Person, PERSON_PROMPT, text="Ada")) == [
        Person(name="Ada", age=36)
    ]


def test_as_structured_llm_escalates_and_its_events_are_a_wrappers() -> None:
    handler = TokenBudgetHandler(prices=PRICES)  # unknown models raise: "cascade(...)" must never be priced
    manager = CallbackManager([handler])
    c, s = parsing(cheap("not json")), parsing(strong(ADA))
    structured = cascade(c, s, callback_manager=manager).as_structured_llm(Person)
    assert structured.to_payload()[WRAPPER_KEY] is True
    response = structured.chat(user("Ada Lovelace, 36"))
    assert response.raw == Person(name="Ada", age=36)
    assert [r.model for r in handler.ledger.records()] == ["cheap-1", "strong-1"]


# -- function calling ----------------------------------------------------------------------------------------------
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


ADD = FunctionTool.from_defaults(fn=add)


class NeedsToolCall:
    """Fails an answer that calls no tool."""

    name = "needs_tool_call"
    needs_full_answer = True

    def check(self, ctx: GateContext) -> GateResult:
        return GateResult(gate=self.name, passed=bool(ctx.answer.tool_calls))

    async def acheck(self, ctx: GateContext) -> GateResult:
        return self.check(ctx)


def test_predict_and_call_runs_each_tiers_chat_with_tools() -> None:
    c = cheap("I cannot use tools.")
    s = strong("done", tool_call={"name": "add", "args": {"a": 2, "b": 3}})
    llm = cascade(c, s, gates=[NeedsToolCall()])
    output = llm.predict_and_call([ADD], user_msg="What is 2 + 3?")
    assert output.response == "5"
    assert c.seen[0]["tools"] == ["add"] == s.seen[0]["tools"]
    assert c.seen[0]["history"] == ["What is 2 + 3?"] == s.seen[0]["history"]  # once each: a fresh history
    response = llm.chat_with_tools([ADD], user_msg="What is 2 + 3?")
    assert response.additional_kwargs[TIER_KEY] == "strong-1"
    (call,) = llm.get_tool_calls_from_response(response)
    assert (call.tool_name, call.tool_kwargs) == ("add", {"a": 2, "b": 3})


def test_tool_calls_reach_the_gates_and_unmarked_responses_are_still_read() -> None:
    seen: list[TierAnswer] = []

    class Spy(NeedsToolCall):
        def check(self, ctx: GateContext) -> GateResult:
            seen.append(ctx.answer)
            return super().check(ctx)

    c = cheap("x", tool_call={"name": "add", "args": {"a": 1, "b": 1}})
    llm = cascade(c, strong(), gates=[Spy()])
    response = llm.chat_with_tools([ADD], user_msg="1 + 1?")
    assert seen[0].tool_calls == ({"name": "add", "args": {"a": 1, "b": 1}, "id": "call_1"},)
    bare = ChatResponse(message=response.message)  # the tier mark was lost (e.g. rebuilt by an agent)
    assert [t.tool_name for t in llm.get_tool_calls_from_response(bare)] == ["add"]
    with pytest.raises(ValueError):
        llm.get_tool_calls_from_response(ChatResponse(message=ChatMessage(role="assistant", content="hi")))
    assert llm.get_tool_calls_from_response(ChatResponse(message=ChatMessage(content="hi")), False) == []


def test_tools_need_function_calling_tiers() -> None:
    llm = cascade(MockLLM(), strong())
    with pytest.raises(ConfigurationError) as e:
        llm.chat_with_tools([ADD], user_msg="2 + 3?")
    assert e.value.field == "tiers"


@pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecationWarning")  # raised in workflows
async def test_a_function_agent_runs_through_the_cascade() -> None:
    from llama_index.core.agent.workflow import FunctionAgent

    c = cheap("I am not sure.")
    s = strong("The sum is 5.", tool_call={"name": "add", "args": {"a": 2, "b": 3}})
    llm = cascade(c, s, gates=[NeedsToolCall()])
    agent = FunctionAgent(tools=[ADD], llm=llm, system_prompt="Use the tools.")
    result = await agent.run(user_msg="What is 2 + 3?")
    assert "5" in str(result)
    # turn 1: the cheap tier called no tool -> the strong tier called add; turn 2 (a tool result in the history):
    # the cheap tier's answer again calls no tool -> the strong tier answers
    assert (c.calls, s.calls) == (2, 2)


# -- budgets and Settings ------------------------------------------------------------------------------------------
def test_budget_handler_counts_each_provider_call_once() -> None:
    ledger = SQLiteLedger(":memory:")
    handler = TokenBudgetHandler([Budget(max_usd=1.0, scope="global")], ledger=ledger, prices=PRICES)
    manager = CallbackManager([handler])
    c, s = cheap("I am not sure."), strong("42")
    llm = cascade(c, s, gates=[DIGIT], callback_manager=manager, ledger=ledger)
    assert c.callback_manager is manager and s.callback_manager is manager
    with attribute(feature="qa"):
        response = llm.chat(user("6 x 7?"))
    spend = [r for r in ledger.records() if r.outcome == "ok"]
    assert [r.model for r in spend] == ["cheap-1", "strong-1"]  # the cascade's own event is not counted
    assert [r.tier for r in spend] == llm.tier_names  # each call recorded under its tier
    assert [r.usage for r in spend] == [CHEAP_USAGE, STRONG_USAGE]
    assert [r.cost_usd for r in spend] == pytest.approx([CHEAP.cost(CHEAP_USAGE), STRONG.cost(STRONG_USAGE)])
    assert all(r.attribution.feature == "qa" for r in spend)
    assert sum(r.cost_usd for r in spend) == pytest.approx(frugal(response)["cost_usd"])
    (routed,) = [r for r in ledger.records() if r.outcome == "routed"]
    assert routed.cost_usd == 0.0 and routed.attribution.feature == "qa"


@pytest.mark.parametrize("path", ["stream_chat", "stream_complete", "complete"])
def test_budget_handler_counts_once_on_every_sync_path(path: str) -> None:
    handler = TokenBudgetHandler(prices=PRICES)
    llm = cascade(cheap("no"), strong("42"), gates=[DIGIT], callback_manager=CallbackManager([handler]))
    if path == "stream_chat":
        list(llm.stream_chat(user("6 x 7?")))
    elif path == "stream_complete":
        list(llm.stream_complete("6 x 7?"))
    else:
        llm.complete("6 x 7?")
    records = handler.ledger.records()
    assert [(r.model, r.usage) for r in records] == [("cheap-1", CHEAP_USAGE), ("strong-1", STRONG_USAGE)]
    assert [r.tier for r in records] == llm.tier_names
    assert all(not r.usage_estimated for r in records)


async def test_budget_handler_counts_once_on_async_paths() -> None:
    handler = TokenBudgetHandler(prices=PRICES)
    llm = cascade(cheap("no"), strong("42"), gates=[DIGIT], callback_manager=CallbackManager([handler]))
    await llm.achat(user("6 x 7?"))
    async for _ in await llm.astream_complete("6 x 7?"):
        pass
    assert [r.model for r in handler.ledger.records()] == ["cheap-1", "strong-1"] * 2
    assert [r.tier for r in handler.ledger.records()] == llm.tier_names * 2


def test_a_new_callback_manager_reaches_every_tier() -> None:
    llm = cascade(cheap(), strong())
    manager = CallbackManager([])
    llm.callback_manager = manager
    assert all(t.callback_manager is manager for t in llm.tiers)


def test_tiers_sharing_a_manager_lend_it_to_the_cascade() -> None:
    manager = CallbackManager([])
    c, s = cheap(callback_manager=manager), strong(callback_manager=manager)
    assert cascade(c, s).callback_manager is manager


def test_settings_llm_and_a_query_engine(settings: Any) -> None:
    handler = TokenBudgetHandler(prices=PRICES)
    c, s = cheap("Paris is the capital."), strong("Paris.")
    Settings.llm = cascade(c, s, gates=["nonempty", "refusal"])
    Settings.embed_model = MockEmbedding(embed_dim=8)
    Settings.callback_manager = CallbackManager([handler])
    assert Settings.llm.complete("hello").text == "Paris is the capital."
    assert c.callback_manager is Settings.callback_manager is s.callback_manager
    docs = ["Paris is the capital of France.", "Rome is the capital of Italy."]
    engine = VectorStoreIndex.from_documents([Document(text=t) for t in docs]).as_query_engine(
        similarity_top_k=1
    )
    assert str(engine.query(QUESTION)) == "Paris is the capital."
    assert [r.model for r in handler.ledger.records()] == ["cheap-1", "cheap-1"]


def test_stats_are_shared_between_cascades() -> None:
    stats = RouterStats()
    for _ in range(2):
        cascade(cheap("no"), strong("1"), gates=[DIGIT], stats=stats).chat(user("?"))
    assert stats.tier("cheap-1").escalations == 2 and stats.tier("strong-1").accepted == 2


def test_cached_usage_survives_the_sum() -> None:
    c, s = cheap("no", cached_tokens=4), strong("1")
    response = cascade(c, s, gates=[DIGIT]).chat(user("?"))
    total = usage_from_provider(response.raw["usage"])
    assert total == Usage(input_tokens=30, output_tokens=13, cache_read_tokens=4)
