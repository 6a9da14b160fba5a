"""What the LlamaIndex wing's modules share: messages and responses converted once (OpenAI-format message dicts,
what the core speaks; the text and usage of a response; a stream's chunks joined into one response), and what LLMs
that call other LLMs (the cascade, the cache wrapper) need: callback sharing, a stream that falls back to the whole
answer for an LLM with no streaming (:func:`open_stream`), and their own LLM events (:func:`wrapper_event`)."""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Iterator,
    Mapping,
    Sequence,
)
from typing import Any, TypeVar, cast

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    CompletionResponse,
    MessageRole,
    TextBlock,
)
from llama_index.core.callbacks import CallbackManager, CBEventType, EventPayload
from llama_index.core.llms import LLM

from frugal_chains.accounting.provider_usage import get_field as _get
from frugal_chains.accounting.provider_usage import usage_from_provider
from frugal_chains.accounting.usage import Usage
from frugal_chains.llama_index.attachment import check_attached
from frugal_chains.shared.sharing import NotPicklable
from frugal_chains.shared.streams import aclose_stream, close_stream

__all__ = [
    "SharesCallbacks",
    "aopen_stream",
    "as_chunk",
    "open_stream",
    "wrapper_event",
    "message_text",
    "openai_message",
    "routing_messages",
    "response_text",
    "streamed_text",
    "usage_of",
    "whole_chat",
    "whole_completion",
]


# -- usage and text of a response --------------------------------------------------------------------------------
def usage_of(response: Any) -> tuple[Usage | None, str | None]:
    """``(usage, model)`` reported by a ``ChatResponse``/``CompletionResponse``: ``raw`` usage first (the
    provider's own, with cache and reasoning details), then token counts in ``additional_kwargs`` (where
    LlamaIndex's OpenAI integration and ``TokenCountingHandler`` look)."""
    raw = _get(response, "raw")
    model = _get(raw, "model")
    found_model = model if isinstance(model, str) and model else None
    for candidate in (
        _get(raw, "usage"),
        _get(raw, "usage_metadata"),
        _get(response, "additional_kwargs"),
        _get(_get(response, "message"), "additional_kwargs"),
    ):
        usage = usage_from_provider(candidate)
        if usage is not None:
            return usage, found_model
    return None, found_model


def response_text(response: Any) -> str:
    """The answer's text (and tool calls) for the output estimate."""
    if response is None:
        return ""
    text = _get(response, "text")
    if isinstance(text, str):
        return text
    message = _get(response, "message")
    parts: list[str] = []
    content = _get(message, "content")
    if isinstance(content, str):
        parts.append(content)
    for block in _get(message, "blocks") or ():
        if _get(block, "block_type") == "tool_call":
            args = _get(block, "tool_kwargs")
            parts.append(str(_get(block, "tool_name") or ""))
            parts.append(args if isinstance(args, str) else json.dumps(args, default=str))
    return "\n".join(parts)


# -- messages ------------------------------------------------------------------------------------------------------
def plain(obj: Any) -> Any:
    """Pydantic/SDK objects to plain dicts (for token counting)."""
    dump = getattr(obj, "model_dump", None)
    if callable(dump):
        try:
            return dump()
        except Exception:
            return str(obj)
    return obj


