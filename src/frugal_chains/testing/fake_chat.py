"""Fake LangChain chat models that report usage like a provider: one that can call tools forever, and one that
calls tools when asked (``tool_choice``), answers structured output and honours ``stop``."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from operator import itemgetter
from typing import Any, Literal, cast

try:
    import langchain_core  # noqa: F401
except ImportError as e:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "frugal_chains.testing.fake_chat (LangChain test models) needs langchain-core: "
        'pip install "frugal-chains[langchain]"'
    ) from e

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LangSmithParams, LanguageModelInput
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    convert_to_openai_messages,
)
from langchain_core.messages.ai import UsageMetadata
from langchain_core.messages.tool import ToolCall
from langchain_core.output_parsers import (
    JsonOutputKeyToolsParser,
    JsonOutputParser,
    PydanticOutputParser,
    PydanticToolsParser,
)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableMap, RunnablePassthrough
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_json_schema, convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass
from pydantic import BaseModel, Field, PrivateAttr, field_validator

from frugal_chains.accounting.tokens import count_message_tokens
from frugal_chains.errors import ConfigurationError
from frugal_chains.testing._schema import fill_schema as _fill

__all__ = ["AnsweringChatModel", "FakeToolCallingChatModel", "FakeUsageChatModel"]


def _with_stop(stop: list[str] | None, kwargs: dict[str, Any]) -> dict[str, Any]:
    return {**kwargs, "stop": stop} if stop else kwargs


class AnsweringChatModel(BaseChatModel):
    """Base of the test models: ``_answer(messages, **kwargs) -> AIMessage`` is the whole model (a ``stop`` list,
    when given, arrives in ``kwargs``); invoke, stream and their async forms (with the optional ``latency_s``) are
    built on it. Streams split the text with
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
        return ChatResult(
            generations=[ChatGeneration(message=self._answer(messages, **_with_stop(stop, kwargs)))]
        )

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        return ChatResult(
            generations=[ChatGeneration(message=self._answer(messages, **_with_stop(stop, kwargs)))]
        )

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        if self.latency_s:
            time.sleep(self.latency_s)
        for chunk in self._chunks(self._answer(messages, **_with_stop(stop, kwargs))):
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
        for chunk in self._chunks(self._answer(messages, **_with_stop(stop, kwargs))):
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
    structured_responses: Sequence[dict[str, Any] | BaseModel] = ()
    """The answers to structured-output calls (``with_structured_output``), used in turn: dicts or pydantic
    instances. Empty: the schema is filled from the prompt (numbers, then quoted strings, then the prompt)."""
    fail_with: Callable[[], BaseException] | None = Field(default=None, exclude=True)
    """Raise this error instead of answering (a provider outage)."""

    _calls: Any = PrivateAttr(default_factory=itertools.count)
    _structured_calls: Any = PrivateAttr(default_factory=itertools.count)

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

    def with_structured_output(
        self,
        schema: dict[str, Any] | type,
        *,
        include_raw: bool = False,
        method: Literal["function_calling", "json_mode", "json_schema"] = "function_calling",
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, Any]:
        if kwargs:
            raise ValueError(f"Received unsupported arguments {kwargs}")
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
            json_schema = convert_to_json_schema(schema)
            if method == "json_schema":
                spec = {"name": "schema", "schema": json_schema, "strict": strict}
                llm = self.bind(
                    response_format={"type": "json_schema", "json_schema": spec},
                    ls_structured_output_format=fmt,
                )
            else:
                llm = self.bind(
                    response_format={"type": "json_object"},
                    fake_json_schema=json_schema,
                    ls_structured_output_format=fmt,
                )
            parser = (
                PydanticOutputParser(pydantic_object=cast("type[BaseModel]", schema))
                if is_pydantic
                else JsonOutputParser()
            )
        else:
            raise ValueError(f"unknown method {method!r}: use function_calling, json_schema or json_mode")
        if not include_raw:
            return llm | parser
        parse = RunnablePassthrough.assign(parsed=itemgetter("raw") | parser, parsing_error=lambda _: None)
        fallback = RunnablePassthrough.assign(parsed=lambda _: None)
        return RunnableMap(raw=llm) | parse.with_fallbacks([fallback], exception_key="parsing_error")

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
        text, tool_calls = self._reply(messages, text, n, **kwargs)
        return AIMessage(
            content=text,
            tool_calls=tool_calls,
            usage_metadata=usage,
            response_metadata={"model_name": model, "model_provider": self.provider, "finish_reason": "stop"},
        )

    def _structured_reply(
        self, messages: list[BaseMessage], /, scripted: str | None = None, **kwargs: Any
    ) -> tuple[str, list[ToolCall]] | None:
        """The answer to a structured-output request (a JSON ``response_format``, or ``tool_choice`` naming one
        bound tool), else ``None``. ``scripted``: the script's text turn for this call, if any."""
        prompt = _last_user_text(messages)
        response_format = kwargs.get("response_format") or {}
        if response_format.get("type") == "json_schema":
            schema = response_format["json_schema"]["schema"]
            return json.dumps(self._structured_value(schema, prompt, scripted)), []
        if response_format.get("type") == "json_object":
            return json.dumps(
                self._structured_value(kwargs.get("fake_json_schema") or {}, prompt, scripted)
            ), []
        choice = kwargs.get("tool_choice")
        if isinstance(choice, dict):
            name = (choice.get("function") or {}).get("name")
            for tool in kwargs.get("tools") or ():
                fn = tool.get("function", tool)
                if fn.get("name") == name:
                    value = self._structured_value(fn.get("parameters") or {}, prompt, scripted)
                    return "", [_tool_call(name, value)]
        return None

    def _structured_value(self, schema: dict[str, Any], prompt: str, scripted: str | None = None) -> Any:
        """``scripted`` (a script's text turn) when it is a JSON object, else the next of
        :attr:`structured_responses`, else ``schema`` filled from ``prompt``."""
        if scripted is not None:
            try:
                value = json.loads(scripted)
            except ValueError:
                value = None
            if isinstance(value, dict):
                return value
        if not self.structured_responses:
            return _fill(schema, prompt)
        value = self.structured_responses[next(self._structured_calls) % len(self.structured_responses)]
        return value.model_dump(mode="json") if isinstance(value, BaseModel) else dict(value)

    def _reply(
        self, messages: list[BaseMessage], text: str, n: int, /, **kwargs: Any
    ) -> tuple[str, list[ToolCall]]:
        """The answer's text and tool calls (``text`` is the next of :attr:`responses`, ``n`` counts the calls)."""
        structured = self._structured_reply(messages, **kwargs)
        if structured is not None:
            return structured
        tools = kwargs.get("tools") or None
        if not (tools and self.tool_to_call):
            return text, []
        return "", [_tool_call(self.tool_to_call, _fake_args(tools, self.tool_to_call, n))]


