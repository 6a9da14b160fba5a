"""``ChatVLLM``: a LangChain chat model on vLLM, a ``vllm serve`` server or the engine in-process.

The adapter only translates types: LangChain messages to OpenAI-format dicts (``convert_to_openai_messages``),
call options to a :class:`~frugal_chains.vllm.ChatRequest`, and :class:`~frugal_chains.vllm.Completion` /
:class:`~frugal_chains.vllm.CompletionChunk` back to ``AIMessage`` / ``AIMessageChunk``. Which client answers
(server or engine) is decided once, by :func:`~frugal_chains.vllm.client_for`.

``batch`` / ``abatch`` hand the whole batch to the client in one call (the engine gets one ``LLM.chat`` call, the
server the requests at once) and still open one chat-model run per input, so callbacks, budgets and ledgers
see every call, each with its own config (callbacks, tags, metadata, run name). The batch falls back to
LangChain's default (one call per input) when it cannot keep that promise: an LLM cache or a rate limiter is
set, ``max_concurrency`` is lower than the batch, the inputs' configs differ in ``configurable``, or a per-input
``run_id`` is given.
"""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from operator import itemgetter
from typing import Any, Literal, cast

from langchain_core.callbacks import (
    AsyncCallbackManager,
    AsyncCallbackManagerForLLMRun,
    CallbackManager,
    CallbackManagerForLLMRun,
)
from langchain_core.globals import get_llm_cache
from langchain_core.language_models import BaseChatModel, LangSmithParams, LanguageModelInput
from langchain_core.language_models.chat_models import _format_ls_structured_output
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    convert_to_openai_messages,
)
from langchain_core.messages.ai import UsageMetadata
from langchain_core.messages.tool import invalid_tool_call, tool_call, tool_call_chunk
from langchain_core.output_parsers import JsonOutputKeyToolsParser, JsonOutputParser, PydanticOutputParser
from langchain_core.output_parsers.openai_tools import PydanticToolsParser
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult, LLMResult
from langchain_core.runnables import Runnable, RunnableConfig, RunnableMap, RunnablePassthrough
from langchain_core.runnables.config import get_config_list
from langchain_core.tools import BaseTool
from langchain_core.utils import secret_from_env
from langchain_core.utils.function_calling import convert_to_json_schema, convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass
from langchain_core.utils.utils import LC_ID_PREFIX
from pydantic import BaseModel, Field, PrivateAttr, SecretStr, model_validator

from frugal_chains.accounting.usage import Usage
from frugal_chains.errors import ConfigurationError
from frugal_chains.vllm._adapt import (
    SAMPLING_FIELDS,
    build_client,
    check_settings,
    openai_logprobs,
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
    VLLMClient,
)

__all__ = ["ChatVLLM", "usage_metadata"]

_CALL_KWARGS = frozenset(
    {
        *SAMPLING_FIELDS,
        "logprobs",
        "extra_body",
        "tools",
        "tool_choice",
        "response_format",
        "parallel_tool_calls",
        "stream",
        "model",
    }
)
"""Per-call keyword arguments ``ChatVLLM`` reads (``bind(...)``, ``invoke(..., key=value)``)."""


def usage_metadata(usage: Usage) -> UsageMetadata:
    """LangChain's ``usage_metadata`` for a vLLM answer: ``input_tokens`` include the prompt tokens served from
    vLLM's prefix cache, reported as ``input_token_details["cache_read"]`` (0 when none were)."""
    return UsageMetadata(
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        total_tokens=usage.total_tokens,
        input_token_details={"cache_read": usage.cache_read_tokens},
    )


