"""A whole query engine behind the semantic cache, looked up before it retrieves.

``CachedQueryEngine(index.as_query_engine(), cache=AnswerCache(...), version="kb-7")`` looks the query up before
calling the engine:

* **hit**: a ``Response`` (or, for a streaming engine, a ``StreamingResponse`` replaying the answer in a few
  chunks; ``AsyncStreamingResponse`` from ``aquery``) with the answer, its ``source_nodes`` (node text, metadata and
  score) and ``metadata`` restored. The engine is not called: no retrieval, no query embedding, no LLM call. The
  cache records a ``cache_hit`` in its ledger with what the miss's LLM calls cost.
* **miss**: the engine answers as usual; its LLM calls are tallied (through LlamaIndex's instrumentation events)
  and the response is stored with their summed cost. A streamed response is stored once its stream was consumed to
  the end, never after an error or an early stop.

The key: the query text is compared by meaning; ``version`` (the knowledge base) and ``name`` (which engine) are
exact, with the caller's :func:`~frugal_chains.cache.cache_scope`. It is a ``BaseQueryEngine``: it drops in where
an engine goes (``QueryEngineTool``, ``CondenseQuestionChatEngine``).
"""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator, Mapping
from typing import Any

from llama_index.core.base.base_query_engine import BaseQueryEngine
from llama_index.core.base.response.schema import (
    RESPONSE_TYPE,
    AsyncStreamingResponse,
    Response,
    StreamingResponse,
)
from llama_index.core.instrumentation import get_dispatcher  # type: ignore[attr-defined]
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.llm import (
    LLMChatEndEvent,
    LLMChatStartEvent,
    LLMCompletionEndEvent,
    LLMCompletionStartEvent,
)
from llama_index.core.prompts.mixin import PromptMixinType
from llama_index.core.schema import NodeWithScore, QueryBundle
from llama_index.core.storage.docstore.utils import doc_to_json, json_to_doc

from frugal_chains.cache.core import AnswerCache
from frugal_chains.cache.keys import CacheRequest
from frugal_chains.cache.replay import replay_pieces
from frugal_chains.cache.spend import SpendTally, current_tally, tallying
from frugal_chains.errors import ConfigurationError
from frugal_chains.llama_index._convert import openai_message, response_text, usage_of
from frugal_chains.metadata import cache_status

__all__ = ["CachedQueryEngine"]


# -- the paid LLM calls of a miss ----------------------------------------------------------------------------------
class _TallyEvents(BaseEventHandler):
    """Tells the tally of the cached query in progress (if any) about each LLM call that ends: the provider's
    usage, else an estimate; an answer a cache served (marked hit) is no paid call."""

    @classmethod
    def class_name(cls) -> str:
        return "FrugalChainsQueryTally"

    def handle(self, event: BaseEvent, **kwargs: Any) -> Any:
        tally = current_tally()
        if tally is None:
            return None
        if isinstance(event, (LLMChatStartEvent, LLMCompletionStartEvent)):
            model = event.model_dict.get("model") or event.model_dict.get("model_name")
            _models.set(event.span_id, str(model or event.model_dict.get("class_name") or "unknown"))
        elif isinstance(event, (LLMChatEndEvent, LLMCompletionEndEvent)):
            response = event.response
            planned = _models.pop(event.span_id)
            if response is None or _served_by_cache(response):
                return None
            usage, model = usage_of(response)
            model = model or planned or "unknown"
            if usage is None:
                from frugal_chains.accounting.tokens import count_message_tokens, count_text_tokens
                from frugal_chains.accounting.usage import Usage

                if isinstance(event, LLMChatEndEvent):
                    prompt = count_message_tokens([openai_message(m) for m in event.messages], model=model)
                else:
                    prompt = count_text_tokens(event.prompt, model)
                usage = Usage(
                    input_tokens=prompt, output_tokens=count_text_tokens(response_text(response), model)
                )
            tally.add(model, usage)
        return None


class _Models:
    """The model of each LLM call in flight, by span."""

    def __init__(self) -> None:
        self._by_span: dict[str | None, str] = {}
        self._lock = threading.Lock()

    def set(self, span: str | None, model: str) -> None:
        with self._lock:
            self._by_span[span] = model

    def pop(self, span: str | None) -> str | None:
        with self._lock:
            return self._by_span.pop(span, None)


_models = _Models()
_installed = threading.Lock()
_handler: _TallyEvents | None = None


def _install() -> None:
    """The tally's event handler on LlamaIndex's root dispatcher, once per process."""
    global _handler
    with _installed:
        if _handler is None:
            _handler = _TallyEvents()
            get_dispatcher().add_event_handler(_handler)


