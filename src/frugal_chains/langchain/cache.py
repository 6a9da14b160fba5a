"""LangChain's ``BaseCache`` on top of frugal-chains' semantic cache (:class:`~frugal_chains.cache.AnswerCache`).

``set_llm_cache(SemanticCache())`` (or ``cache=SemanticCache()`` on one model) makes every chat model and LLM
look its answers up by meaning, not by the exact bytes of the prompt:

* A chat model's ``prompt`` is LangChain's serialised message list. It is turned back into messages: the last
  user turn is the question compared by the semantic tier; the system prompt, every earlier turn, tools and the
  model with its parameters (``llm_string``) are an exact partition, as is the caller's
  :func:`~frugal_chains.cache.cache_scope` (tenant, user, namespace). A plain LLM's prompt is the question.
* The stored answer is LangChain's serialisation of the generations; an entry that does not decode is deleted and
  skipped, never served.
* A served chat answer carries ``response_metadata["frugal"]["cache"]``: ``{"status": "hit", "tier": "exact" |
  "semantic", "similarity": ...}``.
  The cache writes its own ``cache_hit`` record with the USD saved (give it the ledger of your budgets), and
  :class:`~frugal_chains.langchain.TokenBudgetHandler` only releases that call's reservation.

* A call its budget refused still gets the answer this cache holds, at $0 and with nothing reserved: the budget
  handler asks the cache for it (only then), and the lookup serves exactly the entry found or raises the refusal
  (see ``frugal_chains.langchain._cache_first``).

LangChain does not cache ``stream()``/``astream()``; :class:`~frugal_chains.langchain.CachedChatModel` does.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from langchain_core.caches import RETURN_VAL_TYPE, BaseCache
from langchain_core.load import dumps, loads
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    BaseMessageChunk,
    ChatMessage,
    ChatMessageChunk,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
    convert_to_openai_messages,
    message_chunk_to_message,
)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, Generation, GenerationChunk

from frugal_chains._deprecation import deprecated_attributes, old_metadata_keys
from frugal_chains.accounting.provider_usage import usage_from_provider
from frugal_chains.cache.core import AnswerCache, CachePin, CacheResult, CacheStats
from frugal_chains.cache.keys import CacheRequest
from frugal_chains.cache.replay import StoredAnswer
from frugal_chains.errors import ConfigurationError
from frugal_chains.langchain._cache_first import Held, caller_attribution, held_for_caller
from frugal_chains.langchain._streaming import carried_usage
from frugal_chains.langchain.budget import usage_from_message
from frugal_chains.metadata import cache_status, mark_cache_hit
from frugal_chains.shared.question import QuestionKey
from frugal_chains.shared.sharing import SharedService

if TYPE_CHECKING:
    from frugal_chains.accounting.usage import Usage

__all__ = ["SemanticCache"]

_ANSWER_CLASSES: list[Any] = [
    Generation,
    GenerationChunk,
    ChatGeneration,
    ChatGenerationChunk,
    AIMessage,
    AIMessageChunk,
    ChatMessage,
    ChatMessageChunk,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
]
"""What a stored answer may revive into (an allowlist: a tampered entry cannot build anything else)."""

_MODEL_IN_LLM_STRING = re.compile(r"""\(['"](?:model_name|model|model_id)['"], ['"]([^'"]+)['"]\)""")


# -- LangChain serialisation ---------------------------------------------------------------------------------
def _lc_loads(text: str, allowed: Any) -> Any:
    """``langchain_core.load.loads`` without its one-time beta warning (a warning filter set to "error" would
    turn it into an exception), with an explicit allowlist."""
    raw = getattr(loads, "__wrapped__", None)
    if raw is not None:
        return raw(text, allowed_objects=allowed)
    with warnings.catch_warnings():  # pragma: no cover - langchain-core versions without functools.wraps
        warnings.simplefilter("ignore")
        return loads(text, allowed_objects=allowed)


def _messages_of(prompt: str) -> list[BaseMessage] | None:
    """The messages of a chat model's ``prompt`` (``dumps(messages)``), or None for a plain-text prompt."""
    if not prompt.lstrip().startswith("["):
        return None
    try:
        value = _lc_loads(prompt, "core")
    except Exception:
        return None
    if isinstance(value, list) and value and all(isinstance(m, BaseMessage) for m in value):
        return value
    return None


def _looks_serialised(prompt: str) -> bool:
    """A JSON list of LangChain-serialised objects (that did not revive: unknown message classes)."""
    try:
        value = json.loads(prompt)
    except ValueError:
        return False
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(v, Mapping) and v.get("lc") == 1 for v in value)
    )


