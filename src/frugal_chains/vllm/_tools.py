"""Forced tool calls, shared by both clients (framework-free, no vLLM needed).

A ``tool_choice`` of ``"required"`` or a named function is forced by guided decoding: the answer is decoded
against a JSON schema built from the tools' parameter schemas (the same schemas vLLM's server builds for these
choices), and the JSON that comes back is turned into :class:`~frugal_chains.vllm.ToolCall` objects here, by the
client, not by a model-specific tool parser. So a forced call works for any model, including one that was never
trained to call tools, in the engine (``SamplingParams(structured_outputs=...)``) and through ``vllm serve``
(the request's ``structured_outputs`` field) alike.

* ``"required"``: the answer is a JSON list of ``{"name": ..., "parameters": {...}}``, one item per call.
* A named function: the answer *is* that function's arguments (a JSON object), so a stream can hand them on as
  they are decoded.

An answer that is not valid JSON (cut short by ``max_tokens``) gives no tool call: it comes back as plain text
with the finish reason the model stopped with (``"length"``), as for any other answer (a named call's stream has
already handed its pieces on as arguments by then).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from frugal_chains.errors import ConfigurationError
from frugal_chains.vllm.types import ChatRequest, ToolCall, ToolCallDelta

__all__ = [
    "ForcedCallStream",
    "ForcedTools",
    "call_id",
    "finish_reason_with_calls",
    "forced_tools",
    "parse_forced_tool_calls",
]


@dataclass(frozen=True)
class ForcedTools:
    """A ``tool_choice`` of ``"required"`` or a named function, turned into a JSON schema to decode against."""

    schema: dict[str, Any]
    name: str | None
    """The forced function's name; ``None`` for ``"required"`` (the answer is a list of ``{name, parameters}``)."""


