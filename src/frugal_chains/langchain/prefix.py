"""Prompt-prefix caching in LangChain: :class:`PrefixCacheFormatter` (a Runnable to put before a chat model) and
:func:`with_prefix_caching` (a chat model wrapper that formats every call).

Both hand the messages to the framework-free planner (:class:`frugal_chains.prefix.PrefixFormatter`), which
decides everything: the order of the preamble, the dynamic values moved into one request-context block, the
provider's cache breakpoints and TTL, OpenAI's ``prompt_cache_key``. This module translates LangChain messages to
the planner's OpenAI-format dicts and the plan back into messages in the provider's own shape: for Anthropic,
content blocks with ``cache_control`` (which ``langchain-anthropic`` passes through), and ``cache_control`` on the
last tool definition when a breakpoint goes there.

A message the plan left unchanged is handed back as the same object. The planner's report (sizes, breakpoints,
cost per call with and without caching, the dynamic values found, warnings) is the formatter's ``plan()`` result
and ``last_report``; the wrapper's answers carry a summary in ``response_metadata["frugal"]["prefix"]``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.callbacks.manager import dispatch_custom_event
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessageChunk,
    BaseMessage,
    convert_to_messages,
    convert_to_openai_messages,
)
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.prompt_values import PromptValue
from langchain_core.prompts import BasePromptTemplate
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict, Field, PrivateAttr

from frugal_chains.errors import ConfigurationError
from frugal_chains.langchain._runs import achild_callbacks, child_callbacks
from frugal_chains.langchain._streaming import (
    aopen_chunks,
    carry_usage,
    open_chunks,
    untraced,
)
from frugal_chains.langchain.cached_model import WrapperChatModel, _added, _carried
from frugal_chains.metadata import PREFIX, WRAPPER_KEY, with_entry
from frugal_chains.shared.prefix_wing import (
    ReportSlot,
    build_formatter,
    restored,
    summary,
    tool_marks,
    with_tool_marks,
)
from frugal_chains.shared.streams import aclose_stream, close_stream

if TYPE_CHECKING:
    from frugal_chains.prefix import PrefixFormatter, PrefixPlan, PrefixReport

__all__ = ["PrefixCacheFormatter", "PrefixCachingChatModel", "with_prefix_caching"]

REPORT_EVENT = "frugal_prefix_report"
"""The custom callback event :class:`PrefixCacheFormatter` sends with each call's report (``report.to_dict()``):
``on_custom_event`` handlers and ``astream_events`` see it."""


# -- messages: LangChain <-> the planner's OpenAI format -------------------------------------------------------
def _as_messages(input: Any, owner: str) -> list[BaseMessage]:
    """A message list, a prompt value or a string as LangChain messages."""
    if isinstance(input, PromptValue):
        return input.to_messages()
    if isinstance(input, str):
        return convert_to_messages([("human", input)])
    if isinstance(input, BaseMessage):
        return [input]
    if isinstance(input, Sequence):
        try:
            return convert_to_messages(input)
        except (ValueError, TypeError, NotImplementedError) as e:
            raise ConfigurationError(f"{owner}: cannot read the messages ({e})", field="input") from e
    raise ConfigurationError(
        f"{owner} takes a list of messages, a prompt value or a string, got {type(input).__name__}",
        field="input",
    )


def _openai(message: BaseMessage) -> dict[str, Any]:
    """One message as the planner reads it: LangChain's OpenAI conversion, keeping the ``cache_control`` markers
    the caller put on content blocks (the conversion drops them, and the planner counts them)."""
    out: dict[str, Any] = convert_to_openai_messages(message)
    content = message.content
    if not isinstance(content, list) or not any(
        isinstance(b, Mapping) and "cache_control" in b for b in content
    ):
        return out
    if all(isinstance(b, str) or (isinstance(b, Mapping) and b.get("type") == "text") for b in content):
        parts: list[dict[str, Any]] = []
        for b in content:
            if isinstance(b, str):
                parts.append({"type": "text", "text": b})
            else:
                parts.append({k: b[k] for k in ("type", "text", "cache_control") if k in b})
        out["content"] = parts
    elif isinstance(out.get("content"), list) and len(out["content"]) == len(content):
        out["content"] = [
            {**part, "cache_control": b["cache_control"]}
            if isinstance(b, Mapping) and "cache_control" in b and isinstance(part, Mapping)
            else part
            for part, b in zip(out["content"], content, strict=True)
        ]
    return out


def _built(planned: Mapping[str, Any]) -> BaseMessage:
    """A message the plan wrote (its content blocks, ``cache_control`` included, as they are)."""
    return convert_to_messages([dict(planned)])[0]


def _prepended(message: BaseMessage, head: list[dict[str, Any]]) -> BaseMessage:
    """``message`` with the plan's text parts (the request-context block) before its own content."""
    own: list[Any] = (
        [{"type": "text", "text": message.content}]
        if isinstance(message.content, str)
        else list(message.content)
    )
    if isinstance(message.content, str) and not message.content:
        own = []
    return message.model_copy(update={"content": [*head, *own]})


