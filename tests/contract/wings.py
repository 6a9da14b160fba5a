"""The two wings behind one interface: scripted fake providers and a driver per framework.

A scenario speaks only framework-neutral terms: :class:`Script` (what a provider answers, what it raises, the
usage it reports, its logprobs), a ledger, budgets, an :class:`~frugal_chains.cache.AnswerCache`, a call mode.
A :class:`Wing` builds the framework's own objects from them (a cascade, a cache wrapper, a bare model, each with
the wing's ``TokenBudgetHandler`` attached the way a user attaches it) and runs one call through the real host
path, returning an :class:`Observation` that the tests compare with the same expected values for every wing.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import functools
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from frugal_chains import Budget, Price, SQLiteLedger
from frugal_chains.accounting.provider_usage import get_field, usage_from_provider
from frugal_chains.accounting.usage import CallRecord
from frugal_chains.cache import AnswerCache
from frugal_chains.metadata import FRUGAL_KEY
from frugal_chains.routing import QualityGate, RouterStats

MODES = ("invoke", "ainvoke", "stream", "astream")
"""The four call modes every scenario runs in."""

PRICES = {
    "cheap-1": Price(input=1.0, output=2.0),
    "strong-1": Price(input=10.0, output=30.0),
    "judge-1": Price(input=5.0, output=5.0),
}


def cost(model: str, input_tokens: int, output_tokens: int) -> float:
    price = PRICES[model]
    return (input_tokens * price.input + output_tokens * price.output) / 1_000_000


@dataclass(frozen=True)
class Script:
    """A fake provider: answers in turn (the last one repeats), or ``error()`` raised before the first token."""

    model: str
    answers: tuple[str, ...] = ("It is 42 .",)
    input_tokens: int = 10
    output_tokens: int = 5
    error: Callable[[], BaseException] | None = None
    logprobs: tuple[float, ...] | None = None
    """Natural-log token probabilities reported with every answer."""
    max_tokens: int | None = 256
    """The model's output cap (``max_tokens``); None: a model with no cap."""

    def answer(self, n: int) -> str:
        return self.answers[min(n, len(self.answers) - 1)]


def cheap(*answers: str, **kw: Any) -> Script:
    return Script("cheap-1", answers or ("It is 42 .",), **kw)


def strong(*answers: str, **kw: Any) -> Script:
    kw.setdefault("input_tokens", 20)
    kw.setdefault("output_tokens", 8)
    return Script("strong-1", answers or ("It is 42 .",), **kw)


def judge(*answers: str) -> Script:
    return Script("judge-1", answers or ("Rating: [[2]]",), input_tokens=30, output_tokens=3)


def pieces(text: str) -> list[str]:
    """How every fake provider streams ``text``: one word a chunk."""
    words = text.split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


@dataclass
class Observation:
    """What one call did, in framework-neutral terms."""

    text: str | None = None
    chunks: list[str] = field(default_factory=list)
    """Non-empty text pieces a stream showed, in order (empty for invoke modes)."""
    frugal: dict[str, Any] | None = None
    usage: tuple[int, int] | None = None
    """(input, output) tokens the answer reports (summed over the cascade's calls)."""
    error: BaseException | None = None
    calls: dict[str, int] = field(default_factory=dict)
    """Provider calls per model (counted when the fake is reached, failing calls included)."""
    records: list[tuple[Any, ...]] = field(default_factory=list)
    """The ledger's records: (outcome, model, tier, input tokens, output tokens, cost USD, saved USD); refused
    calls are apart, in ``refusals``."""
    probe: Any = None
    """What ``probe()`` returned after the first streamed chunk."""
    refusals: list[CallRecord] = field(default_factory=list)
    """The ``refused`` records the call wrote (a budget refused it)."""

    @property
    def outcomes(self) -> list[str]:
        return [a["outcome"] for a in (self.frugal or {})["cascade"]["attempts"]]

    @property
    def spend(self) -> list[tuple[Any, ...]]:
        return [r for r in self.records if r[0] == "ok"]

    @property
    def routed(self) -> list[Any]:
        return [r for r in self.records if r[0] == "routed"]


