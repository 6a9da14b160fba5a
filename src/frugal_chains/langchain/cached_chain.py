"""A whole chain behind the semantic cache, looked up before it runs (before retrieval).

``cache_chain(rag_chain, cache=AnswerCache(...), question="question", version="kb-7")`` (or
:class:`CachedChain`) looks the chain's input up before calling the chain:

* **hit**: the cached output is returned (``invoke``/``batch``) or replayed in a few chunks (``stream``); the chain
  is not called at all: no retrieval, no embedding of the query, no model call. The cache records a ``cache_hit``
  in its ledger with what the miss's model calls cost.
* **miss**: the chain runs as a child run of the wrapper (callbacks and budgets see its calls as usual), the paid
  model calls of the run are tallied, and the output is stored with their summed cost. A streamed output is stored
  only when the stream finished normally.

The key: the question (an input key, a function of the inputs, or the whole input when it is a string) is
compared by meaning; the other inputs (or those named by ``exact``), ``version`` and ``name`` are exact. Outputs
are stored as JSON: strings as they are, LangChain objects (messages, ``Document``) through
``langchain_core.load`` (only core classes revive). An output that does not serialise is not stored.
"""

from __future__ import annotations

import functools
import json
import operator
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.callbacks.manager import AsyncCallbackManagerForChainRun, CallbackManagerForChainRun
from langchain_core.load import dumpd, load
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    BaseMessageChunk,
    message_chunk_to_message,
)
from langchain_core.outputs import LLMResult
from langchain_core.runnables import Runnable, RunnableConfig, RunnableSerializable
from langchain_core.runnables.config import patch_config
from pydantic import ConfigDict, Field

from frugal_chains.cache.core import AnswerCache
from frugal_chains.cache.keys import CacheRequest
from frugal_chains.cache.replay import replay_pieces
from frugal_chains.cache.spend import SpendTally
from frugal_chains.errors import ConfigurationError
from frugal_chains.langchain._attribution import run_attribution
from frugal_chains.langchain.budget import _model_and_provider, _usage_from_llm_output, is_wrapper_run
from frugal_chains.langchain.cache import SemanticCache, _core_of, _estimated_usage, _is_hit, _model_and_usage

__all__ = ["CachedChain", "cache_chain"]

_LOAD = getattr(load, "__wrapped__", load)  # without its one-time beta warning


# -- outputs as stored text --------------------------------------------------------------------------------------
def _unserialisable(value: Any) -> bool:
    if isinstance(value, Mapping):
        if value.get("lc") == 1 and value.get("type") == "not_implemented":
            return True
        return any(_unserialisable(v) for v in value.values())
    if isinstance(value, list):
        return any(_unserialisable(v) for v in value)
    return False


