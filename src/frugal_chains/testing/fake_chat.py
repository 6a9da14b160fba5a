"""A fake LangChain chat model that reports usage like a provider and can call tools forever."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

try:
    import langchain_core  # noqa: F401
except ImportError as e:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "frugal_chains.testing.fake_chat (LangChain test models) needs langchain-core: "
        'pip install "frugal-chains[langchain]"'
    ) from e

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LangSmithParams, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, convert_to_openai_messages
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import Field, PrivateAttr

from frugal_chains.accounting.tokens import count_message_tokens

__all__ = ["AnsweringChatModel", "FakeUsageChatModel"]


class AnsweringChatModel(BaseChatModel):
    """Base of the test models: ``_answer(messages, **kwargs) -> AIMessage`` is the whole model; invoke, stream and
    their async forms (with the optional ``latency_s``) are built on it. Streams split the text with
    :meth:`_pieces`; usage, metadata and tool calls ride on the last chunk."""

    latency_s: float = 0.0
    """Seconds each call takes (``time.sleep`` / ``asyncio.sleep``)."""

    def _answer(self, messages: list[BaseMessage], **kwargs: Any) -> AIMessage:
        raise NotImplementedError

    @staticmethod
    def _pieces(text: str) -> list[str]:
        """The streamed pieces of ``text`` (they concatenate back to it): one a word."""
        words = text.split(" ") if text else [""]
        return [w if i == 0 else " " + w for i, w in enumerate(words)]

    def _chunks(self, message: AIMessage) -> Iterator[ChatGenerationChunk]:
        parts = self._pieces(str(message.content))
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            yield ChatGenerationChunk(
                message=AIMessageChunk(
                    content=part,
                    tool_call_chunks=[
                        {
                            "name": c["name"],
                            "args": json.dumps(c["args"]),
                            "id": c["id"],
                            "index": j,
                            "type": "tool_call_chunk",
                        }
                        for j, c in enumerate(message.tool_calls)
                    ]
                    if last
                    else [],
                    usage_metadata=message.usage_metadata if last else None,
                    response_metadata=dict(message.response_metadata) if last else {},
                    chunk_position="last" if last else None,
                )
            )

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self.latency_s:
            time.sleep(self.latency_s)
        return ChatResult(generations=[ChatGeneration(message=self._answer(messages, **kwargs))])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        return ChatResult(generations=[ChatGeneration(message=self._answer(messages, **kwargs))])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        if self.latency_s:
            time.sleep(self.latency_s)
        for chunk in self._chunks(self._answer(messages, **kwargs)):
            if run_manager:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        for chunk in self._chunks(self._answer(messages, **kwargs)):
            if run_manager:
                await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk


class FakeUsageChatModel(AnsweringChatModel):
    """A chat model for tests and demos: answers without a provider and reports ``usage_metadata``.

    Its reported input tokens are the OpenAI-recipe count of the prompt times ``input_token_factor`` (set it
    above 1 to play a provider whose tokenizer counts more than the estimate). When tools are bound and
    ``tool_to_call`` is set, every answer calls that tool: an agent loop that never ends by itself.

    Example:
        >>> from langchain_core.tools import tool
        >>> from frugal_chains.testing import FakeUsageChatModel
        >>> @tool
        ... def lookup(q: str) -> str:
        ...     '''Look something up.'''
        ...     return "42"
        >>> model = FakeUsageChatModel(tool_to_call="lookup").bind_tools([lookup])
        >>> model.invoke("what is it?").tool_calls[0]["name"]
        'lookup'
    """

    model: str = "gpt-4o-mini"
    """The name reported in ``response_metadata["model_name"]`` (and priced by the budget handler)."""
    provider: str = "openai"
    """Reported as ``ls_provider``."""
    max_tokens: int | None = 256
    """Output cap; reported output never exceeds it."""
    output_tokens: int = 40
    """Output tokens of each answer (capped by ``max_tokens``)."""
    input_token_factor: float = 1.0
    """Reported input tokens = ceil(estimated prompt tokens x this factor)."""
    cache_read_tokens: int = 0
    """Prompt tokens reported as read from the provider's cache (capped by the input)."""
    responses: Sequence[str] = ("This is a fake answer.",)
    """Answer texts, used in turn."""
    tool_to_call: str | None = None
    """With tools bound: call this tool in every answer."""
    fail_with: Callable[[], BaseException] | None = Field(default=None, exclude=True)
    """Raise this error instead of answering (a provider outage)."""

    _calls: Any = PrivateAttr(default_factory=itertools.count)

    @property
    def _llm_type(self) -> str:
        return "frugal-fake-usage"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.model, "max_tokens": self.max_tokens}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_provider"] = self.provider
        params["ls_model_name"] = kwargs.get("model") or self.model
        return params

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        formatted = [convert_to_openai_tool(t) for t in tools]
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        return self.bind(tools=formatted, **kwargs)

    # -- the answer ---------------------------------------------------------------------------------------
    def _answer(self, messages: list[BaseMessage], **kwargs: Any) -> AIMessage:
        if self.fail_with is not None:
            raise self.fail_with()
        tools = kwargs.get("tools") or None
        model = kwargs.get("model") or self.model
        cap = kwargs.get("max_tokens", self.max_tokens)
        prompt = count_message_tokens(convert_to_openai_messages(messages), model=model, tools=tools)
        input_tokens = math.ceil(prompt * self.input_token_factor)
        output = self.output_tokens if cap is None else min(self.output_tokens, int(cap))
        n = next(self._calls)
        text = self.responses[n % len(self.responses)] if self.responses else ""
        cache_read = min(self.cache_read_tokens, input_tokens)
        usage = UsageMetadata(
            input_tokens=input_tokens,
            output_tokens=output,
            total_tokens=input_tokens + output,
            input_token_details={"cache_read": cache_read},
        )
        tool_calls = []
        if tools and self.tool_to_call:
            tool_calls = [
                {
                    "name": self.tool_to_call,
                    "args": _fake_args(tools, self.tool_to_call, n),
                    "id": f"call_{uuid.uuid4().hex[:12]}",
                    "type": "tool_call",
                }
            ]
            text = ""
        return AIMessage(
            content=text,
            tool_calls=tool_calls,
            usage_metadata=usage,
            response_metadata={"model_name": model, "model_provider": self.provider, "finish_reason": "stop"},
        )


def _fake_args(tools: Sequence[dict[str, Any]], name: str, n: int) -> dict[str, Any]:
    for tool in tools:
        fn = tool.get("function", tool)
        if fn.get("name") == name:
            props = (fn.get("parameters") or {}).get("properties") or {}
            return {
                key: (n if spec.get("type") in ("integer", "number") else f"query {n}")
                for key, spec in props.items()
            }
    return {}
