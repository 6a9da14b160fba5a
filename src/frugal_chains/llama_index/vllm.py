"""``VLLM``: a LlamaIndex LLM on vLLM, a ``vllm serve`` server or the engine in-process.

The adapter only translates types: LlamaIndex ``ChatMessage`` objects to OpenAI-format dicts
(:func:`~frugal_chains.llama_index._convert.openai_message`), call options to a
:class:`~frugal_chains.vllm.ChatRequest`, and answers back to ``ChatResponse`` / ``CompletionResponse`` with the
usage in ``raw["usage"]`` (OpenAI's shape, with ``prompt_tokens_details.cached_tokens``), where the budget
handler and the ledger read it once.
"""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    LogProb,
    MessageRole,
    TextBlock,
    ToolCallBlock,
)
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import ToolSelection
from pydantic import Field, PrivateAttr, SecretStr, model_validator

from frugal_chains.accounting.usage import Usage
from frugal_chains.errors import ConfigurationError
from frugal_chains.llama_index._convert import openai_message
from frugal_chains.vllm._adapt import (
    DEFAULT_CONTEXT_WINDOW,
    SAMPLING_FIELDS,
    build_client,
    check_settings,
    openai_usage,
    output_reservation,
    sampling_options,
    structured_from,
    tool_choice_from,
    unknown_settings,
)
from frugal_chains.vllm.types import (
    ChatRequest,
    Completion,
    CompletionChunk,
    SamplingOptions,
    TokenLogprob,
    ToolCall,
    VLLMClient,
)

if TYPE_CHECKING:
    from llama_index.core.tools.types import BaseTool

__all__ = ["VLLM"]

DEFAULT_NUM_OUTPUT = 256
"""``LLMMetadata.num_output`` (LlamaIndex's room for the answer when it sizes prompts) without ``max_tokens``."""

_CALL_KWARGS = frozenset(
    {*SAMPLING_FIELDS, "stop", "logprobs", "extra_body", "tools", "tool_choice", "response_format"}
)
"""Per-call keyword arguments ``VLLM`` reads (``llm.chat(messages, max_tokens=...)``)."""


def _api_key_from_env() -> SecretStr | None:
    import os

    value = os.environ.get("VLLM_API_KEY")
    return SecretStr(value) if value else None


def _logprobs(logprobs: Sequence[TokenLogprob] | None) -> list[list[LogProb]] | None:
    if logprobs is None:
        return None
    return [
        [LogProb(token=t.token, logprob=t.logprob, bytes=[])]
        + [LogProb(token=tok, logprob=lp, bytes=[]) for tok, lp in t.top]
        for t in logprobs
    ]


def _tool_blocks(calls: Sequence[ToolCall]) -> list[ToolCallBlock]:
    blocks = []
    for call in calls:
        try:
            args: dict[str, Any] | str = json.loads(call.arguments) if call.arguments else {}
        except ValueError:
            args = call.arguments
        blocks.append(
            ToolCallBlock(
                tool_call_id=call.id,
                tool_name=call.name,
                tool_kwargs=args if isinstance(args, dict | str) else call.arguments,
            )
        )
    return blocks