def _openai_of(messages: Sequence[BaseMessage]) -> list[dict[str, Any]] | None:
    try:
        openai = convert_to_openai_messages(list(messages))
    except Exception:
        return None
    return [openai] if isinstance(openai, dict) else list(openai)


def _request_from_messages(
    messages: Sequence[BaseMessage], llm_string: str, question_key: QuestionKey | None = None
) -> CacheRequest:
    """The cache request of a chat call (shared by :class:`SemanticCache` and ``CachedChatModel``, so both
    read and write the same entries)."""
    openai = _openai_of(messages)
    if openai is None:
        # a message LangChain cannot express in OpenAI format: exact tier on the serialised conversation
        return CacheRequest(question=dumps(list(messages)), llm_string=llm_string, semantic=False)
    return CacheRequest.from_messages(openai, llm_string=llm_string, question_key=question_key)


def _parse_prompt(
    prompt: str, llm_string: str, question_key: QuestionKey | None = None
) -> tuple[CacheRequest, bool, list[BaseMessage] | None]:
    """``(request, is_chat, messages)`` for a ``BaseCache`` call."""
    messages = _messages_of(prompt)
    if messages is not None:
        return _request_from_messages(messages, llm_string, question_key), True, messages
    if _looks_serialised(prompt):
        return CacheRequest(question=prompt, llm_string=llm_string, semantic=False), True, None
    return CacheRequest.from_prompt(prompt, llm_string=llm_string, question_key=question_key), False, None


def _estimated_usage(
    model: str, prompt: str | Sequence[BaseMessage], generations: Sequence[Generation]
) -> Usage:
    """Tokens of a call whose provider reported none (plain LLMs): the prompt and the answers, counted."""
    from frugal_chains.accounting.tokens import count_message_tokens, count_text_tokens
    from frugal_chains.accounting.usage import Usage

    openai = None if isinstance(prompt, str) else _openai_of(prompt)
    if openai is not None:
        prompt_tokens = count_message_tokens(openai, model=model)
    else:
        prompt_tokens = count_text_tokens(prompt if isinstance(prompt, str) else dumps(list(prompt)), model)
    output = sum(count_text_tokens(g.text, model) for g in generations)
    return Usage(input_tokens=prompt_tokens, output_tokens=output)


def _decode_generations(text: str) -> list[Generation]:
    """Revive a stored answer; raises on anything but a non-empty list of generations (the core then deletes
    the entry)."""
    value = _lc_loads(text, _ANSWER_CLASSES)
    if not isinstance(value, list) or not value or not all(isinstance(g, Generation) for g in value):
        raise ValueError("a cached answer must be a non-empty list of LangChain Generation objects")
    return value


def _is_hit(generation: Generation) -> bool:
    message = getattr(generation, "message", None)
    return isinstance(message, BaseMessage) and cache_status(message.response_metadata) == "hit"


def _has_content(generation: Generation) -> bool:
    if generation.text.strip():
        return True
    message = getattr(generation, "message", None)
    if isinstance(message, AIMessage) and (message.tool_calls or message.invalid_tool_calls):
        return True
    if isinstance(message, BaseMessage):
        if message.additional_kwargs.get("tool_calls") or message.additional_kwargs.get("function_call"):
            return True
        return isinstance(message.content, list) and bool(message.content)
    return False


def _clean(generation: Generation) -> Generation:
    """A generation as stored: chunks become whole messages, the run's message id is dropped (a replayed
    answer must not carry the id of the run that produced it: LangGraph merges messages by id)."""
    if isinstance(generation, ChatGeneration):
        message: BaseMessage = generation.message
        if isinstance(message, BaseMessageChunk):
            message = message_chunk_to_message(message)
        if message.id is not None:
            message = message.model_copy(update={"id": None})
        return ChatGeneration(message=message, generation_info=generation.generation_info)
    if isinstance(generation, GenerationChunk):
        return Generation(text=generation.text, generation_info=generation.generation_info)
    return generation


