"""Streaming for chat models that call other chat models as child runs (the cache wrapper, the cascade).

langchain-core calls ``_stream`` without a run manager (from ``stream()`` and from ``invoke()`` when a streaming
handler is attached), which would hide the inner calls from callbacks and budgets. A wrapper built on
:class:`ChildRunStreamingModel` answers ``invoke`` through ``_generate`` (where the inner model runs as a child
run, streaming by itself when a streaming handler asks for it) and overrides ``stream``/``astream`` to hand
``_stream``/``_astream`` the run manager.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any, cast

from langchain_core.callbacks import AsyncCallbackManager, CallbackManager
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGenerationChunk, LLMResult
from langchain_core.outputs.chat_generation import merge_chat_generation_chunks
from langchain_core.runnables import RunnableConfig, ensure_config
from langchain_core.utils.function_calling import convert_to_json_schema

from frugal_chains.shared.sharing import NotPicklable
from frugal_chains.shared.streams import aclose_stream, close_stream

try:
    from langchain_core.utils.utils import LC_ID_PREFIX
except ImportError:  # pragma: no cover - older langchain-core
    LC_ID_PREFIX = "lc_run-"

__all__ = ["ChildRunStreamingModel"]


class ChildRunStreamingModel(NotPicklable, BaseChatModel):
    """Base for wrappers whose ``_stream``/``_astream`` call other chat models as child runs."""

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
            yield cast("AIMessageChunk", self.invoke(input, config=config, stop=stop, **kwargs))
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
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                chunks.append(chunk)
                yield cast("AIMessageChunk", chunk.message)
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
            yield cast("AIMessageChunk", await self.ainvoke(input, config=config, stop=stop, **kwargs))
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
                await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                chunks.append(chunk)
                yield cast("AIMessageChunk", chunk.message)
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