class VLLM(FunctionCallingLLM):
    """A LlamaIndex LLM on vLLM: a ``vllm serve`` server (``base_url``) or, without ``base_url``, the engine run
    in-process (shared per process and model, started on first use; needs ``pip install "frugal-chains[vllm]"``).

    ``chat``/``achat``/``stream_chat``/``astream_chat`` go through the model's own chat template, natively sync
    and async. ``complete`` and its forms send the prompt as one user message of a chat (``formatted`` is
    ignored: the chat template formats it). Tools (``chat_with_tools``, agents): ``tool_required=True`` forces a
    valid call by guided decoding; letting the model choose needs a tool parser (``tool_parser=`` for the engine,
    ``--tool-call-parser`` for the server). The raw usage (``response.raw["usage"]``) reports the prompt tokens
    vLLM's prefix cache served as ``prompt_tokens_details.cached_tokens``. A server that is down raises
    :class:`~frugal_chains.errors.VLLMServerError` after the retries (query engines pass it on).

    Example:
        >>> from llama_index.core.llms import ChatMessage
        >>> from frugal_chains.llama_index import VLLM
        >>> from frugal_chains.testing import FakeVLLMServer
        >>> with FakeVLLMServer(["Paris."], model="qwen-7b") as server:
        ...     # in your app: VLLM(model="Qwen/Qwen2.5-7B-Instruct", base_url="http://gpu-box:8000/v1")
        ...     llm = VLLM(model="qwen-7b", base_url=server.base_url, max_tokens=32)
        ...     r = llm.chat([ChatMessage(role="user", content="Capital of France?")])
        >>> r.message.content, r.raw["model"]
        ('Paris.', 'qwen-7b')
    """

    model: str | None = None
    """The model: a Hugging Face id or a local folder (engine), or the served model name (server; default: the
    first model the server lists)."""
    base_url: str | None = None
    """``http://host:8000/v1`` for a ``vllm serve`` server; ``None`` runs the engine in-process."""
    api_key: SecretStr | None = Field(default_factory=_api_key_from_env, exclude=True)
    """The server's ``--api-key`` (default: ``$VLLM_API_KEY``)."""
    timeout: float = 60.0
    max_retries: int = 2
    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    stop: list[str] | None = None
    seed: int | None = None
    logprobs: bool | int | None = None
    """``True`` (or 0): the log-probability of each answer token; ``n``: and of its ``n`` likeliest alternatives."""
    extra_body: dict[str, Any] | None = None
    """Other vLLM sampling parameters, passed as they are."""
    context_window: int | None = None
    """What LlamaIndex plans prompts for (default: ``max_model_len``, else 4096)."""
    function_calling: bool | None = None
    """``metadata.is_function_calling_model`` (what agents check). Default: with a server (its
    ``--tool-call-parser``) or a ``tool_parser``."""
    dtype: str = "auto"
    max_model_len: int | None = None
    enable_prefix_caching: bool = True
    quantization: str | None = None
    tool_parser: str | None = None
    engine_kwargs: dict[str, Any] | None = None

    _client: VLLMClient | None = PrivateAttr(default=None)
    _client_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @model_validator(mode="before")
    @classmethod
    def _known(cls, data: Any) -> Any:
        unknown_settings(data, cls.model_fields, "VLLM")
        return data

    @model_validator(mode="after")
    def _check(self) -> VLLM:
        check_settings(self, "VLLM")  # now, not at the first call
        return self

    @classmethod
    def class_name(cls) -> str:
        return "VLLM"

    # -- the client ------------------------------------------------------------------------------------------------
    @property
    def client(self) -> VLLMClient:
        """The vLLM client (built on first use; the engine starts at its first call)."""
        with self._client_lock:
            if self._client is None:
                self._client = build_client(self)
            return self._client

    @property
    def served_model(self) -> str:
        return self.model if self.model else self.client.model

    @property
    def max_output_tokens(self) -> int:
        """The most tokens one answer can have (what budgets reserve): ``max_tokens``, else ``max_model_len``,
        else 4096."""
        return output_reservation(self.max_tokens, self.max_model_len)

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(
            model_name=self.served_model,
            context_window=self.context_window or self.max_model_len or DEFAULT_CONTEXT_WINDOW,
            num_output=self.max_tokens or DEFAULT_NUM_OUTPUT,
            is_chat_model=True,
            is_function_calling_model=(
                self.function_calling
                if self.function_calling is not None
                else self.base_url is not None or self.tool_parser is not None
            ),
        )

    # -- requests and answers -----------------------------------------------------------------------------------
    def _request(self, messages: Sequence[Any], kwargs: dict[str, Any]) -> ChatRequest:
        unknown = sorted(k for k in kwargs if k not in _CALL_KWARGS)
        if unknown:
            raise ConfigurationError(
                f"VLLM does not take {', '.join(unknown)}: vLLM-only sampling parameters go in extra_body={{...}}.",
                field=unknown[0],
            )
        tools = list(kwargs.get("tools") or ())
        names = [t["function"]["name"] for t in tools if "function" in t]
        options: SamplingOptions = sampling_options(self, kwargs)
        return ChatRequest(
            messages=[openai_message(m) for m in messages],
            tools=tools,
            tool_choice=tool_choice_from(kwargs.get("tool_choice"), names) if tools else None,
            options=options,
            structured=structured_from(kwargs.get("response_format")),
        )

    def _raw(self, model: str, usage: Usage | None) -> dict[str, Any]:
        raw: dict[str, Any] = {"model": model or self.served_model}
        if usage is not None:
            raw["usage"] = openai_usage(usage)
        return raw

    def _chat_response(self, c: Completion) -> ChatResponse:
        blocks: list[Any] = [TextBlock(text=c.text)]
        blocks.extend(_tool_blocks(c.tool_calls))
        return ChatResponse(
            message=ChatMessage(role=MessageRole.ASSISTANT, blocks=blocks),
            raw=self._raw(c.model, c.usage),
            logprobs=_logprobs(c.logprobs),
            additional_kwargs={"finish_reason": c.finish_reason},
        )

    def _completion_response(self, c: Completion) -> CompletionResponse:
        return CompletionResponse(
            text=c.text,
            raw=self._raw(c.model, c.usage),
            logprobs=_logprobs(c.logprobs),
            additional_kwargs={"finish_reason": c.finish_reason},
        )

    def _chat_stream(self, pieces: Iterator[CompletionChunk]) -> Iterator[ChatResponse]:
        state = _Joined()
        for piece in pieces:
            yield state.chat(self, piece)

    async def _achat_stream(self, pieces: AsyncIterator[CompletionChunk]) -> AsyncIterator[ChatResponse]:
        state = _Joined()
        async for piece in pieces:
            yield state.chat(self, piece)

    # -- chat ------------------------------------------------------------------------------------------------------
    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        request = self._request(messages, kwargs)
        return self._chat_response(self.client.generate([request])[0])

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        request = self._request(messages, kwargs)
        return self._chat_response((await self.client.agenerate([request]))[0])

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        request = self._request(messages, kwargs)

        def gen() -> ChatResponseGen:
            yield from self._chat_stream(iter(self.client.stream(request)))

        return gen()

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        request = self._request(messages, kwargs)

        async def gen() -> ChatResponseAsyncGen:
            async for r in self._achat_stream(self.client.astream(request)):
                yield r

        return gen()

    # -- completion: the prompt as one user message -----------------------------------------------------------------
    @staticmethod
    def _prompt(prompt: str) -> list[dict[str, Any]]:
        return [{"role": "user", "content": prompt}]

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        request = self._request(self._prompt(prompt), kwargs)
        return self._completion_response(self.client.generate([request])[0])

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        request = self._request(self._prompt(prompt), kwargs)
        return self._completion_response((await self.client.agenerate([request]))[0])

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        request = self._request(self._prompt(prompt), kwargs)

        def gen() -> CompletionResponseGen:
            state = _Joined()
            for piece in self.client.stream(request):
                yield state.completion(self, piece)

        return gen()

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        request = self._request(self._prompt(prompt), kwargs)

        async def gen() -> CompletionResponseAsyncGen:
            state = _Joined()
            async for piece in self.client.astream(request):
                yield state.completion(self, piece)

        return gen()

    # -- tools -------------------------------------------------------------------------------------------------------
    def _prepare_chat_with_tools(
        self,
        tools: Sequence[BaseTool],
        user_msg: str | ChatMessage | None = None,
        chat_history: list[ChatMessage] | None = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        **kwargs: Any,
    ) -> dict[str, Any]:
        messages = list(chat_history or [])
        if user_msg is not None:
            messages.append(
                ChatMessage(role=MessageRole.USER, content=user_msg)
                if isinstance(user_msg, str)
                else user_msg
            )
        specs = [t.metadata.to_openai_tool(skip_length_check=True) for t in tools]
        out: dict[str, Any] = {"messages": messages, **kwargs}
        if specs:
            out["tools"] = specs
            out["tool_choice"] = "required" if tool_required else "auto"
        return out

    def get_tool_calls_from_response(
        self, response: ChatResponse, error_on_no_tool_call: bool = True, **kwargs: Any
    ) -> list[ToolSelection]:
        calls = [b for b in response.message.blocks if isinstance(b, ToolCallBlock)]
        if not calls and error_on_no_tool_call:
            raise ConfigurationError(
                f"expected a tool call from {self.served_model!r}, got none: ask with tool_required=True (forced "
                "by guided decoding), or serve the model with a tool-call parser so it can choose one.",
                field="tool_choice",
            )
        selections = []
        for b in calls:
            args = b.tool_kwargs
            if isinstance(args, str):
                try:
                    parsed = json.loads(args) if args else {}
                except ValueError:
                    parsed = {}
                args = parsed if isinstance(parsed, dict) else {}
            selections.append(
                ToolSelection(tool_id=b.tool_call_id or "", tool_name=b.tool_name, tool_kwargs=args)
            )
        return selections