def _model_and_usage(generations: Sequence[Generation], llm_string: str) -> tuple[str | None, Usage | None]:
    for generation in generations:
        if isinstance(generation, ChatGeneration):
            message = generation.message
            meta = message.response_metadata or {}
            model = meta.get("model_name") or meta.get("model")
            usage = usage_from_message(message)
            carried = carried_usage(message) if usage is None else None
            if carried:  # a wrapper's run output (a cascade's): the usage of the calls behind it
                usage = usage_from_provider({"input_token_details": {}, **carried})
            return (model if isinstance(model, str) and model else None), usage
    found = _MODEL_IN_LLM_STRING.search(llm_string)
    return (found.group(1) if found else None), None


def _encode_generations(
    generations: Sequence[Generation], llm_string: str, prompt: str | Sequence[BaseMessage]
) -> StoredAnswer | None:
    """The stored answer with what prices its hits, or None when the generations must not be stored (empty, or
    served by this cache already). Usage the provider did not report is estimated from ``prompt`` and the answers,
    so a hit can still tell what it saved; an answer a cascade gave is priced at what the cascade paid."""
    gens = list(generations)
    if not gens or any(_is_hit(g) for g in gens) or not any(_has_content(g) for g in gens):
        return None
    model, usage = _model_and_usage(gens, llm_string)
    if usage is None and model is not None:
        usage = _estimated_usage(model, prompt, gens)
    metadata = next((g.message.response_metadata for g in gens if isinstance(g, ChatGeneration)), None)
    return StoredAnswer.of(dumps([_clean(g) for g in gens]), model=model, usage=usage, metadata=metadata)


def _mark_hit(generations: Sequence[Generation], result: CacheResult, *, chat: bool) -> list[Generation]:
    """The generations to serve: chat messages get ``response_metadata["frugal"]["cache"]`` (status ``"hit"``,
    tier, similarity). A plain ``Generation`` served to a chat model becomes a marked ``AIMessage`` (LangChain
    would build an unmarked one)."""
    out: list[Generation] = []
    for generation in generations:
        if isinstance(generation, ChatGeneration):
            message = generation.message
            meta = mark_cache_hit(message.response_metadata, tier=result.tier, similarity=result.similarity)
            marked = message.model_copy(update={"response_metadata": meta})
            out.append(ChatGeneration(message=marked, generation_info=generation.generation_info))
        elif chat:
            meta = mark_cache_hit({}, tier=result.tier, similarity=result.similarity)
            message = AIMessage(content=generation.text, response_metadata=meta)
            out.append(ChatGeneration(message=message, generation_info=generation.generation_info))
        else:
            out.append(generation)
    return out


def _core_of(cache: Any) -> AnswerCache:
    if isinstance(cache, SemanticCache):
        return cache.core
    if isinstance(cache, AnswerCache):
        return cache
    raise ConfigurationError(
        f"cache must be a SemanticCache or an AnswerCache, got {type(cache).__name__}", field="cache"
    )