def _tool_functions(tools: Sequence[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    functions: dict[str, Mapping[str, Any]] = {}
    for tool in tools:
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
            raise ConfigurationError(
                f"ChatRequest.tools must be OpenAI-format function tools "
                f'({{"type": "function", "function": {{"name": ..., "parameters": ...}}}}), got {tool!r}.',
                field="tools",
            )
        functions[function["name"]] = function
    return functions


def _parameters(function: Mapping[str, Any]) -> dict[str, Any]:
    params = function.get("parameters")
    return dict(params) if params else {"type": "object", "properties": {}}


def forced_tools(request: ChatRequest) -> ForcedTools | None:
    """The schema that forces a tool call for ``tool_choice`` ``"required"`` or a named function, else ``None``
    (``"auto"``, ``"none"`` or no choice: nothing is forced).

    Raises :class:`~frugal_chains.errors.ConfigurationError` for a forced choice without tools, a name that is not
    among the tools, an unknown choice, or a forced choice combined with ``ChatRequest.structured``.

    Example:
        >>> from frugal_chains.vllm import ChatRequest
        >>> from frugal_chains.vllm._tools import forced_tools
        >>> add = {"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}
        >>> forced = forced_tools(ChatRequest(messages=[{"role": "user", "content": "1+2"}], tools=[add],
        ...                                   tool_choice={"type": "function", "function": {"name": "add"}}))
        >>> forced.name, forced.schema
        ('add', {'type': 'object'})
    """
    choice = request.tool_choice
    if choice is None or choice in ("auto", "none"):
        return None
    if not request.tools:
        raise ConfigurationError(
            f"tool_choice={choice!r} needs tools: pass the tools the model must choose from.",
            field="tool_choice",
        )
    functions = _tool_functions(request.tools)
    forced: ForcedTools | None = None
    if choice == "required":
        variants = [
            {
                "properties": {
                    "name": {"type": "string", "enum": [name]},
                    "parameters": _parameters(function),
                },
                "required": ["name", "parameters"],
            }
            for name, function in functions.items()
        ]
        schema = {"type": "array", "minItems": 1, "items": {"type": "object", "anyOf": variants}}
        forced = ForcedTools(schema=schema, name=None)
    elif isinstance(choice, Mapping):
        function = choice.get("function")
        name = function.get("name") if isinstance(function, Mapping) else None
        if isinstance(name, str):
            if name not in functions:
                raise ConfigurationError(
                    f"tool_choice names {name!r}, which is not among the tools ({', '.join(functions)}).",
                    field="tool_choice",
                )
            forced = ForcedTools(schema=_parameters(functions[name]), name=name)
    if forced is None:
        raise ConfigurationError(
            f"tool_choice must be 'auto', 'none', 'required' or "
            f'{{"type": "function", "function": {{"name": ...}}}}, got {choice!r}.',
            field="tool_choice",
        )
    if request.structured is not None:
        raise ConfigurationError(
            "ChatRequest.structured cannot be combined with a forced tool_choice (the tool's schema already "
            "decides the answer's shape): drop one of them.",
            field="structured",
        )
    return forced


def call_id() -> str:
    """A new tool-call id (``call_`` and 24 hex digits)."""
    return f"call_{uuid.uuid4().hex[:24]}"


def parse_forced_tool_calls(forced: ForcedTools, text: str) -> tuple[ToolCall, ...]:
    """The tool calls in an answer decoded against :attr:`ForcedTools.schema` (``()`` when the answer is not
    valid JSON, e.g. cut short by ``max_tokens``: the caller keeps it as plain text).

    Example:
        >>> from frugal_chains.vllm._tools import ForcedTools, parse_forced_tool_calls
        >>> required = ForcedTools(schema={}, name=None)
        >>> [call] = parse_forced_tool_calls(required, '[{"name": "add", "parameters": {"a": 1}}]')
        >>> call.name, call.args, call.id.startswith("call_")
        ('add', {'a': 1}, True)
        >>> parse_forced_tool_calls(ForcedTools(schema={}, name="add"), '{"a": ')
        ()
    """
    try:
        value = json.loads(text)
    except ValueError:
        return ()
    if forced.name is not None:
        return (ToolCall(id=call_id(), name=forced.name, arguments=json.dumps(value)),)
    if not isinstance(value, list):
        return ()
    calls = []
    for item in value:
        if isinstance(item, Mapping) and isinstance(item.get("name"), str):
            calls.append(
                ToolCall(id=call_id(), name=item["name"], arguments=json.dumps(item.get("parameters", {})))
            )
    return tuple(calls)


def finish_reason_with_calls(reason: str | None, has_calls: bool) -> str | None:
    """``"tool_calls"`` when an answer that stopped normally holds tool calls, else ``reason`` unchanged."""
    if has_calls and reason == "stop":
        return "tool_calls"
    return reason


class ForcedCallStream:
    """Turns the streamed text of a forced answer into tool-call pieces.

    A named call streams its arguments as they are decoded (the first piece carries the id and the name). A
    ``"required"`` answer is a list whose items are only known once it is complete, so it is held back and its
    calls come whole from :meth:`finish`. Not thread-safe: one per stream.

    Example:
        >>> from frugal_chains.vllm._tools import ForcedCallStream, ForcedTools
        >>> stream = ForcedCallStream(ForcedTools(schema={}, name="add"))
        >>> pieces = [*stream.feed('{"a": '), *stream.feed("1}")]
        >>> pieces[0].name, "".join(p.arguments for p in pieces)
        ('add', '{"a": 1}')
        >>> stream.finish()
        ('', (), True)
    """

    def __init__(self, forced: ForcedTools) -> None:
        self.forced = forced
        self.text = ""
        self._id: str | None = None

    def feed(self, delta: str) -> tuple[ToolCallDelta, ...]:
        """The pieces to hand on for ``delta``, the next decoded text (``()`` while a ``"required"`` answer is
        held back)."""
        self.text += delta
        if self.forced.name is None:
            return ()
        if self._id is None:
            self._id = call_id()
            return (ToolCallDelta(index=0, id=self._id, name=self.forced.name, arguments=delta),)
        return (ToolCallDelta(index=0, arguments=delta),) if delta else ()

    def finish(self) -> tuple[str, tuple[ToolCallDelta, ...], bool]:
        """At the end of the stream: the text still to hand on (a held-back answer that held no call), the
        held-back calls as whole pieces, and whether the answer is a tool call at all (for the finish reason)."""
        if self.forced.name is not None:
            return "", (), self._id is not None
        calls = parse_forced_tool_calls(self.forced, self.text)
        deltas = tuple(
            ToolCallDelta(index=i, id=c.id, name=c.name, arguments=c.arguments) for i, c in enumerate(calls)
        )
        return ("" if calls else self.text), deltas, bool(calls)