def record_row(r: CallRecord) -> tuple[Any, ...]:
    return (
        r.outcome,
        r.model,
        r.tier,
        r.usage.input_tokens,
        r.usage.output_tokens,
        None if r.cost_usd is None else round(r.cost_usd, 12),  # None: unknown (a model with no price)
        None if r.saved_usd is None else round(r.saved_usd, 12),
    )


def routed_extra(ledger: SQLiteLedger) -> list[dict[str, Any]]:
    """The ``extra`` of every ``routed`` record (tiers tried and why)."""
    return [dict(r.extra) for r in ledger.records() if r.outcome == "routed"]


@dataclass
class Target:
    """A built model of one wing and what the tests read back: the provider-call tally, the ledger, the stats."""

    wing: Wing
    model: Any
    handler: Any
    ledger: SQLiteLedger
    tally: collections.Counter[str]
    stats: RouterStats | None = None
    api: str = "chat"
    system: str | None = None
    """A system prompt sent before the question (chat calls)."""
    sent: list[Any] = field(default_factory=list)
    """What the provider received, one list of messages per call (targets built by :func:`prefixed`)."""

    def ask(
        self,
        mode: str,
        question: str = "What is 6 x 7?",
        *,
        stop_after: int | None = None,
        probe: Callable[[], Any] | None = None,
        around: Callable[[], Any] | None = None,
    ) -> Observation:
        """One call in ``mode``; a stream is consumed to its end (or closed after ``stop_after`` chunks), and
        ``probe()`` runs after its first chunk. ``around()`` is a context manager entered around the call."""
        before = len(self.ledger.records())
        obs = Observation()
        try:
            if around is not None:
                with around():
                    self.wing.call(self, mode, question, obs, stop_after, probe)
            else:
                self.wing.call(self, mode, question, obs, stop_after, probe)
        except Exception as e:
            obs.error = e
        obs.calls = dict(self.tally)
        new = self.ledger.records()[before:]
        obs.records = [record_row(r) for r in new if r.outcome != "refused"]
        obs.refusals = [r for r in new if r.outcome == "refused"]
        return obs

    def tier_stats(self) -> dict[str, tuple[int, int, int, int]]:
        """(attempts, escalations, errors, accepted) per tier."""
        assert self.stats is not None
        return {
            name: (s.attempts, s.escalations, s.errors, s.accepted)
            for name, s in self.stats.snapshot().items()
        }


class Wing:
    """One framework: builds its objects from scripts and runs calls through its host path."""

    name: str
    api: str = "chat"

    def cascade(
        self,
        tiers: Sequence[Script],
        *,
        gates: Sequence[QualityGate | Callable[[Any], QualityGate]] = (),
        budgets: Sequence[Budget] = (),
        judge: Script | None = None,
    ) -> Target:
        """A cascade over ``tiers``; a gate given as a function gets the wing's judge model (``judge``)."""
        raise NotImplementedError

    def cached(self, script: Script, cache: AnswerCache, *, budgets: Sequence[Budget] = ()) -> Target:
        raise NotImplementedError

    def plain(self, script: Script, *, budgets: Sequence[Budget] = ()) -> Target:
        raise NotImplementedError

    def call(
        self,
        target: Target,
        mode: str,
        question: str,
        obs: Observation,
        stop_after: int | None,
        probe: Callable[[], Any] | None,
    ) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        return self.name