def _last_user_text(messages: Sequence[BaseMessage]) -> str:
    return next((m.text for m in reversed(messages) if isinstance(m, HumanMessage)), "")


def _tool_call(name: str, args: dict[str, Any]) -> ToolCall:
    return ToolCall(name=name, args=args, id=f"call_{uuid.uuid4().hex[:12]}", type="tool_call")


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


class FakeToolCallingChatModel(FakeUsageChatModel):
    """A :class:`FakeUsageChatModel` that calls tools the way a provider does, for tests of wrappers and agents.

    * ``bind_tools(tools, tool_choice=...)``: ``"any"``/``"required"``/``True`` force a tool call, a tool's name
      (or ``{"type": "function", "function": {"name": ...}}``) forces that tool, ``"none"`` forbids tools. With
      ``"auto"`` (or no choice) it calls a tool when the conversation ends with the user's turn and answers in text
      once a tool result came back, so an agent loop ends. ``tool_to_call`` picks the tool (and, as in
      :class:`FakeUsageChatModel`, calls it in every answer); otherwise the first tool named in the prompt, else
      the first one bound.
    * Tool arguments come from the last user message: numbers fill number fields in order, quoted strings fill
      text fields in order (the message's text when there are none); optional fields are filled too.
    * ``with_structured_output(schema, method=...)``: ``"function_calling"`` (default, a forced tool call),
      ``"json_schema"`` and ``"json_mode"`` (a JSON answer that fills the schema: a fake cannot follow the
      prompt's instructions, so in JSON mode it is handed the schema); ``include_raw`` and ``strict`` as in
      LangChain.
    * ``turns``: a scripted agent turn instead of the above, one entry a model call: tool calls, then the answer.
      See :attr:`turns`.
    * ``stop`` cuts a text answer before the first stop sequence; a per-call ``model=`` is reported in
      ``response_metadata["model_name"]``; usage and streaming as in :class:`FakeUsageChatModel`.

    Example:
        >>> from pydantic import BaseModel
        >>> from langchain_core.tools import tool
        >>> from frugal_chains.testing import FakeToolCallingChatModel
        >>> @tool
        ... def add(a: int, b: int) -> int:
        ...     '''Add two integers.'''
        ...     return a + b
        >>> model = FakeToolCallingChatModel()
        >>> model.bind_tools([add], tool_choice="any").invoke("What is 3 + 4?").tool_calls[0]["args"]
        {'a': 3, 'b': 4}
        >>> class City(BaseModel):
        ...     name: str
        >>> model.with_structured_output(City, method="json_schema").invoke("Name the city 'Paris'.")
        City(name='Paris')
        >>> model.invoke("hi", stop=[" fake"]).content
        'This is a'

        A scripted turn: a tool call, then the answer.

        >>> scripted = FakeToolCallingChatModel(turns=[{"name": "add", "args": {"a": 2, "b": 2}}, "It is 4."])
        >>> bound = scripted.bind_tools([add])
        >>> bound.invoke("2 + 2?").tool_calls[0]["args"], bound.invoke("2 + 2?").content
        ({'a': 2, 'b': 2}, 'It is 4.')
    """

    turns: Sequence[str | dict[str, Any] | list[dict[str, Any]]] = ()
    """A scripted conversation, one entry a model call, used in order (then again from the first): a string is a
    text answer; ``{"name": tool, "args": {...}}`` a tool call (``"args"`` left out: filled from the prompt and the
    bound tool's schema; an ``"id"`` is made up unless given); a list of such dicts, parallel tool calls. When set,
    it replaces choosing tools and :attr:`responses`. A text turn of a call that asks for structured output (a
    JSON ``response_format``, a forced tool) answers that instead: the turn itself when it is a JSON object, else
    from :attr:`structured_responses` or filled from the prompt. A tool call naming a tool that is not bound raises
    ``ConfigurationError``."""

    @field_validator("turns")
    @classmethod
    def _check_turns(
        cls, turns: Sequence[str | dict[str, Any] | list[dict[str, Any]]]
    ) -> Sequence[str | dict[str, Any] | list[dict[str, Any]]]:
        for i, turn in enumerate(turns):
            calls = [turn] if isinstance(turn, dict) else [] if isinstance(turn, str) else turn
            for call in calls:
                if not isinstance(call.get("name"), str) or not isinstance(call.get("args", {}), dict):
                    raise ConfigurationError(
                        f"turns[{i}] must be a text answer, a tool call {{'name': str, 'args': dict}} or a list "
                        f"of tool calls, got {turn!r}.",
                        field="turns",
                    )
        return turns

    @property
    def _llm_type(self) -> str:
        return "frugal-fake-tool-calling"

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | bool | dict[str, Any] | None = None,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        formatted = [convert_to_openai_tool(t, strict=strict) for t in tools]
        names = [t["function"]["name"] for t in formatted]
        choice: str | dict[str, Any] | None
        if tool_choice is True or tool_choice == "any":
            choice = "required"
        elif tool_choice is False or tool_choice is None:
            choice = None
        elif isinstance(tool_choice, str) and tool_choice not in ("auto", "none", "required"):
            choice = {"type": "function", "function": {"name": tool_choice}}
        else:
            choice = tool_choice
        if isinstance(choice, dict):
            chosen = (choice.get("function") or {}).get("name")
            if chosen not in names:
                raise ValueError(f"tool_choice names {chosen!r}, which is not among the bound tools {names}")
        if choice is not None:
            kwargs["tool_choice"] = choice
        return self.bind(tools=formatted, **kwargs)

    def _reply(
        self, messages: list[BaseMessage], text: str, n: int, /, **kwargs: Any
    ) -> tuple[str, list[ToolCall]]:
        prompt = _last_user_text(messages)
        turn = self.turns[n % len(self.turns)] if self.turns else None
        if turn is not None and not isinstance(turn, str):
            return self._scripted(turn, n, prompt, kwargs.get("tools") or [])
        structured = self._structured_reply(messages, scripted=turn, **kwargs)
        if structured is not None:
            return structured
        if isinstance(turn, str):
            return turn, []
        tool = self._tool_to_use(messages, prompt, kwargs.get("tools") or [], kwargs.get("tool_choice"))
        if tool is not None:
            fn = tool["function"]
            return "", [_tool_call(fn["name"], _fill(fn.get("parameters") or {}, prompt))]
        for stop in kwargs.get("stop") or ():
            if stop and stop in text:
                text = text[: text.index(stop)]
        return text, []

    def _scripted(
        self,
        turn: str | dict[str, Any] | list[dict[str, Any]],
        n: int,
        prompt: str,
        tools: Sequence[dict[str, Any]],
    ) -> tuple[str, list[ToolCall]]:
        if isinstance(turn, str):
            return turn, []
        by_name = {t["function"]["name"]: t for t in tools}
        calls: list[ToolCall] = []
        for call in [turn] if isinstance(turn, dict) else turn:
            name = call["name"]
            if tools and name not in by_name:
                raise ConfigurationError(
                    f"turn {n % len(self.turns)} of the script calls {name!r}, which is not among the bound tools "
                    f"{sorted(by_name)}: bind it or fix the script.",
                    field="turns",
                )
            args = call.get("args")
            if args is None:
                args = (
                    _fill(by_name[name]["function"].get("parameters") or {}, prompt)
                    if name in by_name
                    else {}
                )
            made = _tool_call(name, dict(args))
            if call.get("id"):
                made["id"] = str(call["id"])
            calls.append(made)
        return "", calls

    def _tool_to_use(
        self, messages: list[BaseMessage], prompt: str, tools: Sequence[dict[str, Any]], choice: Any
    ) -> dict[str, Any] | None:
        if not tools or choice == "none":
            return None
        by_name = {t["function"]["name"]: t for t in tools}
        if isinstance(choice, dict):
            return by_name[choice["function"]["name"]]
        if self.tool_to_call in by_name:
            return by_name[self.tool_to_call]
        user_turn = bool(messages) and isinstance(messages[-1], HumanMessage)
        if choice != "required" and not user_turn:
            return None
        named = [t for name, t in by_name.items() if name in prompt]
        return named[0] if named else tools[0]
