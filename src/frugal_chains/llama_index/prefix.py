"""Prompt-prefix caching in LlamaIndex: :class:`PrefixCacheFormatter` (formats a list of ``ChatMessage``) and
:func:`with_prefix_caching` (an LLM wrapper that formats every chat call).

The framework-free planner (:class:`frugal_chains.prefix.PrefixFormatter`) decides everything; this module
translates ``ChatMessage`` lists to its OpenAI-format dicts and the plan back. Anthropic breakpoints become
llama-index-core's own ``CachePoint`` blocks (after the block they close), which LlamaIndex's Anthropic
integration turns into ``cache_control``. A message the plan left unchanged is handed back as the same object.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from llama_index.core.base.llms.types import (
    CacheControl,
    CachePoint,
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    ImageBlock,
    LLMMetadata,
    MessageRole,
    TextBlock,
)
from llama_index.core.llms.llm import LLM
from pydantic import ConfigDict, Field, PrivateAttr

from frugal_chains.errors import ConfigurationError
from frugal_chains.llama_index._convert import (
    SharesCallbacks,
    aopen_stream,
    inherit_llm_settings,
    open_stream,
    openai_message,
    wrapper_event,
)
from frugal_chains.metadata import PREFIX, WRAPPER_KEY, with_entry
from frugal_chains.shared.prefix_wing import ReportSlot, build_formatter, restored, summary
from frugal_chains.shared.streams import aclose_stream, close_stream

if TYPE_CHECKING:
    from frugal_chains.prefix import PrefixFormatter, PrefixPlan, PrefixReport

__all__ = ["PrefixCacheFormatter", "PrefixCachingLLM", "with_prefix_caching"]

_PLACEHOLDER_MODEL = "unknown"


# -- messages: LlamaIndex <-> the planner's OpenAI format --------------------------------------------------------
def _openai(message: ChatMessage) -> dict[str, Any]:
    out = openai_message(message)
    if message.additional_kwargs.get("example") is True:
        out["example"] = True
    return out


def _blocks(parts: Sequence[Any]) -> list[Any]:
    """OpenAI-format content parts as LlamaIndex blocks (a part's ``cache_control`` as a ``CachePoint`` after it)."""
    blocks: list[Any] = []
    for part in parts:
        if isinstance(part, str):
            blocks.append(TextBlock(text=part))
            continue
        kind = part.get("type")
        url = (part.get("image_url") or {}).get("url") if kind == "image_url" else None
        if kind == "text":
            blocks.append(TextBlock(text=str(part.get("text", ""))))
        elif url:
            blocks.append(ImageBlock(url=url))
        # any other part has no LlamaIndex form here (the planner rewrites text only): left out, never sent empty
        mark = part.get("cache_control")
        if isinstance(mark, Mapping) and blocks:
            control = CacheControl(type=str(mark.get("type", "ephemeral")), ttl=str(mark.get("ttl", "5m")))
            blocks.append(CachePoint(cache_control=control))
    return blocks


def _built(planned: Mapping[str, Any]) -> ChatMessage:
    role = str(planned.get("role", "user"))
    try:
        message_role = MessageRole(role)
    except ValueError:
        message_role = MessageRole.USER
    content = planned.get("content")
    parts = [content] if isinstance(content, str) else list(content or [])
    extra = {k: planned[k] for k in ("name", "tool_call_id") if isinstance(planned.get(k), str)}
    if planned.get("example") is True:
        extra["example"] = True
    return ChatMessage(role=message_role, blocks=_blocks(parts), additional_kwargs=extra)


def _prepended(message: ChatMessage, head: list[dict[str, Any]]) -> ChatMessage:
    return message.model_copy(update={"blocks": [*_blocks(head), *message.blocks]})


def _plan(
    core: PrefixFormatter,
    messages: Sequence[ChatMessage],
    *,
    tools: Sequence[Mapping[str, Any]] | None = None,
    dynamic: Mapping[str, str] | None = None,
    scope: str | None = None,
) -> tuple[list[ChatMessage], PrefixPlan]:
    for i, m in enumerate(messages):
        if not isinstance(m, ChatMessage):
            raise ConfigurationError(
                f"messages[{i}] must be a LlamaIndex ChatMessage, got {type(m).__name__}", field="messages"
            )
    originals = list(messages)
    dicts = [_openai(m) for m in originals]
    plan = core.plan(dicts, tools=tools, dynamic=dynamic, scope=scope)
    if not plan.changed:
        return originals, plan
    return restored(originals, dicts, plan.messages, build=_built, prepend=_prepended), plan


class PrefixCacheFormatter:
    """Formats a list of LlamaIndex ``ChatMessage`` for the provider's prompt cache.

    Stable prefix first (system, few-shot examples, documents), dynamic values (dates, times, ids, emails,
    template variables you name) moved into one short request-context block after it, and for Anthropic at most
    four breakpoints as ``CachePoint`` blocks where the prefix is long enough to be cached.

    Args:
        model: the model the request goes to (provider inferred from the name; ``provider=`` or
            ``rules=ProviderRules(...)`` when it cannot be).
        **options: the other options of :class:`~frugal_chains.prefix.PrefixFormatter` (``templates``,
            ``dynamic_variables``, ``detect``, ``ttl``, ``calls_per_hour``, ``scope``, ``prices``, ``on_unsafe``).

    Example:
        >>> from llama_index.core.llms import ChatMessage
        >>> from frugal_chains.llama_index import PrefixCacheFormatter
        >>> formatter = PrefixCacheFormatter(model="claude-sonnet-4-5")
        >>> messages = [
        ...     ChatMessage(role="system", content="You are Acme's support agent. " * 300 + "Today is 2026-12-07."),
        ...     ChatMessage(role="user", content="Where is my order?"),
        ... ]
        >>> system = formatter.format(messages)[0]
        >>> [block.block_type for block in system.blocks]
        ['text', 'cache', 'text']
        >>> "2026-12-07" in system.blocks[0].text, "2026-12-07" in system.blocks[2].text
        (False, True)
    """

    def __init__(self, model: str | None = None, **options: Any) -> None:
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

    def plan(
        self,
        messages: Sequence[ChatMessage],
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        dynamic: Mapping[str, str] | None = None,
        scope: str | None = None,
    ) -> tuple[list[ChatMessage], PrefixPlan]:
        """Format one request: ``(messages, plan)``, where ``plan`` is the core's
        :class:`~frugal_chains.prefix.PrefixPlan` (``plan.report``, ``plan.params`` such as OpenAI's
        ``prompt_cache_key`` to pass to ``llm.chat(messages, **plan.params)``). ``tools`` are OpenAI-format tool
        definitions counted in the prefix."""
        out, plan = _plan(self._core, messages, tools=tools, dynamic=dynamic, scope=scope)
        self._last.set(plan.report)
        return out, plan

    def format(self, messages: Sequence[ChatMessage]) -> list[ChatMessage]:
        """The messages formatted for the provider's prompt cache."""
        return self.plan(messages)[0]


class PrefixCachingLLM(SharesCallbacks, LLM):
    """A LlamaIndex LLM that formats every chat request for its provider's prompt cache, then calls ``llm``.

    Build it with :func:`with_prefix_caching`. ``chat``, ``achat``, ``stream_chat`` and ``astream_chat`` send the
    formatted messages and the plan's parameters (OpenAI's ``prompt_cache_key``, unless the call sets it);
    ``complete`` and its variants pass the prompt through unchanged (a bare prompt has no preamble to arrange).
    Each response carries a summary of the formatting in ``additional_kwargs["frugal"]["prefix"]``.

    Budgets count the wrapped LLM's calls only (the wrapper's events are marked as a wrapper's); errors reach the
    caller as raised.

    Example:
        >>> from llama_index.core.llms import ChatMessage
        >>> from frugal_chains.llama_index import with_prefix_caching
        >>> from frugal_chains.testing import FakeUsageLLM
        >>> # in your app: Anthropic(model="claude-sonnet-4-5")
        >>> llm = with_prefix_caching(FakeUsageLLM(model="claude-sonnet-4-5"))
        >>> response = llm.chat([
        ...     ChatMessage(role="system", content="You are Acme's support agent. " * 300 + "Today is 2026-12-07."),
        ...     ChatMessage(role="user", content="Where is my order?"),
        ... ])
        >>> response.additional_kwargs["frugal"]["prefix"]["breakpoints"]
        1
    """

    llm: LLM = Field(description="The LLM called with the formatted request.")
    prefix_options: dict[str, Any] = Field(
        default_factory=dict, exclude=True, description="The options given to the planner."
    )

    model_config = ConfigDict(arbitrary_types_allowed=True)

    _ready: bool = PrivateAttr(default=False)
    _core: Any = PrivateAttr(default=None)
    _last: ReportSlot = PrivateAttr(default_factory=ReportSlot)

    def __init__(self, llm: LLM, prefix_options: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        if not isinstance(llm, LLM):
            raise ConfigurationError(
                f"llm must be a LlamaIndex LLM (llama_index.core.llms.LLM), got {type(llm).__name__}",
                field="llm",
            )
        options = dict(prefix_options or {})
        name = options.pop("model", None)
        if name is None:
            name = llm.metadata.model_name
            if not name or name == _PLACEHOLDER_MODEL:
                name = None
        core = build_formatter(name, options, owner="with_prefix_caching")
        inherit_llm_settings(kwargs, llm)
        kwargs["prefix_options"] = dict(prefix_options or {})
        super().__init__(**kwargs)
        self._core = core

    def model_post_init(self, context: Any, /) -> None:
        super().model_post_init(context)
        self._share_callbacks(self.callback_manager)
        self._ready = True

    def _wrapped_llms(self) -> Sequence[LLM]:
        return [self.llm]

    @property
    def core(self) -> PrefixFormatter:
        """The framework-free planner (its churn detector is shared by every call of this LLM)."""
        return cast("PrefixFormatter", self._core)

    @property
    def last_report(self) -> PrefixReport | None:
        """The report of the latest call (from any thread; ``None`` before the first)."""
        return self._last.get()

    @classmethod
    def class_name(cls) -> str:
        return "PrefixCachingLLM"

    @property
    def metadata(self) -> LLMMetadata:
        return self.llm.metadata.model_copy(update={"is_function_calling_model": False})

    def to_payload(self) -> dict[str, Any]:
        """The wrapped LLM's payload, marked as a wrapper (budget handlers count the wrapped calls only)."""
        return {**self.llm.to_payload(), WRAPPER_KEY: True, "formatted_by": self.class_name()}

    # -- formatting ------------------------------------------------------------------------------------------
    def _request(
        self, messages: Sequence[ChatMessage], kwargs: Mapping[str, Any]
    ) -> tuple[list[ChatMessage], dict[str, Any], PrefixPlan]:
        out, plan = _plan(self.core, messages)
        self._last.set(plan.report)
        return out, {**plan.params, **kwargs}, plan

    @staticmethod
    def _marked(response: ChatResponse, plan: PrefixPlan) -> ChatResponse:
        response.additional_kwargs = with_entry(response.additional_kwargs, PREFIX, summary(plan))
        return response

    def _marked_stream(
        self, stream: Iterator[ChatResponse], plan: PrefixPlan
    ) -> Generator[ChatResponse, None, None]:
        try:
            for response in stream:
                yield self._marked(response, plan)
        finally:
            close_stream(stream)

    async def _amarked_stream(
        self, stream: AsyncIterator[ChatResponse], plan: PrefixPlan
    ) -> AsyncGenerator[ChatResponse, None]:
        try:
            async for response in stream:
                yield self._marked(response, plan)
        finally:
            await aclose_stream(stream)

    # -- chat ------------------------------------------------------------------------------------------------
    @wrapper_event("chat")
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        formatted, call, plan = self._request(messages, kwargs)
        return self._marked(self.llm.chat(formatted, **call), plan)

    @wrapper_event("chat")
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        formatted, call, plan = self._request(messages, kwargs)
        return self._marked(await self.llm.achat(formatted, **call), plan)

    @wrapper_event("chat")
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        formatted, call, plan = self._request(messages, kwargs)
        inner = open_stream(
            lambda: self.llm.stream_chat(formatted, **call), lambda: self.llm.chat(formatted, **call)
        )
        return self._marked_stream(inner, plan)

    @wrapper_event("chat")
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        formatted, call, plan = self._request(messages, kwargs)
        inner = await aopen_stream(
            lambda: self.llm.astream_chat(formatted, **call), lambda: self.llm.achat(formatted, **call)
        )
        return self._amarked_stream(inner, plan)

    # -- complete: passed through ----------------------------------------------------------------------------
    @wrapper_event("complete")
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return self.llm.complete(prompt, formatted=formatted, **kwargs)

    @wrapper_event("complete")
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return await self.llm.acomplete(prompt, formatted=formatted, **kwargs)

    @wrapper_event("complete")
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        return self.llm.stream_complete(prompt, formatted=formatted, **kwargs)

    @wrapper_event("complete")
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        return await self.llm.astream_complete(prompt, formatted=formatted, **kwargs)


def with_prefix_caching(llm: LLM, **options: Any) -> PrefixCachingLLM:
    """``llm`` with every chat request formatted for its provider's prompt cache (see :class:`PrefixCachingLLM`).

    ``options`` are :class:`~frugal_chains.prefix.PrefixFormatter`'s; ``model`` defaults to
    ``llm.metadata.model_name``.

    Example:
        >>> from frugal_chains.llama_index import with_prefix_caching
        >>> from frugal_chains.testing import FakeUsageLLM
        >>> # in your app: OpenAI(model="gpt-4o-mini")
        >>> with_prefix_caching(FakeUsageLLM(), model="gpt-4o-mini").core.rules.provider
        'openai'
    """
    return PrefixCachingLLM(llm=llm, prefix_options=options)