def _stream_into(
    obs: Observation,
    items: Iterator[Any],
    text_of: Callable[[Any], str],
    stop_after: int | None,
    probe: Callable[[], Any] | None,
) -> list[Any]:
    seen: list[Any] = []
    try:
        for item in items:
            seen.append(item)
            piece = text_of(item)
            if piece:
                obs.chunks.append(piece)
            if len(seen) == 1 and probe is not None:
                obs.probe = probe()
            if stop_after is not None and len(seen) >= stop_after:
                break
    finally:
        close = getattr(items, "close", None)
        if close is not None:
            close()
    return seen


async def _astream_into(
    obs: Observation,
    items: AsyncIterator[Any],
    text_of: Callable[[Any], str],
    stop_after: int | None,
    probe: Callable[[], Any] | None,
) -> list[Any]:
    seen: list[Any] = []
    try:
        async for item in items:
            seen.append(item)
            piece = text_of(item)
            if piece:
                obs.chunks.append(piece)
            if len(seen) == 1 and probe is not None:
                obs.probe = probe()
            if stop_after is not None and len(seen) >= stop_after:
                break
    finally:
        close = getattr(items, "aclose", None)
        if close is not None:
            await close()
    return seen


# -- LangChain ----------------------------------------------------------------------------------------------------
class LangChainWing(Wing):
    """``CascadeChatModel`` / ``CachedChatModel`` / a bare chat model; ``invoke``/``ainvoke``/``stream``/``astream``
    with ``config={"callbacks": [TokenBudgetHandler]}``."""

    name = "langchain"

    def _fake(self, script: Script, tally: collections.Counter[str]) -> Any:
        return _lc_fake_class()(model=script.model, script=script, tally=tally, max_tokens=script.max_tokens)

    def _handler(self, budgets: Sequence[Budget], ledger: SQLiteLedger) -> Any:
        from frugal_chains.langchain import TokenBudgetHandler

        return TokenBudgetHandler(list(budgets), ledger=ledger, **{"prices": PRICES, **HANDLER_OPTIONS.get()})

    def cascade(self, tiers, *, gates=(), budgets=(), judge=None):  # type: ignore[no-untyped-def]
        from frugal_chains.langchain import CascadeChatModel

        ledger, tally, stats = SQLiteLedger(), collections.Counter[str](), RouterStats()
        judge_model = self._fake(judge, tally) if judge is not None else None
        built = [g(judge_model) if not isinstance(g, QualityGate) else g for g in gates]
        model = CascadeChatModel(
            tiers=[self._fake(s, tally) for s in tiers],
            gates=built,
            stats=stats,
            ledger=ledger,
            prices=PRICES,
        )
        return Target(self, model, self._handler(budgets, ledger), ledger, tally, stats)

    def cached(self, script, cache, *, budgets=()):  # type: ignore[no-untyped-def]
        from frugal_chains.langchain import CachedChatModel

        ledger = cache.ledger if cache.ledger is not None else SQLiteLedger()
        tally = collections.Counter[str]()
        model = CachedChatModel(model=self._fake(script, tally), cache=cache)
        return Target(self, model, self._handler(budgets, ledger), ledger, tally)

    def plain(self, script, *, budgets=()):  # type: ignore[no-untyped-def]
        ledger, tally = SQLiteLedger(), collections.Counter[str]()
        return Target(self, self._fake(script, tally), self._handler(budgets, ledger), ledger, tally)

    def call(self, target, mode, question, obs, stop_after, probe):  # type: ignore[no-untyped-def]
        model, config = target.model, {"callbacks": [target.handler]}
        if target.system is not None:
            question = [("system", target.system), ("human", question)]
        if mode == "invoke":
            self._whole(obs, model.invoke(question, config=config))
        elif mode == "ainvoke":
            self._whole(obs, asyncio.run(model.ainvoke(question, config=config)))
        elif mode == "stream":
            seen = _stream_into(obs, model.stream(question, config=config), _lc_text, stop_after, probe)
            self._streamed(obs, seen)
        elif mode == "astream":

            async def run() -> list[Any]:
                return await _astream_into(
                    obs, model.astream(question, config=config), _lc_text, stop_after, probe
                )

            self._streamed(obs, asyncio.run(run()))
        else:  # pragma: no cover
            raise ValueError(mode)

    @staticmethod
    def _whole(obs: Observation, message: Any) -> None:
        obs.text = message.text
        obs.frugal = message.response_metadata.get(FRUGAL_KEY)
        um = message.usage_metadata
        obs.usage = (um["input_tokens"], um["output_tokens"]) if um else None

    @staticmethod
    def _streamed(obs: Observation, chunks: list[Any]) -> None:
        obs.text = "".join(_lc_text(c) for c in chunks)
        for c in chunks:
            if FRUGAL_KEY in c.response_metadata:
                obs.frugal = c.response_metadata[FRUGAL_KEY]
        usages = [c.usage_metadata for c in chunks if c.usage_metadata]
        if usages:
            obs.usage = (sum(u["input_tokens"] for u in usages), sum(u["output_tokens"] for u in usages))


