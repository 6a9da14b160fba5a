"""The request and answer types both vLLM clients speak (framework-free, OpenAI-format messages).

A :class:`ChatRequest` holds OpenAI-format messages and tools plus :class:`SamplingOptions`; a client answers
with a :class:`Completion`, or streams :class:`CompletionChunk` objects whose last one carries the usage. The
in-process engine (:class:`~frugal_chains.vllm.EngineClient`) and the ``vllm serve`` client
(:class:`~frugal_chains.vllm.ServerClient`) both implement :class:`VLLMClient`, so the LangChain and LlamaIndex
adapters translate types and nothing else.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal, Protocol, runtime_checkable

from frugal_chains.accounting.usage import Usage
from frugal_chains.errors import ConfigurationError

__all__ = [
    "ChatRequest",
    "Completion",
    "CompletionChunk",
    "SamplingOptions",
    "StructuredOutput",
    "TokenLogprob",
    "ToolCall",
    "ToolCallDelta",
    "VLLMClient",
]


def _check_number(
    name: str, value: float | None, *, low: float | None = None, high: float | None = None
) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"SamplingOptions.{name} must be a number, got {value!r}.", field=name)
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ConfigurationError(f"SamplingOptions.{name} must be {bounds}, got {value!r}.", field=name)


@dataclass(frozen=True, kw_only=True)
class SamplingOptions:
    """How to sample one answer. ``None`` leaves a setting to the model's generation config (engine) or the
    server's default.

    Example:
        >>> from frugal_chains.vllm import SamplingOptions
        >>> base = SamplingOptions(max_tokens=64, temperature=0.0)
        >>> base.merged(SamplingOptions(stop=("\\n",))).stop, base.max_tokens
        (('\\n',), 64)
        >>> SamplingOptions(top_k=-2)
        Traceback (most recent call last):
        ...
        frugal_chains.errors.ConfigurationError: SamplingOptions.top_k must be -1 (off) or a positive int, got -2.
    """

    max_tokens: int | None = None
    """The longest answer in tokens (what budgets reserve for)."""
    temperature: float | None = None
    """0 for greedy decoding."""
    top_p: float | None = None
    top_k: int | None = None
    """vLLM-only: sample from the ``top_k`` likeliest tokens (-1: off)."""
    min_p: float | None = None
    """vLLM-only."""
    repetition_penalty: float | None = None
    """vLLM-only: > 1 discourages repeats."""
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    stop: tuple[str, ...] = ()
    """Stop sequences (not included in the answer)."""
    seed: int | None = None
    logprobs: int | None = None
    """Return the log-probability of each answer token and of the ``logprobs`` likeliest alternatives
    (0: the chosen token only; ``None``: off)."""
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Other vLLM sampling parameters, passed through as they are (the server's ``extra_body``, the engine's
    ``SamplingParams`` keywords)."""

    def __post_init__(self) -> None:
        if self.max_tokens is not None and (
            isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int) or self.max_tokens <= 0
        ):
            raise ConfigurationError(
                f"SamplingOptions.max_tokens must be a positive int, got {self.max_tokens!r}.",
                field="max_tokens",
            )
        _check_number("temperature", self.temperature, low=0.0)
        _check_number("top_p", self.top_p, low=0.0, high=1.0)
        _check_number("min_p", self.min_p, low=0.0, high=1.0)
        _check_number("repetition_penalty", self.repetition_penalty, low=0.0)
        _check_number("presence_penalty", self.presence_penalty, low=-2.0, high=2.0)
        _check_number("frequency_penalty", self.frequency_penalty, low=-2.0, high=2.0)
        if self.top_k is not None and (
            isinstance(self.top_k, bool)
            or not isinstance(self.top_k, int)
            or (self.top_k < 1 and self.top_k != -1)
        ):
            raise ConfigurationError(
                f"SamplingOptions.top_k must be -1 (off) or a positive int, got {self.top_k!r}.",
                field="top_k",
            )
        if self.logprobs is not None and (
            isinstance(self.logprobs, bool) or not isinstance(self.logprobs, int) or self.logprobs < 0
        ):
            raise ConfigurationError(
                f"SamplingOptions.logprobs must be a non-negative int or None, got {self.logprobs!r}.",
                field="logprobs",
            )
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        else:
            stop = tuple(self.stop)
            if not all(isinstance(s, str) and s for s in stop):
                raise ConfigurationError(
                    f"SamplingOptions.stop must be non-empty strings, got {self.stop!r}.", field="stop"
                )
            object.__setattr__(self, "stop", stop)
        if not isinstance(self.extra, Mapping):
            raise ConfigurationError(
                f"SamplingOptions.extra must be a mapping of vLLM sampling parameters, got {self.extra!r}.",
                field="extra",
            )
        object.__setattr__(self, "extra", dict(self.extra))

    def merged(self, override: SamplingOptions | None) -> SamplingOptions:
        """These options with every setting ``override`` sets (not ``None``, not empty) taking its place."""
        if override is None:
            return self
        changes: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(override, f.name)
            if f.name == "extra":
                if value:
                    changes["extra"] = {**self.extra, **value}
            elif f.name == "stop":
                if value:
                    changes["stop"] = value
            elif value is not None:
                changes[f.name] = value
        return replace(self, **changes) if changes else self

    def to_openai(self) -> dict[str, Any]:
        """The set options as OpenAI chat-completion parameters; vLLM-only ones go under ``extra_body`` keys
        at the top level (vLLM's server reads them there)."""
        body: dict[str, Any] = {}
        for name in (
            "max_tokens",
            "temperature",
            "top_p",
            "top_k",
            "min_p",
            "repetition_penalty",
            "presence_penalty",
            "frequency_penalty",
            "seed",
        ):
            value = getattr(self, name)
            if value is not None:
                body[name] = value
        if self.stop:
            body["stop"] = list(self.stop)
        if self.logprobs is not None:
            body["logprobs"] = True
            body["top_logprobs"] = self.logprobs
        body.update(self.extra)
        return body