def openai_message(message: Any) -> dict[str, Any]:
    """A LlamaIndex ``ChatMessage`` as an OpenAI-format dict (enough for the token estimate)."""
    if isinstance(message, Mapping):
        return dict(message)
    role = _get(message, "role")
    role = str(getattr(role, "value", role) or "user")
    if role in ("chatbot", "model"):
        role = "assistant"
    out: dict[str, Any] = {"role": role}
    blocks = _get(message, "blocks")
    if blocks is None:
        content = _get(message, "content")
        out["content"] = "" if content is None else str(content)
        return out
    parts: list[dict[str, Any]] = []
    tool_calls: list[dict[str, Any]] = []
    for block in blocks:
        kind = _get(block, "block_type")
        if kind == "text":
            parts.append({"type": "text", "text": str(_get(block, "text") or "")})
        elif kind == "thinking":
            parts.append({"type": "text", "text": str(_get(block, "content") or "")})
        elif kind in ("citable", "citation"):
            inner = _get(block, "content") or _get(block, "cited_content")
            for sub in inner if isinstance(inner, list) else [inner]:
                if _get(sub, "block_type") == "text":
                    parts.append({"type": "text", "text": str(_get(sub, "text") or "")})
                else:
                    parts.append({"type": "image_url", "image_url": {"url": ""}})
        elif kind == "tool_call":
            args = _get(block, "tool_kwargs")
            tool_calls.append(
                {
                    "id": _get(block, "tool_call_id") or "",
                    "type": "function",
                    "function": {
                        "name": str(_get(block, "tool_name") or ""),
                        "arguments": args if isinstance(args, str) else json.dumps(args, default=str),
                    },
                }
            )
        elif kind == "cache":
            if parts:
                parts[-1]["cache_control"] = {"type": "ephemeral"}
            else:
                out["cache_control"] = {"type": "ephemeral"}
        elif kind == "image":  # inline data or its URL: the budget reserves it by its size when known
            parts.append({"type": "image_url", "image_url": _image_url(block)})
        elif kind is not None:
            # audio, video, document: priced per part like an image of unknown size (frugal_chains.accounting.tokens)
            parts.append({"type": "image_url", "image_url": {"url": ""}})
    if all(p.get("type") == "text" and "cache_control" not in p for p in parts):
        out["content"] = "\n".join(str(p["text"]) for p in parts)
    else:
        out["content"] = parts
    extra = _get(message, "additional_kwargs") or {}
    if isinstance(extra, Mapping):
        calls = extra.get("tool_calls")
        if isinstance(calls, Sequence) and not isinstance(calls, str):
            tool_calls.extend(dict(c) for c in (plain(c) for c in calls) if isinstance(c, Mapping))
        for key in ("tool_call_id", "name"):
            if isinstance(extra.get(key), str):
                out[key] = extra[key]
    if tool_calls:
        out["tool_calls"] = tool_calls
    return out


def _image_url(block: Any) -> dict[str, Any]:
    """An image block as OpenAI's ``image_url``: a ``data:`` URL for inline data (LlamaIndex keeps it base64
    encoded), else its URL (``""`` when it has neither, e.g. a local path), with its ``detail``."""
    image, url = _get(block, "image"), _get(block, "url")
    if isinstance(image, bytes) and image:
        mime = _get(block, "image_mimetype") or "image/png"
        ref = f"data:{mime};base64,{image.decode('ascii', errors='ignore')}"
    else:
        ref = "" if url is None else str(url)
    out: dict[str, Any] = {"url": ref}
    detail = _get(block, "detail")
    if isinstance(detail, str):
        out["detail"] = detail
    return out


def message_text(message: ChatMessage) -> str:
    """The text blocks of a message joined (images, audio, tool calls ... are skipped)."""
    blocks = getattr(message, "blocks", None)
    if blocks is None:
        content = getattr(message, "content", None)
        return "" if content is None else str(content)
    return "\n".join(b.text for b in blocks if isinstance(b, TextBlock))


def routing_messages(messages: Sequence[Any]) -> list[dict[str, Any]]:
    """What the cascade's scorer and gates read: each message's role and its text blocks only (no reasoning,
    citations, tool calls or media: those would move a score without being part of what was asked or answered).
    The token estimate uses :func:`openai_message`, which keeps everything that is billed."""
    out: list[dict[str, Any]] = []
    for m in messages:
        if isinstance(m, Mapping):
            out.append(dict(m))
            continue
        role = str(getattr(m.role, "value", m.role) or "user")
        out.append(
            {"role": "assistant" if role in ("chatbot", "model") else role, "content": message_text(m)}
        )
    return out


# -- streams -------------------------------------------------------------------------------------------------------
def streamed_text(deltas: list[str | None], last_text: str) -> str:
    """A stream's whole text: its deltas joined when every chunk had one, else the last chunk's text."""
    if deltas and all(d is not None for d in deltas):
        return "".join(d for d in deltas if d is not None)
    return last_text


def stream_logprobs(chunks: Sequence[ChatResponse | CompletionResponse]) -> list[Any] | None:
    found = [position for c in chunks if c.logprobs for position in c.logprobs]
    return found or None


def whole_chat(chunks: Sequence[ChatResponse]) -> ChatResponse:
    """A chat stream as one response: the text of all deltas, the last chunk's other blocks and extras."""
    if not chunks:
        return ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=""))
    last = chunks[-1]
    text = streamed_text([c.delta for c in chunks], message_text(last.message))
    others = [b for b in last.message.blocks if not isinstance(b, TextBlock)]
    message = ChatMessage(
        role=last.message.role,
        blocks=[TextBlock(text=text), *others],
        additional_kwargs=dict(last.message.additional_kwargs),
    )
    return ChatResponse(
        message=message,
        raw=last.raw,
        additional_kwargs=dict(last.additional_kwargs),
        logprobs=stream_logprobs(chunks),
    )


