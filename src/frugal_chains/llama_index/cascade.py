"""``CascadeLLM``: a LlamaIndex LLM that tries the cheapest tier likely to succeed, checks the answer, escalates.

The decisions live in the framework-free engine (:class:`frugal_chains.routing.Cascade`); this module adds the
LlamaIndex contract:

* ``chat``/``achat`` call each tier's ``chat``/``achat``; ``complete``/``acomplete`` call each tier's own
  ``complete``/``acomplete`` (so each tier formats the prompt as it always does: ``completion_to_prompt`` for a
  completion model, a user message for a chat model). The scorer and the gates see the prompt as one user turn.
* Budgets: the cascade's own LlamaIndex LLM events carry :data:`~frugal_chains.metadata.WRAPPER_KEY`,
  so :class:`~frugal_chains.llama_index.TokenBudgetHandler` counts the tiers' calls (each provider call once,
  every tier tried included) and never the cascade's. A callback manager given to the cascade (or set by
  ``Settings.llm``) is passed on to every tier, so one handler sees both. The cascade's event ends without a
  response (see :func:`~frugal_chains.llama_index._convert.wrapper_event`): LlamaIndex's ``TokenCountingHandler``
  counts each tier's call once.
* Streaming (``stream_chat``, ``stream_complete`` and their async twins): with no gate that needs the whole
  answer, the chosen tier streams live (its answer is not gated). Otherwise each tier below the strongest is
  buffered, its whole answer checked, and replayed once it passes; the strongest tier streams live. A provider
  error before the first streamed token escalates. A tier with no streaming (``NotImplementedError``) streams its
  whole answer as one response. Every stream ends with one closing response (``delta=""``)
  carrying the whole answer and the metadata below.
* The final response carries ``additional_kwargs["frugal"]["cascade"]`` (tier, model, escalations, scores, cost in USD,
  attempts), ``additional_kwargs["frugal_tier"]`` (the tier's name; every streamed chunk has it too), and the
  usage of every call the cascade made, summed: ``raw["usage"]`` (``input_tokens``/``output_tokens`` with
  cache and reasoning details, readable by ``TokenBudgetHandler`` and LlamaIndex's ``TokenCountingHandler``) and
  ``additional_kwargs`` ``prompt_tokens``/``completion_tokens``/``total_tokens``. A tier's ``raw`` that is a dict is
  kept (its ``usage`` replaced); any other ``raw`` object is kept under ``raw["tier_raw"]``.
* Structured output (``structured_predict``, ``as_structured_llm``, ``stream_structured_predict`` and async) is
  done by the cascade: each tier runs its own ``structured_predict``; output that does not parse or validate
  escalates, and :class:`~frugal_chains.errors.CascadeExhaustedError` is raised when the strongest tier's does
  not either. A structured answer is not streamed (the stream yields the one parsed object).
* Function calling: when every tier is a ``FunctionCallingLLM``, the cascade is one too: ``chat_with_tools``
  (and stream/async, ``predict_and_call``, LlamaIndex agents) calls each tier's ``chat_with_tools`` with the
  same tools, and ``get_tool_calls_from_response`` asks the tier that answered.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import threading
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import aclosing, closing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, cast

from llama_index.core.base.llms.generic_utils import (
    achat_to_completion_decorator,
    chat_to_completion_decorator,
)
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
from llama_index.core.callbacks import CallbackManager
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events.llm import (
    LLMChatEndEvent,
    LLMChatStartEvent,
    LLMCompletionEndEvent,
    LLMCompletionStartEvent,
)
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import LLM, ToolSelection
from llama_index.core.llms.structured_llm import StructuredLLM
from llama_index.core.output_parsers.base import OutputParserException
from llama_index.core.prompts import ChatPromptTemplate, PromptTemplate
from llama_index.core.types import Model
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SerializeAsAny

from frugal_chains import metadata as _keys
from frugal_chains._deprecation import deprecated_attributes, old_metadata_keys, warn_renamed
from frugal_chains.accounting.context import cascade_tier
from frugal_chains.accounting.provider_usage import get_field
from frugal_chains.accounting.usage import Usage
from frugal_chains.errors import ConfigurationError
from frugal_chains.llama_index._convert import (
    SharesCallbacks,
    aopen_stream,
    message_text,
    open_stream,
    routing_messages,
    usage_of,
    whole_chat,
    whole_completion,
    wrapper_event,
)
from frugal_chains.metadata import CASCADE, WRAPPER_KEY, with_entry
from frugal_chains.routing.cascade import Cascade, CascadeResult, TierChunk
from frugal_chains.routing.policy import RoutingPolicy, TierSpec
from frugal_chains.routing.policy import tier_names as resolve_tier_names
from frugal_chains.routing.stats import RouterStats
from frugal_chains.routing.types import TierAnswer

if TYPE_CHECKING:
    from llama_index.core.tools.types import BaseTool

__all__ = ["CascadeLLM"]
_TOOLS = "frugal_tools"
"""Private ``chat`` kwarg set by ``_prepare_chat_with_tools``: the tools every tier's ``chat_with_tools`` gets."""
_PLACEHOLDER_MODEL = "unknown"  # LLMMetadata.model_name's default