def _served_by_cache(response: Any) -> bool:
    for holder in (response, getattr(response, "message", None)):
        extra = getattr(holder, "additional_kwargs", None)
        if isinstance(extra, Mapping) and cache_status(extra) == "hit":
            return True
    return False


# -- responses as stored text --------------------------------------------------------------------------------------
def _encode(text: str, nodes: list[NodeWithScore], metadata: Mapping[str, Any] | None) -> str | None:
    """The answer, its source nodes and metadata as stored text; None when they do not serialise."""
    try:
        return json.dumps(
            {
                "response": text,
                "source_nodes": [{"node": doc_to_json(n.node), "score": n.score} for n in nodes],
                "metadata": None if metadata is None else dict(metadata),
            },
            ensure_ascii=False,
        )
    except (TypeError, ValueError):
        return None


def _decode(text: str) -> tuple[str, list[NodeWithScore], dict[str, Any] | None]:
    """Revive a stored response; raises on anything else (the core then deletes the entry)."""
    data = json.loads(text)
    answer = data["response"]
    if not isinstance(answer, str):
        raise ValueError("not a cached query engine response")
    nodes = [NodeWithScore(node=json_to_doc(n["node"]), score=n["score"]) for n in data["source_nodes"]]
    return answer, nodes, data.get("metadata")