def whole_completion(chunks: Sequence[CompletionResponse]) -> CompletionResponse:
    """A completion stream as one response."""
    if not chunks:
        return CompletionResponse(text="")
    last = chunks[-1]
    return CompletionResponse(
        text=streamed_text([c.delta for c in chunks], last.text),
        raw=last.raw,
        additional_kwargs=dict(last.additional_kwargs),
        logprobs=stream_logprobs(chunks),
    )


class SharesCallbacks(NotPicklable):
    """Mixin of an LLM that calls other LLMs (the cascade, the cache wrapper): a callback manager set on it (by
    ``Settings.llm``, which sets ``Settings.callback_manager``) is passed on to the LLMs it calls, so one budget
    handler sees both its events and theirs."""

    def _wrapped_llms(self) -> Sequence[Any]:
        raise NotImplementedError

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        private = getattr(self, "__pydantic_private__", None)
        if name == "callback_manager" and private and private.get("_ready"):
            self._share_callbacks(value)

    def _share_callbacks(self, manager: Any) -> None:
        if isinstance(manager, CallbackManager):
            for llm in self._wrapped_llms():
                if llm.callback_manager is not manager:
                    llm.callback_manager = manager


# -- LLMs that call other LLMs -----------------------------------------------------------------------------------
_R = TypeVar("_R", ChatResponse, CompletionResponse)
_F = TypeVar("_F", bound=Callable[..., Any])


def as_chunk(response: _R) -> _R:
    """A whole response as the one chunk of a stream (its ``delta`` is the whole text)."""
    if isinstance(response, ChatResponse):
        return response.model_copy(update={"delta": message_text(response.message)})
    return response.model_copy(update={"delta": response.text})


def open_stream(stream: Callable[[], Iterator[_R]], whole: Callable[[], _R]) -> Iterator[_R]:
    """``stream()``, or the whole answer (``whole()``) as one chunk when the LLM has no streaming: LlamaIndex's
    streaming methods are abstract, and an LLM that does not stream raises ``NotImplementedError`` from them
    (when called, or on the stream's first ``next``, e.g. ``CustomLLM.stream_chat`` over a
    ``stream_complete`` that raises). Closing the returned iterator closes the LLM's stream."""
    try:
        inner = stream()
    except NotImplementedError:
        return iter([as_chunk(whole())])
    return _first_or_whole(inner, whole)


def _first_or_whole(inner: Iterator[_R], whole: Callable[[], _R]) -> Generator[_R, None, None]:
    try:
        try:
            first = next(inner)
        except StopIteration:
            return
        except NotImplementedError:
            yield as_chunk(whole())
            return
        yield first
        yield from inner
    finally:
        close_stream(inner)


async def aopen_stream(
    stream: Callable[[], Awaitable[AsyncIterator[_R]]], whole: Callable[[], Awaitable[_R]]
) -> AsyncIterator[_R]:
    """Async :func:`open_stream`."""
    try:
        inner = await stream()
    except NotImplementedError:
        return _one(as_chunk(await whole()))
    return _afirst_or_whole(inner, whole)


async def _one(item: _R) -> AsyncGenerator[_R, None]:
    yield item


async def _afirst_or_whole(
    inner: AsyncIterator[_R], whole: Callable[[], Awaitable[_R]]
) -> AsyncGenerator[_R, None]:
    try:
        try:
            first = await inner.__anext__()
        except StopAsyncIteration:
            return
        except NotImplementedError:
            yield as_chunk(await whole())
            return
        yield first
        async for item in inner:
            yield item
    finally:
        await aclose_stream(inner)


def _manager_of(llm: Any) -> CallbackManager:
    manager = getattr(llm, "callback_manager", None)
    if not isinstance(manager, CallbackManager):
        manager = CallbackManager()
        llm.callback_manager = manager
    return manager