_R = TypeVar("_R", ChatResponse, CompletionResponse)


# -- conversions -----------------------------------------------------------------------------------------------
def _model_name(llm: LLM) -> str:
    """The tier's model name for pricing: ``metadata.model_name``, or its ``class_name()`` when that is
    LlamaIndex's placeholder ``"unknown"`` (as :class:`~frugal_chains.llama_index.TokenBudgetHandler` names it)."""
    try:
        name = llm.metadata.model_name
    except Exception:  # an integration whose metadata needs a client
        name = None
    if isinstance(name, str) and name and name != _PLACEHOLDER_MODEL:
        return name
    return llm.class_name() or type(llm).__name__


def _logprobs(found: Any) -> tuple[float, ...] | None:
    """Per-token log-probabilities from LlamaIndex's ``List[List[LogProb]]`` (the best of each position's
    alternatives: the chosen token's when decoding greedily)."""
    if not found:
        return None
    values: list[float] = []
    for position in found:
        probs = [
            float(lp.logprob)
            for lp in position or ()
            if isinstance(getattr(lp, "logprob", None), (int, float))
        ]
        if probs:
            values.append(max(probs))
    return tuple(values) or None


def _usage_dict(u: Usage) -> dict[str, Any]:
    """A lossless usage block (LangChain ``usage_metadata`` form: ``input_tokens`` includes the cache)."""
    return {
        "input_tokens": u.input_tokens,
        "output_tokens": u.output_tokens,
        "total_tokens": u.total_tokens,
        "input_token_details": {
            "cache_read": u.cache_read_tokens,
            "cache_creation": u.cache_write_tokens + u.cache_write_1h_tokens,
            "ephemeral_5m_input_tokens": u.cache_write_tokens,
            "ephemeral_1h_input_tokens": u.cache_write_1h_tokens,
        },
        "output_token_details": {"reasoning": u.reasoning_tokens},
    }


def _is_parse_error(error: BaseException) -> bool:
    """Output that did not parse or validate (pydantic's ``ValidationError`` is a ``ValueError``)."""
    if isinstance(error, (ValueError, OutputParserException)):
        return True
    return isinstance(error, TypeError) and "structured output" in str(error)


# -- usage of structured calls -----------------------------------------------------------------------------------
@dataclass
class _Collected:
    """The responses of the outermost LLM calls made in one context (nested calls, e.g. ``chat`` delegating to
    ``complete``, report the same usage and are skipped)."""

    depth: int = 0
    responses: list[Any] = field(default_factory=list)


_collecting: contextvars.ContextVar[_Collected | None] = contextvars.ContextVar(
    "frugal_chains_li_cascade_collect", default=None
)


class _ResponseCollector(BaseEventHandler):
    """An instrumentation handler (on the root dispatcher, idle unless a structured call is collecting in this
    context) that keeps the responses of the LLM calls a tier's ``structured_predict`` makes, for their usage."""

    @classmethod
    def class_name(cls) -> str:
        return "FrugalCascadeResponseCollector"

    def handle(self, event: Any, **kwargs: Any) -> None:
        box = _collecting.get()
        if box is None:
            return
        if isinstance(event, (LLMChatStartEvent, LLMCompletionStartEvent)):
            box.depth += 1
        elif isinstance(event, (LLMChatEndEvent, LLMCompletionEndEvent)):
            box.depth = max(0, box.depth - 1)
            if box.depth == 0 and event.response is not None:
                box.responses.append(event.response)


_collector_lock = threading.Lock()
_collector_installed = False


def _install_collector() -> None:
    global _collector_installed
    if _collector_installed:
        return
    with _collector_lock:
        if not _collector_installed:
            from llama_index.core.instrumentation import get_dispatcher  # type: ignore[attr-defined]

            get_dispatcher().add_event_handler(_ResponseCollector())  # the root dispatcher
            _collector_installed = True


@contextlib.contextmanager
def _collect() -> Iterator[_Collected]:
    _install_collector()
    box = _Collected()
    token = _collecting.set(box)
    try:
        yield box
    finally:
        _collecting.reset(token)


# -- requests ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class _ToolRequest:
    """The arguments of ``chat_with_tools``, given unchanged to every tier's ``chat_with_tools``."""

    tools: tuple[Any, ...]
    verbose: bool = False
    allow_parallel_tool_calls: bool = False
    tool_required: bool = False
    kwargs: dict[str, Any] = field(default_factory=dict)

    def arguments(self, messages: Sequence[ChatMessage], kwargs: dict[str, Any]) -> dict[str, Any]:
        # a fresh history per call: integrations append the user message to it
        return {
            "chat_history": list(messages),
            "verbose": self.verbose,
            "allow_parallel_tool_calls": self.allow_parallel_tool_calls,
            "tool_required": self.tool_required,
            **self.kwargs,
            **kwargs,
        }


