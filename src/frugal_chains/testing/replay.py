"""A LangChain chat model that answers from a recorded table: replay real models' outcomes offline.

Record what real models answered (a prompt, the response, its token counts, tool calls, logprobs, or the
error the provider raised) and replay them through the real code path (a cascade, an agent loop, a budget),
deterministically and without API keys. ``benchmarks/routing.py`` replays GPT-4 and Mixtral this way.
"""

from __future__ import annotations

import json
import math
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

try:
    import langchain_core  # noqa: F401
except ImportError as e:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "frugal_chains.testing.replay (LangChain test models) needs langchain-core: "
        'pip install "frugal-chains[langchain]"'
    ) from e

from langchain_core.exceptions import (
    ContextOverflowError,
    ModelAPIError,
    ModelError,
    ModelRateLimitError,
    ModelTimeoutError,
)
from langchain_core.language_models import LangSmithParams, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage, convert_to_openai_messages
from langchain_core.messages.ai import UsageMetadata
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import Field, PrivateAttr

from frugal_chains.accounting.tokens import count_message_tokens, count_text_tokens
from frugal_chains.errors import ConfigurationError
from frugal_chains.routing.types import content_text
from frugal_chains.testing.fake_chat import AnsweringChatModel

__all__ = ["REPLAY_ERRORS", "ReplayChatModel", "ReplayEntry", "ReplayKeyError", "replay_key"]

KeyMode = Literal["last_user", "conversation"]

REPLAY_ERRORS: Mapping[str, type[ModelError]] = {
    "rate_limit": ModelRateLimitError,
    "timeout": ModelTimeoutError,
    "context_overflow": ContextOverflowError,
    "api": ModelAPIError,
}
"""The provider errors an entry can replay (``ReplayEntry(error="rate_limit")``), as ``langchain_core`` types."""

_KEY_SHOWN = 120
"""Characters of a missing key shown in the error."""