class ChatVLLM(BaseChatModel):
    """A chat model on vLLM: a ``vllm serve`` server (``base_url``) or, without ``base_url``, the engine run
    in-process (shared per process and model, started on first use; needs ``pip install "frugal-chains[vllm]"``).

    Messages go through the model's own chat template. ``invoke``/``ainvoke``/``stream``/``astream`` are native
    (sync and async); ``batch``/``abatch`` hand the whole batch to vLLM in one call, one chat-model run per input.
    ``bind_tools`` takes OpenAI-format tools; ``tool_choice="required"`` or a tool's name forces a valid call by
    guided decoding (works for models that cannot call tools), ``"auto"`` needs a tool parser (``tool_parser=``
    for the engine, ``--tool-call-parser`` for the server). ``with_structured_output`` uses guided decoding
    (``method="json_schema"``, the default), a forced tool call (``"function_calling"``) or any JSON object
    (``"json_mode"``). ``usage_metadata`` reports the prompt tokens served from vLLM's prefix cache as
    ``input_token_details["cache_read"]``.

    A call that sets no ``max_tokens`` is budgeted for ``max_model_len`` tokens of output (engine) or
    4096 tokens (``frugal_chains.vllm._adapt.DEFAULT_OUTPUT_RESERVATION``) when the model's length is unknown.

    Example:
        >>> from frugal_chains.langchain import ChatVLLM
        >>> from frugal_chains.testing import FakeVLLMServer
        >>> with FakeVLLMServer(["Paris."], model="qwen-7b") as server:
        ...     # in your app: ChatVLLM(model="Qwen/Qwen2.5-7B-Instruct", base_url="http://gpu-box:8000/v1")
        ...     chat = ChatVLLM(model="qwen-7b", base_url=server.base_url, max_tokens=32)
        ...     answer = chat.invoke("Capital of France?")
        >>> answer.content, answer.response_metadata["model_name"]
        ('Paris.', 'qwen-7b')
    """

    model: str | None = None
    """The model: a Hugging Face id or a local folder (engine), or the served model name (server; default: the
    first model the server lists)."""
    base_url: str | None = None
    """``http://host:8000/v1`` for a ``vllm serve`` server; ``None`` runs the engine in-process."""
    api_key: SecretStr | None = Field(default_factory=secret_from_env("VLLM_API_KEY", default=None))
    """The server's ``--api-key`` (default: ``$VLLM_API_KEY``)."""
    timeout: float = 60.0
    """Seconds per server request."""
    max_retries: int = 2
    """Retries of a server request that failed (down, timed out, 5xx, 408, 429, an unreadable answer)."""
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
    """``True`` (or 0): the log-probability of each answer token; ``n``: and of its ``n`` likeliest
    alternatives (``response_metadata["logprobs"]``, OpenAI's shape)."""
    extra_body: dict[str, Any] | None = None
    """Other vLLM sampling parameters, passed as they are (``{"ignore_eos": True}``...)."""
    streaming: bool = False
    """Stream under ``invoke`` too (LangChain's ``streaming`` flag)."""
    dtype: str = "auto"
    """Engine only: the weights' dtype (``"bfloat16"``...)."""
    max_model_len: int | None = None
    """Engine only: the longest prompt plus answer (default: the model's)."""
    enable_prefix_caching: bool = True
    """Engine only: reuse the KV cache of shared prompt prefixes."""
    quantization: str | None = None
    """Engine only: ``"awq"``, ``"gptq"``, ``"fp8"``... (what vLLM supports for the weights)."""
    tool_parser: str | None = None
    """Engine only: vLLM's tool-call parser for ``tool_choice="auto"`` (``"hermes"``, ``"llama3_json"``...)."""
    engine_kwargs: dict[str, Any] | None = None
    """Engine only: more ``vllm.LLM`` keyword arguments."""

    _client: VLLMClient | None = PrivateAttr(default=None)
    _client_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @model_validator(mode="before")
    @classmethod
    def _known(cls, data: Any) -> Any:
        unknown_settings(data, cls.model_fields, "ChatVLLM")
        return data

    @model_validator(mode="after")
    def _check(self) -> ChatVLLM:
        check_settings(self, "ChatVLLM")  # now, not at the first call
        return self

    # -- the client --------------------------------------------------------------------------------------------
    @property
    def client(self) -> VLLMClient:
        """The vLLM client (built on first use; the engine starts at its first call)."""
        with self._client_lock:
            if self._client is None:
                self._client = build_client(self)
            return self._client

    @property
    def served_model(self) -> str:
        """The model name the ledger and price book see (for a server without ``model=``, the one it serves)."""
        return self.model if self.model else self.client.model

    # -- LangChain's model description ----------------------------------------------------------------------
    @property
    def _llm_type(self) -> str:
        return "vllm"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": self.served_model,
            "base_url": self.base_url,
            **self._options().to_openai(),
        }
        if self.max_tokens is None:
            # no cap is sent: vLLM stops at the model's length; budgets reserve for that (or the default)
            params["max_output_tokens"] = output_reservation(None, self.max_model_len)
        return params

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(ls_provider="vllm", ls_model_type="chat")
        model = kwargs.get("model")
        params["ls_model_name"] = model if isinstance(model, str) and model else (self.model or "vllm")
        temperature = kwargs.get("temperature", self.temperature)
        if isinstance(temperature, int | float) and not isinstance(temperature, bool):
            params["ls_temperature"] = float(temperature)
        max_tokens = kwargs.get("max_tokens", self.max_tokens)
        if isinstance(max_tokens, int) and not isinstance(max_tokens, bool):
            params["ls_max_tokens"] = max_tokens
        stops = stop if stop is not None else self.stop
        if stops:
            params["ls_stop"] = list(stops)
        return params

    # -- requests -----------------------------------------------------------------------------------------------
    def _options(self, stop: list[str] | None = None, **kwargs: Any) -> SamplingOptions:
        return sampling_options(self, kwargs, stop)

    def _request(self, messages: Sequence[BaseMessage], stop: list[str] | None, **kwargs: Any) -> ChatRequest:
        unknown = sorted(k for k in kwargs if k not in _CALL_KWARGS)
        if unknown:
            raise ConfigurationError(
                f"ChatVLLM does not take {', '.join(unknown)}: vLLM-only sampling parameters go in "
                "extra_body={...}.",
                field=unknown[0],
            )
        model = kwargs.get("model")
        if model is not None and model != self.served_model:
            raise ConfigurationError(
                f"ChatVLLM serves {self.served_model!r}, not {model!r}: build another ChatVLLM for that model.",
                field="model",
            )
        tools = [convert_to_openai_tool(t) for t in kwargs.get("tools") or ()]
        names = [t["function"]["name"] for t in tools if "function" in t]
        return ChatRequest(
            messages=convert_to_openai_messages(list(messages)),
            tools=tools,
            tool_choice=tool_choice_from(kwargs.get("tool_choice"), names) if tools else None,
            options=self._options(stop, **kwargs),
            structured=structured_from(kwargs.get("response_format")),
        )

    def _get_invocation_params(self, stop: list[str] | None = None, **kwargs: Any) -> dict[str, Any]:
        params = super()._get_invocation_params(stop=stop, **kwargs)
        if isinstance(kwargs.get("max_tokens"), int):
            params.pop("max_output_tokens", None)  # the call's own cap is the reservation
        return params

    # -- answers -------------------------------------------------------------------------------------------------
    def _message(self, completion: Completion) -> AIMessage:
        calls: list[Any] = []
        invalid: list[Any] = []
        for tc in completion.tool_calls:
            try:
                args = json.loads(tc.arguments) if tc.arguments else {}
            except ValueError as e:
                invalid.append(invalid_tool_call(name=tc.name, args=tc.arguments, id=tc.id, error=str(e)))
                continue
            if isinstance(args, dict):
                calls.append(tool_call(name=tc.name, args=args, id=tc.id))
            else:
                invalid.append(
                    invalid_tool_call(name=tc.name, args=tc.arguments, id=tc.id, error="not a JSON object")
                )
        return AIMessage(
            content=completion.text,
            tool_calls=calls,
            invalid_tool_calls=invalid,
            usage_metadata=usage_metadata(completion.usage),
            response_metadata=self._metadata(
                completion.model, completion.finish_reason, completion.logprobs, completion.request_id
            ),
        )

    def _metadata(
        self,
        model: str,
        finish_reason: str | None,
        logprobs: Sequence[TokenLogprob] | None,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        meta: dict[str, Any] = {"model_name": model or self.served_model, "finish_reason": finish_reason}
        if logprobs is not None:
            meta["logprobs"] = openai_logprobs(logprobs)
        if request_id is not None:
            meta["id"] = request_id
        return meta

    def _result(self, completion: Completion) -> ChatResult:
        return ChatResult(
            generations=[ChatGeneration(message=self._message(completion))],
            llm_output={"model_name": completion.model or self.served_model},
        )

    def _chunk(self, piece: CompletionChunk, described: bool) -> ChatGenerationChunk:
        """One streamed piece. The model name and finish reason go on the first chunk that ends the answer, the
        usage on the chunk that carries it (the last one): merged chunks, and LangChain's usage callback, add each
        up once."""
        ends = piece.usage is not None or piece.finish_reason is not None
        meta = self._metadata(piece.model, piece.finish_reason, None) if ends and not described else {}
        if piece.logprobs is not None:
            meta["logprobs"] = openai_logprobs(piece.logprobs)
        message = AIMessageChunk(
            content=piece.text,
            tool_call_chunks=[
                tool_call_chunk(name=d.name, args=d.arguments or None, id=d.id, index=d.index)
                for d in piece.tool_calls
            ],
            usage_metadata=usage_metadata(piece.usage) if piece.usage is not None else None,
            response_metadata=meta,
        )
        if piece.usage is not None:
            message.chunk_position = "last"
        return ChatGenerationChunk(message=message)

    def _chunks(self, pieces: Iterator[CompletionChunk]) -> Iterator[ChatGenerationChunk]:
        described = False
        for piece in pieces:
            yield self._chunk(piece, described)
            described = described or piece.usage is not None or piece.finish_reason is not None

    # -- LangChain's hooks ----------------------------------------------------------------------------------------
    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        request = self._request(messages, stop, **kwargs)
        return self._result(self.client.generate([request])[0])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        request = self._request(messages, stop, **kwargs)
        return self._result((await self.client.agenerate([request]))[0])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        request = self._request(messages, stop, **kwargs)
        pieces = self.client.stream(request)
        try:
            yield from self._chunks(iter(pieces))
        finally:
            close = getattr(pieces, "close", None)
            if close is not None:
                close()

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        request = self._request(messages, stop, **kwargs)
        pieces = self.client.astream(request)
        described = False
        try:
            async for piece in pieces:
                yield self._chunk(piece, described)
                described = described or piece.usage is not None or piece.finish_reason is not None
        finally:
            aclose = getattr(pieces, "aclose", None)
            if aclose is not None:
                await aclose()

    # -- batches: one client call, one run per input --------------------------------------------------------------
    def _batchable(self, configs: Sequence[RunnableConfig], size: int) -> bool:
        if size < 2 or self.rate_limiter is not None:
            return False
        if self.cache is not False and (self.cache is not None or get_llm_cache() is not None):
            return False  # LangChain's LLM cache is looked up per input: its own path
        for config in configs:
            limit = config.get("max_concurrency")
            if limit is not None and limit < size:
                return False
            if config.get("run_id") is not None:
                return False
        first = configs[0].get("configurable") or {}
        return all((c.get("configurable") or {}) == first for c in configs)

    def _start_run(
        self,
        config: RunnableConfig,
        messages: list[BaseMessage],
        stop: list[str] | None,
        kwargs: dict[str, Any],
    ) -> tuple[CallbackManager, dict[str, Any], dict[str, Any]]:
        """What ``BaseChatModel.generate`` builds for a run, for one input of a batch."""
        fmt = _format_ls_structured_output(kwargs.get("ls_structured_output_format"))
        call_kwargs = {k: v for k, v in kwargs.items() if k != "ls_structured_output_format"}
        params = self._get_invocation_params(stop=stop, **call_kwargs)
        options = {"stop": stop, **fmt}
        metadata = {
            **(config.get("metadata") or {}),
            **self._get_ls_params_with_defaults(stop=stop, **call_kwargs),
        }
        manager = CallbackManager.configure(
            config.get("callbacks"),
            self.callbacks,
            self.verbose,
            config.get("tags"),
            self.tags,
            metadata,
            self.metadata,
        )
        return manager, params, options

    def _finish(self, run_manager: Any, completion: Completion) -> tuple[AIMessage, LLMResult]:
        result = self._result(completion)
        generation = result.generations[0]
        message = cast("AIMessage", generation.message)
        if run_manager is not None and message.id is None:
            message.id = f"{LC_ID_PREFIX}-{run_manager.run_id}-0"
        return message, LLMResult(generations=[[generation]], llm_output=result.llm_output)

    def batch(
        self,
        inputs: list[LanguageModelInput],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[Any]:
        """All inputs in one call to vLLM (continuous batching does the rest), one chat-model run per input."""
        if not inputs:
            return []
        configs = get_config_list(config, len(inputs))
        if not self._batchable(configs, len(inputs)):
            return super().batch(inputs, config, return_exceptions=return_exceptions, **kwargs)
        stop = kwargs.pop("stop", None)
        outputs: list[Any] = [None] * len(inputs)
        started: list[tuple[int, CallbackManagerForLLMRun, ChatRequest]] = []
        failed: BaseException | None = None
        for i, (item, cfg) in enumerate(zip(inputs, configs, strict=True)):
            try:
                messages = self._convert_input(item).to_messages()
                manager, params, options = self._start_run(cfg, messages, stop, kwargs)
                (run_manager,) = manager.on_chat_model_start(
                    self._serialized,
                    [messages],
                    invocation_params=params,
                    options=options,
                    name=cfg.get("run_name"),
                    batch_size=1,
                )
            except BaseException as e:  # a budget refused it: nothing was started for it
                if not return_exceptions:
                    failed = e
                    break
                outputs[i] = e
                continue
            try:
                request = self._request(messages, stop, **_call_kwargs(kwargs))
            except BaseException as e:
                run_manager.on_llm_error(e, response=LLMResult(generations=[]))
                if not return_exceptions:
                    failed = e
                    break
                outputs[i] = e
                continue
            started.append((i, run_manager, request))
        if failed is not None:
            for _, run_manager, _ in started:
                run_manager.on_llm_error(failed, response=LLMResult(generations=[]))
            raise failed
        return self._run_batch(started, outputs, return_exceptions)

    def _run_batch(
        self,
        started: list[tuple[int, CallbackManagerForLLMRun, ChatRequest]],
        outputs: list[Any],
        return_exceptions: bool,
    ) -> list[Any]:
        if not started:
            return outputs
        try:
            completions = self.client.generate([r for _, _, r in started])
        except BaseException as e:
            for i, run_manager, _ in started:
                run_manager.on_llm_error(e, response=LLMResult(generations=[]))
                outputs[i] = e
            if not return_exceptions:
                raise
            return outputs
        for (i, run_manager, _), completion in zip(started, completions, strict=True):
            message, result = self._finish(run_manager, completion)
            run_manager.on_llm_end(result)
            outputs[i] = message
        return outputs

    async def abatch(
        self,
        inputs: list[LanguageModelInput],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[Any]:
        """Async :meth:`batch`: one ``agenerate`` call to vLLM, one chat-model run per input."""
        if not inputs:
            return []
        configs = get_config_list(config, len(inputs))
        if not self._batchable(configs, len(inputs)):
            return await super().abatch(inputs, config, return_exceptions=return_exceptions, **kwargs)
        stop = kwargs.pop("stop", None)
        outputs: list[Any] = [None] * len(inputs)
        started: list[tuple[int, AsyncCallbackManagerForLLMRun, ChatRequest]] = []
        failed: BaseException | None = None
        for i, (item, cfg) in enumerate(zip(inputs, configs, strict=True)):
            try:
                messages = self._convert_input(item).to_messages()
                manager, params, options = self._start_run(cfg, messages, stop, kwargs)
                amanager = AsyncCallbackManager(
                    handlers=manager.handlers,
                    inheritable_handlers=manager.inheritable_handlers,
                    parent_run_id=manager.parent_run_id,
                    tags=manager.tags,
                    inheritable_tags=manager.inheritable_tags,
                    metadata=manager.metadata,
                    inheritable_metadata=manager.inheritable_metadata,
                )
                (run_manager,) = await amanager.on_chat_model_start(
                    self._serialized,
                    [messages],
                    invocation_params=params,
                    options=options,
                    name=cfg.get("run_name"),
                    batch_size=1,
                )
            except BaseException as e:
                if not return_exceptions:
                    failed = e
                    break
                outputs[i] = e
                continue
            try:
                request = self._request(messages, stop, **_call_kwargs(kwargs))
            except BaseException as e:
                await run_manager.on_llm_error(e, response=LLMResult(generations=[]))
                if not return_exceptions:
                    failed = e
                    break
                outputs[i] = e
                continue
            started.append((i, run_manager, request))
        if failed is not None:
            for _, run_manager, _ in started:
                await run_manager.on_llm_error(failed, response=LLMResult(generations=[]))
            raise failed
        if not started:
            return outputs
        try:
            completions = await self.client.agenerate([r for _, _, r in started])
        except BaseException as e:
            for i, run_manager, _ in started:
                await run_manager.on_llm_error(e, response=LLMResult(generations=[]))
                outputs[i] = e
            if not return_exceptions:
                raise
            return outputs
        for (i, run_manager, _), completion in zip(started, completions, strict=True):
            message, result = self._finish(run_manager, completion)
            await run_manager.on_llm_end(result)
            outputs[i] = message
        return outputs

    # -- tools and structured output ----------------------------------------------------------------------------------
    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | bool | dict[str, Any] | None = None,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind OpenAI-format tools (LangChain tools, functions and schemas are converted).

        ``tool_choice``: ``"auto"`` (needs a tool parser), ``"none"``, ``"required"``/``"any"``/``True`` (some
        tool, forced) or a tool's name (that tool, forced by guided decoding over its parameters)."""
        formatted = [convert_to_openai_tool(t, strict=strict) for t in tools]
        names = [t["function"]["name"] for t in formatted]
        choice = tool_choice_from(tool_choice, names)
        if choice is not None:
            kwargs["tool_choice"] = choice
        return self.bind(tools=formatted, **kwargs)

    def with_structured_output(
        self,
        schema: dict[str, Any] | type,
        *,
        include_raw: bool = False,
        method: Literal["json_schema", "function_calling", "json_mode"] = "json_schema",
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, dict[str, Any] | BaseModel]:
        """Answers parsed into ``schema``: ``method="json_schema"`` (default) constrains decoding to the schema
        (vLLM's structured outputs), ``"function_calling"`` forces a call of a tool with the schema's
        parameters, ``"json_mode"`` constrains decoding to some JSON object (describe the shape in the prompt)."""
        if kwargs:
            raise ConfigurationError(
                f"with_structured_output does not take {', '.join(sorted(kwargs))}.", field=sorted(kwargs)[0]
            )
        is_pydantic = isinstance(schema, type) and is_basemodel_subclass(schema)
        fmt = {"kwargs": {"method": method, "strict": strict}, "schema": schema}
        llm: Runnable[LanguageModelInput, Any]
        parser: Runnable[Any, Any]
        if method == "function_calling":
            tool = convert_to_openai_tool(schema, strict=strict)
            name = tool["function"]["name"]
            llm = self.bind(
                tools=[tool],
                tool_choice={"type": "function", "function": {"name": name}},
                ls_structured_output_format=fmt,
            )
            parser = (
                PydanticToolsParser(tools=[cast("type[BaseModel]", schema)], first_tool_only=True)
                if is_pydantic
                else JsonOutputKeyToolsParser(key_name=name, first_tool_only=True)
            )
        elif method in ("json_schema", "json_mode"):
            if method == "json_schema":
                spec = {"name": "schema", "schema": convert_to_json_schema(schema), "strict": strict}
                response_format: dict[str, Any] = {"type": "json_schema", "json_schema": spec}
            else:
                response_format = {"type": "json_object"}
            llm = self.bind(response_format=response_format, ls_structured_output_format=fmt)
            parser = (
                PydanticOutputParser(pydantic_object=cast("type[BaseModel]", schema))
                if is_pydantic
                else JsonOutputParser()
            )
        else:
            raise ConfigurationError(
                f"method must be 'json_schema', 'function_calling' or 'json_mode', got {method!r}.",
                field="method",
            )
        if not include_raw:
            return llm | parser
        parse = RunnablePassthrough.assign(parsed=itemgetter("raw") | parser, parsing_error=lambda _: None)
        fallback = RunnablePassthrough.assign(parsed=lambda _: None)
        return RunnableMap(raw=llm) | parse.with_fallbacks([fallback], exception_key="parsing_error")


def _call_kwargs(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in kwargs.items() if k != "ls_structured_output_format"}