@dataclass(frozen=True, kw_only=True)
class _Chat:
    """One ``chat`` request: how to call a tier (whole, streamed, sync or async)."""

    messages: tuple[ChatMessage, ...]
    kwargs: dict[str, Any]
    tools: _ToolRequest | None = None

    def openai(self) -> list[dict[str, Any]]:
        return routing_messages(self.messages)

    def call(self, tier: LLM) -> ChatResponse:
        if self.tools is not None:
            return cast("FunctionCallingLLM", tier).chat_with_tools(
                list(self.tools.tools), **self.tools.arguments(self.messages, self.kwargs)
            )
        return tier.chat(list(self.messages), **self.kwargs)

    async def acall(self, tier: LLM) -> ChatResponse:
        if self.tools is not None:
            return await cast("FunctionCallingLLM", tier).achat_with_tools(
                list(self.tools.tools), **self.tools.arguments(self.messages, self.kwargs)
            )
        return await tier.achat(list(self.messages), **self.kwargs)

    def stream(self, tier: LLM) -> Iterator[ChatResponse]:
        if self.tools is not None:
            return cast("FunctionCallingLLM", tier).stream_chat_with_tools(
                list(self.tools.tools), **self.tools.arguments(self.messages, self.kwargs)
            )
        return tier.stream_chat(list(self.messages), **self.kwargs)

    async def astream(self, tier: LLM) -> AsyncIterator[ChatResponse]:
        if self.tools is not None:
            return await cast("FunctionCallingLLM", tier).astream_chat_with_tools(
                list(self.tools.tools), **self.tools.arguments(self.messages, self.kwargs)
            )
        return await tier.astream_chat(list(self.messages), **self.kwargs)


@dataclass(frozen=True, kw_only=True)
class _Completion:
    """One ``complete`` request: each tier's own ``complete`` (it formats the prompt its way)."""

    prompt: str
    formatted: bool
    kwargs: dict[str, Any]

    def openai(self) -> list[dict[str, Any]]:
        return [{"role": "user", "content": self.prompt}]

    def call(self, tier: LLM) -> CompletionResponse:
        return tier.complete(self.prompt, formatted=self.formatted, **self.kwargs)

    async def acall(self, tier: LLM) -> CompletionResponse:
        return await tier.acomplete(self.prompt, formatted=self.formatted, **self.kwargs)

    def stream(self, tier: LLM) -> Iterator[CompletionResponse]:
        return tier.stream_complete(self.prompt, formatted=self.formatted, **self.kwargs)

    async def astream(self, tier: LLM) -> AsyncIterator[CompletionResponse]:
        return await tier.astream_complete(self.prompt, formatted=self.formatted, **self.kwargs)


def _prefix_cached(tiers: list[LLM], option: Any) -> list[LLM]:
    """``prefix_caching=``: each tier behind :func:`~frugal_chains.llama_index.with_prefix_caching`."""
    from frugal_chains.shared.prefix_wing import cascade_prefix_options

    options = cascade_prefix_options(option)
    if options is None:
        return tiers
    from frugal_chains.llama_index.prefix import PrefixCachingLLM, with_prefix_caching

    return [t if isinstance(t, PrefixCachingLLM) else with_prefix_caching(t, **options) for t in tiers]


