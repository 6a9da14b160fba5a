"""Chat models that call other chat models as child runs (the cache wrapper, the cascade): streaming and usage.

langchain-core calls ``_stream`` without a run manager (from ``stream()`` and from ``invoke()`` when a streaming
handler is attached), which would hide the inner calls from callbacks and budgets. A wrapper built on
:class:`ChildRunStreamingModel` answers ``invoke`` through ``_generate`` (where the inner model runs as a child
run, streaming by itself when a streaming handler asks for it) and overrides ``stream``/``astream`` to hand
``_stream``/``_astream`` the run manager.

Usage is reported once per provider call: by the inner models' child runs. What a wrapper's ``_generate`` and
``_stream`` produce (its own run's output, which callbacks such as ``get_usage_metadata_callback`` and tracers
see) carries no ``usage_metadata``; the usage of the calls behind the answer travels in
``response_metadata["frugal"]["usage"]`` (:func:`carry_usage`), and the public entry points (``generate``,
``agenerate``, ``stream``, ``astream``: every path ``invoke``, ``ainvoke`` and ``batch`` take) move it back into
``usage_metadata`` of what they return, after the callbacks saw the run's output.

A wrapper whose inner runs are hidden from message streams (the cascade: ``_hides_inner_runs``) shows the usage in
its token events instead (``on_llm_new_token``: LangGraph's ``stream_mode="messages"`` shows them, usage callbacks
and tracers do not sum them): its streamed chunks carry it back, and an ``invoke`` watched by such a stream emits
its answer as one token event with the usage.

:func:`open_chunks` opens a stream of any chat model: a model with no native streaming (LangChain's ``stream``
then yields one whole ``AIMessage``) streams as one chunk.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any, ClassVar, TypeVar, cast

from langchain_core.callbacks import (
    AsyncCallbackManager,
    AsyncCallbackManagerForLLMRun,
    CallbackManager,
    CallbackManagerForLLMRun,
    Callbacks,
)
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, BaseMessageChunk
from langchain_core.messages.ai import UsageMetadata
from langchain_core.messages.tool import ToolCallChunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult, Generation, LLMResult
from langchain_core.outputs.chat_generation import merge_chat_generation_chunks
from langchain_core.runnables import RunnableConfig, ensure_config
from langchain_core.utils.function_calling import convert_to_json_schema

from frugal_chains.metadata import FRUGAL_KEY, USAGE
from frugal_chains.shared.sharing import NotPicklable
from frugal_chains.shared.streams import aclose_stream, close_stream

try:
    from langchain_core.utils.utils import LC_ID_PREFIX
except ImportError:  # pragma: no cover - older langchain-core
    LC_ID_PREFIX = "lc_run-"

try:
    from langchain_core.tracers._streaming import _StreamingCallbackHandler
except ImportError:  # pragma: no cover - older langchain-core
    _StreamingCallbackHandler = None  # type: ignore[assignment,misc,unused-ignore]

__all__ = [
    "ChildRunStreamingModel",
    "aopen_chunks",
    "carried_usage",
    "carry_usage",
    "open_chunks",
    "untraced",
    "whole_chunk",
]

_M = TypeVar("_M", bound=BaseMessage)


# -- streams of other models -------------------------------------------------------------------------------------
def whole_chunk(message: BaseMessage) -> AIMessageChunk:
    """A whole answer as one chunk (what LangChain's ``stream`` yields for a model that cannot stream is a whole
    ``AIMessage``, not a chunk). Tool calls become tool-call chunks; a parsed object in ``additional_kwargs`` is
    kept as it is (no ``model_dump`` round trip)."""
    if isinstance(message, AIMessageChunk):
        return message
    ai = message if isinstance(message, AIMessage) else AIMessage(content=message.content)
    calls = [
        ToolCallChunk(name=c["name"], args=json.dumps(c["args"]), id=c.get("id"), index=i)
        for i, c in enumerate(ai.tool_calls)
    ]
    calls += [
        ToolCallChunk(name=bad.get("name"), args=bad.get("args"), id=bad.get("id"), index=j)
        for j, bad in enumerate(ai.invalid_tool_calls, start=len(calls))
    ]
    return AIMessageChunk(
        content=ai.content,
        additional_kwargs=dict(ai.additional_kwargs),
        response_metadata=dict(ai.response_metadata),
        usage_metadata=ai.usage_metadata,
        tool_call_chunks=calls,
        id=ai.id,
        name=ai.name,
        chunk_position="last",
    )


def _as_chunk(item: Any) -> AIMessageChunk:
    if isinstance(item, AIMessageChunk):
        return item
    if isinstance(item, BaseMessage) and not isinstance(item, BaseMessageChunk):
        return whole_chunk(item)
    raise TypeError(f"a chat model streamed {type(item).__name__}, not a message chunk")


def open_chunks(model: Any, input: Any, config: Any = None, /, **kwargs: Any) -> Iterator[AIMessageChunk]:
    """``model.stream(input, config, **kwargs)`` as message chunks: a model with no native streaming (only
    ``_generate``: LangChain's ``stream`` yields its whole ``AIMessage``) streams as one chunk. Closing this
    iterator closes the model's stream."""
    stream = model.stream(input, config=config, **kwargs)
    try:
        for item in stream:
            yield _as_chunk(item)
    finally:
        close_stream(stream)


async def aopen_chunks(
    model: Any, input: Any, config: Any = None, /, **kwargs: Any
) -> AsyncIterator[AIMessageChunk]:
    """Async :func:`open_chunks`."""
    stream = model.astream(input, config=config, **kwargs)
    try:
        async for item in stream:
            yield _as_chunk(item)
    finally:
        await aclose_stream(stream)


# -- usage: counted by the inner calls' runs, returned to the caller ---------------------------------------------
def carried_usage(message: BaseMessage) -> UsageMetadata | None:
    """The usage a wrapper's output carries for its caller (``response_metadata["frugal"]["usage"]``)."""
    frugal = (message.response_metadata or {}).get(FRUGAL_KEY)
    found = frugal.get(USAGE) if isinstance(frugal, Mapping) else None
    return cast("UsageMetadata", dict(found)) if isinstance(found, Mapping) else None


def _without_carried(metadata: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(metadata)
    frugal = out.get(FRUGAL_KEY)
    if isinstance(frugal, Mapping) and USAGE in frugal:
        rest = {k: v for k, v in frugal.items() if k != USAGE}
        if rest:
            out[FRUGAL_KEY] = rest
        else:
            del out[FRUGAL_KEY]
    return out


def carry_usage(message: _M, usage: UsageMetadata | None) -> _M:
    """``message`` as a wrapper's run outputs it: no ``usage_metadata`` (the inner calls' runs report it), the
    usage for the caller in ``response_metadata["frugal"]["usage"]`` (none: nothing is carried)."""
    metadata = _without_carried(message.response_metadata or {})
    if usage:
        frugal = metadata.get(FRUGAL_KEY)
        metadata[FRUGAL_KEY] = {**(frugal if isinstance(frugal, Mapping) else {}), USAGE: dict(usage)}
    update: dict[str, Any] = {"response_metadata": metadata}
    if isinstance(message, AIMessage):
        update["usage_metadata"] = None
    return message.model_copy(update=update)


def untraced(message: _M) -> _M:
    """``message`` with no usage at all (an inner call's chunk relayed by a wrapper: that call reported it)."""
    return carry_usage(message, None)


def _restored(message: _M) -> _M:
    """What the caller gets: the carried usage back in ``usage_metadata``."""
    usage = carried_usage(message)
    if usage is None or not isinstance(message, AIMessage):
        return message
    return message.model_copy(
        update={"usage_metadata": usage, "response_metadata": _without_carried(message.response_metadata)}
    )


def _restored_generation(generation: Generation) -> Generation:
    if not isinstance(generation, ChatGeneration) or carried_usage(generation.message) is None:
        return generation
    message = _restored(generation.message)
    if isinstance(generation, ChatGenerationChunk) and isinstance(message, BaseMessageChunk):
        return ChatGenerationChunk(message=message, generation_info=generation.generation_info)
    return ChatGeneration(message=message, generation_info=generation.generation_info)


def _restored_result(result: LLMResult) -> LLMResult:
    return result.model_copy(
        update={"generations": [[_restored_generation(g) for g in gens] for gens in result.generations]}
    )


def _streamed_to_handlers(run_manager: Any) -> bool:
    """Whether a handler that shows a run's tokens (LangGraph's ``stream_mode="messages"``, ``astream_events``) is
    attached: what makes LangChain stream an ``invoke``."""
    if run_manager is None or _StreamingCallbackHandler is None:
        return False
    return any(isinstance(h, _StreamingCallbackHandler) for h in run_manager.handlers)


def _shown(chunk: ChatGenerationChunk) -> ChatGenerationChunk:
    """A chunk as the wrapper's token event shows it: the carried usage back in ``usage_metadata``."""
    if carried_usage(chunk.message) is None:
        return chunk
    return ChatGenerationChunk(message=_restored(chunk.message), generation_info=chunk.generation_info)


class ChildRunStreamingModel(NotPicklable, BaseChatModel):
    """Base for wrappers whose ``_generate``/``_stream`` call other chat models as child runs."""

    _hides_inner_runs: ClassVar[bool] = False
    """The inner calls' runs are hidden from message streams (tagged ``nostream``): the wrapper's token events
    (``on_llm_new_token``, which message streams show and usage callbacks and tracers do not sum) carry the usage,
    and an ``invoke`` watched by such a stream shows its answer as one token event. Its ``on_llm_end`` output
    (what usage callbacks and tracers count) never does."""

    def _generate_with_cache(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        result = super()._generate_with_cache(messages, stop=stop, run_manager=run_manager, **kwargs)
        if self._hides_inner_runs and run_manager is not None and _streamed_to_handlers(run_manager):
            for generation in result.generations:
                chunk = _answer_chunk(generation)
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
        return result

    async def _agenerate_with_cache(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        result = await super()._agenerate_with_cache(messages, stop=stop, run_manager=run_manager, **kwargs)
        if self._hides_inner_runs and run_manager is not None and _streamed_to_handlers(run_manager):
            for generation in result.generations:
                chunk = _answer_chunk(generation)
                await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
        return result

    def generate(
        self,
        messages: list[list[BaseMessage]],
        stop: list[str] | None = None,
        callbacks: Callbacks = None,
        **kwargs: Any,
    ) -> LLMResult:
        """LangChain's ``generate`` (callbacks see the run's output without usage), then the usage of the calls
        behind each answer back in its ``usage_metadata``."""
        return _restored_result(super().generate(messages, stop=stop, callbacks=callbacks, **kwargs))

    async def agenerate(
        self,
        messages: list[list[BaseMessage]],
        stop: list[str] | None = None,
        callbacks: Callbacks = None,
        **kwargs: Any,
    ) -> LLMResult:
        """Async :meth:`generate`."""
        return _restored_result(await super().agenerate(messages, stop=stop, callbacks=callbacks, **kwargs))

    def _should_stream(self, *, async_api: bool, run_manager: Any = None, **kwargs: Any) -> bool:
        # invoke() answers through _generate, where the wrapped model runs as a child run (and streams by itself
        # when a streaming handler asks for it); LangChain would call _stream with no run manager, hiding the
        # wrapped call from callbacks and budgets. stream()/astream() are overridden below.
        return False

    def _no_streaming(self, kwargs: dict[str, Any]) -> bool:
        disabled = getattr(self, "_streaming_disabled", None)  # langchain-core >= 1.x
        if disabled is not None:
            return bool(disabled(**kwargs))
        return self.disable_streaming is True or (  # pragma: no cover - older langchain-core
            self.disable_streaming == "tool_calling" and bool(kwargs.get("tools"))
        )

    def _stream_setup(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None,
        stop: list[str] | None,
        kwargs: dict[str, Any],
    ) -> tuple[list[BaseMessage], dict[str, Any], dict[str, Any], RunnableConfig]:
        config = ensure_config(config)
        messages = self._convert_input(input).to_messages()
        structured = kwargs.pop("ls_structured_output_format", None) or kwargs.pop(
            "structured_output_format", None
        )
        kwargs.pop("structured_output_format", None)
        params = self._get_invocation_params(stop=stop, **kwargs)
        options = {"stop": stop, **{key: params[key] for key in kwargs if key in params}}
        if structured:  # reported like LangChain's own stream() does
            try:
                schema = convert_to_json_schema(structured["schema"])
            except ValueError:
                pass
            else:
                options["ls_structured_output_format"] = {
                    "kwargs": structured.get("kwargs", {}),
                    "schema": schema,
                }
        metadata = {**(config.get("metadata") or {}), **self._get_ls_params(stop=stop, **kwargs)}
        return messages, params, {"options": options, "metadata": metadata}, config

    def _configure_args(self, config: RunnableConfig, extra: dict[str, Any]) -> tuple[Any, ...]:
        """``CallbackManager.configure``'s arguments for this run (the same for the sync and async manager)."""
        return (
            config.get("callbacks"),
            self.callbacks,
            self.verbose,
            config.get("tags"),
            self.tags,
            extra["metadata"],
            self.metadata,
        )

    def stream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> Iterator[AIMessageChunk]:
        """Stream the answer: a cached one is replayed in a few chunks, a new one streams from the wrapped
        model (as a child run) and is stored once the stream has finished."""
        if self._no_streaming(kwargs):
            yield whole_chunk(self.invoke(input, config=config, stop=stop, **kwargs))
            return
        messages, params, extra, config = self._stream_setup(input, config, stop, kwargs)
        manager = CallbackManager.configure(*self._configure_args(config, extra))
        (run_manager,) = manager.on_chat_model_start(
            self._serialized, [messages], **_start_options(config, params, extra)
        )
        chunks: list[ChatGenerationChunk] = []
        source = self._stream(messages, stop=stop, run_manager=run_manager, **kwargs)
        try:
            for chunk in source:
                if chunk.message.id is None:
                    chunk.message.id = f"{LC_ID_PREFIX}-{run_manager.run_id}"
                run_manager.on_llm_new_token(
                    chunk.text, chunk=_shown(chunk) if self._hides_inner_runs else chunk
                )
                chunks.append(chunk)
                yield cast("AIMessageChunk", _restored(chunk.message))
        except BaseException as e:
            merged = merge_chat_generation_chunks(chunks)
            run_manager.on_llm_error(e, response=LLMResult(generations=[[merged]] if merged else []))
            raise
        finally:
            close_stream(source)
        result, err = _stream_outcome(chunks)
        if err is not None:
            run_manager.on_llm_error(err, response=result)
            raise err
        run_manager.on_llm_end(result)

    async def astream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[AIMessageChunk]:
        """Async :meth:`stream`."""
        if self._no_streaming(kwargs):
            yield whole_chunk(await self.ainvoke(input, config=config, stop=stop, **kwargs))
            return
        messages, params, extra, config = self._stream_setup(input, config, stop, kwargs)
        manager = AsyncCallbackManager.configure(*self._configure_args(config, extra))
        (run_manager,) = await manager.on_chat_model_start(
            self._serialized, [messages], **_start_options(config, params, extra)
        )
        chunks: list[ChatGenerationChunk] = []
        source = self._astream(messages, stop=stop, run_manager=run_manager, **kwargs)
        try:
            async for chunk in source:
                if chunk.message.id is None:
                    chunk.message.id = f"{LC_ID_PREFIX}-{run_manager.run_id}"
                await run_manager.on_llm_new_token(
                    chunk.text, chunk=_shown(chunk) if self._hides_inner_runs else chunk
                )
                chunks.append(chunk)
                yield cast("AIMessageChunk", _restored(chunk.message))
        except BaseException as e:
            merged = merge_chat_generation_chunks(chunks)
            await run_manager.on_llm_error(e, response=LLMResult(generations=[[merged]] if merged else []))
            raise
        finally:
            await aclose_stream(source)
        result, err = _stream_outcome(chunks)
        if err is not None:
            await run_manager.on_llm_error(err, response=result)
            raise err
        await run_manager.on_llm_end(result)


def _answer_chunk(generation: ChatGeneration) -> ChatGenerationChunk:
    """An ``invoke``'s answer as the one token event a message stream shows (its id: the run's message id, so the
    stream does not show the answer again at the run's end), with the usage the caller gets."""
    message = whole_chunk(_restored(generation.message))
    return ChatGenerationChunk(message=message, generation_info=generation.generation_info)


def _start_options(config: RunnableConfig, params: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``on_chat_model_start``'s keyword arguments for the wrapper's own run (sync and async alike)."""
    return {
        "invocation_params": params,
        "options": extra["options"],
        "name": config.get("run_name"),
        "run_id": config.pop("run_id", None),
        "batch_size": 1,
    }


def _stream_outcome(chunks: list[ChatGenerationChunk]) -> tuple[LLMResult, ValueError | None]:
    """The run's result once a stream ended normally (an error when it yielded nothing), as LangChain reports it."""
    merged = merge_chat_generation_chunks(chunks)
    if merged is None:
        return LLMResult(generations=[]), ValueError("No generation chunks were returned")
    return LLMResult(generations=[[merged]]), None