def _has_tuple(value: Any) -> bool:
    """A tuple inside plain containers: JSON would bring it back as a list (another type), so it is not stored."""
    if isinstance(value, tuple):
        return True
    if isinstance(value, Mapping):
        return any(_has_tuple(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_tuple(v) for v in value)
    return False


_NOTHING = object()


def _encode(output: Any) -> str | None:
    """The output as stored text; None when it does not serialise (it is then not cached)."""
    if output is _NOTHING or _has_tuple(output):
        return None
    if isinstance(output, str):
        return json.dumps({"text": output}, ensure_ascii=False)
    try:
        data = dumpd(output)
        if _unserialisable(data):
            return None
        return json.dumps({"lc": data}, ensure_ascii=False)
    except (TypeError, ValueError):
        return None


def _decode(text: str) -> Any:
    """Revive a stored output; raises on anything else (the core then deletes the entry)."""
    data = json.loads(text)
    if isinstance(data, dict) and isinstance(data.get("text"), str):
        return data["text"]
    if isinstance(data, dict) and "lc" in data:
        return _LOAD(data["lc"], allowed_objects="core")
    raise ValueError("not a cached chain output")


def _whole(chunks: Sequence[Any]) -> Any:
    """What a finished stream adds up to (str chunks joined, other chunks added as LangChain does); ``_NOTHING``
    when the chunks do not add up (then nothing is stored)."""
    if all(isinstance(c, str) for c in chunks):
        return "".join(chunks)
    try:
        whole = functools.reduce(operator.add, chunks)
    except TypeError:
        return _NOTHING
    return message_chunk_to_message(whole) if isinstance(whole, BaseMessageChunk) else whole


def _replay(output: Any) -> list[Any]:
    """A cached output as stream chunks: text (or a message's text) in a few pieces, anything else whole."""
    if isinstance(output, str):
        return list(replay_pieces(output))
    if isinstance(output, AIMessage) and isinstance(output.content, str) and not output.tool_calls:
        pieces = replay_pieces(output.content)
        chunks: list[Any] = [AIMessageChunk(content=p) for p in pieces[:-1]]
        chunks.append(
            AIMessageChunk(
                content=pieces[-1],
                additional_kwargs=dict(output.additional_kwargs),
                response_metadata=dict(output.response_metadata),
            )
        )
        return chunks
    return [output]


# -- the paid calls of a miss ------------------------------------------------------------------------------------
class _Tally(BaseCallbackHandler):
    """Tells a :class:`SpendTally` about each leaf model call of the chain's run (wrapper models' own runs and
    answers a cache served are not paid calls)."""

    run_inline = True
    raise_error = False

    def __init__(self, tally: SpendTally) -> None:
        self.tally = tally
        self._starts: dict[UUID, tuple[str, Any] | None] = {}

    def _start(
        self,
        run_id: UUID,
        serialized: Mapping[str, Any] | None,
        prompt: Any,
        metadata: Mapping[str, Any] | None,
        params: Mapping[str, Any] | None,
    ) -> None:
        if is_wrapper_run(metadata):
            self._starts[run_id] = None
            return
        model, _provider = _model_and_provider(serialized, metadata or {}, params or {})
        self._starts[run_id] = (model, prompt)

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._start(
            run_id, serialized, messages[0] if messages else [], metadata, kwargs.get("invocation_params")
        )

    def on_llm_start(
        self,
        serialized: dict[str, Any],
        prompts: list[str],
        *,
        run_id: UUID,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._start(
            run_id, serialized, prompts[0] if prompts else "", metadata, kwargs.get("invocation_params")
        )

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        start = self._starts.pop(run_id, None)
        if start is None:
            return
        planned, prompt = start
        for generations in response.generations:
            if not generations or any(_is_hit(g) for g in generations):
                continue
            model, usage = _model_and_usage(generations, "")
            model = model or planned
            if usage is None:
                usage = _usage_from_llm_output(response.llm_output) or _estimated_usage(
                    model, prompt, generations
                )
            self.tally.add(model, usage)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._starts.pop(run_id, None)


# -- the wrapper ---------------------------------------------------------------------------------------------------
class CachedChain(RunnableSerializable[Any, Any]):
    """A chain (a RAG chain, any runnable) behind the semantic cache, looked up before it runs.

    Args:
        chain: the runnable called on a miss.
        cache: an :class:`~frugal_chains.cache.AnswerCache` or a
            :class:`~frugal_chains.langchain.SemanticCache` (its tiers, guard, bypass policy, scope, statistics,
            backend and ledger all apply).
        question: the input key holding the question (default ``"question"``), or a function ``inputs -> str``.
            A string input is the question itself.
        exact: the input keys that must match exactly; ``None``: every input but the question.
        version: a tag of the knowledge base the chain retrieves from: change it when the index is rebuilt and
            no older answer is served.
        name: which chain, when several share one cache (also the run's name).

    Example:
        >>> from langchain_core.prompts import ChatPromptTemplate
        >>> from langchain_core.output_parsers import StrOutputParser
        >>> from frugal_chains.cache import AnswerCache
        >>> from frugal_chains.langchain import cache_chain
        >>> from frugal_chains.testing import FakeUsageChatModel, HashEmbeddings
        >>> model = FakeUsageChatModel(responses=["We ship to Canada in 5 days.", "(paid again)"])
        >>> chain = ChatPromptTemplate.from_template("{question}") | model | StrOutputParser()
        >>> cached = cache_chain(chain, cache=AnswerCache(embedder=HashEmbeddings()), version="kb-1")
        >>> cached.invoke({"question": "Do you ship to Canada?"})
        'We ship to Canada in 5 days.'
        >>> "".join(cached.stream({"question": "do you ship to canada"}))
        'We ship to Canada in 5 days.'
    """

    chain: Runnable[Any, Any]
    answer_cache: AnswerCache | SemanticCache = Field(exclude=True)
    question: str | Callable[[Mapping[str, Any]], str] = Field(default="question", exclude=True)
    exact: tuple[str, ...] | None = None
    version: str = ""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    def __init__(self, **data: Any) -> None:
        given = data.pop("cache", None)
        if given is not None:
            if data.get("answer_cache") is not None:
                raise ConfigurationError("pass cache= or answer_cache=, not both", field="cache")
            data["answer_cache"] = given
        if data.get("answer_cache") is None:
            raise ConfigurationError(
                "CachedChain needs cache=AnswerCache(...) (or a SemanticCache)", field="cache"
            )
        _core_of(data["answer_cache"])  # a wrong type raises ConfigurationError(field="cache")
        chain = data.get("chain")
        if not isinstance(chain, Runnable):
            raise ConfigurationError(
                f"chain must be a LangChain Runnable, got {type(chain).__name__}", field="chain"
            )
        exact = data.get("exact")
        if exact is not None:
            if isinstance(exact, (str, bytes)) or not all(isinstance(k, str) for k in exact):
                raise ConfigurationError(
                    f"exact must be a list of input keys or None, got {exact!r}", field="exact"
                )
            data["exact"] = tuple(exact)
        question = data.get("question", "question")
        if not (isinstance(question, str) or callable(question)):
            raise ConfigurationError(
                "question must be the input key holding the question, or a function inputs -> str",
                field="question",
            )
        if not isinstance(data.get("version", ""), str):
            raise ConfigurationError("version must be a str (a tag of the knowledge base)", field="version")
        super().__init__(**data)

    @property
    def core(self) -> AnswerCache:
        """The framework-free cache underneath."""
        return _core_of(self.answer_cache)

    # -- types: the wrapped chain's --------------------------------------------------------------------------
    @property
    def InputType(self) -> Any:
        return self.chain.InputType

    @property
    def OutputType(self) -> Any:
        return self.chain.OutputType

    def get_input_schema(self, config: RunnableConfig | None = None) -> Any:
        return self.chain.get_input_schema(config)

    def get_output_schema(self, config: RunnableConfig | None = None) -> Any:
        return self.chain.get_output_schema(config)

    # -- keys ------------------------------------------------------------------------------------------------
    def _request(self, input: Any, config: RunnableConfig) -> CacheRequest:
        with run_attribution(config.get("metadata"), config.get("tags")):
            return CacheRequest.from_inputs(
                input, question=self.question, exact=self.exact, version=self.version, name=self.name or ""
            )

    def _child(
        self,
        run_manager: CallbackManagerForChainRun | AsyncCallbackManagerForChainRun,
        config: RunnableConfig,
        tally: SpendTally,
    ) -> RunnableConfig:
        child = run_manager.get_child()
        child.add_handler(_Tally(tally), inherit=True)
        return patch_config(config, callbacks=child)

    def _store(self, request: CacheRequest, output: Any, tally: SpendTally, config: RunnableConfig) -> None:
        encoded = _encode(output)
        if encoded is None:
            return
        with run_attribution(config.get("metadata"), config.get("tags")):
            tally.stored(encoded, self.core.prices).store(self.core, request)

    async def _astore(
        self, request: CacheRequest, output: Any, tally: SpendTally, config: RunnableConfig
    ) -> None:
        encoded = _encode(output)
        if encoded is None:
            return
        with run_attribution(config.get("metadata"), config.get("tags")):
            await tally.stored(encoded, self.core.prices).astore(self.core, request)

    def _lookup(self, request: CacheRequest, config: RunnableConfig) -> tuple[bool, Any]:
        with run_attribution(config.get("metadata"), config.get("tags")):
            found = self.core.lookup_decoded(request, decode=_decode)
        return (False, None) if found is None else (True, found[1])

    async def _alookup(self, request: CacheRequest, config: RunnableConfig) -> tuple[bool, Any]:
        with run_attribution(config.get("metadata"), config.get("tags")):
            found = await self.core.alookup_decoded(request, decode=_decode)
        return (False, None) if found is None else (True, found[1])

    # -- invoke ----------------------------------------------------------------------------------------------
    def _invoke(self, input: Any, run_manager: CallbackManagerForChainRun, config: RunnableConfig) -> Any:
        request = self._request(input, config)
        hit, value = self._lookup(request, config)
        if hit:
            return value
        tally = SpendTally()
        output = self.chain.invoke(input, self._child(run_manager, config, tally))
        self._store(request, output, tally, config)
        return output

    async def _ainvoke(
        self, input: Any, run_manager: AsyncCallbackManagerForChainRun, config: RunnableConfig
    ) -> Any:
        request = self._request(input, config)
        hit, value = await self._alookup(request, config)
        if hit:
            return value
        tally = SpendTally()
        output = await self.chain.ainvoke(input, self._child(run_manager, config, tally))
        await self._astore(request, output, tally, config)
        return output

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        """The cached output for ``input``, or the chain's (stored)."""
        return self._call_with_config(self._invoke, input, config, **kwargs)

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        """Async :meth:`invoke`."""
        return await self._acall_with_config(self._ainvoke, input, config, **kwargs)

    # -- stream ----------------------------------------------------------------------------------------------
    def _transform(
        self, inputs: Iterator[Any], run_manager: CallbackManagerForChainRun, config: RunnableConfig
    ) -> Iterator[Any]:
        input = _one(inputs)
        request = self._request(input, config)
        hit, value = self._lookup(request, config)
        if hit:
            yield from _replay(value)
            return
        tally = SpendTally()
        seen: list[Any] = []
        chunks = self.chain.stream(input, self._child(run_manager, config, tally))
        try:
            for chunk in chunks:
                seen.append(chunk)
                yield chunk
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        if seen:
            self._store(request, _whole(seen), tally, config)

    async def _atransform(
        self, inputs: AsyncIterator[Any], run_manager: AsyncCallbackManagerForChainRun, config: RunnableConfig
    ) -> AsyncIterator[Any]:
        input = await _aone(inputs)
        request = self._request(input, config)
        hit, value = await self._alookup(request, config)
        if hit:
            for chunk in _replay(value):
                yield chunk
            return
        tally = SpendTally()
        seen: list[Any] = []
        chunks = self.chain.astream(input, self._child(run_manager, config, tally))
        try:
            async for chunk in chunks:
                seen.append(chunk)
                yield chunk
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()
        if seen:
            await self._astore(request, _whole(seen), tally, config)

    def stream(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Iterator[Any]:
        """A hit replayed in a few chunks; a miss streamed from the chain and stored once it finished."""
        yield from self._transform_stream_with_config(iter([input]), self._transform, config, **kwargs)

    async def astream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        """Async :meth:`stream`."""

        async def one() -> AsyncIterator[Any]:
            yield input

        async for chunk in self._atransform_stream_with_config(one(), self._atransform, config, **kwargs):
            yield chunk


def _one(inputs: Iterator[Any]) -> Any:
    items = list(inputs)
    if len(items) != 1:
        raise ConfigurationError("a cached chain streams one input at a time", field="input")
    return items[0]


async def _aone(inputs: AsyncIterator[Any]) -> Any:
    items = [item async for item in inputs]
    if len(items) != 1:
        raise ConfigurationError("a cached chain streams one input at a time", field="input")
    return items[0]


def cache_chain(
    chain: Runnable[Any, Any],
    cache: AnswerCache | SemanticCache,
    *,
    question: str | Callable[[Mapping[str, Any]], str] = "question",
    exact: Sequence[str] | None = None,
    version: str = "",
    name: str | None = None,
) -> CachedChain:
    """``chain`` behind ``cache``, looked up before it runs (see :class:`CachedChain`).

    Example:
        >>> from langchain_core.runnables import RunnableLambda
        >>> from frugal_chains.cache import AnswerCache
        >>> from frugal_chains.langchain import cache_chain
        >>> calls = []
        >>> chain = RunnableLambda(lambda q: calls.append(q) or f"answer to {q}")
        >>> cached = cache_chain(chain, AnswerCache(semantic=False))
        >>> cached.invoke("What are your hours?"), cached.invoke("What are your hours?"), len(calls)
        ('answer to What are your hours?', 'answer to What are your hours?', 1)
    """
    return CachedChain(
        chain=chain,
        cache=cache,
        question=question,
        exact=None if exact is None else tuple(exact),
        version=version,
        name=name,
    )