class CascadeLLM(SharesCallbacks, FunctionCallingLLM):
    """A LlamaIndex LLM over two or more LLMs, cheapest first: route, check the answer, escalate.

    Usable as ``Settings.llm`` (native async). See the module documentation for streaming, budgets, structured
    output and function calling.

    Args:
        tiers: two or more LlamaIndex LLMs (``llama_index.core.llms.LLM``), cheapest first.
        tier_names: a name per tier (default: each tier's ``metadata.model_name``, or its class name when that is
            ``"unknown"``, made unique).
        scorer: picks the starting tier before any call: a :class:`~frugal_chains.routing.Scorer`
            (``HeuristicScorer()``, ``TrainedScorer.load(...)``) or ``"heuristic"``. Default ``None``: every
            request starts on the cheapest tier and the gates decide.
        gates: quality gates run on each answer below the strongest tier (objects or names such as ``"refusal"``,
            see :func:`~frugal_chains.routing.resolve_gates`); a failed gate escalates.
        thresholds: the scorer's thresholds (``n - 1`` numbers in [0, 1]); or pass ``policy``.
        policy: a :class:`~frugal_chains.routing.RoutingPolicy` (e.g. ``cost_aware=True``).
        stats: escalation counters and the alert hook (:class:`~frugal_chains.routing.RouterStats`; default a new
            one; share one between instances to aggregate).
        ledger: write one ``routed`` record per request (tiers tried, why) to this ledger.
        prices: prices for ``additional_kwargs["frugal"]["cascade"]["cost_usd"]`` (``{model: Price}`` or a
            ``PriceBook``; model names as in ``tier_names``' default).
        escalate_on: which provider errors escalate (default: rate limits, timeouts, connection and server
            errors, context overflow); any other error propagates at once.
        name: the cascade's name in ledger records.
        question_key: a :class:`~frugal_chains.QuestionKey` handed to the scorer: what it scores in a templated
            prompt (:func:`~frugal_chains.llama_index.question_key_from` builds one from your prompt template).
            Default: the scorer's own, which recognises LlamaIndex's text-QA and refine prompts.
        prefix_caching: ``True`` (or a dict of :func:`~frugal_chains.llama_index.with_prefix_caching` options):
            each tier formats its chat requests for its own provider's prompt cache. Tiers you wrapped yourself
            are kept as they are.

    ``metadata``: the smallest tier's ``context_window`` and the largest ``num_output`` (a prompt sized for the
    cascade fits every tier), ``is_chat_model`` / ``is_function_calling_model`` when every tier is one, and
    ``model_name="cascade(<models>)"``.

    Example:
        >>> from llama_index.core.llms.mock import MockLLM
        >>> from frugal_chains import Price
        >>> from frugal_chains.llama_index.cascade import CascadeLLM
        >>> from frugal_chains.routing import RegexGate
        >>> cheap = MockLLM(max_tokens=3)  # answers "text text text"
        >>> strong = MockLLM()  # echoes the prompt
        >>> llm = CascadeLLM(tiers=[cheap, strong], tier_names=["cheap", "strong"], gates=[RegexGate(r"\\d")],
        ...                  prices={"MockLLM": Price(input=1.0, output=2.0)})
        >>> response = llm.complete("What is 6 x 7?")
        >>> response.text, response.additional_kwargs["frugal"]["cascade"]["tier"]
        ('What is 6 x 7?', 'strong')
        >>> response.additional_kwargs["frugal"]["cascade"]["escalations"], llm.stats.tier("cheap").escalations
        (1, 1)
    """

    tiers: list[SerializeAsAny[LLM]] = Field(
        description="The LLMs, cheapest first (serialized as their own class)."
    )
    tier_names: list[str] = Field(default_factory=list, description="One name per tier.")
    scorer: Any = Field(
        default=None, exclude=True, description="Picks the starting tier (None: the cheapest)."
    )
    gates: Any = Field(default=(), exclude=True, description="Quality gates (QualityGate objects).")
    thresholds: tuple[float, ...] | None = Field(default=None, description="The scorer's thresholds.")
    policy: Any = Field(default=None, exclude=True, description="How a score becomes a starting tier.")
    stats: Any = Field(default=None, exclude=True, description="Escalation counters (a RouterStats).")
    ledger: Any = Field(default=None, exclude=True, description="Where routed records go (optional).")
    prices: Any = Field(default=None, exclude=True, description="Prices for the cost in the metadata.")
    escalate_on: Any = Field(default=None, exclude=True, description="Which provider errors escalate.")
    name: str = Field(default="cascade", description="The cascade's name in ledger records.")
    question_key: Any = Field(
        default=None, exclude=True, description="What the scorer scores in a templated prompt."
    )

    model_config = ConfigDict(arbitrary_types_allowed=True)

    _engine: Cascade = PrivateAttr()
    _ready: bool = PrivateAttr(default=False)

    def __init__(
        self,
        tiers: Sequence[LLM] | None = None,
        *,
        tier_names: Sequence[str] | None = None,
        scorer: Any = None,
        gates: Any = None,
        thresholds: Sequence[float] | None = None,
        policy: RoutingPolicy | None = None,
        stats: RouterStats | None = None,
        ledger: Any = None,
        prices: Any = None,
        escalate_on: Callable[[BaseException], bool] | None = None,
        name: str = "cascade",
        question_key: Any = None,
        prefix_caching: bool | Mapping[str, Any] = False,
        **kwargs: Any,
    ) -> None:
        from frugal_chains.routing.gates import resolve_gates

        if not isinstance(tiers, Sequence) or isinstance(tiers, str) or len(tiers) < 2:
            count = len(tiers) if isinstance(tiers, Sequence) and not isinstance(tiers, str) else 0
            raise ConfigurationError(
                f"tiers must be a list of two or more LlamaIndex LLMs, cheapest first (got {count})",
                field="tiers",
            )
        tier_list = list(tiers)
        for i, tier in enumerate(tier_list):
            if not isinstance(tier, LLM):
                raise ConfigurationError(
                    f"tiers[{i}] must be a LlamaIndex LLM (llama_index.core.llms.LLM), got {type(tier).__name__}",
                    field="tiers",
                )
        tier_list = _prefix_cached(tier_list, prefix_caching)
        names = resolve_tier_names(tier_names, [_model_name(t) for t in tier_list])
        if scorer == "heuristic":
            from frugal_chains.routing.scorers import HeuristicScorer

            scorer = HeuristicScorer()
        elif isinstance(scorer, str):
            raise ConfigurationError(
                f"unknown scorer {scorer!r}: pass 'heuristic' or a Scorer object (TrainedScorer, CallableScorer)",
                field="scorer",
            )
        resolved_gates = resolve_gates(gates)
        if thresholds is not None and policy is not None:
            raise ConfigurationError("pass thresholds= or policy=, not both", field="thresholds")
        if thresholds is not None:
            if not isinstance(thresholds, Sequence) or isinstance(thresholds, str):
                raise ConfigurationError(
                    f"thresholds must be a list of numbers in [0, 1], got {thresholds!r}", field="thresholds"
                )
            policy = RoutingPolicy(thresholds=tuple(thresholds))
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"name must be a non-empty string, got {name!r}", field="name")
        engine = Cascade(
            [TierSpec(name=n, model=_model_name(t)) for n, t in zip(names, tier_list, strict=True)],
            scorer=scorer,
            gates=resolved_gates,
            policy=policy,
            stats=stats,
            ledger=ledger,
            prices=prices,
            escalate_on=escalate_on,
            name=name,
            question_key=question_key,
        )
        scorer = engine.scorer
        explicit_manager = kwargs.get("callback_manager") is not None
        if not explicit_manager:
            kwargs["callback_manager"] = _shared_manager(tier_list)
        super().__init__(
            tiers=tier_list,
            tier_names=names,
            scorer=scorer,
            gates=resolved_gates,
            thresholds=engine.policy.thresholds,
            policy=engine.policy,
            stats=engine.stats,
            ledger=ledger,
            prices=prices,
            escalate_on=escalate_on,
            name=name,
            question_key=question_key,
            **kwargs,
        )
        self._engine = engine
        if explicit_manager:
            self._share_callbacks(self.callback_manager)
        self._ready = True

    def _wrapped_llms(self) -> Sequence[LLM]:
        return list(self.tiers)

    @classmethod
    def class_name(cls) -> str:
        return "CascadeLLM"

    @property
    def core(self) -> Cascade:
        """The framework-free engine that makes every decision."""
        return self._engine

    @property
    def engine(self) -> Cascade:
        """Deprecated: use :attr:`core`."""
        warn_renamed("CascadeLLM.engine", "CascadeLLM.core")
        return self._engine

    @property
    def metadata(self) -> LLMMetadata:
        metas = [t.metadata for t in self.tiers]
        return LLMMetadata(
            context_window=min(m.context_window for m in metas),
            num_output=max(m.num_output for m in metas),
            is_chat_model=all(m.is_chat_model for m in metas),
            is_function_calling_model=all(
                m.is_function_calling_model and isinstance(t, FunctionCallingLLM)
                for m, t in zip(metas, self.tiers, strict=True)
            ),
            model_name="cascade(" + ",".join(t.model for t in self._engine.tiers) + ")",
        )

    def to_payload(self) -> dict[str, Any]:
        """The cascade's payload, marked as a wrapper (budget handlers count the tiers' calls only)."""
        return {**super().to_payload(), WRAPPER_KEY: True, "tiers": list(self.tier_names)}

    # -- answers -----------------------------------------------------------------------------------------------
    def _tool_calls(self, index: int, response: ChatResponse) -> tuple[dict[str, Any], ...]:
        tier = self.tiers[index]
        if isinstance(tier, FunctionCallingLLM):
            try:
                found = tier.get_tool_calls_from_response(response, error_on_no_tool_call=False)
                return tuple({"name": s.tool_name, "args": s.tool_kwargs, "id": s.tool_id} for s in found)
            except Exception:  # NotImplementedError, or an integration that cannot parse this response
                pass
        return tuple(  # ToolCallBlock (llama-index-core 0.14)
            {
                "name": getattr(b, "tool_name", ""),
                "args": getattr(b, "tool_kwargs", {}),
                "id": getattr(b, "tool_call_id", None),
            }
            for b in response.message.blocks
            if getattr(b, "block_type", None) == "tool_call"
        )

    def _answer(self, index: int, response: ChatResponse | CompletionResponse) -> TierAnswer:
        usage, model = usage_of(response)
        if isinstance(response, ChatResponse):
            text = message_text(response.message)
            tool_calls = self._tool_calls(index, response)
        else:
            text, tool_calls = response.text, ()
        return TierAnswer(
            text=text,
            tool_calls=tool_calls,
            usage=usage,
            model=model,
            logprobs=_logprobs(response.logprobs),
            native=response,
        )

    def _stream_answer(self, index: int, req: _Chat | _Completion, chunks: list[Any]) -> TierAnswer:
        """A streamed answer made whole (``native``), usage from whichever chunk carried it."""
        whole = whole_chat(chunks) if isinstance(req, _Chat) else whole_completion(chunks)
        answer = self._answer(index, whole)
        if answer.usage is None:
            for chunk in reversed(chunks):
                usage, model = usage_of(chunk)
                if usage is not None:
                    return dataclasses.replace(answer, usage=usage, model=answer.model or model)
        return answer

    def _marks(self, result: CascadeResult, additional: dict[str, Any]) -> tuple[dict[str, Any], Usage]:
        usage = result.usage
        info = result.metadata(self.tier_names)
        marks = {**with_entry(additional, CASCADE, info, legacy=info), _keys.TIER_KEY: result.tier}
        if usage.total_tokens:
            marks.update(
                prompt_tokens=usage.input_tokens,
                completion_tokens=usage.output_tokens,
                total_tokens=usage.total_tokens,
            )
        return marks, usage

    @staticmethod
    def _raw(raw: Any, usage: Usage, model: str) -> Any:
        if not usage.total_tokens:
            return raw
        if raw is None:
            return {"usage": _usage_dict(usage), "model": model}
        if isinstance(raw, dict):
            return {**raw, "usage": _usage_dict(usage)}
        return {"usage": _usage_dict(usage), "model": model, "tier_raw": raw}

    def _final(self, result: CascadeResult, response: _R) -> _R:
        """The accepted response with the cascade's metadata and the summed usage."""
        marks, usage = self._marks(result, dict(response.additional_kwargs))
        return response.model_copy(
            update={"additional_kwargs": marks, "raw": self._raw(response.raw, usage, result.model)}
        )

    def _tagged(self, response: Any, index: int) -> Any:
        return response.model_copy(
            update={
                "additional_kwargs": {**response.additional_kwargs, _keys.TIER_KEY: self.tier_names[index]}
            }
        )

    def _closing(self, result: CascadeResult, whole: _R) -> _R:
        """The stream's last response: the whole answer, ``delta=""``, the metadata and the summed usage."""
        final = self._final(result, whole)
        return final.model_copy(update={"delta": ""})

    def _tiered(self, i: int, fn: Callable[[LLM], Any]) -> Any:
        """``fn(tier i)`` with the tier's name in context (budget handlers record it as ``CallRecord.tier``)."""
        with cascade_tier(self.tier_names[i]):
            return fn(self.tiers[i])

    async def _atiered(self, i: int, fn: Callable[[LLM], Awaitable[Any]]) -> Any:
        """Async :meth:`_tiered`."""
        with cascade_tier(self.tier_names[i]):
            return await fn(self.tiers[i])

    # -- the loops: the engine's, with this wing's calls ---------------------------------------------------------
    def _run(self, req: _Chat | _Completion) -> CascadeResult:
        def call(i: int) -> TierAnswer:
            return self._answer(i, self._tiered(i, req.call))

        return self._engine.run(req.openai(), call)

    async def _arun(self, req: _Chat | _Completion) -> CascadeResult:
        async def call(i: int) -> TierAnswer:
            return self._answer(i, await self._atiered(i, req.acall))

        return await self._engine.arun(req.openai(), call)

    def _stream(self, req: _Chat | _Completion) -> Generator[Any, None, None]:
        """The engine's streaming loop: tier chunks tagged with their tier, then the closing response."""

        def join(i: int, chunks: list[Any]) -> TierAnswer:
            return self._stream_answer(i, req, chunks)

        def call(i: int) -> TierAnswer:
            return self._answer(i, self._tiered(i, req.call))

        def opened(i: int) -> Iterator[Any]:
            return open_stream(lambda: self._tiered(i, req.stream), lambda: self._tiered(i, req.call))

        with closing(self._engine.stream(req.openai(), opened, join, call=call)) as events:
            for event in events:
                yield self._event(event)

    async def _astream(self, req: _Chat | _Completion) -> AsyncGenerator[Any, None]:
        """Async :meth:`_stream`."""

        def join(i: int, chunks: list[Any]) -> TierAnswer:
            return self._stream_answer(i, req, chunks)

        async def call(i: int) -> TierAnswer:
            return self._answer(i, await self._atiered(i, req.acall))

        async def opened(i: int) -> AsyncIterator[Any]:
            return await aopen_stream(
                lambda: self._atiered(i, req.astream), lambda: self._atiered(i, req.acall)
            )

        async with aclosing(self._engine.astream(req.openai(), opened, join, call=call)) as events:
            async for event in events:
                yield self._event(event)

    def _event(self, event: TierChunk[Any] | CascadeResult) -> Any:
        """An engine event as a response: a tier's chunk tagged with its tier, the result as the closing one."""
        if isinstance(event, CascadeResult):
            return self._closing(event, event.answer.native)
        return self._tagged(event.chunk, event.tier_index)

    # -- chat ----------------------------------------------------------------------------------------------------
    def _chat_request(self, messages: Sequence[ChatMessage], kwargs: dict[str, Any]) -> _Chat:
        tools = kwargs.pop(_TOOLS, None)
        return _Chat(
            messages=tuple(messages), kwargs=kwargs, tools=tools if isinstance(tools, _ToolRequest) else None
        )

    @wrapper_event("chat")
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        result = self._run(self._chat_request(messages, kwargs))
        return self._final(result, cast("ChatResponse", result.answer.native))

    @wrapper_event("chat")
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        result = await self._arun(self._chat_request(messages, kwargs))
        return self._final(result, cast("ChatResponse", result.answer.native))

    @wrapper_event("chat")
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        return self._stream(self._chat_request(messages, kwargs))

    @wrapper_event("chat")
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        return self._astream(self._chat_request(messages, kwargs))

    # -- complete --------------------------------------------------------------------------------------------------
    @wrapper_event("complete")
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        result = self._run(_Completion(prompt=prompt, formatted=formatted, kwargs=kwargs))
        return self._final(result, cast("CompletionResponse", result.answer.native))

    @wrapper_event("complete")
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        result = await self._arun(_Completion(prompt=prompt, formatted=formatted, kwargs=kwargs))
        return self._final(result, cast("CompletionResponse", result.answer.native))

    @wrapper_event("complete")
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        return self._stream(_Completion(prompt=prompt, formatted=formatted, kwargs=kwargs))

    @wrapper_event("complete")
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        return self._astream(_Completion(prompt=prompt, formatted=formatted, kwargs=kwargs))

    # -- function calling ------------------------------------------------------------------------------------------
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
        """``chat`` arguments that make every tier run its own ``chat_with_tools`` with these tools."""
        for i, tier in enumerate(self.tiers):
            if not isinstance(tier, FunctionCallingLLM):
                raise ConfigurationError(
                    f"tier {self.tier_names[i]!r} ({type(tier).__name__}) is not a FunctionCallingLLM: every tier of "
                    "a cascade that calls tools must be",
                    field="tiers",
                )
        messages = list(chat_history or [])
        if isinstance(user_msg, str):
            messages.append(ChatMessage(role=MessageRole.USER, content=user_msg))
        elif user_msg is not None:
            messages.append(user_msg)
        request = _ToolRequest(
            tools=tuple(tools),
            verbose=verbose,
            allow_parallel_tool_calls=allow_parallel_tool_calls,
            tool_required=tool_required,
            kwargs=dict(kwargs),
        )
        return {"messages": messages, _TOOLS: request}

    def _tier_index(self, response: Any) -> int | None:
        extra = get_field(response, "additional_kwargs")
        name = get_field(extra, _keys.TIER_KEY)
        if isinstance(name, str) and name in self.tier_names:
            return self.tier_names.index(name)
        return None

    def get_tool_calls_from_response(
        self, response: ChatResponse, error_on_no_tool_call: bool = True, **kwargs: Any
    ) -> list[ToolSelection]:
        """The tool calls in ``response``, read by the tier that produced it (``additional_kwargs["frugal_tier"]``);
        a response without that mark is read by the first tier, strongest first, that finds tool calls in it."""
        index = self._tier_index(response)
        if index is not None:
            tier = self.tiers[index]
            if isinstance(tier, FunctionCallingLLM):
                return tier.get_tool_calls_from_response(
                    response, error_on_no_tool_call=error_on_no_tool_call, **kwargs
                )
        for tier in reversed(self.tiers):
            if not isinstance(tier, FunctionCallingLLM):
                continue
            try:
                found = tier.get_tool_calls_from_response(response, error_on_no_tool_call=False, **kwargs)
            except Exception:
                continue
            if found:
                return found
        if error_on_no_tool_call:
            raise ValueError("Expected at least one tool call, but got none.")
        return []

    # -- structured output -----------------------------------------------------------------------------------------
    @staticmethod
    def _prompt_messages(prompt: Any, prompt_args: dict[str, Any]) -> list[dict[str, Any]]:
        """The structured prompt as OpenAI-format messages, for the scorer and the gates."""
        try:
            return routing_messages(prompt.format_messages(**prompt_args))
        except Exception:  # a template that cannot be formatted here: the tier will say why
            return []

    def _structured_answer(self, parsed: Any, error: BaseException | None, box: _Collected) -> TierAnswer:
        usage: Usage | None = None
        model: str | None = None
        text = ""
        for response in box.responses:
            u, m = usage_of(response)
            if u is not None:
                usage = u if usage is None else usage + u
            model = model or m
            t = get_field(response, "text")
            text = t if isinstance(t, str) else message_text(get_field(response, "message") or ChatMessage())
        if parsed is not None:
            dump = getattr(parsed, "model_dump_json", None)
            text = dump() if callable(dump) else str(parsed)
        return TierAnswer(text=text, usage=usage, model=model, parsed=parsed, parse_error=error)

    def _structured_failure(self, error: Exception) -> None:
        """Re-raise ``error`` unless it is output that did not parse (provider errors go to the engine)."""
        if self._engine.escalates(error) or not _is_parse_error(error):
            raise error

    def structured_predict(
        self,
        output_cls: type[Model],
        prompt: PromptTemplate,
        llm_kwargs: dict[str, Any] | None = None,
        **prompt_args: Any,
    ) -> Model:
        """Each tier's own ``structured_predict``, cheapest first; output that does not parse or validate
        escalates. Raises :class:`~frugal_chains.errors.CascadeExhaustedError` when no tier's does."""

        def call(i: int) -> TierAnswer:
            parsed: Any = None
            error: Exception | None = None
            with _collect() as box, cascade_tier(self.tier_names[i]):
                try:
                    parsed = self.tiers[i].structured_predict(
                        output_cls, prompt, llm_kwargs=llm_kwargs, **prompt_args
                    )
                except Exception as e:
                    self._structured_failure(e)
                    error = e
            return self._structured_answer(parsed, error, box)

        result = self._engine.run(self._prompt_messages(prompt, prompt_args), call, structured=True)
        return cast("Model", result.answer.parsed)

    async def astructured_predict(
        self,
        output_cls: type[Model],
        prompt: PromptTemplate,
        llm_kwargs: dict[str, Any] | None = None,
        **prompt_args: Any,
    ) -> Model:
        """Async :meth:`structured_predict`."""

        async def call(i: int) -> TierAnswer:
            parsed: Any = None
            error: Exception | None = None
            with _collect() as box, cascade_tier(self.tier_names[i]):
                try:
                    parsed = await self.tiers[i].astructured_predict(
                        output_cls, prompt, llm_kwargs=llm_kwargs, **prompt_args
                    )
                except Exception as e:
                    self._structured_failure(e)
                    error = e
            return self._structured_answer(parsed, error, box)

        result = await self._engine.arun(self._prompt_messages(prompt, prompt_args), call, structured=True)
        return cast("Model", result.answer.parsed)

    def stream_structured_predict(
        self,
        output_cls: type[Model],
        prompt: PromptTemplate,
        llm_kwargs: dict[str, Any] | None = None,
        **prompt_args: Any,
    ) -> Generator[Any, None, None]:
        """The parsed object of :meth:`structured_predict`, as a one-item stream (a partial object cannot be
        checked, so it is not streamed)."""
        yield self.structured_predict(output_cls, prompt, llm_kwargs=llm_kwargs, **prompt_args)

    def as_structured_llm(self, output_cls: type[BaseModel], **kwargs: Any) -> StructuredLLM:
        """LlamaIndex's ``StructuredLLM`` over the cascade (its calls go to :meth:`structured_predict`), marked as a
        wrapper so budget handlers count only the tiers' calls (``"cascade(...)"`` has no price of its own). It
        shares the cascade's callback manager unless given one: its calls are traced with the tiers' own."""
        kwargs.setdefault("callback_manager", self.callback_manager)
        return _CascadeStructuredLLM(llm=self, output_cls=output_cls, **kwargs)

    async def astream_structured_predict(
        self,
        output_cls: type[Model],
        prompt: PromptTemplate,
        llm_kwargs: dict[str, Any] | None = None,
        **prompt_args: Any,
    ) -> AsyncGenerator[Any, None]:
        """Async :meth:`stream_structured_predict`."""

        async def gen() -> AsyncGenerator[Any, None]:
            yield await self.astructured_predict(output_cls, prompt, llm_kwargs=llm_kwargs, **prompt_args)

        return gen()