def _lc_text(chunk: Any) -> str:
    return str(chunk.content) if isinstance(chunk.content, str) else chunk.text


_LC_FAKE: Any = None


def _lc_fake_class() -> Any:
    """The LangChain fake provider (built on first use: the class imports langchain_core)."""
    global _LC_FAKE
    if _LC_FAKE is not None:
        return _LC_FAKE
    from langchain_core.messages import AIMessage
    from langchain_core.messages.ai import UsageMetadata
    from pydantic import Field

    from frugal_chains.testing import FakeUsageChatModel

    class ScriptedChatModel(FakeUsageChatModel):
        """``FakeUsageChatModel`` answering from a :class:`Script` (fixed usage, logprobs, errors)."""

        script: Any = Field(exclude=True)
        tally: Any = Field(exclude=True)

        def _answer(self, messages: Any, **kwargs: Any) -> AIMessage:
            s: Script = self.script
            n = self.tally[s.model]
            self.tally[s.model] += 1
            if s.error is not None:
                raise s.error()
            meta: dict[str, Any] = {
                "model_name": s.model,
                "model_provider": "openai",
                "finish_reason": "stop",
            }
            if s.logprobs is not None:
                meta["logprobs"] = {"content": [{"token": "t", "logprob": lp} for lp in s.logprobs]}
            return AIMessage(
                content=s.answer(n),
                usage_metadata=UsageMetadata(
                    input_tokens=s.input_tokens,
                    output_tokens=s.output_tokens,
                    total_tokens=s.input_tokens + s.output_tokens,
                ),
                response_metadata=meta,
            )

    _LC_FAKE = ScriptedChatModel
    return _LC_FAKE