def _plan(
    core: PrefixFormatter,
    messages: list[BaseMessage],
    *,
    tools: Sequence[Mapping[str, Any]] | None = None,
    dynamic: Mapping[str, str] | None = None,
    scope: str | None = None,
) -> tuple[list[BaseMessage], PrefixPlan]:
    """The planner's plan for ``messages`` and the messages it says to send (unchanged ones: the same objects)."""
    dicts = [_openai(m) for m in messages]
    plan = core.plan(dicts, tools=tools, dynamic=dynamic, scope=scope)
    if not plan.changed:
        return list(messages), plan
    return restored(messages, dicts, plan.messages, build=_built, prepend=_prepended), plan


def _prompt_templates(prompt: BasePromptTemplate[Any]) -> list[str]:
    from frugal_chains.langchain.question import _texts

    try:
        return _texts(prompt)
    except ConfigurationError as e:
        raise ConfigurationError(f"PrefixCacheFormatter(prompt=...): {e}", field="prompt") from e


# -- the Runnable ------------------------------------------------------------------------------------------------
class PrefixCacheFormatter(Runnable[Any, list[BaseMessage]]):
    """A Runnable that rewrites a request for the provider's prompt cache: ``prompt | formatter | llm``.

    Input: a list of messages, a prompt value or a string. Output: the messages in the provider's own shape,
    stable prefix first (tools, system, few-shot examples, documents), dynamic values (dates, times, ids, emails,
    template variables you name) moved into one short request-context block after it, and for Anthropic at most
    four ``cache_control`` breakpoints where the prefix is long enough to be cached.

    Args:
        model: the model the request goes to (its provider is inferred from the name; ``provider=`` or
            ``rules=ProviderRules(...)`` when it cannot be).
        prompt: the ``ChatPromptTemplate`` (or ``PromptTemplate``) the messages come from: its templates let the
            planner find the values of ``dynamic_variables`` in the filled text.
        dynamic_variables: the template variables whose values change from call to call (a user's name, ...).
        **options: the other options of :class:`~frugal_chains.prefix.PrefixFormatter` (``provider``,
            ``rules``, ``templates``, ``detect``, ``ttl``, ``calls_per_hour``, ``scope``, ``prices``,
            ``on_unsafe``).

    ``invoke``/``ainvoke``/``batch``/``stream`` work as for any Runnable. Each call's report is in
    :meth:`plan`'s result and sent as the custom callback event ``"frugal_prefix_report"``; :attr:`last_report`
    is the latest one from any thread. OpenAI's ``prompt_cache_key`` is a call parameter, which a Runnable in
    front of the model cannot pass: use :meth:`plan` (``llm.invoke(messages, **plan.params)``) or
    :func:`with_prefix_caching`.

    Example:
        >>> from langchain_core.prompts import ChatPromptTemplate
        >>> from frugal_chains.langchain import PrefixCacheFormatter
        >>> prompt = ChatPromptTemplate.from_messages([
        ...     ("system", "You are Acme's support agent. " * 300 + "Today is {today}. The user is {user}."),
        ...     ("human", "{question}"),
        ... ])
        >>> formatter = PrefixCacheFormatter(
        ...     model="claude-sonnet-4-5", prompt=prompt, dynamic_variables=["today", "user"])
        >>> value = prompt.invoke({"today": "2026-12-07", "user": "Alice", "question": "Where is my order?"})
        >>> system = formatter.invoke(value)[0]
        >>> [("cache_control" in block) for block in system.content]
        [True, False]
        >>> "Alice" in system.content[0]["text"], "Alice" in system.content[1]["text"]
        (False, True)
        >>> formatter.last_report.cacheable_share > 0.9
        True
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        prompt: BasePromptTemplate[Any] | None = None,
        templates: Sequence[str] = (),
        **options: Any,
    ) -> None:
        found = list(templates)
        if prompt is not None:
            if not isinstance(prompt, BasePromptTemplate):
                raise ConfigurationError(
                    f"prompt must be a LangChain prompt template (ChatPromptTemplate), got {type(prompt).__name__}",
                    field="prompt",
                )
            found += _prompt_templates(prompt)
            names = set(prompt.input_variables) | set(prompt.partial_variables)
            unknown = [v for v in options.get("dynamic_variables") or () if v not in names]
            if unknown:
                raise ConfigurationError(
                    f"dynamic_variables {unknown} are not variables of the prompt (it has {sorted(names)})",
                    field="dynamic_variables",
                )
        if found:
            options["templates"] = found
        self.model = model
        self._core = build_formatter(model, options, owner="PrefixCacheFormatter")
        self._last = ReportSlot()

    @property
    def core(self) -> PrefixFormatter:
        """The framework-free planner (its churn detector is shared by every call of this formatter)."""
        return self._core

    @property
    def last_report(self) -> PrefixReport | None:
        """The report of the latest call (from any thread; ``None`` before the first)."""
        return self._last.get()

    @property
    def InputType(self) -> Any:
        return Any

    @property
    def OutputType(self) -> Any:
        return list[BaseMessage]

    def plan(
        self,
        input: Any,
        *,
        tools: Sequence[Any] | None = None,
        dynamic: Mapping[str, str] | None = None,
        scope: str | None = None,
    ) -> tuple[list[BaseMessage], PrefixPlan]:
        """Format one request: ``(messages, plan)``, where ``plan`` is the core's
        :class:`~frugal_chains.prefix.PrefixPlan` (``plan.report``, ``plan.params`` such as OpenAI's
        ``prompt_cache_key``, ``plan.tools`` with their ``cache_control``). ``tools`` (any tool LangChain can
        convert) count in the prefix; ``dynamic={"label": "value"}`` marks more values to move; ``scope`` goes
        into OpenAI's cache key."""
        messages = _as_messages(input, "PrefixCacheFormatter")
        openai_tools = [convert_to_openai_tool(t) for t in tools] if tools else None
        out, plan = _plan(self._core, messages, tools=openai_tools, dynamic=dynamic, scope=scope)
        self._last.set(plan.report)
        return out, plan

    def _format(self, input: Any, run_manager: Any, config: RunnableConfig) -> list[BaseMessage]:
        messages, plan = self.plan(input)
        with contextlib.suppress(RuntimeError):  # no run to attach the event to
            dispatch_custom_event(REPORT_EVENT, plan.report.to_dict(), config=config)
        return messages

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> list[BaseMessage]:
        """The messages formatted for the provider's prompt cache."""
        return self._call_with_config(self._format, input, config, run_type="prompt")

    async def ainvoke(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> list[BaseMessage]:
        """Async :meth:`invoke` (the planning is CPU work done inline)."""
        return await self._acall_with_config(self._aformat, input, config, run_type="prompt")

    async def _aformat(self, input: Any, run_manager: Any, config: RunnableConfig) -> list[BaseMessage]:
        return self._format(input, run_manager, config)


# -- the chat model wrapper --------------------------------------------------------------------------------------
class PrefixCachingChatModel(WrapperChatModel):
    """A chat model that formats every request for its provider's prompt cache, then calls the wrapped model.

    Build it with :func:`with_prefix_caching`. The provider and model are read from the wrapped model (its name,
    then its LangChain provider); give ``model=``, ``provider=`` or ``rules=`` when they cannot be. Per call the
    messages are formatted as :class:`PrefixCacheFormatter` does, tools bound with ``bind_tools`` get the plan's
    ``cache_control`` (Anthropic), and the plan's parameters (OpenAI's ``prompt_cache_key``) are passed to the
    wrapped model's call unless the call sets them.

    The wrapped model runs as a child run: callbacks and budgets count each provider call once, usage comes back
    in the answer's ``usage_metadata``, errors reach the caller as raised. ``bind_tools`` and
    ``with_structured_output`` go through the wrapped model's ``bind_tools``. The answer carries a summary of the
    formatting in ``response_metadata["frugal"]["prefix"]`` (on the last chunk of a stream).

    Example:
        >>> from langchain_core.messages import HumanMessage, SystemMessage
        >>> from frugal_chains.langchain import with_prefix_caching
        >>> from frugal_chains.testing import FakeUsageChatModel
        >>> # in your app: ChatAnthropic(model="claude-sonnet-4-5")
        >>> llm = with_prefix_caching(FakeUsageChatModel(model="claude-sonnet-4-5", provider="anthropic"))
        >>> answer = llm.invoke([
        ...     SystemMessage("You are Acme's support agent. " * 300 + "Today is 2026-12-07."),
        ...     HumanMessage("Where is my order?"),
        ... ])
        >>> prefix = answer.response_metadata["frugal"]["prefix"]
        >>> prefix["provider"], prefix["breakpoints"], prefix["cacheable_share"] > 0.9
        ('anthropic', 1, True)
    """

    model: BaseChatModel
    """The chat model called with the formatted request."""
    prefix_options: dict[str, Any] = Field(default_factory=dict, exclude=True)
    """The options given to the planner (:class:`~frugal_chains.prefix.PrefixFormatter`)."""
    formatter: Any = Field(default=None, exclude=True)
    """The planner (an injected object: its churn history survives LangChain rebuilding the wrapper from its
    fields); built from the wrapped model and ``prefix_options`` when not given."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    _last: ReportSlot = PrivateAttr(default_factory=ReportSlot)

    def __init__(self, **data: Any) -> None:
        inner = WrapperChatModel._checked_model(data)
        from frugal_chains.prefix import PrefixFormatter

        given = data.get("formatter")
        if given is None:
            from frugal_chains.langchain.cascade import _model_name

            options = dict(data.get("prefix_options") or {})
            name = options.pop("model", None) or _model_name(inner)
            data["formatter"] = build_formatter(
                name, options, fallback_provider=_ls_provider(inner), owner="with_prefix_caching"
            )
        elif not isinstance(given, PrefixFormatter):
            raise ConfigurationError(
                f"formatter must be a frugal_chains.prefix.PrefixFormatter, got {type(given).__name__}",
                field="formatter",
            )
        data["metadata"] = {**(data.get("metadata") or {}), WRAPPER_KEY: True}
        super().__init__(**data)

    @property
    def core(self) -> PrefixFormatter:
        """The framework-free planner (its churn detector is shared by every call of this model)."""
        return cast("PrefixFormatter", self.formatter)

    @property
    def last_report(self) -> PrefixReport | None:
        """The report of the latest call (from any thread; ``None`` before the first)."""
        return self._last.get()

    # -- formatting ------------------------------------------------------------------------------------------
    def _request(
        self, messages: list[BaseMessage], kwargs: dict[str, Any]
    ) -> tuple[list[BaseMessage], dict[str, Any], PrefixPlan]:
        """The formatted messages, the call's kwargs (tools marked, the plan's parameters added) and the plan."""
        tools = kwargs.get("tools")
        openai_tools: list[dict[str, Any]] | None = None
        if tools:
            try:
                openai_tools = [_with_own_mark(convert_to_openai_tool(t), t) for t in tools]
            except Exception:  # a provider's built-in tool: the prefix is planned without the tools
                openai_tools = None
        out, plan = _plan(self.core, messages, tools=openai_tools)
        self._last.set(plan.report)
        call = {**plan.params, **kwargs}
        if openai_tools is not None and plan.tools:
            call["tools"] = with_tool_marks(list(tools or ()), tool_marks(plan.tools))
        return out, call, plan

    @staticmethod
    def _marked(message: BaseMessage, plan: PrefixPlan) -> BaseMessage:
        return message.model_copy(
            update={"response_metadata": with_entry(message.response_metadata, PREFIX, summary(plan))}
        )

    def _result(self, result: Any, plan: PrefixPlan) -> ChatResult:
        generations = [
            ChatGeneration(message=self._marked(g.message, plan), generation_info=g.generation_info)
            for g in cast("list[ChatGeneration]", result.generations[0])
        ]
        return ChatResult(
            generations=cast("list[ChatGeneration]", _carried(generations)), llm_output=result.llm_output
        )

    def _last_chunk(self, usage: UsageMetadata | None, plan: PrefixPlan) -> ChatGenerationChunk:
        message = AIMessageChunk(
            content="", response_metadata=with_entry({}, PREFIX, summary(plan)), chunk_position="last"
        )
        return ChatGenerationChunk(message=carry_usage(message, usage))

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        formatted, call, plan = self._request(messages, kwargs)
        result = self.model.generate([formatted], stop=stop, callbacks=child_callbacks(run_manager), **call)
        return self._result(result, plan)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        formatted, call, plan = self._request(messages, kwargs)
        result = await self.model.agenerate(
            [formatted], stop=stop, callbacks=achild_callbacks(run_manager), **call
        )
        return self._result(result, plan)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        formatted, call, plan = self._request(messages, kwargs)
        usage: UsageMetadata | None = None
        inner = open_chunks(
            self.model, formatted, {"callbacks": child_callbacks(run_manager)}, stop=stop, **call
        )
        try:
            for message in inner:
                usage = _added(usage, message)
                yield ChatGenerationChunk(message=untraced(message))
        finally:
            close_stream(inner)
        yield self._last_chunk(usage, plan)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        formatted, call, plan = self._request(messages, kwargs)
        usage: UsageMetadata | None = None
        inner = aopen_chunks(
            self.model, formatted, {"callbacks": achild_callbacks(run_manager)}, stop=stop, **call
        )
        try:
            async for message in inner:
                usage = _added(usage, message)
                yield ChatGenerationChunk(message=untraced(message))
        finally:
            await aclose_stream(inner)
        yield self._last_chunk(usage, plan)


def _with_own_mark(converted: dict[str, Any], tool: Any) -> dict[str, Any]:
    """A tool in OpenAI format with the ``cache_control`` the caller put on it (the conversion drops it; the
    planner counts it)."""
    if isinstance(tool, Mapping) and isinstance(tool.get("cache_control"), Mapping):
        return {**converted, "cache_control": dict(tool["cache_control"])}
    return converted


def _ls_provider(model: BaseChatModel) -> str | None:
    """The provider LangChain reports for ``model`` (``ls_provider``), if any."""
    try:
        found = model._get_ls_params().get("ls_provider")
    except Exception:
        return None
    return found if isinstance(found, str) and found else None


def with_prefix_caching(llm: BaseChatModel, **options: Any) -> PrefixCachingChatModel:
    """``llm`` with every request formatted for its provider's prompt cache (see :class:`PrefixCachingChatModel`).

    ``options`` are :class:`~frugal_chains.prefix.PrefixFormatter`'s (``model``, ``provider``, ``rules``,
    ``templates``, ``dynamic_variables``, ``detect``, ``ttl``, ``calls_per_hour``, ``scope``, ``prices``,
    ``on_unsafe``); ``model``/``provider`` default to the wrapped model's.

    Example:
        >>> from langchain_core.messages import HumanMessage, SystemMessage
        >>> from frugal_chains.langchain import with_prefix_caching
        >>> from frugal_chains.testing import FakeUsageChatModel
        >>> # in your app: ChatOpenAI(model="gpt-4o-mini")
        >>> llm = with_prefix_caching(FakeUsageChatModel(model="gpt-4o-mini"))
        >>> answer = llm.invoke([SystemMessage("Be brief. Today is 2026-12-07."), HumanMessage("Hi")])
        >>> answer.response_metadata["frugal"]["prefix"]["provider"]
        'openai'
    """
    if not isinstance(llm, BaseChatModel):
        raise ConfigurationError(
            f"with_prefix_caching wraps a LangChain chat model (BaseChatModel), got {type(llm).__name__}",
            field="llm",
        )
    return PrefixCachingChatModel(model=llm, prefix_options=options)
