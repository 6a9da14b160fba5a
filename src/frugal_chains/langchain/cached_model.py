"""A chat model wrapper that caches invoke **and** stream answers (LangChain's own cache skips streaming).

``CachedChatModel(model=ChatOpenAI(...), cache=SemanticCache(...))`` (or ``with_cache(model, cache)``) looks the
conversation up before calling ``model``:

* **hit**: the cached answer is returned (``invoke``) or replayed as a few chunks (``stream``), marked
  ``response_metadata["frugal"]["cache"]["status"] == "hit"``; the model is not called.
* **refused** (an ``AnswerCache(tenant_required=True)`` and no tenant): the model is called, nothing is stored,
  and the answer is marked ``response_metadata["frugal"]["cache"] == {"status": "bypass", "reason": "no-tenant"}``.
* **miss**: the model is called as a *child run* of the wrapper (callbacks and budgets see it once; the wrapper's
  own run is marked as a wrapper and not counted), and its answer is stored. A streamed answer is stored only
  when the stream finished normally, never after an error or an early ``break``. A model with no native
  streaming (only ``_generate``) streams its whole answer as one chunk, stored the same way.

Usage is counted once per provider call: the wrapped model's run reports it, the wrapper's own run does not
(``get_usage_metadata_callback`` and tracers see a miss once, a hit not at all). The message the caller gets
has the miss's ``usage_metadata``; a hit has none (nothing was paid for it).

Entries are the same as :class:`~frugal_chains.langchain.SemanticCache`'s: a model with
``cache=SemanticCache(...)`` and a ``CachedChatModel`` around the same model share them.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import aclosing, closing
from typing import Any, cast

from langchain_core.caches import BaseCache
from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel, LangSmithParams, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, message_chunk_to_message
from langchain_core.messages.ai import UsageMetadata, add_usage
from langchain_core.messages.tool import ToolCallChunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult, Generation
from langchain_core.outputs.chat_generation import merge_chat_generation_chunks
from langchain_core.runnables import Runnable, RunnableBinding
from langchain_core.tools import BaseTool
from pydantic import ConfigDict, Field

from frugal_chains._deprecation import deprecated_attributes, old_metadata_keys
from frugal_chains.cache.core import AnswerCache, CacheResult
from frugal_chains.cache.keys import CacheRequest
from frugal_chains.cache.replay import StoredAnswer, arelay, relay, replay_pieces
from frugal_chains.errors import ConfigurationError
from frugal_chains.langchain._attribution import manager_attribution
from frugal_chains.langchain._runs import achild_callbacks, child_callbacks
from frugal_chains.langchain._streaming import (
    ChildRunStreamingModel,
    aopen_chunks,
    carry_usage,
    open_chunks,
    untraced,
)
from frugal_chains.langchain.cache import (
    SemanticCache,
    _core_of,
    _decode_generations,
    _encode_generations,
    _mark_hit,
    _request_from_messages,
)
from frugal_chains.metadata import WRAPPER_KEY, mark_cache_bypass
from frugal_chains.shared.question import QuestionKey, as_question_key

__all__ = ["CachedChatModel", "with_cache"]


def _replay(generation: Generation) -> list[ChatGenerationChunk]:
    """A cached answer as stream chunks: the text in a few pieces; tool calls, usage and metadata on the last."""
    message = (
        generation.message if isinstance(generation, ChatGeneration) else AIMessage(content=generation.text)
    )
    content = message.content
    pieces: list[Any] = replay_pieces(content) if isinstance(content, str) else [content]
    tool_calls: list[ToolCallChunk] = []
    if isinstance(message, AIMessage):
        for i, call in enumerate(message.tool_calls):
            tool_calls.append(
                ToolCallChunk(name=call["name"], args=json.dumps(call["args"]), id=call.get("id"), index=i)
            )
        for j, bad in enumerate(message.invalid_tool_calls, start=len(tool_calls)):
            tool_calls.append(
                ToolCallChunk(name=bad.get("name"), args=bad.get("args"), id=bad.get("id"), index=j)
            )
    chunks: list[ChatGenerationChunk] = []
    for i, piece in enumerate(pieces):
        last = i == len(pieces) - 1
        if not last:
            chunks.append(ChatGenerationChunk(message=AIMessageChunk(content=piece)))
            continue
        chunk_message = AIMessageChunk(
            content=piece,
            additional_kwargs=dict(message.additional_kwargs),
            response_metadata=dict(message.response_metadata),
            tool_call_chunks=tool_calls,
            usage_metadata=message.usage_metadata if isinstance(message, AIMessage) else None,
            chunk_position="last",
        )
        chunks.append(ChatGenerationChunk(message=chunk_message, generation_info=generation.generation_info))
    return chunks


def _whole(chunks: Sequence[ChatGenerationChunk]) -> list[Generation] | None:
    """The complete answer a finished stream gave, as a stored generation."""
    merged = merge_chat_generation_chunks(list(chunks))
    if merged is None:
        return None
    message = merged.message
    whole = message_chunk_to_message(message) if isinstance(message, AIMessageChunk) else message
    return [ChatGeneration(message=whole, generation_info=merged.generation_info)]


class WrapperChatModel(ChildRunStreamingModel):
    """Base of the wrappers around one chat model (``model``): LangChain sees the wrapped model's identity (its
    ``_llm_type``, parameters and LangSmith provider), and tools are bound the way the wrapped model binds them
    while every call still goes through the wrapper."""

    model: BaseChatModel

    @staticmethod
    def _checked_model(data: dict[str, Any]) -> BaseChatModel:
        """The ``model`` a wrapper is being built with, or a ConfigurationError naming the field."""
        inner = data.get("model")
        if not isinstance(inner, BaseChatModel):
            raise ConfigurationError(
                f"model must be a LangChain chat model (BaseChatModel), got {type(inner).__name__}",
                field="model",
            )
        return inner

    @property
    def _llm_type(self) -> str:
        return self.model._llm_type

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return dict(self.model._identifying_params)

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        return self.model._get_ls_params(stop=stop, **kwargs)

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools the way the wrapped model does (its ``bind_tools`` formats them); calls still go through
        this wrapper."""
        return bind_through(self, self.model, tools, tool_choice, kwargs)