class CachedQueryEngine(BaseQueryEngine):
    """A LlamaIndex query engine behind the semantic cache, looked up before it retrieves.

    Args:
        query_engine: the engine called on a miss (``index.as_query_engine(...)``, any ``BaseQueryEngine``).
        cache: an :class:`~frugal_chains.cache.AnswerCache` (its tiers, guard, bypass policy, scope, statistics,
            backend and ledger all apply).
        version: a tag of the knowledge base the engine retrieves from: change it when the index is rebuilt and
            no older answer is served.
        name: which engine, when several share one cache.
        streaming: whether a hit is returned as a stream; default: as the engine's response synthesizer streams
            (``as_query_engine(streaming=True)``), so a hit has the type a miss would have.

    Example:
        >>> from llama_index.core import Document, VectorStoreIndex
        >>> from frugal_chains.cache import AnswerCache
        >>> from frugal_chains.llama_index import CachedQueryEngine
        >>> from frugal_chains.testing import FakeUsageLLM, HashEmbeddings
        >>> index = VectorStoreIndex.from_documents(
        ...     [Document(text="We ship to Canada in 5 days.")], embed_model=HashEmbeddings().for_llama_index()
        ... )
        >>> llm = FakeUsageLLM(responses=["Yes, in 5 days.", "(paid again)"])
        >>> engine = CachedQueryEngine(index.as_query_engine(llm=llm), cache=AnswerCache(embedder=HashEmbeddings()))
        >>> str(engine.query("Do you ship to Canada?"))
        'Yes, in 5 days.'
        >>> again = engine.query("do you ship to canada")
        >>> str(again), again.source_nodes[0].node.get_content()
        ('Yes, in 5 days.', 'We ship to Canada in 5 days.')
    """

    def __init__(
        self,
        query_engine: BaseQueryEngine,
        cache: AnswerCache,
        *,
        version: str = "",
        name: str = "",
        streaming: bool | None = None,
    ) -> None:
        if not isinstance(query_engine, BaseQueryEngine):
            raise ConfigurationError(
                f"query_engine must be a LlamaIndex BaseQueryEngine, got {type(query_engine).__name__}",
                field="query_engine",
            )
        if not isinstance(cache, AnswerCache):
            raise ConfigurationError(
                f"cache must be an AnswerCache, got {type(cache).__name__}", field="cache"
            )
        if not isinstance(version, str):
            raise ConfigurationError("version must be a str (a tag of the knowledge base)", field="version")
        if not isinstance(name, str):
            raise ConfigurationError("name must be a str", field="name")
        if streaming is None:
            synthesizer = getattr(query_engine, "_response_synthesizer", None)
            streaming = bool(getattr(synthesizer, "_streaming", False))
        self.query_engine = query_engine
        self.cache = cache
        self.version = version
        self.name = name
        self.streaming = streaming
        _install()
        super().__init__(callback_manager=query_engine.callback_manager)

    def _get_prompt_modules(self) -> PromptMixinType:
        return {"query_engine": self.query_engine}

    def _request(self, query_bundle: QueryBundle) -> CacheRequest:
        return CacheRequest.from_inputs(query_bundle.query_str, version=self.version, name=self.name)

    # -- hits ------------------------------------------------------------------------------------------------
    def _hit(self, found: tuple[Any, Any] | None, *, asynchronous: bool) -> RESPONSE_TYPE | None:
        if found is None or found[1] is None:
            return None
        answer, nodes, metadata = found[1]
        if not self.streaming:
            return Response(response=answer, source_nodes=nodes, metadata=metadata)
        pieces = replay_pieces(answer)
        if asynchronous:

            async def agen() -> AsyncGenerator[str, None]:
                for piece in pieces:
                    yield piece

            return AsyncStreamingResponse(response_gen=agen(), source_nodes=nodes, metadata=metadata)

        def gen() -> Generator[str, None, None]:
            yield from pieces

        return StreamingResponse(response_gen=gen(), source_nodes=nodes, metadata=metadata)

    # -- misses ----------------------------------------------------------------------------------------------
    def _store(self, request: CacheRequest, encoded: str | None, tally: SpendTally) -> None:
        if encoded is not None:
            tally.stored(encoded, self.cache.prices).store(self.cache, request)

    async def _astore(self, request: CacheRequest, encoded: str | None, tally: SpendTally) -> None:
        if encoded is not None:
            await tally.stored(encoded, self.cache.prices).astore(self.cache, request)

    def _kept(self, request: CacheRequest, response: RESPONSE_TYPE, tally: SpendTally) -> RESPONSE_TYPE:
        """The engine's response as returned; a plain one stored now, a stream once it was consumed."""
        if isinstance(response, Response):
            if response.response is not None:
                self._store(
                    request, _encode(response.response, response.source_nodes, response.metadata), tally
                )
            return response
        if isinstance(response, StreamingResponse):
            nodes, metadata = response.source_nodes, response.metadata
            return StreamingResponse(
                response_gen=self._relay(request, response.response_gen, nodes, metadata, tally),
                source_nodes=nodes,
                metadata=metadata,
            )
        if isinstance(response, AsyncStreamingResponse):
            nodes, metadata = response.source_nodes, response.metadata
            return AsyncStreamingResponse(
                response_gen=self._arelay(request, response.response_gen, nodes, metadata, tally),
                source_nodes=nodes,
                metadata=metadata,
            )
        return response  # a structured (Pydantic) response: not cached

    def _relay(
        self,
        request: CacheRequest,
        tokens: Iterator[str],
        nodes: list[NodeWithScore],
        metadata: dict[str, Any] | None,
        tally: SpendTally,
    ) -> Generator[str, None, None]:
        seen: list[str] = []
        try:
            while True:
                with tallying(tally):  # the LLM's stream ends (its end event) while the caller consumes it
                    try:
                        token = next(tokens)
                    except StopIteration:
                        break
                seen.append(token)
                yield token
        finally:
            close = getattr(tokens, "close", None)
            if close is not None:
                close()
        self._store(request, _encode("".join(seen), nodes, metadata), tally)

    async def _arelay(
        self,
        request: CacheRequest,
        tokens: AsyncIterator[str],
        nodes: list[NodeWithScore],
        metadata: dict[str, Any] | None,
        tally: SpendTally,
    ) -> AsyncGenerator[str, None]:
        seen: list[str] = []
        try:
            while True:
                with tallying(tally):
                    try:
                        token = await tokens.__anext__()
                    except StopAsyncIteration:
                        break
                seen.append(token)
                yield token
        finally:
            aclose = getattr(tokens, "aclose", None)
            if aclose is not None:
                await aclose()
        await self._astore(request, _encode("".join(seen), nodes, metadata), tally)

    # -- query -----------------------------------------------------------------------------------------------
    def _query(self, query_bundle: QueryBundle) -> RESPONSE_TYPE:
        request = self._request(query_bundle)
        hit = self._hit(self.cache.lookup_decoded(request, decode=_decode), asynchronous=False)
        if hit is not None:
            return hit
        tally = SpendTally()
        with tallying(tally):
            response = self.query_engine.query(query_bundle)
        return self._kept(request, response, tally)

    async def _aquery(self, query_bundle: QueryBundle) -> RESPONSE_TYPE:
        request = self._request(query_bundle)
        found = await self.cache.alookup_decoded(request, decode=_decode)
        hit = self._hit(found, asynchronous=True)
        if hit is not None:
            return hit
        tally = SpendTally()
        with tallying(tally):
            response = await self.query_engine.aquery(query_bundle)
        if isinstance(response, Response) and response.response is not None:
            await self._astore(
                request, _encode(response.response, response.source_nodes, response.metadata), tally
            )
            return response
        return self._kept(request, response, tally)