class _CascadeStructuredLLM(StructuredLLM):
    """``StructuredLLM`` over a :class:`CascadeLLM`: its LLM events are a wrapper's, ending without a response
    (budget handlers and ``TokenCountingHandler`` count only the tiers' calls), as the cascade's own are.
    LlamaIndex's ``StructuredLLM`` sends an LLM event with the parsed answer as its response, which
    ``TokenCountingHandler`` would count on top of the tier calls that made it."""

    def to_payload(self) -> dict[str, Any]:
        return {**super().to_payload(), WRAPPER_KEY: True}

    def _answer(self, output: Any) -> ChatResponse:
        if not isinstance(output, BaseModel):  # LlamaIndex's own check and error
            raise TypeError(
                f"StructuredLLM expected a {self.output_cls.__name__} instance from structured_predict, but got "
                f"{type(output).__name__}: {output!r}."
            )
        return ChatResponse(
            message=ChatMessage(role=MessageRole.ASSISTANT, content=output.model_dump_json()), raw=output
        )

    @wrapper_event("chat")
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        prompt = ChatPromptTemplate(message_templates=messages)
        return self._answer(
            self.llm.structured_predict(output_cls=self.output_cls, prompt=prompt, llm_kwargs=kwargs)
        )

    @wrapper_event("chat")
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        prompt = ChatPromptTemplate(message_templates=messages)
        output = await self.llm.astructured_predict(
            output_cls=self.output_cls, prompt=prompt, llm_kwargs=kwargs
        )
        return self._answer(output)

    @wrapper_event("chat")
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        prompt = ChatPromptTemplate(message_templates=messages)
        outputs = self.llm.stream_structured_predict(
            output_cls=self.output_cls, prompt=prompt, llm_kwargs=kwargs
        )
        return (self._answer(output) for output in outputs)

    @wrapper_event("chat")
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        prompt = ChatPromptTemplate(message_templates=messages)
        outputs = await self.llm.astream_structured_predict(
            output_cls=self.output_cls, prompt=prompt, llm_kwargs=kwargs
        )

        async def answers() -> ChatResponseAsyncGen:
            async for output in outputs:
                yield self._answer(output)

        return answers()

    @wrapper_event("complete")
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return chat_to_completion_decorator(self.chat)(prompt, **kwargs)

    @wrapper_event("complete")
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return await achat_to_completion_decorator(self.achat)(prompt, **kwargs)


def _shared_manager(tiers: Sequence[LLM]) -> CallbackManager:
    """The tiers' callback manager when they share one; otherwise a new one with all their handlers (the tiers
    keep their own)."""
    managers: list[CallbackManager] = []
    for tier in tiers:
        manager = tier.callback_manager
        if isinstance(manager, CallbackManager) and all(manager is not m for m in managers):
            managers.append(manager)
    if len(managers) == 1:
        return managers[0]
    handlers: list[Any] = []
    for manager in managers:
        for handler in manager.handlers:
            if all(handler is not h for h in handlers):
                handlers.append(handler)
    return CallbackManager(handlers)


__getattr__ = deprecated_attributes(
    __name__, old_metadata_keys("FRUGAL_KEY", "TIER_KEY", "WRAPPER_PAYLOAD_KEY")
)