# -- LlamaIndex -----------------------------------------------------------------------------------------------
class LlamaIndexWing(Wing):
    """``CascadeLLM`` / ``CachedLLM`` / a bare LLM with ``CallbackManager([TokenBudgetHandler])``; the four modes are
    ``chat``/``achat``/``stream_chat``/``astream_chat``, or (``api="complete"``) ``complete``/``acomplete``/
    ``stream_complete``/``astream_complete``."""

    def __init__(self, api: str = "chat") -> None:
        self.api = api
        self.name = f"llama_index-{api}"

    def _manager(self, budgets: Sequence[Budget], ledger: SQLiteLedger) -> tuple[Any, Any]:
        from llama_index.core.callbacks import CallbackManager

        from frugal_chains.llama_index import TokenBudgetHandler

        handler = TokenBudgetHandler(
            list(budgets), ledger=ledger, **{"prices": PRICES, **HANDLER_OPTIONS.get()}
        )
        return handler, CallbackManager([handler])

    def _fake(self, script: Script, tally: collections.Counter[str], manager: Any) -> Any:
        return _li_fake_class()(
            script=script, tally=tally, callback_manager=manager, max_tokens=script.max_tokens
        )

    def cascade(self, tiers, *, gates=(), budgets=(), judge=None):  # type: ignore[no-untyped-def]
        from frugal_chains.llama_index import CascadeLLM

        ledger, tally, stats = SQLiteLedger(), collections.Counter[str](), RouterStats()
        handler, manager = self._manager(budgets, ledger)
        judge_model = self._fake(judge, tally, manager) if judge is not None else None
        built = [g(judge_model) if not isinstance(g, QualityGate) else g for g in gates]
        model = CascadeLLM(
            tiers=[self._fake(s, tally, manager) for s in tiers],
            gates=built,
            stats=stats,
            ledger=ledger,
            prices=PRICES,
            callback_manager=manager,
        )
        return Target(self, model, handler, ledger, tally, stats, api=self.api)

    def cached(self, script, cache, *, budgets=()):  # type: ignore[no-untyped-def]
        from frugal_chains.llama_index import CachedLLM

        ledger = cache.ledger if cache.ledger is not None else SQLiteLedger()
        tally = collections.Counter[str]()
        handler, manager = self._manager(budgets, ledger)
        model = CachedLLM(llm=self._fake(script, tally, manager), cache=cache, callback_manager=manager)
        return Target(self, model, handler, ledger, tally, api=self.api)

    def plain(self, script, *, budgets=()):  # type: ignore[no-untyped-def]
        ledger, tally = SQLiteLedger(), collections.Counter[str]()
        handler, manager = self._manager(budgets, ledger)
        return Target(self, self._fake(script, tally, manager), handler, ledger, tally, api=self.api)

    def call(self, target, mode, question, obs, stop_after, probe):  # type: ignore[no-untyped-def]
        from llama_index.core.base.llms.types import ChatMessage

        llm = target.model
        chat = self.api == "chat"
        messages = [ChatMessage(role="user", content=question)]
        if target.system is not None:
            messages.insert(0, ChatMessage(role="system", content=target.system))
        if mode == "invoke":
            self._whole(obs, llm.chat(messages) if chat else llm.complete(question))
        elif mode == "ainvoke":
            self._whole(obs, asyncio.run(llm.achat(messages) if chat else llm.acomplete(question)))
        elif mode == "stream":
            gen = llm.stream_chat(messages) if chat else llm.stream_complete(question)
            self._streamed(obs, _stream_into(obs, gen, _li_delta, stop_after, probe))
        elif mode == "astream":

            async def run() -> list[Any]:
                gen = await (llm.astream_chat(messages) if chat else llm.astream_complete(question))
                return await _astream_into(obs, gen, _li_delta, stop_after, probe)

            self._streamed(obs, asyncio.run(run()))
        else:  # pragma: no cover
            raise ValueError(mode)

    @staticmethod
    def _usage(response: Any) -> tuple[int, int] | None:
        usage = usage_from_provider(get_field(get_field(response, "raw"), "usage"))
        return None if usage is None else (usage.input_tokens, usage.output_tokens)

    def _whole(self, obs: Observation, response: Any) -> None:
        obs.text = response.message.content if hasattr(response, "message") else response.text
        obs.frugal = response.additional_kwargs.get(FRUGAL_KEY)
        obs.usage = self._usage(response)

    def _streamed(self, obs: Observation, responses: list[Any]) -> None:
        obs.text = "".join(_li_delta(r) for r in responses)
        if responses:
            last = responses[-1]
            obs.frugal = last.additional_kwargs.get(FRUGAL_KEY)
            obs.usage = self._usage(last)


def _li_delta(response: Any) -> str:
    return response.delta or ""


_LI_FAKE: Any = None