def _start_payload(llm: Any, kind: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The start event's payload, as LlamaIndex's decorators send it (the messages or the prompt, the call's
    other keyword arguments, the LLM's ``to_payload()``)."""
    name = "messages" if kind == "chat" else "prompt"
    first = args[0] if args else kwargs.get(name)
    rest = {k: v for k, v in kwargs.items() if k != name}
    key = EventPayload.MESSAGES if kind == "chat" else EventPayload.PROMPT
    return {key: first, EventPayload.ADDITIONAL_KWARGS: rest, EventPayload.SERIALIZED: llm.to_payload()}


def _ended_after(
    stream: Iterator[Any], manager: CallbackManager, event_id: str
) -> Generator[Any, None, None]:
    """``stream`` with the wrapper's LLM event open until it ends (the calls it makes are nested in it)."""
    try:
        yield from stream
    except BaseException as e:
        manager.on_event_end(CBEventType.LLM, payload={EventPayload.EXCEPTION: e}, event_id=event_id)
        raise
    manager.on_event_end(CBEventType.LLM, event_id=event_id)


async def _aended_after(
    stream: AsyncIterator[Any], manager: CallbackManager, event_id: str
) -> AsyncGenerator[Any, None]:
    try:
        async for item in stream:
            yield item
    except BaseException as e:
        manager.on_event_end(CBEventType.LLM, payload={EventPayload.EXCEPTION: e}, event_id=event_id)
        raise
    manager.on_event_end(CBEventType.LLM, event_id=event_id)


def wrapper_event(kind: str) -> Callable[[_F], _F]:
    """The legacy-callback LLM event of an LLM that calls other LLMs (``kind``: ``"chat"`` or ``"complete"``), in
    place of LlamaIndex's ``llm_chat_callback``/``llm_completion_callback``: the same trace and start event
    (marked as a wrapper by ``to_payload()``), nesting the calls it makes, and the LLM's ``rate_limiter``, but the
    event **ends without a response**. The LLMs it calls send their own events with their responses, so a handler
    that adds up LLM events (LlamaIndex's ``TokenCountingHandler``, which estimates any response without usage)
    counts each provider call once, and a cache hit (no call) not at all. No instrumentation LLM events are sent
    for the wrapper either (its span still encloses the calls' events). A budget handler on
    ``Settings.callback_manager`` that the wrapper's manager lacks is warned about
    (:class:`~frugal_chains.llama_index.BudgetNotAttachedWarning`)."""

    def wrap(f: _F) -> _F:
        if inspect.iscoroutinefunction(f):

            @functools.wraps(f)
            async def arun(self: Any, *args: Any, **kwargs: Any) -> Any:
                manager = _manager_of(self)
                check_attached(manager, self.class_name())
                with manager.as_trace(kind):
                    event_id = manager.on_event_start(
                        CBEventType.LLM, payload=_start_payload(self, kind, args, kwargs)
                    )
                    if self.rate_limiter is not None:
                        await self.rate_limiter.async_acquire()
                    try:
                        out = await f(self, *args, **kwargs)
                    except BaseException as e:
                        manager.on_event_end(
                            CBEventType.LLM, payload={EventPayload.EXCEPTION: e}, event_id=event_id
                        )
                        raise
                    if isinstance(out, AsyncGenerator):
                        return _aended_after(out, manager, event_id)
                    manager.on_event_end(CBEventType.LLM, event_id=event_id)
                    return out

            return cast("_F", arun)

        @functools.wraps(f)
        def run(self: Any, *args: Any, **kwargs: Any) -> Any:
            manager = _manager_of(self)
            check_attached(manager, self.class_name())
            with manager.as_trace(kind):
                event_id = manager.on_event_start(
                    CBEventType.LLM, payload=_start_payload(self, kind, args, kwargs)
                )
                if self.rate_limiter is not None:
                    self.rate_limiter.acquire()
                try:
                    out = f(self, *args, **kwargs)
                except BaseException as e:
                    manager.on_event_end(
                        CBEventType.LLM, payload={EventPayload.EXCEPTION: e}, event_id=event_id
                    )
                    raise
                if isinstance(out, Generator):
                    return _ended_after(out, manager, event_id)
                manager.on_event_end(CBEventType.LLM, event_id=event_id)
                return out

        return cast("_F", run)

    return wrap


def inherit_llm_settings(kwargs: dict[str, Any], llm: LLM) -> None:
    """Fill a wrapper's constructor ``kwargs`` from the wrapped ``llm``: the wrapper formats prompts as the wrapped
    LLM would (``predict()`` formats before calling ``complete()``) and shares its callback manager."""
    for name in (
        "system_prompt",
        "messages_to_prompt",
        "completion_to_prompt",
        "output_parser",
        "pydantic_program_mode",
        "query_wrapper_prompt",
    ):
        if kwargs.get(name) is None:
            kwargs[name] = getattr(llm, name, None)
    if kwargs.get("callback_manager") is None:
        kwargs["callback_manager"] = llm.callback_manager
    kwargs["llm"] = llm