class SemanticCache(SharedService, BaseCache):
    """A LangChain LLM cache that serves answers to the same question asked in other words.

    Exact repeats are served from a hash lookup; paraphrases (cosine similarity of the question's embedding
    above ``threshold``) only after the hit guard found no differing entity, number, date or negation. Only
    the last user turn is compared: the rest of the conversation, the model and its parameters, tools and the
    :func:`~frugal_chains.cache.cache_scope` tenant must match exactly.

    Args:
        cache: an :class:`~frugal_chains.cache.AnswerCache` to use; default: a new one built from ``**kwargs``.
        **kwargs: :class:`~frugal_chains.cache.AnswerCache` options when no ``cache`` is given: ``embedder``
            (default: the offline MiniLM model), ``threshold``, ``guard``, ``verifier``, ``verify_band``,
            ``preset`` (``"strict"``: semantic hits only on the verifier's yes), ``ttl``, ``path`` (a SQLite file),
            ``index``, ``ledger`` (where ``cache_hit`` records with the USD saved go), ``version``,
            ``question_key`` (a :class:`~frugal_chains.QuestionKey`: what is compared in a RAG prompt), ...

    Example:
        >>> from langchain_core.globals import set_llm_cache
        >>> from frugal_chains.langchain.cache import SemanticCache
        >>> from frugal_chains.testing import FakeUsageChatModel
        >>> from frugal_chains.testing.fake_embeddings import HashEmbeddings
        >>> cache = SemanticCache(embedder=HashEmbeddings(), threshold=0.6)
        >>> model = FakeUsageChatModel(responses=["30 days.", "(a second, paid call)"], cache=cache)
        >>> model.invoke("How long is the refund window for shoes?").content
        '30 days.'
        >>> hit = model.invoke("how long is the refund window for shoes please")
        >>> hit.content, hit.response_metadata["frugal"]["cache"]["tier"]
        ('30 days.', 'semantic')
        >>> model.invoke("Is there no refund window for shoes?").content  # the guard rejects a negation
        '(a second, paid call)'
        >>> cache.stats.hits, cache.stats.misses
        (1, 2)
    """

    def __init__(self, cache: AnswerCache | None = None, **kwargs: Any) -> None:
        if cache is not None:
            if kwargs:
                raise ConfigurationError(
                    f"pass either cache= (an AnswerCache) or AnswerCache options, not both (got {sorted(kwargs)})",
                    field="cache",
                )
            if not isinstance(cache, AnswerCache):
                raise ConfigurationError(
                    f"cache must be a frugal_chains.cache.AnswerCache, got {type(cache).__name__}",
                    field="cache",
                )
        self._core: AnswerCache = cache if cache is not None else AnswerCache(**kwargs)

    @classmethod
    def from_redis(cls, url: str, *, name: str = "frugal_cache", **kwargs: Any) -> SemanticCache:
        """A cache shared by every process through Redis (Redis 8, or Redis Stack: it needs the search module).

        Args:
            url: ``redis://host:port/db``.
            name: the index name and key prefix: caches with different names never see each other's entries.
            **kwargs: other :class:`~frugal_chains.cache.AnswerCache` options (``embedder``, ``threshold``,
                ``ttl``, ``ledger``, ...).
        """
        for key in ("index", "path"):
            if key in kwargs:
                raise ConfigurationError(f"from_redis builds the index itself: do not pass {key}=", field=key)
        from frugal_chains.cache.redis_index import RedisIndex

        return cls(AnswerCache(index=RedisIndex(url, name=name), **kwargs))

    @property
    def core(self) -> AnswerCache:
        """The framework-free cache underneath."""
        return self._core

    @property
    def stats(self) -> CacheStats:
        """Hits, misses, guard rejections and USD saved since this cache was created."""
        return self._core.stats

    def __repr__(self) -> str:
        return f"SemanticCache(index={type(self._core.index).__name__}, threshold={self._core.threshold})"

    # -- BaseCache -----------------------------------------------------------------------------------------
    def lookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        """The cached generations for ``prompt`` under ``llm_string``, or None.

        Raises:
            BudgetExceededError: the budget refused this call and let it through only for the answer
                held for it, which this lookup cannot serve (it is not the request that was probed).
        """
        held = held_for_caller()
        with caller_attribution():  # the run's metadata: the hit's record and the tenant partition
            request, chat, _messages = _parse_prompt(prompt, llm_string, self._core.question_key)
            if held is not None:
                served = self._served_pin(held, request, prompt, llm_string)
                return _mark_hit(served[1], served[0], chat=chat)
            found = self._core.lookup_decoded(request, decode=_decode_generations)
        if found is None or found[1] is None:
            return None
        return _mark_hit(found[1], found[0], chat=chat)

    async def alookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        """Async :meth:`lookup`."""
        held = held_for_caller()
        with caller_attribution():
            request, chat, _messages = _parse_prompt(prompt, llm_string, self._core.question_key)
            if held is not None:
                served = await self._aserved_pin(held, request, prompt, llm_string)
                return _mark_hit(served[1], served[0], chat=chat)
            found = await self._core.alookup_decoded(request, decode=_decode_generations)
        if found is None or found[1] is None:
            return None
        return _mark_hit(found[1], found[0], chat=chat)

    # -- answers held for calls a budget refused (see frugal_chains.langchain._cache_first) -----------------------
    def _pin(self, prompt: str, llm_string: str) -> CachePin[list[Generation]] | None:
        """The answer a lookup of ``prompt`` would serve now, pinned (nothing served or counted as a hit yet)."""
        request, _chat, _messages = _parse_prompt(prompt, llm_string, self._core.question_key)
        pin = self._core.probe(request, decode=_decode_generations)
        return pin if pin is not None and pin.value else None

    def _held_pin(self, held: Held, prompt: str, llm_string: str) -> CachePin[list[Generation]]:
        if held.cache is not self or prompt != held.prompt or llm_string != held.llm_string:
            raise held.refusal  # not the lookup the answer was held for: the call must not reach the model
        return held.pin

    def _served_pin(
        self, held: Held, request: CacheRequest, prompt: str, llm_string: str
    ) -> tuple[CacheResult, list[Generation]]:
        """The held answer, served; else the refusal, raised."""
        found = self._core.serve_pin(self._held_pin(held, prompt, llm_string), request)
        if found is None or not found[1]:
            raise held.refusal
        return found[0], found[1]

    async def _aserved_pin(
        self, held: Held, request: CacheRequest, prompt: str, llm_string: str
    ) -> tuple[CacheResult, list[Generation]]:
        """Async :meth:`_served_pin`."""
        found = await self._core.aserve_pin(self._held_pin(held, prompt, llm_string), request)
        if found is None or not found[1]:
            raise held.refusal
        return found[0], found[1]

    def update(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        """Store the generations LangChain got for ``prompt``. Empty answers and answers this cache served are
        not stored."""
        with caller_attribution():  # stored in the partition the run's lookups use
            request, _chat, messages = _parse_prompt(prompt, llm_string, self._core.question_key)
            encoded = _encode_generations(return_val, llm_string, prompt if messages is None else messages)
            if encoded is None:
                return
            encoded.store(self._core, request)

    async def aupdate(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        """Async :meth:`update`."""
        with caller_attribution():
            request, _chat, messages = _parse_prompt(prompt, llm_string, self._core.question_key)
            encoded = _encode_generations(return_val, llm_string, prompt if messages is None else messages)
            if encoded is None:
                return
            await encoded.astore(self._core, request)

    def clear(self, **kwargs: Any) -> None:
        """Remove every entry (``clear(tag="kb-v3")`` removes only the entries tagged ``kb-v3``)."""
        tag = self._clear_tag(kwargs)
        if tag is None:
            self._core.clear()
        else:
            self._core.invalidate(tag=tag)

    async def aclear(self, **kwargs: Any) -> None:
        """Async :meth:`clear`."""
        tag = self._clear_tag(kwargs)
        if tag is None:
            await self._core.aclear()
        else:
            await self._core.ainvalidate(tag=tag)

    @staticmethod
    def _clear_tag(kwargs: Mapping[str, Any]) -> str | None:
        unknown = sorted(set(kwargs) - {"tag"})
        if unknown:
            raise ConfigurationError(
                f"clear() takes only tag= (remove the entries with that tag), got {unknown}", field=unknown[0]
            )
        tag = kwargs.get("tag")
        return None if tag is None else str(tag)

    # -- maintenance ---------------------------------------------------------------------------------------
    def invalidate(self, *, tag: str) -> int:
        """Remove every entry stored under ``cache_scope(tags=[tag])`` (or the cache's ``tags``); returns how
        many. Call it when the documents the answers came from change."""
        return self._core.invalidate(tag=tag)

    async def ainvalidate(self, *, tag: str) -> int:
        """Async :meth:`invalidate`."""
        return await self._core.ainvalidate(tag=tag)

    def __len__(self) -> int:
        return len(self._core)

    def close(self) -> None:
        """Close the index's connections (Redis)."""
        self._core.close()


__getattr__ = deprecated_attributes(
    __name__,
    old_metadata_keys(
        "CACHE_HIT_METADATA_KEY",
        TIER_METADATA_KEY="frugal_cache_tier",
        SIMILARITY_METADATA_KEY="frugal_cache_similarity",
    ),
)