class CachedChatModel(WrapperChatModel):
    """Wraps a chat model with a semantic answer cache, for ``invoke``, ``batch`` **and** ``stream``.

    Args:
        model: the chat model to call on a miss.
        cache: a :class:`~frugal_chains.langchain.SemanticCache` or an
            :class:`~frugal_chains.cache.AnswerCache` (kept in :attr:`answer_cache`; default: a new
            ``AnswerCache()`` with the offline MiniLM embedder). The wrapper's own LangChain ``cache`` field
            stays ``False``: the wrapper does its own lookups. Do not give the wrapped model the same cache
            (its ``cache=`` field, or ``set_llm_cache``): every call would be looked up and stored twice.
        question_key: a :class:`~frugal_chains.QuestionKey` selecting what is compared in a templated (RAG)
            prompt (:func:`~frugal_chains.langchain.question_key_from` builds one from your prompt template);
            default: the cache's.

    ``bind_tools`` and ``with_structured_output`` go through the wrapped model's ``bind_tools``; tool calls in
    cached answers round-trip. A hit costs nothing and is never refused by a budget; a miss is counted once, as
    the wrapped model's call. Give the cache the budgets' ledger to record each hit's saving.

    Example:
        >>> from frugal_chains.langchain.cached_model import CachedChatModel
        >>> from frugal_chains.cache import AnswerCache
        >>> from frugal_chains.testing import FakeUsageChatModel
        >>> from frugal_chains.testing.fake_embeddings import HashEmbeddings
        >>> inner = FakeUsageChatModel(responses=["Paris is the capital of France.", "(paid again)"])
        >>> model = CachedChatModel(model=inner, cache=AnswerCache(embedder=HashEmbeddings()))
        >>> model.invoke("What is the capital of France?").content
        'Paris is the capital of France.'
        >>> chunks = list(model.stream("what is the capital of france"))
        >>> "".join(c.content for c in chunks), chunks[-1].response_metadata["frugal"]["cache"]["status"]
        ('Paris is the capital of France.', 'hit')
    """

    model: BaseChatModel
    """The chat model called on a miss."""
    answer_cache: SemanticCache | AnswerCache = Field(default_factory=AnswerCache, exclude=True)
    """Where answers are looked up and stored (``cache=`` in the constructor)."""
    cache: BaseCache | bool | None = Field(default=False, exclude=True)
    """LangChain's own cache for this model: always ``False`` (the wrapper caches by itself)."""
    question_key: QuestionKey | None = Field(default=None, exclude=True)
    """What is compared in a templated (RAG) prompt; ``None``: the cache's own ``question_key``."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    def __init__(self, **data: Any) -> None:
        given = data.get("cache")
        if isinstance(given, (SemanticCache, AnswerCache)):
            if data.get("answer_cache") is not None:
                raise ConfigurationError("pass cache= or answer_cache=, not both", field="cache")
            data["answer_cache"] = given
        elif given not in (None, False):
            raise ConfigurationError(
                f"cache must be a SemanticCache or an AnswerCache, got {type(given).__name__}"
                " (CachedChatModel does not use LangChain's own cache)",
                field="cache",
            )
        data["cache"] = False
        if data.get("answer_cache", ...) is None:
            del data["answer_cache"]
        elif "answer_cache" in data:
            _core_of(data["answer_cache"])  # a wrong type raises ConfigurationError(field="cache")
        if data.get("question_key") is not None:
            data["question_key"] = as_question_key(data["question_key"])
        inner = WrapperChatModel._checked_model(data)
        mine = data.get("answer_cache")
        if isinstance(inner.cache, SemanticCache) and mine is not None and inner.cache.core is _core_of(mine):
            raise ConfigurationError(
                "the wrapped model already uses this cache (its cache= field): every call would be looked up and "
                "stored twice; drop one of the two",
                field="cache",
            )
        # Mark the wrapper's own run (local metadata: it does not reach the wrapped model's child runs).
        data["metadata"] = {**(data.get("metadata") or {}), WRAPPER_KEY: True}
        super().__init__(**data)

    @property
    def core(self) -> AnswerCache:
        """The framework-free cache underneath."""
        return _core_of(self.answer_cache)

    @property
    def selector(self) -> QuestionKey:
        """The :class:`~frugal_chains.QuestionKey` in use: ``question_key``, else the cache's."""
        return self.question_key if self.question_key is not None else self.core.question_key

    # -- lookups ---------------------------------------------------------------------------------------------
    def _llm_string(self, stop: list[str] | None, kwargs: dict[str, Any]) -> str:
        return self.model._get_llm_string(stop=stop, **kwargs)

    @staticmethod
    def _served(found: tuple[CacheResult, list[Generation] | None] | None) -> list[Generation] | None:
        """A hit's generations, marked. The wrapper's run reports no usage (a hit makes no provider call); the
        caller gets the stored answer's token counts, as LangChain's own cache does."""
        if found is None or not found[1]:
            return None
        return _carried(_mark_hit(found[1], found[0], chat=True))

    @staticmethod
    def _refused(generations: list[ChatGeneration], reason: str | None) -> list[ChatGeneration]:
        """The model's answer marked with why the cache refused the request (unchanged when it did not)."""
        if reason is None:
            return generations
        return [
            ChatGeneration(
                message=g.message.model_copy(
                    update={"response_metadata": mark_cache_bypass(g.message.response_metadata, reason)}
                ),
                generation_info=g.generation_info,
            )
            for g in generations
        ]

    @staticmethod
    def _stored(messages: list[BaseMessage], llm_string: str) -> Callable[[list[Any]], StoredAnswer | None]:
        """How a streamed answer that finished is stored: its chunks joined into one generation."""

        def stored(chunks: list[Any]) -> StoredAnswer | None:
            whole = _whole([ChatGenerationChunk(message=chunk) for chunk in chunks])
            return None if whole is None else _encode_generations(whole, llm_string, messages)

        return stored

    def _store(
        self,
        request: CacheRequest,
        messages: list[BaseMessage],
        generations: Sequence[Generation],
        llm_string: str,
    ) -> None:
        encoded = _encode_generations(generations, llm_string, messages)
        if encoded is not None:
            encoded.store(self.core, request)

    async def _astore(
        self,
        request: CacheRequest,
        messages: list[BaseMessage],
        generations: Sequence[Generation],
        llm_string: str,
    ) -> None:
        encoded = _encode_generations(generations, llm_string, messages)
        if encoded is not None:
            await encoded.astore(self.core, request)

    # -- invoke ----------------------------------------------------------------------------------------------
    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        llm_string = self._llm_string(stop, kwargs)
        with manager_attribution(
            run_manager
        ):  # the run's metadata: the hit's record and the tenant partition
            request = _request_from_messages(messages, llm_string, self.selector)
            served = self._served(self.core.lookup_decoded(request, decode=_decode_generations))
        if served is not None:
            return ChatResult(generations=cast("list[ChatGeneration]", served))
        result = self.model.generate([messages], stop=stop, callbacks=child_callbacks(run_manager), **kwargs)
        generations = cast("list[ChatGeneration]", result.generations[0])
        with manager_attribution(run_manager):
            self._store(request, messages, generations, llm_string)
        generations = self._refused(generations, self.core.skip_reason(request))
        return ChatResult(
            generations=cast("list[ChatGeneration]", _carried(generations)), llm_output=result.llm_output
        )

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        llm_string = self._llm_string(stop, kwargs)
        with manager_attribution(
            run_manager
        ):  # the run's metadata: the hit's record and the tenant partition
            request = _request_from_messages(messages, llm_string, self.selector)
            served = self._served(await self.core.alookup_decoded(request, decode=_decode_generations))
        if served is not None:
            return ChatResult(generations=cast("list[ChatGeneration]", served))
        result = await self.model.agenerate(
            [messages], stop=stop, callbacks=achild_callbacks(run_manager), **kwargs
        )
        generations = cast("list[ChatGeneration]", result.generations[0])
        with manager_attribution(run_manager):
            await self._astore(request, messages, generations, llm_string)
        generations = self._refused(generations, self.core.skip_reason(request))
        return ChatResult(
            generations=cast("list[ChatGeneration]", _carried(generations)), llm_output=result.llm_output
        )

    # -- stream ----------------------------------------------------------------------------------------------
    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        llm_string = self._llm_string(stop, kwargs)
        with manager_attribution(
            run_manager
        ):  # the run's metadata: the hit's record and the tenant partition
            request = _request_from_messages(messages, llm_string, self.selector)
            served = self._served(self.core.lookup_decoded(request, decode=_decode_generations))
        if served is not None:
            yield from _replay(served[0])
            return
        inner = open_chunks(
            self.model, messages, {"callbacks": child_callbacks(run_manager)}, stop=stop, **kwargs
        )
        out = _MissChunks(self.core.skip_reason(request))
        with closing(relay(self.core, request, inner, self._stored(messages, llm_string))) as relayed:
            for message in relayed:
                yield out.chunk(message)
        if out.usage:
            yield _usage_chunk(out.usage)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        llm_string = self._llm_string(stop, kwargs)
        with manager_attribution(
            run_manager
        ):  # the run's metadata: the hit's record and the tenant partition
            request = _request_from_messages(messages, llm_string, self.selector)
            served = self._served(await self.core.alookup_decoded(request, decode=_decode_generations))
        if served is not None:
            for chunk in _replay(served[0]):
                yield chunk
            return
        inner = aopen_chunks(
            self.model, messages, {"callbacks": achild_callbacks(run_manager)}, stop=stop, **kwargs
        )
        out = _MissChunks(self.core.skip_reason(request))
        async with aclosing(arelay(self.core, request, inner, self._stored(messages, llm_string))) as relayed:
            async for message in relayed:
                yield out.chunk(message)
        if out.usage:
            yield _usage_chunk(out.usage)