def _int_or_none(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigurationError(f"ReplayEntry.{name} must be an int >= 0 or None, got {value!r}", field=name)
    return value


def _tool_call(call: Any, i: int) -> dict[str, Any]:
    """``{"name", "args", "id"}`` from LangChain's or OpenAI's (``{"function": {"name", "arguments"}}``) form."""
    if not isinstance(call, Mapping):
        raise ConfigurationError(
            f"ReplayEntry.tool_calls[{i}] must be a dict with name and args, got {type(call).__name__}",
            field="tool_calls",
        )
    function = call.get("function")
    fn: Mapping[str, Any] = function if isinstance(function, Mapping) else call
    name = fn.get("name")
    args = fn.get("args", fn.get("arguments", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError as e:
            raise ConfigurationError(
                f"ReplayEntry.tool_calls[{i}] arguments are not JSON: {e}", field="tool_calls"
            ) from e
    if not isinstance(name, str) or not name or not isinstance(args, Mapping):
        raise ConfigurationError(
            f"ReplayEntry.tool_calls[{i}] needs a non-empty 'name' and a dict 'args', got {dict(call)!r}",
            field="tool_calls",
        )
    call_id = call.get("id")
    return {"name": name, "args": dict(args), "id": str(call_id) if call_id else None}


def _logprob(item: Any, i: int) -> tuple[str, float]:
    token: Any = ""
    value: Any = item
    if isinstance(item, Mapping):
        token, value = item.get("token", ""), item.get("logprob")
    elif isinstance(item, Sequence) and not isinstance(item, str) and len(item) == 2:
        token, value = item
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value > 0
    ):
        raise ConfigurationError(
            f"ReplayEntry.logprobs[{i}] must be a log-probability (a finite float <= 0), got {item!r}",
            field="logprobs",
        )
    return str(token), float(value)


@dataclass(frozen=True, kw_only=True)
class ReplayEntry:
    """One recorded answer: what the model said (or which error it raised) and what it cost.

    Example:
        >>> from frugal_chains.testing import ReplayEntry
        >>> entry = ReplayEntry(text="42", input_tokens=12, output_tokens=1, logprobs=[-0.01])
        >>> entry.text, entry.output_tokens, entry.logprobs
        ('42', 1, (('', -0.01),))
    """

    text: str = ""
    """The answer's text ("" for a pure tool call)."""
    input_tokens: int | None = None
    """Prompt tokens the provider reported; ``None``: counted from the prompt with
    :func:`~frugal_chains.accounting.count_message_tokens` (OpenAI's recipe, tools included)."""
    output_tokens: int | None = None
    """Output tokens the provider reported; ``None``: counted from the text (and tool calls) with
    :func:`~frugal_chains.accounting.count_text_tokens`."""
    tool_calls: Sequence[Mapping[str, Any]] = ()
    """Tool calls the model made: ``{"name", "args", "id"}`` (or OpenAI's ``{"function": {"name",
    "arguments"}, "id"}``); stored as a tuple of ``{"name", "args", "id"}`` dicts."""
    logprobs: Sequence[Any] | None = None
    """Per-token log-probabilities: floats, ``(token, logprob)`` pairs or ``{"token", "logprob"}`` dicts;
    returned as ``response_metadata["logprobs"] = {"content": [{"token", "logprob"}, ...]}`` like OpenAI's.
    Stored as ``(token, logprob)`` pairs (a bare float gets the token ``""``)."""
    error: str | None = None
    """Raise this provider error instead of answering: ``"rate_limit"``, ``"timeout"``,
    ``"context_overflow"`` or ``"api"`` (see :data:`REPLAY_ERRORS`)."""
    samples: Sequence[str] = ()
    """More answers to the same prompt, for repeated calls (self-consistency): the ``k``-th call for this
    prompt answers ``(text, *samples)[k % (1 + len(samples))]``. Token counts of samples are always counted."""

    def __post_init__(self) -> None:
        if not isinstance(self.text, str):
            raise ConfigurationError(
                f"ReplayEntry.text must be a string, got {type(self.text).__name__}", field="text"
            )
        _int_or_none("input_tokens", self.input_tokens)
        _int_or_none("output_tokens", self.output_tokens)
        if isinstance(self.tool_calls, (str, Mapping)) or not isinstance(self.tool_calls, Iterable):
            raise ConfigurationError("ReplayEntry.tool_calls must be a list of dicts", field="tool_calls")
        object.__setattr__(self, "tool_calls", tuple(_tool_call(c, i) for i, c in enumerate(self.tool_calls)))
        if self.logprobs is not None:
            if isinstance(self.logprobs, (str, Mapping)) or not isinstance(self.logprobs, Iterable):
                raise ConfigurationError("ReplayEntry.logprobs must be a list of floats", field="logprobs")
            pairs = tuple(_logprob(x, i) for i, x in enumerate(self.logprobs))
            object.__setattr__(self, "logprobs", pairs)
        if self.error is not None and self.error not in REPLAY_ERRORS:
            raise ConfigurationError(
                f"ReplayEntry.error must be None or one of {sorted(REPLAY_ERRORS)}, got {self.error!r}",
                field="error",
            )
        if isinstance(self.samples, str) or not all(isinstance(s, str) for s in self.samples):
            raise ConfigurationError("ReplayEntry.samples must be a list of strings", field="samples")
        object.__setattr__(self, "samples", tuple(self.samples))

    def answer(self, k: int) -> str:
        """The text of the ``k``-th call (0-based) for this prompt."""
        texts = (self.text, *self.samples)
        return texts[k % len(texts)]

    @classmethod
    def coerce(cls, value: Any, *, field: str = "table") -> ReplayEntry:
        """A :class:`ReplayEntry` from an entry, a string (the text) or a dict of its fields."""
        if isinstance(value, ReplayEntry):
            return value
        if isinstance(value, str):
            return cls(text=value)
        if isinstance(value, Mapping):
            known = {"text", "input_tokens", "output_tokens", "tool_calls", "logprobs", "error", "samples"}
            unknown = sorted(set(value) - known)
            if unknown:
                raise ConfigurationError(
                    f"unknown ReplayEntry field(s) {unknown}; known: {sorted(known)}", field=field
                )
            return cls(**value)
        raise ConfigurationError(
            f"a replay table maps keys to ReplayEntry objects or strings, got {type(value).__name__}",
            field=field,
        )


class ReplayKeyError(KeyError):
    """No recorded answer for a request (``ReplayChatModel(missing="raise")``); ``.key`` holds the full key.

    A ``KeyError``, so a cascade does not escalate it: a hole in the table is a bug of the test, not an outage.

    Example:
        >>> from frugal_chains.testing.replay import ReplayKeyError
        >>> err = ReplayKeyError("what is 2+2?", model="m", size=3)
        >>> err.key, str(err).split(":")[0]
        ('what is 2+2?', "ReplayChatModel 'm' has no recorded answer for key 'what is 2+2?' (3 recorded keys)")
    """

    def __init__(self, key: str, *, model: str, size: int) -> None:
        shown = key if len(key) <= _KEY_SHOWN else key[:_KEY_SHOWN] + f"... ({len(key)} chars)"
        self.key = key
        self.message = (
            f"ReplayChatModel {model!r} has no recorded answer for key {shown!r} ({size} recorded keys): record it,"
            " check the key mode ('last_user' or 'conversation'), or pass missing='default' with a default_response"
        )
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


def _openai_messages(messages: Sequence[Any]) -> list[dict[str, Any]]:
    if all(isinstance(m, Mapping) for m in messages):
        return [dict(m) for m in messages]
    converted = convert_to_openai_messages(list(messages))
    return converted if isinstance(converted, list) else [converted]


def replay_key(messages: Sequence[Any] | str, key: KeyMode = "last_user") -> str:
    """The table key of a conversation (LangChain messages, OpenAI-format dicts, or a prompt string).

    ``"last_user"``: the last user turn's text, whitespace-stripped. ``"conversation"``: every turn as a
    stable JSON list of ``{"role", "content"}`` (content text stripped; LangChain's ``human``/``ai`` become
    ``user``/``assistant``).

    Example:
        >>> from frugal_chains.testing.replay import replay_key
        >>> replay_key([{"role": "system", "content": "Be brief."}, {"role": "user", "content": " 2+2? "}])
        '2+2?'
        >>> replay_key("hi", key="conversation")
        '[{"role":"user","content":"hi"}]'
    """
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    msgs = _openai_messages(messages)
    if key == "last_user":
        users = [content_text(m.get("content")) for m in msgs if m.get("role") in ("user", "human")]
        return users[-1].strip() if users else ""
    if key == "conversation":
        roles = {"human": "user", "ai": "assistant"}
        turns = [
            {
                "role": roles.get(str(m.get("role")), str(m.get("role"))),
                "content": content_text(m.get("content")).strip(),
            }
            for m in msgs
        ]
        return json.dumps(turns, ensure_ascii=False, separators=(",", ":"))
    raise ConfigurationError(f"key must be 'last_user' or 'conversation', got {key!r}", field="key")


class ReplayChatModel(AnsweringChatModel):
    """A chat model that answers from a recorded table (prompt -> response, token counts, tool calls, errors).

    The key of a request is its last user turn (``key="last_user"``) or the whole conversation
    (``key="conversation"``, see :func:`replay_key`). A request with no recorded answer raises
    :class:`ReplayKeyError` (a ``KeyError``), or answers ``default_response`` with ``missing="default"``.
    Answers report ``usage_metadata`` (the recorded counts, else counted) and
    ``response_metadata["model_name"] = model``, so budgets and cascades price them like the real model.

    Example:
        >>> from frugal_chains.testing import ReplayChatModel, ReplayEntry
        >>> model = ReplayChatModel(model="gpt-4o-mini", table={
        ...     "What is 6 x 7?": ReplayEntry(text="42", input_tokens=14, output_tokens=1),
        ...     "Hello": "Hi there!"})
        >>> msg = model.invoke("What is 6 x 7?")
        >>> msg.content, msg.usage_metadata["input_tokens"], msg.response_metadata["model_name"]
        ('42', 14, 'gpt-4o-mini')
        >>> model.invoke("Hello").content, model.calls
        ('Hi there!', 2)
    """

    model: str = "replay"
    """Reported as ``response_metadata["model_name"]`` and ``ls_model_name`` (priced by budgets and cascades)."""
    provider: str = "openai"
    """Reported as ``ls_provider`` and ``response_metadata["model_provider"]``."""
    table: dict[str, ReplayEntry] = Field(default_factory=dict)
    """Key -> :class:`ReplayEntry` (a string is an entry with that text; a dict, the entry's fields)."""
    key: KeyMode = "last_user"
    """How a request becomes a key: ``"last_user"`` or ``"conversation"`` (see :func:`replay_key`)."""
    missing: Literal["raise", "default"] = "raise"
    """A request with no recorded answer: ``"raise"`` :class:`ReplayKeyError`, or ``"default"``: answer
    :attr:`default_response`."""
    default_response: ReplayEntry = Field(default_factory=ReplayEntry)
    """The answer to unrecorded requests with ``missing="default"`` (a string or a :class:`ReplayEntry`)."""
    latency_s: float = 0.0
    """Seconds each call takes (``time.sleep`` / ``asyncio.sleep``)."""

    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _calls: int = PrivateAttr(default=0)
    _per_key: dict[str, int] = PrivateAttr(default_factory=dict)

    def __init__(self, **data: Any) -> None:
        # validated here, not by pydantic validators, so bad input raises ConfigurationError (not ValidationError)
        table = data.get("table", {})
        if not isinstance(table, Mapping):
            raise ConfigurationError(
                f"table must be a mapping of key -> ReplayEntry | str, got {type(table).__name__}",
                field="table",
            )
        entries: dict[str, ReplayEntry] = {}
        for k, v in table.items():
            if not isinstance(k, str):
                raise ConfigurationError(f"table keys must be strings, got {k!r}", field="table")
            entries[k] = ReplayEntry.coerce(v)
        data["table"] = entries
        data["default_response"] = ReplayEntry.coerce(
            data.get("default_response", ""), field="default_response"
        )
        if data.get("key", "last_user") not in ("last_user", "conversation"):
            raise ConfigurationError(
                f"key must be 'last_user' or 'conversation', got {data['key']!r}", field="key"
            )
        if data.get("missing", "raise") not in ("raise", "default"):
            raise ConfigurationError(
                f"missing must be 'raise' or 'default', got {data['missing']!r}", field="missing"
            )
        latency = data.get("latency_s", 0.0)
        if isinstance(latency, bool) or not isinstance(latency, (int, float)) or not 0 <= latency < math.inf:
            raise ConfigurationError(f"latency_s must be a number >= 0, got {latency!r}", field="latency_s")
        for name in ("model", "provider"):
            if name in data and (not isinstance(data[name], str) or not data[name]):
                raise ConfigurationError(f"{name} must be a non-empty string, got {data[name]!r}", field=name)
        super().__init__(**data)

    # -- constructors -------------------------------------------------------------------------------------
    @classmethod
    def from_records(
        cls,
        records: Iterable[Mapping[str, Any]],
        *,
        model: str,
        key: KeyMode = "last_user",
        **kwargs: Any,
    ) -> ReplayChatModel:
        """A model from records: ``prompt`` (a user message) or ``messages`` (a conversation), and ``response``
        (or ``text``), optional ``input_tokens``, ``output_tokens``, ``tool_calls``, ``logprobs``, ``error``,
        ``samples``. Other fields are ignored. Two records with the same key raise ``ConfigurationError``.

        Example:
            >>> from frugal_chains.testing import ReplayChatModel
            >>> m = ReplayChatModel.from_records([{"prompt": "2+2?", "response": "4", "output_tokens": 1}],
            ...                                  model="mixtral")
            >>> m.invoke("2+2?").usage_metadata["output_tokens"]
            1
        """
        if key not in ("last_user", "conversation"):
            raise ConfigurationError(f"key must be 'last_user' or 'conversation', got {key!r}", field="key")
        table: dict[str, ReplayEntry] = {}
        for n, rec in enumerate(records):
            if not isinstance(rec, Mapping):
                raise ConfigurationError(
                    f"records[{n}] must be a dict, got {type(rec).__name__}", field="records"
                )
            if "messages" in rec:
                k = replay_key(rec["messages"], key)
            elif isinstance(rec.get("prompt"), str):
                k = replay_key(rec["prompt"], key)
            else:
                raise ConfigurationError(
                    f"records[{n}] needs a 'prompt' string or a 'messages' list", field="records"
                )
            if k in table:
                raise ConfigurationError(
                    f"records[{n}] repeats the key {k[:_KEY_SHOWN]!r}: one answer per key (put further answers "
                    "in 'samples')",
                    field="records",
                )
            text = rec.get("response", rec.get("text", ""))
            table[k] = ReplayEntry(
                text="" if text is None else str(text),
                input_tokens=rec.get("input_tokens"),
                output_tokens=rec.get("output_tokens"),
                tool_calls=rec.get("tool_calls") or (),
                logprobs=rec.get("logprobs"),
                error=rec.get("error"),
                samples=rec.get("samples") or (),
            )
        return cls(model=model, key=key, table=table, **kwargs)

    @classmethod
    def from_jsonl(
        cls, path: str | Path, *, model: str, key: KeyMode = "last_user", **kwargs: Any
    ) -> ReplayChatModel:
        """:meth:`from_records` over a JSON-lines file (one record per line; blank lines skipped)."""
        records = []
        with Path(path).open(encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                if line.strip():
                    try:
                        records.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise ConfigurationError(f"{path}:{line_no} is not JSON: {e}", field="path") from e
        return cls.from_records(records, model=model, key=key, **kwargs)

    # -- identity -----------------------------------------------------------------------------------------
    @property
    def _llm_type(self) -> str:
        return "frugal-replay"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.model, "key": self.key}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_provider"] = self.provider
        params["ls_model_name"] = self.model
        return params

    @property
    def calls(self) -> int:
        """How many calls this model answered or raised (thread-safe)."""
        with self._lock:
            return self._calls

    def reset_calls(self) -> None:
        """Set :attr:`calls` and the per-prompt sample counters back to 0."""
        with self._lock:
            self._calls = 0
            self._per_key.clear()

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools (OpenAI format; they count in the prompt tokens). Recorded tool calls are returned
        whether or not tools are bound."""
        formatted = [convert_to_openai_tool(t) for t in tools]
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        return self.bind(tools=formatted, **kwargs)

    # -- the answer ---------------------------------------------------------------------------------------
    def key_of(self, messages: Sequence[Any] | str) -> str:
        """The table key of ``messages`` under this model's :attr:`key` mode."""
        return replay_key(messages, self.key)

    def _lookup(self, k: str) -> tuple[ReplayEntry, int]:
        with self._lock:
            self._calls += 1
            entry = self.table.get(k)
            if entry is None:
                if self.missing == "raise":
                    raise ReplayKeyError(k, model=self.model, size=len(self.table))
                entry = self.default_response
            n = self._per_key.get(k, 0)
            self._per_key[k] = n + 1
        return entry, n

    def _answer(self, messages: list[BaseMessage], **kwargs: Any) -> AIMessage:
        msgs = _openai_messages(messages)
        entry, n = self._lookup(replay_key(msgs, self.key))
        if entry.error is not None:
            raise REPLAY_ERRORS[entry.error](f"replayed {entry.error} error from {self.model!r}")
        text = entry.answer(n)
        tools = kwargs.get("tools") or None
        input_tokens = entry.input_tokens
        if input_tokens is None:
            input_tokens = count_message_tokens(msgs, model=self.model, tools=tools)
        output_tokens = entry.output_tokens if n % (1 + len(entry.samples)) == 0 else None
        if output_tokens is None:
            output_tokens = count_text_tokens(text, self.model) + sum(
                3
                + count_text_tokens(c["name"], self.model)
                + count_text_tokens(json.dumps(c["args"]), self.model)
                for c in entry.tool_calls
            )
        usage = UsageMetadata(
            input_tokens=input_tokens, output_tokens=output_tokens, total_tokens=input_tokens + output_tokens
        )
        meta: dict[str, Any] = {
            "model_name": self.model,
            "model_provider": self.provider,
            "finish_reason": "tool_calls" if entry.tool_calls else "stop",
        }
        if entry.logprobs is not None:
            meta["logprobs"] = {"content": [{"token": t, "logprob": v} for t, v in entry.logprobs]}
        return AIMessage(
            content=text,
            tool_calls=[
                {
                    "name": c["name"],
                    "args": dict(c["args"]),
                    "id": c["id"] or f"call_{uuid.uuid4().hex[:12]}",
                    "type": "tool_call",
                }
                for c in entry.tool_calls
            ],
            usage_metadata=usage,
            response_metadata=meta,
        )

    @staticmethod
    def _pieces(text: str, n: int = 3) -> list[str]:
        """The answer in up to ``n`` pieces split at spaces (they concatenate back to it)."""
        words = text.split(" ")
        size = max(1, math.ceil(len(words) / n))
        parts = [" ".join(words[i : i + size]) for i in range(0, len(words), size)] or [""]
        return [p if i == 0 else " " + p for i, p in enumerate(parts)]
