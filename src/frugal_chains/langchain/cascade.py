"""``CascadeChatModel``: a LangChain chat model that tries the cheapest tier likely to succeed and escalates.

The decisions live in the framework-free engine (:class:`frugal_chains.routing.Cascade`); this module adds the
LangChain contract:

* every tier call is a **child run** of the cascade's run (tagged ``frugal_tier:<name>``, metadata
  ``frugal_tier``), the cascade's own run is marked as a wrapper, so the budget handler counts each provider call
  exactly once and writes the tier to ``CallRecord.tier``;
* ``bind_tools`` binds the tools on every tier (each tier formats them for its provider);
* ``with_structured_output`` is implemented by the cascade: each tier gets its own ``with_structured_output``,
  and an answer that does not parse or validate escalates;
* ``stream``/``astream``: with no gate that needs the whole answer, the chosen tier streams live; otherwise each
  tier below the strongest is buffered, checked, and replayed once it passes (the strongest tier streams live);
* a tier with no native streaming (only ``_generate``) streams its whole answer as one chunk;
* usage is counted once per provider call: the tiers' child runs report theirs, the cascade's own run reports
  none (``get_usage_metadata_callback`` and tracers that sum a run tree count each call once). The message the
  caller gets carries the summed ``usage_metadata`` of every call the cascade made, and
  ``response_metadata["frugal"]["cascade"]`` (tier, model, escalations, scores, cost in USD, attempts). The
  tier runs are hidden from LangGraph's ``stream_mode="messages"`` (``nostream``): the cascade's own token events
  carry the usage there (see ``_streaming``);
* a tier that is itself a cascade: the answer carries the outer cascade's ``frugal["cascade"]`` (the inner's is
  dropped, in a stream too).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import aclosing, closing
from dataclasses import dataclass, field
from typing import Any, ClassVar

from langchain_core.caches import BaseCache
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LangSmithParams, LanguageModelInput
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    convert_to_openai_messages,
)
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.outputs.chat_generation import merge_chat_generation_chunks
from langchain_core.runnables import Runnable, RunnableConfig, RunnableLambda
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from frugal_chains._deprecation import deprecated_attributes, old_metadata_keys, warn_renamed
from frugal_chains.accounting.usage import Attribution, Usage
from frugal_chains.errors import ConfigurationError
from frugal_chains.langchain._attribution import attribution_from_run
from frugal_chains.langchain._runs import achild_callbacks, child_callbacks
from frugal_chains.langchain._streaming import (
    ChildRunStreamingModel,
    aopen_chunks,
    carry_usage,
    open_chunks,
    untraced,
    whole_chunk,
)
from frugal_chains.langchain.budget import usage_from_message
from frugal_chains.metadata import CASCADE, TIER_KEY, WRAPPER_KEY, cache_status, with_entry, without_entry
from frugal_chains.routing.cascade import Cascade, CascadeResult, TierChunk
from frugal_chains.routing.policy import RoutingPolicy, TierSpec, tier_names
from frugal_chains.routing.stats import RouterStats
from frugal_chains.routing.types import TierAnswer

__all__ = ["CascadeChatModel"]

_TOOL_KWARGS = "frugal_tool_kwargs"
"""Bound kwarg: extra keyword arguments given to ``bind_tools`` (passed to every tier's ``bind_tools``)."""
_STRUCTURED = "frugal_structured_output"
"""Bound kwarg: the key of a registered structured-output schema."""

_NOSTREAM = "nostream"
"""LangGraph's tag for runs whose tokens ``stream_mode="messages"`` must not show."""

_schemas: dict[str, tuple[Any, dict[str, Any]]] = {}
_schemas_lock = threading.Lock()


def _register_schema(schema: Any, kwargs: Mapping[str, Any]) -> str:
    """A stable key for ``schema`` (bound kwargs must stay JSON-friendly for tracing and the LLM string)."""
    key = f"{getattr(schema, '__name__', type(schema).__name__)}@{id(schema):x}:{sorted(kwargs.items())!r}"
    with _schemas_lock:
        _schemas[key] = (schema, dict(kwargs))
    return key


def _model_name(model: BaseChatModel) -> str:
    try:
        name = model._get_ls_params().get("ls_model_name")
    except Exception:  # a model whose ls params need arguments
        name = None
    if not name:
        for attr in ("model_name", "model", "model_id", "deployment_name"):
            value = getattr(model, attr, None)
            if isinstance(value, str) and value:
                name = value
                break
    return str(name or type(model).__name__)


def _prefix_cached(tiers: list[BaseChatModel], option: Any) -> list[BaseChatModel]:
    """``prefix_caching=``: each tier behind :func:`~frugal_chains.langchain.with_prefix_caching` (with the given
    options), so each gets its own provider's formatting; a tier already wrapped is kept as it is."""
    from frugal_chains.shared.prefix_wing import cascade_prefix_options

    options = cascade_prefix_options(option)
    if options is None:
        return tiers
    from frugal_chains.langchain.prefix import PrefixCachingChatModel, with_prefix_caching

    return [t if isinstance(t, PrefixCachingChatModel) else with_prefix_caching(t, **options) for t in tiers]


def _usage_metadata(usage: Usage) -> UsageMetadata:
    um = UsageMetadata(
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        total_tokens=usage.total_tokens,
    )
    if usage.cache_read_tokens or usage.cache_write_tokens or usage.cache_write_1h_tokens:
        um["input_token_details"] = {
            "cache_read": usage.cache_read_tokens,
            "cache_creation": usage.cache_write_tokens + usage.cache_write_1h_tokens,
        }
    if usage.reasoning_tokens:
        um["output_token_details"] = {"reasoning": usage.reasoning_tokens}
    return um


def _logprobs(message: BaseMessage) -> tuple[float, ...] | None:
    found = (message.response_metadata or {}).get("logprobs")
    content = found.get("content") if isinstance(found, Mapping) else found
    if not isinstance(content, Sequence) or isinstance(content, str) or not content:
        return None
    values: list[float] = []
    for item in content:
        value = item.get("logprob") if isinstance(item, Mapping) else None
        if isinstance(value, (int, float)):
            values.append(float(value))
    return tuple(values) or None


def _answer(result: Any) -> TierAnswer:
    """A tier's output (an ``AIMessage``, or ``{"raw", "parsed", "parsing_error"}``) as a :class:`TierAnswer`."""
    parsed: Any = None
    parse_error: BaseException | None = None
    if isinstance(result, Mapping) and "raw" in result:
        parsed, parse_error = result.get("parsed"), result.get("parsing_error")
        result = result["raw"]
    if not isinstance(result, BaseMessage):
        raise ConfigurationError(
            f"a cascade tier returned {type(result).__name__}, not a chat message: every tier must be a chat model",
            field="tiers",
        )
    tool_calls: tuple[Mapping[str, Any], ...] = ()
    if isinstance(result, AIMessage):
        tool_calls = tuple(
            {"name": c["name"], "args": c["args"], "id": c.get("id")} for c in result.tool_calls
        )
    meta = result.response_metadata or {}
    model = meta.get("model_name") or meta.get("model")
    um = getattr(result, "usage_metadata", None) or {}
    # served from a cache (ours, or LangChain's, which zeroes total_cost): nothing was paid for it
    cached = cache_status(meta) == "hit" or ("total_cost" in um and not um.get("total_cost"))
    return TierAnswer(
        text=result.text,
        tool_calls=tool_calls,
        usage=None if cached else usage_from_message(result),
        model=model if isinstance(model, str) else None,
        logprobs=_logprobs(result),
        parsed=parsed,
        parse_error=parse_error,
        native=result,
    )


def _validated(answer: TierAnswer, structured: tuple[Any, dict[str, Any]] | None) -> TierAnswer:
    """Structured output that parsed but does not validate fails too: LangChain's parsers validate pydantic
    models, not TypedDicts or JSON schemas (a cheap answer missing a required key must escalate)."""
    if structured is None or answer.parse_error is not None or answer.parsed is None:
        return answer
    schema = structured[0]
    try:
        if isinstance(schema, type) and issubclass(schema, BaseModel):
            return answer  # the parser validated it
        if isinstance(schema, Mapping):
            spec = schema.get("function", schema) if schema.get("type") == "function" else schema
            params = spec.get("parameters", spec) if "properties" not in spec else spec
            try:
                import jsonschema  # type: ignore[import-untyped,unused-ignore]
            except ImportError:  # pragma: no cover - a dependency of litellm
                return answer
            jsonschema.validate(answer.parsed, dict(params))
        elif isinstance(schema, type) and hasattr(schema, "__required_keys__"):  # a TypedDict
            missing = sorted(k for k in schema.__required_keys__ if k not in answer.parsed)
            if missing:
                raise ValueError(f"the answer misses required key(s) {missing} of {schema.__name__}")
    except Exception as e:
        return dataclasses.replace(answer, parse_error=e)
    return answer


@dataclass
class _Request:
    """One call's kwargs, split into what the tiers are bound with and what goes to every call."""

    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    tool_kwargs: dict[str, Any] = field(default_factory=dict)
    structured: tuple[Any, dict[str, Any]] | None = None
    stop: list[str] | None = None
    rest: dict[str, Any] = field(default_factory=dict)

    def call_kwargs(self) -> dict[str, Any]:
        kwargs = dict(self.rest)
        if self.stop is not None:
            kwargs["stop"] = self.stop
        return kwargs


class CascadeChatModel(ChildRunStreamingModel):
    """A chat model over two or more chat models, cheapest first: route, check, escalate.

    Args:
        tiers: two or more LangChain chat models, cheapest first.
        tier_names: a name per tier (default: each model's name, made unique).
        scorer: picks the starting tier before any call: a :class:`~frugal_chains.routing.Scorer`
            (``HeuristicScorer()``, ``TrainedScorer.load(...)``) or ``"heuristic"``. Default ``None``: every
            request starts on the cheapest tier and the gates decide.
        gates: quality gates run on each answer below the strongest tier (objects or names, see
            :func:`~frugal_chains.routing.resolve_gates`); a failed gate escalates.
        thresholds: the scorer's thresholds (``n - 1`` numbers in [0, 1]); or pass ``policy``.
        policy: a :class:`~frugal_chains.routing.RoutingPolicy` (e.g. ``cost_aware=True``) or a saved
            :class:`~frugal_chains.routing.Calibration`'s ``policy()``.
        stats: escalation counters and the alert hook (:class:`~frugal_chains.routing.RouterStats`; default a new
            one: share one between instances to aggregate).
        ledger: write one ``routed`` record per request (tiers tried, why) to this ledger.
        prices: prices for ``response_metadata["frugal"]["cascade"]["cost_usd"]`` (``{model: Price}`` or a
            ``PriceBook``).
        escalate_on: which provider errors escalate (default: rate limits, timeouts, connection and server
            errors, context overflow).
        name: the cascade's name: in ledger records (``extra["cascade"]``) and, as LangChain's run name, in
            traces (default ``"cascade"`` in records). ``cascade_name=`` is its deprecated predecessor: it names
            the ledger records only, and wins over ``name`` there.
        question_key: a :class:`~frugal_chains.QuestionKey` handed to the scorer: what it scores in a templated
            (RAG) prompt (:func:`~frugal_chains.langchain.question_key_from` builds one from your prompt
            template). Default: the scorer's own, which recognises the common RAG templates.
        prefix_caching: ``True`` (or a dict of :func:`~frugal_chains.langchain.with_prefix_caching` options):
            each tier formats its requests for its own provider's prompt cache (an Anthropic tier gets
            ``cache_control`` breakpoints, an OpenAI tier a ``prompt_cache_key``). Tiers you wrapped yourself are
            kept as they are.

    Example:
        >>> from frugal_chains.langchain import CascadeChatModel
        >>> from frugal_chains.routing import RegexGate
        >>> from frugal_chains.testing import FakeUsageChatModel
        >>> cheap = FakeUsageChatModel(model="gpt-4o-mini", responses=["Hmm, hard to say."])
        >>> strong = FakeUsageChatModel(model="gpt-4o", responses=["42"])
        >>> model = CascadeChatModel(tiers=[cheap, strong], gates=[RegexGate(r"\\d")])
        >>> msg = model.invoke("What is 6 x 7?")
        >>> cascade = msg.response_metadata["frugal"]["cascade"]
        >>> msg.content, cascade["tier"], cascade["escalations"]
        ('42', 'gpt-4o', 1)
    """

    tiers: list[BaseChatModel]
    """The chat models, cheapest first."""
    tier_names: list[str] | None = None
    """One name per tier (default: the models' names)."""
    scorer: Any = Field(default=None, exclude=True)
    """Picks the starting tier (``None``: start on the cheapest)."""
    gates: Any = Field(default=(), exclude=True)
    """Quality gates (resolved to :class:`~frugal_chains.routing.QualityGate` objects)."""
    thresholds: tuple[float, ...] | None = None
    """The scorer's thresholds (or set ``policy``)."""
    policy: RoutingPolicy | None = Field(default=None, exclude=True)
    """How a score becomes a starting tier."""
    stats: RouterStats = Field(default_factory=RouterStats, exclude=True)
    """Escalation counters and the alert hook (an injected object)."""
    ledger: Any = Field(default=None, exclude=True)
    """Where ``routed`` records go (optional)."""
    prices: Any = Field(default=None, exclude=True)
    """Prices for the cost in the metadata."""
    escalate_on: Callable[[BaseException], bool] | None = Field(default=None, exclude=True)
    """Which provider errors escalate."""
    question_key: Any = Field(default=None, exclude=True)
    """What the scorer scores in a templated prompt (``None``: the scorer's own selection)."""
    cascade_name: str | None = None
    """Deprecated: use ``name`` (which also names LangChain's run). When set, it names the ledger records only."""
    cache: BaseCache | bool | None = Field(default=False, exclude=True)
    """LangChain's cache for the cascade's own answer: off by default (the tiers use their own caches, whose
    hits the budget handler records; a cached cascade answer would repeat stale routing metadata)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    _hides_inner_runs: ClassVar[bool] = True  # the tier and judge calls are tagged nostream
    _engine: Cascade = PrivateAttr()

    def __init__(self, **data: Any) -> None:
        from frugal_chains.routing.gates import resolve_gates

        if data.get("cascade_name") is not None:  # names the ledger records only, as before
            warn_renamed("CascadeChatModel(cascade_name=...)", "CascadeChatModel(name=...)")
        tiers = data.get("tiers")
        if not isinstance(tiers, Sequence) or isinstance(tiers, str) or len(tiers) < 2:
            count = len(tiers) if isinstance(tiers, Sequence) and not isinstance(tiers, str) else 0
            raise ConfigurationError(
                f"tiers must be a list of two or more LangChain chat models, cheapest first (got {count})",
                field="tiers",
            )
        for i, tier in enumerate(tiers):
            if not isinstance(tier, BaseChatModel):
                raise ConfigurationError(
                    f"tiers[{i}] must be a LangChain chat model (BaseChatModel), got {type(tier).__name__}; "
                    "bind parameters on the model itself (e.g. ChatOpenAI(temperature=0)), not with .bind()",
                    field="tiers",
                )
        tiers = data["tiers"] = _prefix_cached(list(tiers), data.pop("prefix_caching", None))
        data["tier_names"] = tier_names(data.get("tier_names"), [_model_name(t) for t in tiers])
        scorer = data.get("scorer")
        if scorer == "heuristic":
            from frugal_chains.routing.scorers import HeuristicScorer

            data["scorer"] = HeuristicScorer()
        elif isinstance(scorer, str):
            raise ConfigurationError(
                f"unknown scorer {scorer!r}: pass 'heuristic' or a Scorer object (TrainedScorer, CallableScorer)",
                field="scorer",
            )
        data["gates"] = resolve_gates(data.get("gates"))
        given = data.get("policy")
        if data.get("thresholds") is not None and given is not None:
            same = isinstance(given, RoutingPolicy) and given.thresholds == tuple(data["thresholds"])
            if not same:  # (equal ones: a copy rebuilt from its own fields, e.g. by configurable_fields)
                raise ConfigurationError("pass thresholds= or policy=, not both", field="thresholds")
            data["thresholds"] = None
        if data.get("thresholds") is not None:
            thresholds = data["thresholds"]
            if not isinstance(thresholds, Sequence) or isinstance(thresholds, str):
                raise ConfigurationError(
                    f"thresholds must be a list of numbers in [0, 1], got {thresholds!r}", field="thresholds"
                )
            data["policy"] = RoutingPolicy(thresholds=tuple(thresholds))
            data["thresholds"] = data["policy"].thresholds
        if data.get("stats") is None:
            data.pop("stats", None)
        # Mark the cascade's own run (local metadata: the tiers' child runs are counted, this one is not).
        data["metadata"] = {**(data.get("metadata") or {}), WRAPPER_KEY: True}
        engine = Cascade(
            [TierSpec(name=n, model=_model_name(t)) for n, t in zip(data["tier_names"], tiers, strict=True)],
            scorer=data.get("scorer"),
            gates=data["gates"],
            policy=data.get("policy"),
            stats=data.get("stats"),
            ledger=data.get("ledger"),
            prices=data.get("prices"),
            escalate_on=data.get("escalate_on"),
            name=data.get("cascade_name") or data.get("name") or "cascade",
            question_key=data.get("question_key"),
        )
        data["scorer"] = engine.scorer
        data["stats"] = engine.stats
        data["policy"] = engine.policy
        super().__init__(**data)
        self._engine = engine

    @property
    def core(self) -> Cascade:
        """The framework-free engine that makes every decision."""
        return self._engine

    @property
    def engine(self) -> Cascade:
        """Deprecated: use :attr:`core`."""
        warn_renamed("CascadeChatModel.engine", "CascadeChatModel.core")
        return self._engine

    @property
    def names(self) -> list[str]:
        return list(self.tier_names or [])

    # -- identity ----------------------------------------------------------------------------------------------
    @property
    def _llm_type(self) -> str:
        return "frugal-cascade"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "tiers": self.names,
            "models": [t.model for t in self._engine.tiers],
            "thresholds": list(self._engine.policy.thresholds or ()),
            "gates": [g.name for g in self._engine.gates],
        }

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_provider"] = "frugal-cascade"
        # a per-call ``model=`` goes to every tier's call (see ``_request``): it is the model that answers
        params["ls_model_name"] = kwargs.get("model") or (
            "cascade(" + ",".join(t.model for t in self._engine.tiers) + ")"
        )
        return params

    # -- binding -----------------------------------------------------------------------------------------------
    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind ``tools`` on every tier (each tier formats them for its provider)."""
        formatted = [convert_to_openai_tool(t) for t in tools]
        for i, tier in enumerate(self.tiers):
            try:
                tier.bind_tools(formatted, tool_choice=tool_choice, **kwargs)
            except NotImplementedError as e:
                raise ConfigurationError(
                    f"tier {self.names[i]!r} ({type(tier).__name__}) does not support bind_tools: every tier of a "
                    "cascade that calls tools must",
                    field="tiers",
                ) from e
        bound: dict[str, Any] = {"tools": formatted}
        if tool_choice is not None:
            bound["tool_choice"] = tool_choice
        if kwargs:
            bound[_TOOL_KWARGS] = dict(kwargs)
        return self.bind(**bound)

    def with_structured_output(
        self,
        schema: dict[str, Any] | type,
        *,
        include_raw: bool = False,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, Any]:
        """Structured output done by the cascade: each tier uses its own ``with_structured_output(schema)``; an
        answer that does not parse or validate escalates. ``CascadeExhaustedError`` when no tier's does."""
        for i, tier in enumerate(self.tiers):
            try:
                tier.with_structured_output(schema, include_raw=True, **kwargs)
            except NotImplementedError as e:
                raise ConfigurationError(
                    f"tier {self.names[i]!r} ({type(tier).__name__}) does not support with_structured_output",
                    field="tiers",
                ) from e
        key = _register_schema(schema, kwargs)
        # ls_structured_output_format: what the cascade's own run reports to tracers (as LangChain's models do)
        fmt = {"kwargs": {"method": kwargs.get("method", "function_calling")}, "schema": schema}
        bound = self.bind(**{_STRUCTURED: key, "ls_structured_output_format": fmt})

        def parsed(message: BaseMessage) -> Any:
            return message.additional_kwargs.get("parsed")

        def with_raw(message: BaseMessage) -> dict[str, Any]:
            return {"raw": message, "parsed": message.additional_kwargs.get("parsed"), "parsing_error": None}

        return bound | RunnableLambda(with_raw if include_raw else parsed, name="cascade_structured_output")

    # -- requests ----------------------------------------------------------------------------------------------
    @staticmethod
    def _request(stop: list[str] | None, kwargs: dict[str, Any]) -> _Request:
        rest = dict(kwargs)
        for key in ("ls_structured_output_format", "structured_output_format", "stream"):
            rest.pop(key, None)
        structured = None
        key = rest.pop(_STRUCTURED, None)
        if key is not None:
            with _schemas_lock:
                structured = _schemas.get(key)
            if structured is None:
                raise ConfigurationError(f"unknown structured-output schema {key!r}", field="schema")
        return _Request(
            tools=rest.pop("tools", None),
            tool_choice=rest.pop("tool_choice", None),
            tool_kwargs=rest.pop(_TOOL_KWARGS, None) or {},
            structured=structured,
            stop=stop,
            rest=rest,
        )

    def _runnable(self, index: int, req: _Request) -> Runnable[Any, Any]:
        tier = self.tiers[index]
        if req.structured is not None:
            schema, skw = req.structured
            return tier.with_structured_output(schema, include_raw=True, **skw)
        if req.tools:
            return tier.bind_tools(req.tools, tool_choice=req.tool_choice, **req.tool_kwargs)
        return tier

    def _config(self, run_manager: Any, index: int, *, asynchronous: bool) -> RunnableConfig:
        """A tier call's config: a child run tagged with its tier. It is also tagged ``nostream``: LangGraph's
        ``stream_mode="messages"`` then shows the cascade's answer, not the tokens of a cheap answer that a gate
        later rejects."""
        name = self.names[index]
        make = achild_callbacks if asynchronous else child_callbacks
        callbacks = make(run_manager, tag=f"frugal_tier:{name}", metadata={TIER_KEY: name})
        return RunnableConfig(callbacks=callbacks, tags=[_NOSTREAM])

    def _judge_config(self, run_manager: Any, *, asynchronous: bool) -> Callable[[int], RunnableConfig]:
        """The config of a judge's call while tier ``i``'s answer is checked: a child run recorded under that tier
        (``ledger.summary("tier")`` includes what judging it cost), hidden from LangGraph's message stream."""
        make = achild_callbacks if asynchronous else child_callbacks

        def config(i: int) -> RunnableConfig:
            callbacks = make(run_manager, tag="frugal_judge", metadata={TIER_KEY: self.names[i]})
            return RunnableConfig(callbacks=callbacks, tags=[_NOSTREAM])

        return config

    @staticmethod
    def _attribution(run_manager: Any) -> Attribution | None:
        """The run metadata's attribution (as the budget handler reads it; tags are not part of a route)."""
        if run_manager is None:
            return None
        metadata = {
            **(getattr(run_manager, "inheritable_metadata", None) or {}),
            **(run_manager.metadata or {}),
        }
        found = attribution_from_run(metadata, None)
        return found if found != Attribution() else None

    def _frugal(self, result: CascadeResult, metadata: Mapping[str, Any]) -> dict[str, Any]:
        """``metadata`` with ``frugal["cascade"]`` (and, for one release, the same keys flat in ``frugal``). A tier
        that is itself a cascade left its own entry there: the outer cascade's replaces it (its attempt for that
        tier has the usage and cost of the inner cascade's calls)."""
        info = result.metadata(self.names)
        return with_entry(without_entry(metadata, CASCADE), CASCADE, info, legacy=info)

    def _message(self, result: CascadeResult, *, extra_usage: Usage | None = None) -> AIMessage:
        """The accepted answer with the summed usage and ``response_metadata["frugal"]``."""
        native = result.answer.native
        base = native if isinstance(native, AIMessage) else AIMessage(content=result.answer.text)
        additional = dict(base.additional_kwargs)
        if result.answer.parsed is not None:
            additional["parsed"] = result.answer.parsed
        usage = result.usage
        if extra_usage is not None:
            usage = usage + extra_usage
        message = base.model_copy(
            update={
                "additional_kwargs": additional,
                "response_metadata": self._frugal(result, base.response_metadata),
            }
        )
        return carry_usage(
            message, _usage_metadata(usage) if usage.total_tokens or base.usage_metadata else None
        )

    # -- invoke ------------------------------------------------------------------------------------------------
    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        req = self._request(stop, kwargs)
        oai = convert_to_openai_messages(messages)

        def call(i: int) -> TierAnswer:
            out = self._runnable(i, req).invoke(
                messages, config=self._config(run_manager, i, asynchronous=False), **req.call_kwargs()
            )
            return _validated(_answer(out), req.structured)

        result = self._engine.run(
            oai,
            call,
            judge_config=self._judge_config(run_manager, asynchronous=False),
            structured=req.structured is not None,
            attribution=self._attribution(run_manager),
        )
        return ChatResult(generations=[ChatGeneration(message=self._message(result))])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        req = self._request(stop, kwargs)
        oai = convert_to_openai_messages(messages)

        async def call(i: int) -> TierAnswer:
            out = await self._runnable(i, req).ainvoke(
                messages, config=self._config(run_manager, i, asynchronous=True), **req.call_kwargs()
            )
            return _validated(_answer(out), req.structured)

        result = await self._engine.arun(
            oai,
            call,
            judge_config=self._judge_config(run_manager, asynchronous=True),
            structured=req.structured is not None,
            attribution=self._attribution(run_manager),
        )
        return ChatResult(generations=[ChatGeneration(message=self._message(result))])

    # -- stream ------------------------------------------------------------------------------------------------
    def _final_chunk(self, result: CascadeResult) -> ChatGenerationChunk:
        """The closing chunk: ``response_metadata["frugal"]`` and the usage of every call the cascade made (the
        tiers' chunks pass through without theirs: their runs reported it)."""
        usage = result.usage
        message = AIMessageChunk(
            content="", response_metadata=self._frugal(result, {}), chunk_position="last"
        )
        return ChatGenerationChunk(
            message=carry_usage(message, _usage_metadata(usage) if usage.total_tokens else None)
        )

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        req = self._request(stop, {**kwargs})
        if req.structured is not None:  # a parsed object is not streamed: answer whole, as one chunk
            result = self._generate(messages, stop=stop, run_manager=run_manager, **kwargs)
            yield ChatGenerationChunk(message=whole_chunk(result.generations[0].message))
            return

        def open_stream(i: int) -> Iterator[AIMessageChunk]:
            return open_chunks(
                self._runnable(i, req),
                messages,
                self._config(run_manager, i, asynchronous=False),
                **req.call_kwargs(),
            )

        def call(i: int) -> TierAnswer:
            return _answer(
                self._runnable(i, req).invoke(
                    messages, config=self._config(run_manager, i, asynchronous=False), **req.call_kwargs()
                )
            )

        events = self._engine.stream(
            convert_to_openai_messages(messages),
            open_stream,
            _joined,
            call=call,
            judge_config=self._judge_config(run_manager, asynchronous=False),
            attribution=self._attribution(run_manager),
        )
        with closing(events):  # a caller's early exit closes the tier's stream at once
            for event in events:
                yield self._chunk(event)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        req = self._request(stop, {**kwargs})
        if req.structured is not None:
            result = await self._agenerate(messages, stop=stop, run_manager=run_manager, **kwargs)
            yield ChatGenerationChunk(message=whole_chunk(result.generations[0].message))
            return

        async def open_stream(i: int) -> AsyncIterator[AIMessageChunk]:
            return aopen_chunks(
                self._runnable(i, req),
                messages,
                self._config(run_manager, i, asynchronous=True),
                **req.call_kwargs(),
            )

        async def call(i: int) -> TierAnswer:
            return _answer(
                await self._runnable(i, req).ainvoke(
                    messages, config=self._config(run_manager, i, asynchronous=True), **req.call_kwargs()
                )
            )

        events = self._engine.astream(
            convert_to_openai_messages(messages),
            open_stream,
            _joined,
            call=call,
            judge_config=self._judge_config(run_manager, asynchronous=True),
            attribution=self._attribution(run_manager),
        )
        async with aclosing(events):  # a caller's aclose() closes the tier's stream before it returns
            async for event in events:
                yield self._chunk(event)

    def _chunk(self, event: TierChunk[AIMessageChunk] | CascadeResult) -> ChatGenerationChunk:
        """An engine event as a stream chunk: a tier's chunk without its usage (the tier's run reported it), the
        result as the closing chunk. A tier that is itself a cascade ends its stream with its own
        ``frugal["cascade"]``: dropped, as ``invoke`` replaces it, so the merged answer carries this cascade's
        (merging both would clash)."""
        if isinstance(event, CascadeResult):
            return self._final_chunk(event)
        chunk = event.chunk
        if chunk.response_metadata:
            chunk = chunk.model_copy(
                update={"response_metadata": without_entry(chunk.response_metadata, CASCADE)}
            )
        return ChatGenerationChunk(message=untraced(chunk))


def _joined(index: int, chunks: list[AIMessageChunk]) -> TierAnswer:
    """A tier's streamed chunks as its whole answer."""
    return _stream_answer([ChatGenerationChunk(message=c) for c in chunks])


def _stream_answer(chunks: list[ChatGenerationChunk]) -> TierAnswer:
    merged = merge_chat_generation_chunks(chunks)
    if merged is None:
        return TierAnswer(text="")
    from langchain_core.messages import message_chunk_to_message

    chunk = merged.message
    return _answer(message_chunk_to_message(chunk) if isinstance(chunk, AIMessageChunk) else chunk)


__getattr__ = deprecated_attributes(
    __name__, old_metadata_keys("CACHE_HIT_METADATA_KEY", "TIER_METADATA_KEY", "WRAPPER_METADATA_KEY")
)