def _li_fake_class() -> Any:
    """The LlamaIndex fake provider: native sync, async and streaming chat and completion, OpenAI-style usage in
    ``raw`` (on the last chunk of a stream), logprobs, errors raised when the request is made (a stream's: on its
    first ``next``, like the HTTP integrations)."""
    global _LI_FAKE
    if _LI_FAKE is not None:
        return _LI_FAKE
    from llama_index.core.base.llms.types import (
        ChatMessage,
        ChatResponse,
        CompletionResponse,
        LLMMetadata,
        LogProb,
    )
    from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
    from llama_index.core.llms.llm import LLM
    from pydantic import Field

    class ScriptedLLM(LLM):
        script: Any = Field(exclude=True)
        tally: Any = Field(exclude=True)
        max_tokens: int | None = 256

        @classmethod
        def class_name(cls) -> str:
            return "ScriptedLLM"

        @property
        def metadata(self) -> LLMMetadata:
            return LLMMetadata(
                model_name=self.script.model, context_window=8000, num_output=256, is_chat_model=True
            )

        def _next(self) -> str:
            s: Script = self.script
            n = self.tally[s.model]
            self.tally[s.model] += 1
            if s.error is not None:
                raise s.error()
            return s.answer(n)

        def _raw(self) -> dict[str, Any]:
            s: Script = self.script
            return {
                "model": s.model,
                "usage": {
                    "prompt_tokens": s.input_tokens,
                    "completion_tokens": s.output_tokens,
                    "total_tokens": s.input_tokens + s.output_tokens,
                },
            }

        def _logprobs(self) -> list[list[LogProb]] | None:
            lps = self.script.logprobs
            return None if lps is None else [[LogProb(token="t", logprob=lp, bytes=[])] for lp in lps]

        def _chat_chunks(self, text: str) -> Iterator[ChatResponse]:
            so_far = ""
            words = pieces(text)
            for i, word in enumerate(words):
                so_far += word
                last = i == len(words) - 1
                yield ChatResponse(
                    message=ChatMessage(role="assistant", content=so_far),
                    delta=word,
                    raw=self._raw() if last else None,
                    logprobs=self._logprobs() if last else None,
                )

        def _completion_chunks(self, text: str) -> Iterator[CompletionResponse]:
            so_far = ""
            words = pieces(text)
            for i, word in enumerate(words):
                so_far += word
                last = i == len(words) - 1
                yield CompletionResponse(
                    text=so_far,
                    delta=word,
                    raw=self._raw() if last else None,
                    logprobs=self._logprobs() if last else None,
                )

        @llm_chat_callback()
        def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
            text = self._next()
            return ChatResponse(
                message=ChatMessage(role="assistant", content=text),
                raw=self._raw(),
                logprobs=self._logprobs(),
            )

        @llm_chat_callback()
        async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
            text = self._next()
            return ChatResponse(
                message=ChatMessage(role="assistant", content=text),
                raw=self._raw(),
                logprobs=self._logprobs(),
            )

        @llm_chat_callback()
        def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> Any:
            def gen() -> Iterator[ChatResponse]:
                yield from self._chat_chunks(self._next())

            return gen()

        @llm_chat_callback()
        async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> Any:
            async def gen() -> AsyncIterator[ChatResponse]:
                for r in self._chat_chunks(self._next()):
                    yield r

            return gen()

        @llm_completion_callback()
        def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
            return CompletionResponse(text=self._next(), raw=self._raw(), logprobs=self._logprobs())

        @llm_completion_callback()
        async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
            return CompletionResponse(text=self._next(), raw=self._raw(), logprobs=self._logprobs())

        @llm_completion_callback()
        def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> Any:
            def gen() -> Iterator[CompletionResponse]:
                yield from self._completion_chunks(self._next())

            return gen()

        @llm_completion_callback()
        async def astream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> Any:
            async def gen() -> AsyncIterator[CompletionResponse]:
                for r in self._completion_chunks(self._next()):
                    yield r

            return gen()

    _LI_FAKE = ScriptedLLM
    return _LI_FAKE


WINGS: list[Wing] = [LangChainWing(), LlamaIndexWing("chat"), LlamaIndexWing("complete")]