def bind_through(
    wrapper: BaseChatModel,
    inner: BaseChatModel,
    tools: Sequence[Any],
    tool_choice: str | None,
    kwargs: dict[str, Any],
) -> Runnable[LanguageModelInput, AIMessage]:
    """``wrapper`` bound with the tools as ``inner.bind_tools`` formats them (for wrappers that call ``inner`` with
    the call's kwargs: the cache and prefix-caching wrappers)."""
    if tool_choice is not None:
        kwargs["tool_choice"] = tool_choice
    bound = inner.bind_tools(tools, **kwargs)
    if not (isinstance(bound, RunnableBinding) and bound.bound is inner):
        raise NotImplementedError(
            f"{type(inner).__name__}.bind_tools does not return model.bind(...): wrap the tool-bound "
            "runnable's model instead"
        )
    rebound: Runnable[LanguageModelInput, AIMessage] = wrapper.bind(**bound.kwargs)
    if bound.config:
        rebound = rebound.with_config(bound.config)
    return rebound


def _carried(generations: Sequence[Generation]) -> list[Generation]:
    """Generations as the wrapper's run outputs them: no ``usage_metadata`` (a miss's was reported by the wrapped
    model's run, a hit paid nothing); the caller gets it back (see ``frugal_chains.langchain._streaming``)."""
    out: list[Generation] = []
    for g in generations:
        if not isinstance(g, ChatGeneration):
            out.append(g)
            continue
        usage = g.message.usage_metadata if isinstance(g.message, AIMessage) else None
        out.append(ChatGeneration(message=carry_usage(g.message, usage), generation_info=g.generation_info))
    return out