@dataclass(frozen=True, kw_only=True)
class StructuredOutput:
    """Guided (structured) decoding: the answer is forced to match exactly one of a JSON schema, a regular
    expression, a list of choices or a grammar.

    Example:
        >>> from frugal_chains.vllm import StructuredOutput
        >>> StructuredOutput(choice=("yes", "no")).kind
        'choice'
        >>> StructuredOutput(regex="[0-9]+", choice=("1", "2"))
        Traceback (most recent call last):
        ...
        frugal_chains.errors.ConfigurationError: StructuredOutput needs exactly one of json_schema, regex, choice, ...
    """

    json_schema: Mapping[str, Any] | None = None
    regex: str | None = None
    choice: tuple[str, ...] | None = None
    grammar: str | None = None
    """An EBNF / Lark grammar (what vLLM's structured-output backend accepts)."""

    def __post_init__(self) -> None:
        if self.choice is not None:
            object.__setattr__(self, "choice", tuple(self.choice))
        given = [n for n in ("json_schema", "regex", "choice", "grammar") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ConfigurationError(
                "StructuredOutput needs exactly one of json_schema, regex, choice, grammar; got "
                + (", ".join(given) if given else "none")
                + ".",
                field="structured",
            )
        if self.json_schema is not None and not isinstance(self.json_schema, Mapping):
            raise ConfigurationError(
                "StructuredOutput.json_schema must be a JSON schema dict.", field="json_schema"
            )

    @property
    def kind(self) -> Literal["json", "regex", "choice", "grammar"]:
        if self.json_schema is not None:
            return "json"
        if self.regex is not None:
            return "regex"
        if self.choice is not None:
            return "choice"
        return "grammar"

    @property
    def value(self) -> Any:
        """The constraint itself (the schema dict, the regex, the list of choices or the grammar)."""
        if self.json_schema is not None:
            return dict(self.json_schema)
        if self.choice is not None:
            return list(self.choice)
        return self.regex if self.regex is not None else self.grammar


@dataclass(frozen=True, kw_only=True)
class ChatRequest:
    """One chat request: OpenAI-format messages, tools and options.

    Example:
        >>> from frugal_chains.vllm import ChatRequest
        >>> r = ChatRequest(messages=[{"role": "user", "content": "Hi"}])
        >>> r.messages[0]["role"], r.tools
        ('user', ())
    """

    messages: Sequence[Mapping[str, Any]]
    """OpenAI-format message dicts (``role``, ``content``, ``tool_calls``, ``tool_call_id``...)."""
    tools: Sequence[Mapping[str, Any]] = ()
    """OpenAI-format tools (``{"type": "function", "function": {...}}``)."""
    tool_choice: str | Mapping[str, Any] | None = None
    """``"auto"``, ``"none"``, ``"required"`` or ``{"type": "function", "function": {"name": ...}}``."""
    options: SamplingOptions = field(default_factory=SamplingOptions)
    structured: StructuredOutput | None = None

    def __post_init__(self) -> None:
        messages = tuple(self.messages)
        if not messages:
            raise ConfigurationError(
                "ChatRequest.messages is empty: send at least one message.", field="messages"
            )
        for m in messages:
            if not isinstance(m, Mapping) or "role" not in m:
                raise ConfigurationError(
                    f"ChatRequest.messages must be OpenAI-format dicts with a 'role', got {m!r}.",
                    field="messages",
                )
        object.__setattr__(self, "messages", messages)
        object.__setattr__(self, "tools", tuple(self.tools))


@dataclass(frozen=True, kw_only=True)
class ToolCall:
    """A tool call in an answer.

    Example:
        >>> from frugal_chains.vllm import ToolCall
        >>> ToolCall(id="call_1", name="add", arguments='{"a": 1}').args
        {'a': 1}
    """

    id: str
    name: str
    arguments: str
    """The arguments as the model wrote them (JSON text)."""

    @property
    def args(self) -> dict[str, Any]:
        """The arguments parsed (``{}`` when the text is not a JSON object)."""
        try:
            value = json.loads(self.arguments) if self.arguments else {}
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}


