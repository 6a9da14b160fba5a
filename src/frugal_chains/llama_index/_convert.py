"""What the LlamaIndex wing's modules share: messages and responses converted once (OpenAI-format message dicts,
what the core speaks; the text and usage of a response; a stream's chunks joined into one response), and the
callback sharing of LLMs that call other LLMs."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    CompletionResponse,
    MessageRole,
    TextBlock,
)
from llama_index.core.callbacks import CallbackManager

from frugal_chains.accounting.provider_usage import get_field as _get
from frugal_chains.accounting.provider_usage import usage_from_provider
from frugal_chains.accounting.usage import Usage
from frugal_chains.shared.sharing import NotPicklable

__all__ = [
    "SharesCallbacks",
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
