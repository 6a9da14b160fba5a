"""A fake LlamaIndex LLM that reports usage like a provider (OpenAI-style ``raw`` usage and ``additional_kwargs``
token counts), answers deterministically and answers structured output."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

try:
    import llama_index.core  # noqa: F401
except ImportError as e:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "frugal_chains.testing.fake_llm (the LlamaIndex test LLM) needs llama-index-core: "
        'pip install "frugal-chains[llama-index]"'
    ) from e

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.llm import LLM
from pydantic import BaseModel, Field, PrivateAttr

from frugal_chains.accounting.tokens import count_message_tokens
from frugal_chains.testing._schema import fill_schema as _fill

__all__ = ["FakeUsageLLM"]

_SCHEMA_MARK = "Here's a JSON schema to follow:"
"""What LlamaIndex's ``PydanticOutputParser`` puts before the schema in a structured-output prompt."""


class FakeUsageLLM(LLM):
    """A LlamaIndex LLM for tests and demos: answers without a provider and reports usage the way LlamaIndex's
    OpenAI integration does, so :class:`~frugal_chains.llama_index.TokenBudgetHandler`, ``CachedLLM`` and
    ``CascadeLLM`` record real-looking figures.

    * Native ``chat``/``complete``, their streaming forms and the async four (a chat model: query engines call
      ``chat``). Streams yield one word a chunk; usage rides on the last one.
    * Usage: input tokens are the OpenAI-recipe count of the prompt times ``input_token_factor``; output tokens
      are ``output_tokens`` (capped by ``max_tokens``). They are reported in ``raw`` (``{"model", "usage":
      {"prompt_tokens", "completion_tokens", "total_tokens"}}``) and, outside streams, in ``additional_kwargs``.
    * Answers: ``responses`` is a fixed text, a list of texts used in turn, or a function of the prompt (the
      last user message, or the completion prompt).
    * Structured output (``structured_predict``, ``as_structured_llm``, the ``stream_``/async forms): when the
      prompt carries LlamaIndex's JSON schema instructions the answer is a JSON object for that schema: the
      next of ``structured_responses``, else the schema filled from the prompt (numbers, then quoted strings,
      then the prompt itself).

    Example:
        >>> from pydantic import BaseModel
        >>> from llama_index.core.prompts import PromptTemplate
        >>> from frugal_chains.testing import FakeUsageLLM
        >>> llm = FakeUsageLLM(model="gpt-4o-mini", responses=["Paris.", "Rome."], output_tokens=5)
        >>> r = llm.complete("Capital of France?")
        >>> r.text, r.raw["usage"]["completion_tokens"], r.additional_kwargs["prompt_tokens"]
        ('Paris.', 5, 11)
        >>> llm.complete("Capital of Italy?").text
        'Rome.'
        >>> class City(BaseModel):
        ...     name: str
        >>> llm.structured_predict(City, PromptTemplate("Name the city in {text}."), text="'Lyon' is nice")
        City(name='Lyon')
    """

    model: str = "gpt-4o-mini"
    """Reported as ``metadata.model_name`` and in ``raw["model"]`` (and priced by the budget handler)."""
    max_tokens: int | None = 256
    """Output cap; reported output never exceeds it (the budget handler reserves it)."""
    output_tokens: int = 40
    """Output tokens of each answer (capped by ``max_tokens``)."""
    input_token_factor: float = 1.0
    """Reported input tokens = ceil(counted prompt tokens x this factor)."""
    context_window: int = 128_000
    """Reported in ``metadata``."""
    responses: str | Sequence[str] | Callable[[str], str] = Field(
        default=("This is a fake answer.",), exclude=True
    )
    """The answer: a text, texts used in turn, or a function of the prompt text."""
    structured_responses: Sequence[dict[str, Any] | BaseModel] = Field(default=(), exclude=True)
    """Answers to structured-output prompts, used in turn (dicts or pydantic instances); empty: filled from the
    schema and the prompt."""
    latency_s: float = 0.0
    """Seconds each call takes (``time.sleep`` / ``asyncio.sleep``)."""
    fail_with: Callable[[], BaseException] | None = Field(default=None, exclude=True)
    """Raise this error instead of answering (a provider outage)."""

    _calls: Any = PrivateAttr(default_factory=itertools.count)
    _structured_calls: Any = PrivateAttr(default_factory=itertools.count)

    @classmethod
    def class_name(cls) -> str:
        return "FakeUsageLLM"

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(
            model_name=self.model,
            context_window=self.context_window,
            num_output=self.max_tokens or 256,
            is_chat_model=True,
        )

    # -- the answer ---------------------------------------------------------------------------------------------
    def _answer(self, messages: Sequence[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
        """The text and the OpenAI-style usage of one call on OpenAI-format ``messages``."""
        if self.fail_with is not None:
            raise self.fail_with()
        prompt = next((str(m["content"]) for m in reversed(messages) if m["role"] == "user"), "")
        text = self._structured(messages, prompt)
        if text is None:
            text = self._text(prompt)
        input_tokens = math.ceil(count_message_tokens(messages, model=self.model) * self.input_token_factor)
        output = self.output_tokens if self.max_tokens is None else min(self.output_tokens, self.max_tokens)
        usage = {
            "prompt_tokens": input_tokens,
            "completion_tokens": output,
            "total_tokens": input_tokens + output,
        }
        return text, usage

    def _text(self, prompt: str) -> str:
        n = next(self._calls)
        if callable(self.responses):
            return str(self.responses(prompt))
        if isinstance(self.responses, str):
            return self.responses
        return self.responses[n % len(self.responses)] if self.responses else ""

    def _structured(self, messages: Sequence[dict[str, Any]], prompt: str) -> str | None:
        for m in reversed(messages):
            content = str(m["content"])
            if _SCHEMA_MARK not in content:
                continue
            after = content.split(_SCHEMA_MARK, 1)[1].lstrip()
            schema = _json_prefix(after)
            if schema is None:  # LlamaIndex leaves the template's escaped braces in the prompt
                schema = _json_prefix(after.replace("{{", "{").replace("}}", "}"))
            if not isinstance(schema, dict):
                return None
            asked = content.split(_SCHEMA_MARK, 1)[0]
            if self.structured_responses:
                value = self.structured_responses[
                    next(self._structured_calls) % len(self.structured_responses)
                ]
                answer = value.model_dump(mode="json") if isinstance(value, BaseModel) else dict(value)
            else:
                answer = _fill(schema, asked.strip() or prompt)
            return json.dumps(answer)
        return None

    def _raw(self, usage: dict[str, Any]) -> dict[str, Any]:
        return {"model": self.model, "usage": dict(usage)}

    @staticmethod
    def _pieces(text: str) -> list[str]:
        words = text.split(" ") if text else [""]
        return [w if i == 0 else " " + w for i, w in enumerate(words)]

    def _chat_response(self, messages: Sequence[ChatMessage]) -> ChatResponse:
        text, usage = self._answer(_openai(messages))
        return ChatResponse(
            message=ChatMessage(role=MessageRole.ASSISTANT, content=text),
            raw=self._raw(usage),
            additional_kwargs=dict(usage),
        )

    def _completion_response(self, prompt: str) -> CompletionResponse:
        text, usage = self._answer([{"role": "user", "content": prompt}])
        return CompletionResponse(text=text, raw=self._raw(usage), additional_kwargs=dict(usage))

    def _chat_chunks(self, messages: Sequence[ChatMessage]) -> Iterator[ChatResponse]:
        text, usage = self._answer(_openai(messages))
        so_far = ""
        parts = self._pieces(text)
        for i, part in enumerate(parts):
            so_far += part
            last = i == len(parts) - 1
            yield ChatResponse(
                message=ChatMessage(role=MessageRole.ASSISTANT, content=so_far),
                delta=part,
                raw=self._raw(usage) if last else None,
            )

    def _completion_chunks(self, prompt: str) -> Iterator[CompletionResponse]:
        text, usage = self._answer([{"role": "user", "content": prompt}])
        so_far = ""
        parts = self._pieces(text)
        for i, part in enumerate(parts):
            so_far += part
            last = i == len(parts) - 1
            yield CompletionResponse(text=so_far, delta=part, raw=self._raw(usage) if last else None)

    def _wait(self) -> None:
        if self.latency_s:
            time.sleep(self.latency_s)

    async def _await(self) -> None:
        if self.latency_s:
            await asyncio.sleep(self.latency_s)

    # -- LlamaIndex's LLM interface -----------------------------------------------------------------------------
    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        self._wait()
        return self._chat_response(messages)

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        await self._await()
        return self._chat_response(messages)

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        def gen() -> ChatResponseGen:
            self._wait()
            yield from self._chat_chunks(messages)

        return gen()

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        async def gen() -> ChatResponseAsyncGen:
            await self._await()
            for chunk in self._chat_chunks(messages):
                yield chunk

        return gen()

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        self._wait()
        return self._completion_response(prompt)

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        await self._await()
        return self._completion_response(prompt)

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        def gen() -> CompletionResponseGen:
            self._wait()
            yield from self._completion_chunks(prompt)

        return gen()

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        async def gen() -> CompletionResponseAsyncGen:
            await self._await()
            for chunk in self._completion_chunks(prompt):
                yield chunk

        return gen()


def _json_prefix(text: str) -> Any:
    try:
        return json.JSONDecoder().raw_decode(text)[0]
    except json.JSONDecodeError:
        return None


def _openai(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    role = {"model": "assistant", "chatbot": "assistant", "developer": "system"}
    out = []
    for m in messages:
        r = m.role.value if isinstance(m.role, MessageRole) else str(m.role)
        out.append({"role": role.get(r, r), "content": m.content or ""})
    return out
