"""A LlamaIndex LLM wrapper that answers from frugal-chains' semantic cache (usable as ``Settings.llm``).

``CachedLLM(llm=OpenAI(...), cache=AnswerCache(...))`` looks every ``chat``/``complete`` call (and their
streaming and async variants) up before calling ``llm``:

* **chat**: the last user message is the question compared by the semantic tier; the system prompt, earlier
  turns, non-text parts (images), the wrapped LLM's configuration and the call's keyword arguments (tools,
  temperature, ...) are an exact partition, as is the caller's :func:`~frugal_chains.cache.cache_scope`.
* **complete**: the prompt is the question (and ``formatted`` is part of the partition).
* A hit is returned, or replayed as a few stream chunks, marked on the response:
  ``additional_kwargs["frugal"]["cache"]`` is ``{"status": "hit", "tier": ..., "similarity": ...}``; the wrapped
  LLM is not called. A miss calls it and stores the answer (a streamed one only
  when the stream was consumed to its end).
* A request an ``AnswerCache(tenant_required=True)`` refuses (no tenant in its scope) is neither served nor
  stored: the wrapped LLM answers it and the response is marked
  ``additional_kwargs["frugal"]["cache"] == {"status": "bypass", "reason": "no-tenant"}`` (every chunk of a stream).

Budgets: the wrapper's own LlamaIndex LLM events carry :data:`~frugal_chains.metadata.WRAPPER_KEY`, so
:class:`~frugal_chains.llama_index.TokenBudgetHandler` counts only the wrapped LLM's calls: a miss once, a hit not
at all. The wrapper and the wrapped LLM share one callback manager (``Settings.llm`` sets the wrapper's; it is
passed on), so the handler sees both. Give the cache the budgets' ledger to record each hit's saving. The
wrapper's event ends without a response, so LlamaIndex's ``TokenCountingHandler`` counts a miss once (the wrapped
LLM's event) and a hit not at all.

An LLM with no streaming (``NotImplementedError`` from its streaming methods) streams as one response carrying the
whole answer, stored like any other.
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
from collections.abc import AsyncGenerator, Generator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

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
)
from llama_index.core.llms.llm import LLM
from pydantic import ConfigDict, Field, PrivateAttr

from frugal_chains._deprecation import deprecated_attributes, old_metadata_keys
from frugal_chains.accounting.provider_usage import get_field
from frugal_chains.accounting.usage import Usage
from frugal_chains.cache.core import AnswerCache, CacheResult, CacheStats
from frugal_chains.cache.keys import CacheRequest
from frugal_chains.cache.replay import StoredAnswer, arelay, relay, replay_pieces
from frugal_chains.errors import ConfigurationError
from frugal_chains.llama_index._convert import (
    SharesCallbacks,
    aopen_stream,
    inherit_llm_settings,
    open_stream,
    openai_message,
    usage_of,
    whole_chat,
    whole_completion,
    wrapper_event,
)
from frugal_chains.metadata import WRAPPER_KEY, mark_cache_bypass, mark_cache_hit
from frugal_chains.shared.question import QuestionKey, as_question_key
from frugal_chains.shared.streams import aclose_stream, close_stream

__all__ = ["CachedLLM"]

_R = TypeVar("_R")


_SECRET = re.compile(
    r"(^|_)(api_?key|key|secret|password|token|auth\w*|credentials?|headers?)$", re.IGNORECASE
)
"""Configuration keys left out of the partition (secrets: rotating a key must not empty the cache)."""
_USAGE_KEYS = frozenset(
    {
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "input_tokens",
        "output_tokens",
        "usage",
        "token_usage",
    }
)
"""Token counts are not stored with an answer: a replayed answer did not use any tokens."""
_PLACEHOLDER_MODEL = "unknown"


class _Unstable(Exception):
    """A value with no stable representation (it cannot key a cache entry)."""


def _stable(value: Any, *, strict: bool = True) -> Any:
    """``value`` as plain JSON data that is the same in every process, or raises :class:`_Unstable` (``strict``)
    / falls back to the type's name."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, enum.Enum):
        return _stable(value.value, strict=strict)
    if isinstance(value, (bytes, bytearray)):
        return "sha256:" + hashlib.sha256(value).hexdigest()
    if isinstance(value, Mapping):
        return {str(k): _stable(v, strict=strict) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_stable(v, strict=strict) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((_stable(v, strict=strict) for v in value), key=lambda v: json.dumps(v, sort_keys=True))
    to_openai = getattr(getattr(value, "metadata", None), "to_openai_tool", None)
    if callable(to_openai):  # a LlamaIndex tool
        try:
            return _stable(to_openai(), strict=strict)
        except Exception:
            pass
    dump = getattr(value, "model_dump", None)
    if callable(dump):  # pydantic models, SDK objects
        try:
            return _stable(dump(mode="json"), strict=strict)
        except Exception:
            pass
    if callable(value) and hasattr(value, "__qualname__"):
        return f"{getattr(value, '__module__', '')}.{value.__qualname__}"
    if strict:
        raise _Unstable(type(value).__name__)
    return f"<{type(value).__module__}.{type(value).__qualname__}>"


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def _block_key(block: Any) -> Any:
    """A non-text block for the key. A block that points at a file is keyed by the file's bytes too: a new
    picture saved under the same path must not get the old picture's answer. (A URL is keyed as the URL.)"""
    stable = _stable(block)
    path = getattr(block, "path", None)
    if path is None:
        return stable
    try:
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError as e:  # unreadable now: the wrapped LLM will say why; this call is not cached
        raise _Unstable(f"unreadable {path}") from e
    return {"block": stable, "sha256": digest}


def _key_message(message: ChatMessage) -> dict[str, Any]:
    """A LlamaIndex message as the cache key sees it (OpenAI-shaped, not a conversion for a provider): text blocks
    become the content, any other block (image, audio, tool call, ...) is kept whole, so two different images never
    share an answer. Stored keys depend on it: changing it empties every cache."""
    out: dict[str, Any] = {"role": _stable(message.role)}
    parts: list[Any] = []
    for block in message.blocks:
        if isinstance(block, TextBlock):
            parts.append({"type": "text", "text": block.text})
        else:
            parts.append(_block_key(block))
    if all(isinstance(p, dict) and p.get("type") == "text" for p in parts):
        out["content"] = "\n".join(str(p["text"]) for p in parts)
    else:
        out["content"] = parts
    if message.additional_kwargs:
        out["additional_kwargs"] = _stable(message.additional_kwargs)
    return out


def _hit_marks(additional: Mapping[str, Any], result: CacheResult) -> dict[str, Any]:
    return mark_cache_hit(additional, tier=result.tier, similarity=result.similarity)


def _answer_kwargs(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in _stable(kwargs).items() if k not in _USAGE_KEYS}


# -- stored answers --------------------------------------------------------------------------------------------
def _encode_chat(message: ChatMessage) -> str | None:
    """A chat answer as stored: the assistant message (text, tool-call blocks, additional kwargs)."""
    try:
        dumped = message.model_dump(mode="json")
        dumped["additional_kwargs"] = _answer_kwargs(message.additional_kwargs)
        return json.dumps({"v": 1, "kind": "chat", "message": dumped}, ensure_ascii=False)
    except (_Unstable, TypeError, ValueError):
        return None


def _decode_chat(text: str) -> ChatMessage:
    data = json.loads(text)
    if not isinstance(data, dict) or data.get("kind") != "chat" or not isinstance(data.get("message"), dict):
        raise ValueError("not a cached LlamaIndex chat answer")
    return ChatMessage.model_validate(data["message"])


def _encode_completion(text: str, additional_kwargs: Mapping[str, Any]) -> str | None:
    try:
        kwargs = _answer_kwargs(additional_kwargs)
        return json.dumps(
            {"v": 1, "kind": "completion", "text": text, "additional_kwargs": kwargs}, ensure_ascii=False
        )
    except (_Unstable, TypeError, ValueError):
        return None


def _decode_completion(text: str) -> tuple[str, dict[str, Any]]:
    data = json.loads(text)
    if (
        not isinstance(data, dict)
        or data.get("kind") != "completion"
        or not isinstance(data.get("text"), str)
    ):
        raise ValueError("not a cached LlamaIndex completion")
    kwargs = data.get("additional_kwargs") or {}
    if not isinstance(kwargs, dict):
        raise ValueError("additional_kwargs of a cached completion must be an object")
    return data["text"], kwargs


def _has_answer(message: ChatMessage) -> bool:
    return any(not isinstance(b, TextBlock) or b.text.strip() for b in message.blocks) or bool(
        message.additional_kwargs.get("tool_calls")
    )


class CachedLLM(SharesCallbacks, LLM):
    """A LlamaIndex LLM that serves answers from a semantic cache and calls the wrapped LLM only on a miss.

    Args:
        llm: the LLM to call on a miss (its ``metadata`` and prompt settings are the wrapper's).
        cache: the :class:`~frugal_chains.cache.AnswerCache` (default: a new in-memory one with the offline
            MiniLM embedder). Its options (a ``verifier``, ``preset="strict"``) are set on it:
            ``CachedLLM(llm=llm, cache=AnswerCache(preset="strict", verifier=judge_verifier(judge_llm)))``.
        question_key: a :class:`~frugal_chains.QuestionKey` selecting what is compared in a templated prompt
            (:func:`~frugal_chains.llama_index.question_key_from` builds one from your prompt template); default:
            the cache's, which recognises LlamaIndex's text-QA and refine prompts: the query is compared, the
            retrieved context is an exact key.

    Everything LlamaIndex builds on ``chat``/``complete`` (``predict``, query and chat engines, streaming
    responses) goes through the cache. The wrapper does not implement LlamaIndex's function-calling API
    (``chat_with_tools``): its metadata reports ``is_function_calling_model=False``.

    Example:
        >>> from llama_index.core.llms import ChatMessage
        >>> from llama_index.core.llms.mock import MockLLM
        >>> from frugal_chains.cache import AnswerCache
        >>> from frugal_chains.llama_index.cached_llm import CachedLLM
        >>> from frugal_chains.testing.fake_embeddings import HashEmbeddings
        >>> llm = CachedLLM(llm=MockLLM(), cache=AnswerCache(embedder=HashEmbeddings()))
        >>> llm.complete("Which plans include SSO?").text  # MockLLM echoes the prompt
        'Which plans include SSO?'
        >>> hit = llm.complete("which plans include SSO")
        >>> hit.text, hit.additional_kwargs["frugal"]["cache"]["status"]
        ('Which plans include SSO?', 'hit')
        >>> "".join(r.delta for r in llm.stream_complete("Which plans include SSO?"))
        'Which plans include SSO?'
        >>> llm.stats.hits
        2
    """

    llm: LLM = Field(description="The LLM called on a miss.")
    cache: AnswerCache = Field(default_factory=AnswerCache, exclude=True, description="The answer cache.")
    question_key: QuestionKey | None = Field(
        default=None, exclude=True, description="What is compared in a templated prompt (None: the cache's)."
    )

    model_config = ConfigDict(arbitrary_types_allowed=True)

    _ready: bool = PrivateAttr(default=False)

    def __init__(self, llm: LLM, cache: AnswerCache | Any | None = None, **kwargs: Any) -> None:
        if not isinstance(llm, LLM):
            raise ConfigurationError(
                f"llm must be a LlamaIndex LLM (llama_index.core.llms.LLM), got {type(llm).__name__}",
                field="llm",
            )
        if cache is not None and not isinstance(cache, AnswerCache):
            core = getattr(cache, "core", None)  # a SemanticCache
            if not isinstance(core, AnswerCache):
                raise ConfigurationError(
                    f"cache must be a frugal_chains.cache.AnswerCache, got {type(cache).__name__}",
                    field="cache",
                )
            cache = core
        if cache is not None:
            kwargs["cache"] = cache
        if kwargs.get("question_key") is not None:
            kwargs["question_key"] = as_question_key(kwargs["question_key"])
        inherit_llm_settings(kwargs, llm)
        super().__init__(**kwargs)

    def model_post_init(self, context: Any, /) -> None:
        super().model_post_init(context)
        self._share_callbacks(self.callback_manager)
        self._ready = True

    def _wrapped_llms(self) -> Sequence[LLM]:
        return [self.llm]

    @property
    def core(self) -> AnswerCache:
        """The framework-free cache underneath (the ``cache=`` given)."""
        return self.cache

    @property
    def selector(self) -> QuestionKey:
        """The :class:`~frugal_chains.QuestionKey` in use: ``question_key``, else the cache's."""
        return self.question_key if self.question_key is not None else self.cache.question_key

    @classmethod
    def class_name(cls) -> str:
        return "CachedLLM"

    @property
    def metadata(self) -> LLMMetadata:
        return self.llm.metadata.model_copy(update={"is_function_calling_model": False})

    def to_payload(self) -> dict[str, Any]:
        """The wrapped LLM's payload, marked as a wrapper (budget handlers count the wrapped calls only)."""
        return {**self.llm.to_payload(), WRAPPER_KEY: True, "cached_by": self.class_name()}

    @property
    def stats(self) -> CacheStats:
        """The cache's hits, misses and USD saved."""
        return self.cache.stats

    # -- requests --------------------------------------------------------------------------------------------
    def _llm_string(self, kind: str, kwargs: Mapping[str, Any]) -> str | None:
        """The wrapped LLM's configuration and the call's kwargs; None when a kwarg has no stable form (the call
        then bypasses the cache)."""
        try:
            config = self.llm.to_dict()
        except Exception:
            config = {"class_name": self.llm.class_name()}
        config = {k: v for k, v in config.items() if not _SECRET.search(str(k))}
        try:
            call = _stable(dict(kwargs))
        except _Unstable:
            return None
        return _canonical({"llm": _stable(config, strict=False), "call": kind, "kwargs": call})

    def _chat_request(
        self, messages: Sequence[ChatMessage], kwargs: Mapping[str, Any]
    ) -> CacheRequest | None:
        if not messages:
            return None
        llm_string = self._llm_string("chat", kwargs)
        if llm_string is None:
            return None
        try:
            openai = [_key_message(m) for m in messages]
        except _Unstable:
            return None
        return CacheRequest.from_messages(openai, llm_string=llm_string, question_key=self.selector)

    def _completion_request(
        self, prompt: str, formatted: bool, kwargs: Mapping[str, Any]
    ) -> CacheRequest | None:
        llm_string = self._llm_string("complete" if not formatted else "complete-formatted", kwargs)
        if llm_string is None or not isinstance(prompt, str):
            return None
        return CacheRequest.from_prompt(prompt, llm_string=llm_string, question_key=self.selector)

    def _model_and_usage(
        self, response: Any, prompt: str | list[dict[str, Any]]
    ) -> tuple[str | None, Usage | None]:
        """The model and the tokens the call used: the provider's usage (``raw``, ``additional_kwargs``), else an
        estimate (the prompt and the answer counted), so a hit can still tell what it saved."""
        usage, model = usage_of(response)
        if not model:
            name = self.llm.metadata.model_name
            model = name if name and name != _PLACEHOLDER_MODEL else self.llm.class_name()
        if usage is None:
            from frugal_chains.accounting.tokens import count_message_tokens, count_text_tokens

            answer = get_field(response, "text")
            if not isinstance(answer, str):
                answer = get_field(get_field(response, "message"), "content") or ""
            prompt_tokens = (
                count_text_tokens(prompt, model)
                if isinstance(prompt, str)
                else count_message_tokens(prompt, model=model)
            )
            usage = Usage(input_tokens=prompt_tokens, output_tokens=count_text_tokens(str(answer), model))
        return model, usage

    # -- hits ------------------------------------------------------------------------------------------------
    @staticmethod
    def _chat_hit(found: tuple[CacheResult, ChatMessage | None] | None) -> ChatResponse | None:
        if found is None or found[1] is None:
            return None
        return ChatResponse(message=found[1], additional_kwargs=_hit_marks({}, found[0]))

    @staticmethod
    def _completion_hit(
        found: tuple[CacheResult, tuple[str, dict[str, Any]] | None] | None,
    ) -> CompletionResponse | None:
        if found is None or found[1] is None:
            return None
        text, kwargs = found[1]
        return CompletionResponse(text=text, additional_kwargs=_hit_marks(kwargs, found[0]))

    @staticmethod
    def _replay_chat(hit: ChatResponse) -> list[ChatResponse]:
        message = hit.message
        text = message.content or ""
        others = [b for b in message.blocks if not isinstance(b, TextBlock)]
        out: list[ChatResponse] = []
        so_far = ""
        pieces = replay_pieces(text)
        for i, piece in enumerate(pieces):
            so_far += piece
            last = i == len(pieces) - 1
            blocks: list[Any] = [TextBlock(text=so_far), *(others if last else [])]
            partial = ChatMessage(
                role=message.role,
                blocks=blocks,
                additional_kwargs=dict(message.additional_kwargs) if last else {},
            )
            out.append(
                ChatResponse(
                    message=partial,
                    delta=piece,
                    additional_kwargs=dict(hit.additional_kwargs) if last else {},
                )
            )
        return out

    @staticmethod
    def _replay_completion(hit: CompletionResponse) -> list[CompletionResponse]:
        out: list[CompletionResponse] = []
        so_far = ""
        pieces = replay_pieces(hit.text)
        for i, piece in enumerate(pieces):
            so_far += piece
            last = i == len(pieces) - 1
            out.append(
                CompletionResponse(
                    text=so_far, delta=piece, additional_kwargs=dict(hit.additional_kwargs) if last else {}
                )
            )
        return out

    # -- stores ----------------------------------------------------------------------------------------------
    def _chat_entry(self, response: ChatResponse, messages: Sequence[ChatMessage]) -> StoredAnswer | None:
        if not _has_answer(response.message):
            return None
        answer = _encode_chat(response.message)
        if answer is None:
            return None
        model, usage = self._model_and_usage(response, [openai_message(m) for m in messages])
        return StoredAnswer.of(answer, model=model, usage=usage, metadata=response.additional_kwargs)

    def _completion_entry(self, response: CompletionResponse, prompt: str) -> StoredAnswer | None:
        if not response.text.strip():
            return None
        answer = _encode_completion(response.text, response.additional_kwargs)
        if answer is None:
            return None
        model, usage = self._model_and_usage(response, prompt)
        return StoredAnswer.of(answer, model=model, usage=usage, metadata=response.additional_kwargs)

    def _chat_entry_of(
        self, seen: list[ChatResponse], messages: Sequence[ChatMessage]
    ) -> StoredAnswer | None:
        return self._chat_entry(whole_chat(seen), messages) if seen else None

    def _completion_entry_of(self, seen: list[CompletionResponse], prompt: str) -> StoredAnswer | None:
        return self._completion_entry(whole_completion(seen), prompt) if seen else None

    def _store(self, request: CacheRequest, entry: StoredAnswer | None) -> None:
        if entry is not None:
            entry.store(self.cache, request)

    async def _astore(self, request: CacheRequest, entry: StoredAnswer | None) -> None:
        if entry is not None:
            await entry.astore(self.cache, request)

    # -- refused requests ------------------------------------------------------------------------------------
    def _reason(self, request: CacheRequest | None) -> str | None:
        return None if request is None else self.cache.skip_reason(request)

    def _refused(self, request: CacheRequest | None, response: _R) -> _R:
        """The wrapped LLM's answer, marked with why the cache refused the request (unchanged when it did not)."""
        reason = self._reason(request)
        if reason is not None:
            kwargs = getattr(response, "additional_kwargs", None)
            response.additional_kwargs = mark_cache_bypass(kwargs, reason)  # type: ignore[attr-defined]
        return response

    def _refused_stream(
        self, request: CacheRequest | None, stream: Generator[_R, None, None]
    ) -> Generator[_R, None, None]:
        if self._reason(request) is None:
            return stream

        def marked() -> Generator[_R, None, None]:
            try:
                for response in stream:
                    yield self._refused(request, response)
            finally:
                close_stream(stream)

        return marked()

    def _arefused_stream(
        self, request: CacheRequest | None, stream: AsyncGenerator[_R, None]
    ) -> AsyncGenerator[_R, None]:
        if self._reason(request) is None:
            return stream

        async def marked() -> AsyncGenerator[_R, None]:
            try:
                async for response in stream:
                    yield self._refused(request, response)
            finally:
                await aclose_stream(stream)

        return marked()

    # -- chat ------------------------------------------------------------------------------------------------
    @wrapper_event("chat")
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        request = self._chat_request(messages, kwargs)
        if request is not None:
            hit = self._chat_hit(self.cache.lookup_decoded(request, decode=_decode_chat))
            if hit is not None:
                return hit
        response = self.llm.chat(messages, **kwargs)
        if request is not None:
            self._store(request, self._chat_entry(response, messages))
        return self._refused(request, response)

    @wrapper_event("chat")
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        request = self._chat_request(messages, kwargs)
        if request is not None:
            hit = self._chat_hit(await self.cache.alookup_decoded(request, decode=_decode_chat))
            if hit is not None:
                return hit
        response = await self.llm.achat(messages, **kwargs)
        if request is not None:
            await self._astore(request, self._chat_entry(response, messages))
        return self._refused(request, response)

    @wrapper_event("chat")
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        request = self._chat_request(messages, kwargs)
        if request is not None:
            hit = self._chat_hit(self.cache.lookup_decoded(request, decode=_decode_chat))
            if hit is not None:
                return (r for r in self._replay_chat(hit))
        inner = open_stream(
            lambda: self.llm.stream_chat(messages, **kwargs), lambda: self.llm.chat(messages, **kwargs)
        )
        relayed = relay(self.cache, request, inner, lambda seen: self._chat_entry_of(seen, messages))
        return self._refused_stream(request, relayed)

    @wrapper_event("chat")
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        request = self._chat_request(messages, kwargs)
        if request is not None:
            hit = self._chat_hit(await self.cache.alookup_decoded(request, decode=_decode_chat))
            if hit is not None:
                return _agen(self._replay_chat(hit))
        inner = await aopen_stream(
            lambda: self.llm.astream_chat(messages, **kwargs), lambda: self.llm.achat(messages, **kwargs)
        )
        relayed = arelay(self.cache, request, inner, lambda seen: self._chat_entry_of(seen, messages))
        return self._arefused_stream(request, relayed)

    # -- complete --------------------------------------------------------------------------------------------
    @wrapper_event("complete")
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        request = self._completion_request(prompt, formatted, kwargs)
        if request is not None:
            hit = self._completion_hit(self.cache.lookup_decoded(request, decode=_decode_completion))
            if hit is not None:
                return hit
        response = self.llm.complete(prompt, formatted=formatted, **kwargs)
        if request is not None:
            self._store(request, self._completion_entry(response, prompt))
        return self._refused(request, response)

    @wrapper_event("complete")
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        request = self._completion_request(prompt, formatted, kwargs)
        if request is not None:
            hit = self._completion_hit(await self.cache.alookup_decoded(request, decode=_decode_completion))
            if hit is not None:
                return hit
        response = await self.llm.acomplete(prompt, formatted=formatted, **kwargs)
        if request is not None:
            await self._astore(request, self._completion_entry(response, prompt))
        return self._refused(request, response)

    @wrapper_event("complete")
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        request = self._completion_request(prompt, formatted, kwargs)
        if request is not None:
            hit = self._completion_hit(self.cache.lookup_decoded(request, decode=_decode_completion))
            if hit is not None:
                return (r for r in self._replay_completion(hit))
        inner = open_stream(
            lambda: self.llm.stream_complete(prompt, formatted=formatted, **kwargs),
            lambda: self.llm.complete(prompt, formatted=formatted, **kwargs),
        )
        relayed = relay(self.cache, request, inner, lambda seen: self._completion_entry_of(seen, prompt))
        return self._refused_stream(request, relayed)

    @wrapper_event("complete")
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        request = self._completion_request(prompt, formatted, kwargs)
        if request is not None:
            hit = self._completion_hit(await self.cache.alookup_decoded(request, decode=_decode_completion))
            if hit is not None:
                return _agen(self._replay_completion(hit))
        inner = await aopen_stream(
            lambda: self.llm.astream_complete(prompt, formatted=formatted, **kwargs),
            lambda: self.llm.acomplete(prompt, formatted=formatted, **kwargs),
        )
        relayed = arelay(self.cache, request, inner, lambda seen: self._completion_entry_of(seen, prompt))
        return self._arefused_stream(request, relayed)


async def _agen(items: list[Any]) -> AsyncGenerator[Any, None]:
    for item in items:
        yield item


__getattr__ = deprecated_attributes(__name__, old_metadata_keys("HIT_KEY", "WRAPPER_PAYLOAD_KEY"))