__all__ = [
    "MODES",
    "PRICES",
    "WINGS",
    "LangChainWing",
    "LlamaIndexWing",
    "Observation",
    "Script",
    "Target",
    "Wing",
    "cheap",
    "cost",
    "judge",
    "pieces",
    "prefixed",
    "routed_extra",
    "strong",
    "without_streaming",
]


# -- tiers with no native streaming ---------------------------------------------------------------------------------
def without_streaming(wing: Wing) -> Wing:
    """``wing`` whose fake providers cannot stream: LangChain, a chat model with only ``_generate`` (its ``stream``
    yields one whole ``AIMessage``); LlamaIndex, an LLM whose streaming methods raise ``NotImplementedError`` (the
    sync ones when called, the async ones on the stream's first ``next``, as ``CustomLLM``'s do)."""
    if isinstance(wing, LangChainWing):
        return _NoStreamingLangChainWing()
    assert isinstance(wing, LlamaIndexWing)
    return _NoStreamingLlamaIndexWing(wing.api)


class _NoStreamingLangChainWing(LangChainWing):
    def _fake(self, script: Script, tally: collections.Counter[str]) -> Any:
        return _lc_generate_only_class()(model=script.model, script=script, tally=tally)


class _NoStreamingLlamaIndexWing(LlamaIndexWing):
    def _fake(self, script: Script, tally: collections.Counter[str], manager: Any) -> Any:
        return _li_no_streaming_class()(script=script, tally=tally, callback_manager=manager)


@functools.cache
def _lc_generate_only_class() -> Any:
    from langchain_core.language_models import BaseChatModel
    from langchain_core.outputs import ChatGeneration, ChatResult
    from pydantic import Field

    scripted = _lc_fake_class()

    class GenerateOnlyChatModel(BaseChatModel):
        """A chat model implementing ``_generate`` only (no ``_stream``, no ``_agenerate``)."""

        model: str
        script: Any = Field(exclude=True)
        tally: Any = Field(exclude=True)

        @property
        def _llm_type(self) -> str:
            return "generate-only"

        def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any) -> Any:
            answer = scripted._answer(self, messages)  # the scripted answer, usage and errors
            return ChatResult(generations=[ChatGeneration(message=answer)])

    return GenerateOnlyChatModel


@functools.cache
def _li_no_streaming_class() -> Any:
    from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback

    class NoStreamingLLM(_li_fake_class()):  # type: ignore[misc]
        @llm_chat_callback()
        def stream_chat(self, messages: Any, **kwargs: Any) -> Any:
            raise NotImplementedError("streaming is not supported")

        @llm_completion_callback()
        def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> Any:
            raise NotImplementedError("streaming is not supported")

        @llm_chat_callback()
        async def astream_chat(self, messages: Any, **kwargs: Any) -> Any:
            async def gen() -> AsyncIterator[Any]:
                raise NotImplementedError("streaming is not supported")
                yield  # an async generator

            return gen()

        @llm_completion_callback()
        async def astream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> Any:
            async def gen() -> AsyncIterator[Any]:
                raise NotImplementedError("streaming is not supported")
                yield

            return gen()

    return NoStreamingLLM


# -- budget handler options -----------------------------------------------------------------------------------------
HANDLER_OPTIONS: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "wings_handler_options", default=MappingProxyType({})
)
"""More ``TokenBudgetHandler`` options (``prices`` replaces the wings' own) for targets built inside
:func:`handler_options`."""


@contextlib.contextmanager
def handler_options(**options: Any) -> Iterator[None]:
    """Build the targets made inside the block with these budget handler options (both wings)."""
    token = HANDLER_OPTIONS.set(options)
    try:
        yield
    finally:
        HANDLER_OPTIONS.reset(token)