class _MissChunks:
    """The chunks of a streamed miss as the wrapper yields them: without usage (the wrapped model's run reported
    it; the total is summed here for the closing chunk), the first marked with why the cache refused the request
    when it did (``tenant_required`` and no tenant)."""

    def __init__(self, reason: str | None) -> None:
        self.reason = reason
        self.usage: UsageMetadata | None = None

    def chunk(self, message: AIMessageChunk) -> ChatGenerationChunk:
        self.usage = _added(self.usage, message)
        if self.reason is not None:
            meta = mark_cache_bypass(message.response_metadata, self.reason)
            message = message.model_copy(update={"response_metadata": meta})
            self.reason = None  # the first chunk only
        return ChatGenerationChunk(message=untraced(message))


def _added(total: UsageMetadata | None, message: AIMessageChunk) -> UsageMetadata | None:
    usage = message.usage_metadata
    if not usage:
        return total
    return usage if total is None else add_usage(total, usage)


def _usage_chunk(usage: UsageMetadata) -> ChatGenerationChunk:
    """The closing chunk of a streamed miss: the usage the wrapped model's chunks carried, for the caller."""
    return ChatGenerationChunk(message=carry_usage(AIMessageChunk(content="", chunk_position="last"), usage))


def with_cache(
    model: BaseChatModel,
    cache: SemanticCache | AnswerCache | None = None,
    *,
    question_key: QuestionKey | None = None,
) -> CachedChatModel:
    """``model`` behind a semantic answer cache (see :class:`CachedChatModel`); ``question_key`` selects what is
    compared in a templated (RAG) prompt (default: the cache's).

    Example:
        >>> from frugal_chains.langchain.cache import SemanticCache
        >>> from frugal_chains.langchain.cached_model import with_cache
        >>> from frugal_chains.testing import FakeUsageChatModel
        >>> from frugal_chains.testing.fake_embeddings import HashEmbeddings
        >>> model = with_cache(FakeUsageChatModel(responses=["Yes."]), SemanticCache(embedder=HashEmbeddings()))
        >>> _ = model.invoke("Do you ship to Canada?")
        >>> model.invoke("Do you ship to Canada?").response_metadata["frugal"]["cache"]["status"]
        'hit'
    """
    if not isinstance(model, BaseChatModel):
        raise ConfigurationError(
            f"with_cache wraps a LangChain chat model (BaseChatModel), got {type(model).__name__}",
            field="model",
        )
    if cache is None:
        return CachedChatModel(model=model, question_key=question_key)
    return CachedChatModel(model=model, answer_cache=cache, question_key=question_key)


__getattr__ = deprecated_attributes(__name__, old_metadata_keys("WRAPPER_METADATA_KEY"))