class _Joined:
    """A stream's text and tool calls so far (LlamaIndex's stream responses carry the whole answer so far)."""

    def __init__(self) -> None:
        self.text = ""
        self.calls: dict[int, list[str]] = {}  # index -> [id, name, arguments]

    def _add(self, piece: CompletionChunk) -> None:
        self.text += piece.text
        for d in piece.tool_calls:
            call = self.calls.setdefault(d.index, ["", "", ""])
            if d.id:
                call[0] = d.id
            if d.name:
                call[1] = d.name
            call[2] += d.arguments

    def chat(self, llm: VLLM, piece: CompletionChunk) -> ChatResponse:
        self._add(piece)
        blocks: list[Any] = [TextBlock(text=self.text)]
        blocks.extend(
            _tool_blocks([ToolCall(id=i, name=n, arguments=a) for _, (i, n, a) in sorted(self.calls.items())])
        )
        last = piece.usage is not None or piece.finish_reason is not None
        return ChatResponse(
            message=ChatMessage(role=MessageRole.ASSISTANT, blocks=blocks),
            delta=piece.text,
            raw=llm._raw(piece.model, piece.usage) if last else None,  # usage once: on the last chunk
            logprobs=_logprobs(piece.logprobs),
            additional_kwargs={"finish_reason": piece.finish_reason} if piece.finish_reason else {},
        )

    def completion(self, llm: VLLM, piece: CompletionChunk) -> CompletionResponse:
        self._add(piece)
        last = piece.usage is not None or piece.finish_reason is not None
        return CompletionResponse(
            text=self.text,
            delta=piece.text,
            raw=llm._raw(piece.model, piece.usage) if last else None,
            logprobs=_logprobs(piece.logprobs),
            additional_kwargs={"finish_reason": piece.finish_reason} if piece.finish_reason else {},
        )