# -- prompt-prefix caching ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SentMessage:
    """A message as the provider received it, in neutral terms: its role, its text parts and, per part, whether a
    cache breakpoint closes it (``cache_control`` in LangChain, a ``CachePoint`` after it in LlamaIndex)."""

    role: str
    parts: tuple[str, ...]
    marks: tuple[bool, ...]

    @property
    def text(self) -> str:
        return "".join(self.parts)


def prefixed(
    wing: Wing, script: Script, *, system: str, budgets: Sequence[Budget] = (), **options: Any
) -> Target:
    """The wing's prefix-caching wrapper (``with_prefix_caching(fake, **options)``) over a fake provider, called
    with ``system`` before the question. ``target.sent`` lists what the provider received, one list per call."""
    tally = collections.Counter[str]()
    sent: list[list[SentMessage]] = []
    if isinstance(wing, LangChainWing):
        from langchain_core.callbacks import BaseCallbackHandler

        from frugal_chains.langchain import with_prefix_caching
        from frugal_chains.metadata import WRAPPER_KEY

        class LangChainRecorder(BaseCallbackHandler):
            def on_chat_model_start(self, serialized: Any, messages: Any, **kwargs: Any) -> None:
                if not (kwargs.get("metadata") or {}).get(WRAPPER_KEY):
                    sent.append([_lc_sent(m) for m in messages[0]])

        fake = wing._fake(script, tally)
        fake.callbacks = [LangChainRecorder()]
        ledger = SQLiteLedger()
        target = Target(
            wing, with_prefix_caching(fake, **options), wing._handler(budgets, ledger), ledger, tally
        )
    else:
        assert isinstance(wing, LlamaIndexWing)
        from llama_index.core.callbacks import CBEventType, EventPayload
        from llama_index.core.callbacks.base_handler import BaseCallbackHandler as LlamaIndexHandler

        from frugal_chains.llama_index import with_prefix_caching as li_with_prefix_caching
        from frugal_chains.metadata import WRAPPER_KEY

        class LlamaIndexRecorder(LlamaIndexHandler):
            def __init__(self) -> None:
                super().__init__([], [])

            def on_event_start(
                self,
                event_type: Any,
                payload: Any = None,
                event_id: str = "",
                parent_id: str = "",
                **kwargs: Any,
            ) -> str:
                serialized = (payload or {}).get(EventPayload.SERIALIZED) or {}
                messages = (payload or {}).get(EventPayload.MESSAGES)
                if event_type == CBEventType.LLM and messages is not None and not serialized.get(WRAPPER_KEY):
                    sent.append([_li_sent(m) for m in messages])
                return event_id

            def on_event_end(self, *args: Any, **kwargs: Any) -> None:
                pass

            def start_trace(self, trace_id: str | None = None) -> None:
                pass

            def end_trace(self, *args: Any, **kwargs: Any) -> None:
                pass

        ledger = SQLiteLedger()
        handler, manager = wing._manager(budgets, ledger)
        manager.add_handler(LlamaIndexRecorder())
        fake = wing._fake(script, tally, manager)
        target = Target(wing, li_with_prefix_caching(fake, **options), handler, ledger, tally, api=wing.api)
    target.system, target.sent = system, sent
    return target


def _lc_sent(message: Any) -> SentMessage:
    content = message.content
    if isinstance(content, str):
        return SentMessage(message.type, (content,), (False,))
    parts = [b if isinstance(b, str) else b.get("text", "") for b in content]
    marks = [isinstance(b, Mapping) and "cache_control" in b for b in content]
    return SentMessage(message.type, tuple(parts), tuple(marks))


def _li_sent(message: Any) -> SentMessage:
    role = {"user": "human", "assistant": "ai"}.get(str(message.role.value), str(message.role.value))
    parts: list[str] = []
    marks: list[bool] = []
    for block in message.blocks:
        if block.block_type == "cache":
            if marks:
                marks[-1] = True
        elif block.block_type == "text":
            parts.append(block.text)
            marks.append(False)
    return SentMessage(role, tuple(parts), tuple(marks))