@dataclass(frozen=True, kw_only=True)
class ToolCallDelta:
    """A piece of a streamed tool call (OpenAI's ``delta.tool_calls[i]``): the first piece of each call has its
    ``id`` and ``name``, the later ones more of its ``arguments``.

    Example:
        >>> from frugal_chains.vllm import ToolCallDelta
        >>> pieces = [ToolCallDelta(index=0, id="call_1", name="add", arguments='{"a": '),
        ...           ToolCallDelta(index=0, arguments="1}")]
        >>> "".join(p.arguments for p in pieces)
        '{"a": 1}'
    """

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True, kw_only=True)
class TokenLogprob:
    """The log-probability of one answer token and of its likeliest alternatives.

    Example:
        >>> import math
        >>> from frugal_chains.vllm import TokenLogprob
        >>> t = TokenLogprob(token="Paris", logprob=-0.05, top=(("Paris", -0.05), ("Lyon", -3.2)))
        >>> round(math.exp(t.logprob), 2)
        0.95
    """

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True, kw_only=True)
class Completion:
    """One answer.

    Example:
        >>> from frugal_chains import Usage
        >>> from frugal_chains.vllm import Completion
        >>> c = Completion(text="Paris", model="smollm2", usage=Usage(input_tokens=20, output_tokens=2))
        >>> c.usage.total_tokens, c.finish_reason
        (22, 'stop')
    """

    text: str
    model: str
    """The served model name."""
    usage: Usage
    """Prompt tokens (``cache_read_tokens``: those served from vLLM's prefix cache) and answer tokens."""
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: str | None = "stop"
    """``"stop"``, ``"length"``, ``"tool_calls"``..."""
    logprobs: tuple[TokenLogprob, ...] | None = None
    request_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class CompletionChunk:
    """A piece of a streamed answer; the last chunk has ``finish_reason`` and ``usage``.

    Example:
        >>> from frugal_chains import Usage
        >>> from frugal_chains.vllm import CompletionChunk
        >>> chunks = [CompletionChunk(text="Par"), CompletionChunk(text="is", finish_reason="stop",
        ...                                                         usage=Usage(input_tokens=9, output_tokens=2))]
        >>> "".join(c.text for c in chunks), chunks[-1].usage.output_tokens
        ('Paris', 2)
    """

    text: str = ""
    model: str = ""
    tool_calls: tuple[ToolCallDelta, ...] = ()
    finish_reason: str | None = None
    usage: Usage | None = None
    logprobs: tuple[TokenLogprob, ...] | None = None


@runtime_checkable
class VLLMClient(Protocol):
    """What the adapters need from a vLLM client: answers, batches, streams, sync and async.

    Both clients are thread- and task-safe. ``generate`` hands the whole batch to vLLM at once (the engine gets
    one call; the server gets the requests concurrently), so continuous batching does the rest.

    Example:
        >>> from frugal_chains import Usage
        >>> from frugal_chains.vllm import ChatRequest, Completion, VLLMClient
        >>> class Echo:  # a stand-in; in your app: EngineClient("HuggingFaceTB/SmolLM2-135M-Instruct")
        ...     model, mode = "echo", "server"
        ...     def generate(self, requests):
        ...         return [Completion(text=r.messages[-1]["content"], model="echo", usage=Usage()) for r in requests]
        ...     async def agenerate(self, requests): return self.generate(requests)
        ...     def stream(self, request): yield from ()
        ...     def astream(self, request): raise NotImplementedError
        ...     def close(self): pass
        >>> isinstance(Echo(), VLLMClient)
        True
        >>> Echo().generate([ChatRequest(messages=[{"role": "user", "content": "hi"}])])[0].text
        'hi'
    """

    @property
    def model(self) -> str:
        """The served model name (what the ledger and the price book see)."""
        ...

    @property
    def mode(self) -> Literal["engine", "server"]: ...

    def generate(self, requests: Sequence[ChatRequest]) -> list[Completion]:
        """One answer per request, in order."""
        ...

    async def agenerate(self, requests: Sequence[ChatRequest]) -> list[Completion]: ...

    def stream(self, request: ChatRequest) -> Iterator[CompletionChunk]: ...

    def astream(self, request: ChatRequest) -> AsyncIterator[CompletionChunk]: ...

    def close(self) -> None: ...
