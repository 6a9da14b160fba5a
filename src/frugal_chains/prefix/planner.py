"""The planner: stable prefix first, dynamic values out, cache breakpoints where they pay.

Input: OpenAI-format messages (content a string or a list of parts) and tools. Output: a :class:`PrefixPlan`,
the rewritten request and its :class:`~frugal_chains.prefix.PrefixReport`. Framework-free; the LangChain and
LlamaIndex adapters translate their message types to and from these dicts.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
import string
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from frugal_chains.errors import ConfigurationError
from frugal_chains.prefix.context import (
    CONTEXT_HEADER,
    ContextValue,
    placeholder,
    render_context_block,
    split_context_block,
)
from frugal_chains.prefix.report import Breakpoint, ChurnSpan, PrefixReport
from frugal_chains.prefix.rules import ProviderRules, rules_for
from frugal_chains.prefix.spans import (
    DEFAULT_DETECTORS,
    DynamicSpan,
    SpanSource,
    _check_detect,
    classify_value,
    find_dynamic_spans,
)
from frugal_chains.shared.question import _Template

if TYPE_CHECKING:
    from frugal_chains.accounting.pricing import PriceBook

__all__ = ["PrefixFormatter", "PrefixPlan"]

Ttl = Literal["auto", "5m", "1h"]
OnUnsafe = Literal["warn", "raise"]

_SYSTEM_ROLES = ("system", "developer")
_BASE_LABELS = {"date": "date", "time": "time", "uuid": "uuid", "request_id": "request id", "email": "email"}
_TTL_MINUTES = {"5m": 5.0, "1h": 60.0}
_PLACEHOLDER = re.compile(re.escape(placeholder("@")).replace("@", r"[^\]\n]+"))
_TTL_TOLERANCE = 0.01
_CHURN_KEYS = 256
_CHURN_CHARS = 200_000
_CHURN_SHARED = 0.5
"""Share of the text two calls must have in common (around the change) to count as churn of one prompt."""
_LITELLM_PROVIDER = {"anthropic": "anthropic", "openai": "openai", "gemini": "gemini", "vllm": "hosted_vllm"}


@dataclass(frozen=True)
class PrefixPlan:
    """A rewritten request: messages (and tools) in cache-friendly order, provider parameters, and the report.

    Example:
        >>> from frugal_chains.prefix import PrefixFormatter
        >>> plan = PrefixFormatter(model="gpt-4o").plan([
        ...     {"role": "system", "content": "You are a support agent. Today is 2026-12-07."},
        ...     {"role": "user", "content": "Where is my parcel?"}])
        >>> print(plan.messages[0]["content"])
        You are a support agent. Today is [see request context: date].
        <BLANKLINE>
        Request context (values referred to above):
        - date: 2026-12-07
        >>> sorted(plan.params), plan.changed
        (['prompt_cache_key'], True)
    """

    messages: list[dict[str, Any]]
    """The messages to send (OpenAI format; Anthropic: ``cache_control`` on content parts)."""
    tools: list[dict[str, Any]] | None
    """The tools to send (Anthropic: ``cache_control`` on the last one when a breakpoint goes there)."""
    params: dict[str, Any]
    """Extra request parameters (OpenAI: ``{"prompt_cache_key": ...}``)."""
    prefix_hash: str
    """sha256 of the stable prefix (tools and preamble without the context block and markers)."""
    report: PrefixReport
    changed: bool
    """False when the request is sent as it came."""
    context: tuple[ContextValue, ...] = field(default=())
    """The values of the request context block, in its order."""


# -- message helpers ------------------------------------------------------------------------------------------------


def _role(message: Mapping[str, Any]) -> str:
    return str(message.get("role", ""))


def _is_example(message: Mapping[str, Any]) -> bool:
    name = message.get("name")
    return message.get("example") is True or (isinstance(name, str) and name.startswith("example_"))


def _is_document(message: Mapping[str, Any]) -> bool:
    return message.get("name") == "document"


def _kind(message: Mapping[str, Any]) -> str | None:
    """ "system", "example", "document", or None for a conversation turn."""
    if _is_example(message):
        return "example"
    if _is_document(message):
        return "document"
    if _role(message) in _SYSTEM_ROLES:
        return "system"
    return None


_MARKABLE = frozenset({"text", "image_url", "image", "document", "file", "input_audio"})
"""Content parts a cache marker may close (Anthropic: text, image, document and tool-result blocks)."""


def _parts(content: Any) -> list[Any]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return list(content)


def _is_text_part(part: Any) -> bool:
    return isinstance(part, Mapping) and part.get("type") == "text" and isinstance(part.get("text"), str)


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    texts = [p["text"] for p in _parts(content) if _is_text_part(p)]
    texts += [p for p in _parts(content) if isinstance(p, str)]
    return "\n".join(texts)


def _map_texts(content: Any, fn: Any) -> Any:
    """Apply ``fn(text) -> text`` to every text of a content (string or parts)."""
    if isinstance(content, str):
        return fn(content)
    if content is None:
        return None
    out: list[Any] = []
    for part in content:
        if _is_text_part(part):
            new = dict(part)
            new["text"] = fn(part["text"])
            out.append(new)
        elif isinstance(part, str):
            out.append(fn(part))
        else:
            out.append(part)
    return out


def _strip_cc(value: Any) -> Any:
    """A copy without ``cache_control`` keys (for hashing and counting)."""
    if isinstance(value, Mapping):
        return {k: _strip_cc(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, list):
        return [_strip_cc(v) for v in value]
    return value


def _has_cc(part: Any) -> bool:
    return isinstance(part, Mapping) and "cache_control" in part


def _preamble_length(messages: Sequence[Mapping[str, Any]]) -> int:
    n = 0
    while n < len(messages) and _kind(messages[n]) is not None:
        n += 1
    return n


def _preamble_order(messages: Sequence[Mapping[str, Any]], n_pre: int) -> list[int]:
    """Input indices of the preamble in the order it is written: system, examples, documents."""
    rank = {"system": 0, "example": 1, "document": 2}
    return sorted(range(n_pre), key=lambda k: (rank[_kind(messages[k]) or "system"], k))


def _unsafe_reason(messages: Sequence[Mapping[str, Any]]) -> str | None:
    """Why the planner cannot keep this conversation valid, or None."""
    called: set[str] = set()
    n_pre = _preamble_length(messages)
    for i, message in enumerate(messages):
        role = _role(message)
        if role == "assistant":
            for call in message.get("tool_calls") or ():
                if isinstance(call, Mapping) and call.get("id") is not None:
                    called.add(str(call["id"]))
        elif role == "tool":
            call_id = message.get("tool_call_id")
            if call_id is None or str(call_id) not in called:
                return (
                    f"message {i} is a tool result (tool_call_id={call_id!r}) with no earlier assistant call "
                    "with that id"
                )
            kind = _kind(message)
            if kind is not None and (kind != "example" or i == 0 or _kind(messages[i - 1]) != "example"):
                return (
                    f"message {i} is a tool result marked as an example or document that does not directly "
                    "follow its call among the examples"
                )
    ends_on_call = 0 < n_pre < len(messages) and bool(messages[n_pre - 1].get("tool_calls"))
    if ends_on_call and _preamble_order(messages, n_pre)[-1] != n_pre - 1:
        return (
            f"message {n_pre - 1} calls a tool whose result (message {n_pre}) must follow it, and the preamble "
            "would be reordered between them"
        )
    return None


def _check_messages(messages: Any) -> list[dict[str, Any]]:
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise ConfigurationError(
            "messages must be a list of OpenAI-format dicts, e.g. [{'role': 'user', 'content': 'Hi'}]",
            field="messages",
        )
    out: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
            raise ConfigurationError(
                f"messages[{i}] must be a dict with a 'role' (OpenAI format), got {message!r:.80}",
                field="messages",
            )
        content = message.get("content")
        if content is not None and not isinstance(content, (str, list, tuple)):
            raise ConfigurationError(
                f"messages[{i}]['content'] must be a string or a list of content parts, got "
                f"{type(content).__name__}",
                field="messages",
            )
        copied = copy.deepcopy(dict(message))
        if isinstance(copied.get("content"), tuple):
            copied["content"] = list(copied["content"])
        out.append(copied)
    return out


def _check_tools(tools: Any) -> list[dict[str, Any]] | None:
    if tools is None:
        return None
    if isinstance(tools, (str, bytes, Mapping)) or not isinstance(tools, Sequence):
        raise ConfigurationError(
            "tools must be a list of OpenAI-format tool dicts ({'type': 'function', 'function': {...}})",
            field="tools",
        )
    out = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, Mapping):
            raise ConfigurationError(f"tools[{i}] must be a dict, got {tool!r:.80}", field="tools")
        out.append(copy.deepcopy(dict(tool)))
    return out


def _check_dynamic(dynamic: Any) -> dict[str, str]:
    if dynamic is None:
        return {}
    if not isinstance(dynamic, Mapping):
        raise ConfigurationError(
            "dynamic must map a label to the value to move, e.g. dynamic={'user_name': 'Alice'}",
            field="dynamic",
        )
    out: dict[str, str] = {}
    for label, value in dynamic.items():
        if not isinstance(label, str) or not label.strip() or ":" in label or "\n" in label:
            raise ConfigurationError(
                f"dynamic: label {label!r} must be a short name without ':' or line breaks", field="dynamic"
            )
        if not isinstance(value, str) or not value.strip():
            raise ConfigurationError(
                f"dynamic[{label!r}] must be a non-empty string (the value to move), got {value!r}",
                field="dynamic",
            )
        out[label.strip()] = value
    return out


def _split_placeholders(text: str, part: str) -> list[tuple[str, str]]:
    """``text`` cut around the placeholders an earlier plan left in it (marked "moved")."""
    out: list[tuple[str, str]] = []
    pos = 0
    for m in _PLACEHOLDER.finditer(text):
        out += [(text[pos : m.start()], part), (m.group(), "moved")]
        pos = m.end()
    out.append((text[pos:], part))
    return out


def _sha(data: Any) -> str:
    raw = json.dumps(data, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()


def _diff(before: str, after: str) -> tuple[str, str]:
    """The differing middle of two texts (common prefix and suffix trimmed, widened to whole words)."""
    n = min(len(before), len(after))
    i = 0
    while i < n and before[i] == after[i]:
        i += 1
    j = 0
    while j < n - i and before[len(before) - 1 - j] == after[len(after) - 1 - j]:
        j += 1
    while i > 0 and before[i - 1].isalnum():
        i -= 1
    while j > 0 and before[len(before) - j].isalnum():
        j -= 1
    return before[i : len(before) - j], after[i : len(after) - j]


class _Labels:
    """Labels of the context block's values: one label per value, numbered per kind ("date", "date 2")."""

    def __init__(self) -> None:
        self.values: OrderedDict[str, ContextValue] = OrderedDict()
        self._by_value: dict[tuple[str, str], str] = {}
        self._taken: set[str] = set()
        """Labels of placeholders already in the text that no context block explains (typed by hand)."""

    def reserve(self, label: str) -> None:
        if label not in self.values:
            self._taken.add(label)

    def add(self, base: str, value: str, kind: str) -> str:
        known = self._by_value.get((base, value))
        if known is not None:
            return known
        label, n = base, 1
        while label in self.values or label in self._taken:
            n += 1
            label = f"{base} {n}"
        self.values[label] = ContextValue(label, value, kind)
        self._by_value[(base, value)] = label
        return label

    def recover(self, value: ContextValue) -> None:
        if value.label not in self.values:
            self.values[value.label] = value
            base = re.sub(r" \d+$", "", value.label)
            self._by_value.setdefault((base, value.value), value.label)
            self._by_value.setdefault((value.label, value.value), value.label)


# -- the formatter --------------------------------------------------------------------------------------------------


class PrefixFormatter:
    """Rewrites a chat request so a provider's prompt cache hits: tools, system, few-shot examples and documents
    first (conversation turns never reordered), dates, times, ids, emails and template variables moved out of
    the stable prefix into one request context block, and the provider's cache markers or key added.

    Args:
        model: the model the request goes to; the provider is inferred from it.
        provider: "anthropic", "openai", "gemini" or "vllm" when the name does not tell.
        rules: your own :class:`~frugal_chains.prefix.ProviderRules` (any other provider, or overrides).
        templates: f-string templates your system prompts are filled from (``{user_name}`` style); with one, the
            detectors read the template's own text and whole-value variables, not retrieved passages.
        dynamic_variables: the template variables whose values vary per call: they are moved.
        detect: detectors to run on system prompts (default: all, see :mod:`frugal_chains.prefix.spans`).
        ttl: Anthropic cache lifetime, "5m", "1h", or "auto" (cheapest at ``calls_per_hour``).
        calls_per_hour: expected calls sharing this prefix per hour (the reuse estimate).
        scope: default scope of OpenAI's ``prompt_cache_key`` (e.g. a tenant).
        prices: a :class:`~frugal_chains.PriceBook` (default: LiteLLM's prices).
        on_unsafe: a request the planner cannot reorder safely is sent unchanged with a warning ("warn") or
            raises :class:`~frugal_chains.ConfigurationError` ("raise").
        cache_conversation: Anthropic-style providers: when the conversation already has an assistant turn (a
            multi-turn chat or an agent loop), one more 5-minute marker closes the last message, so the next turn
            reads the history from the cache (it takes a free breakpoint slot, and only above the minimum). Off by
            default: the history is then written at 1.25x the input price on every call, which pays back only when
            the next turn comes within 5 minutes (agent loops: turn it on).

    The instance holds the churn detector's state (thread-safe, bounded); planning is otherwise a pure function
    of its input.

    Example:
        >>> from frugal_chains.prefix import PrefixFormatter
        >>> policy = "You are the airline's agent. " + "Follow the booking policy. " * 300
        >>> fmt = PrefixFormatter(model="claude-sonnet-4-5", templates=[policy + "The user is {user_name}."],
        ...                       dynamic_variables=["user_name"])
        >>> plan = fmt.plan([{"role": "system", "content": policy + "The user is Alice."},
        ...                  {"role": "user", "content": "Can I change my flight?"}])
        >>> stable, block = plan.messages[0]["content"]
        >>> stable["text"].endswith("The user is [see request context: user_name]."), stable["cache_control"]
        (True, {'type': 'ephemeral', 'ttl': '1h'})
        >>> print(block["text"])
        Request context (values referred to above):
        - user_name: Alice
        >>> len(plan.report.breakpoints), plan.report.cacheable_share > 0.9
        (1, True)
    """

    def __init__(
        self,
        *,
        model: str,
        provider: str | None = None,
        rules: ProviderRules | None = None,
        templates: Sequence[str] = (),
        dynamic_variables: Sequence[str] = (),
        detect: Sequence[str] = DEFAULT_DETECTORS,
        ttl: Ttl = "auto",
        calls_per_hour: float = 60.0,
        scope: str | None = None,
        prices: PriceBook | None = None,
        on_unsafe: OnUnsafe = "warn",
        cache_conversation: bool = False,
    ) -> None:
        if not isinstance(model, str) or not model.strip():
            raise ConfigurationError(
                "model must be a model name, e.g. model='claude-sonnet-4-5'", field="model"
            )
        if rules is not None and not isinstance(rules, ProviderRules):
            raise ConfigurationError(
                "rules must be a frugal_chains.prefix.ProviderRules, e.g. rules=ProviderRules(provider='vllm', "
                "implicit=True)",
                field="rules",
            )
        self.model = model
        self.rules = rules if rules is not None else rules_for(model, provider)
        self.provider = self.rules.provider
        self.detect = _check_detect(detect)
        if ttl not in ("auto", "5m", "1h"):
            raise ConfigurationError(f"ttl must be 'auto', '5m' or '1h', got {ttl!r}", field="ttl")
        if ttl != "auto" and self.rules.ttls and ttl not in self.rules.ttls:
            raise ConfigurationError(
                f"ttl={ttl!r}: {self.provider} caches for {list(self.rules.ttls)}; pick one or ttl='auto'",
                field="ttl",
            )
        self.ttl: Ttl = ttl
        if (
            isinstance(calls_per_hour, bool)
            or not isinstance(calls_per_hour, (int, float))
            or not calls_per_hour > 0
            or math.isinf(calls_per_hour)
        ):
            raise ConfigurationError(
                f"calls_per_hour must be a number > 0 (expected calls sharing the prefix per hour), got "
                f"{calls_per_hour!r}",
                field="calls_per_hour",
            )
        self.calls_per_hour = float(calls_per_hour)
        if scope is not None and not isinstance(scope, str):
            raise ConfigurationError(f"scope must be a string, got {scope!r}", field="scope")
        self.scope = scope
        if prices is not None:
            from frugal_chains.accounting.pricing import PriceBook

            if not isinstance(prices, PriceBook):
                raise ConfigurationError(
                    "prices must be a frugal_chains.PriceBook, e.g. PriceBook({'my-model': Price(...)})",
                    field="prices",
                )
        self.prices = prices
        if on_unsafe not in ("warn", "raise"):
            raise ConfigurationError(
                f"on_unsafe must be 'warn' or 'raise', got {on_unsafe!r}", field="on_unsafe"
            )
        self.on_unsafe: OnUnsafe = on_unsafe
        if not isinstance(cache_conversation, bool):
            raise ConfigurationError(
                f"cache_conversation must be True or False, got {cache_conversation!r}",
                field="cache_conversation",
            )
        self.cache_conversation = cache_conversation
        self.templates = self._compile_templates(templates, dynamic_variables)
        self.dynamic_variables = tuple(dynamic_variables)
        self._churn: OrderedDict[tuple[str | None, int], tuple[str, int]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _compile_templates(templates: Sequence[str], variables: Sequence[str]) -> tuple[_Template, ...]:
        if isinstance(templates, str) or not isinstance(templates, Sequence):
            raise ConfigurationError(
                "templates must be a list of f-string templates, e.g. templates=['Hello {user_name}.']",
                field="templates",
            )
        if isinstance(variables, str) or not isinstance(variables, Sequence):
            raise ConfigurationError(
                "dynamic_variables must be a list of template variable names, e.g. ['user_name']",
                field="dynamic_variables",
            )
        compiled = []
        for i, text in enumerate(templates):
            if not isinstance(text, str):
                raise ConfigurationError(
                    f"templates[{i}] must be a string, got {text!r:.60}", field="templates"
                )
            compiled.append(_Template.compile(f"template {i}", text, None, "templates"))
        seen = {v for t in compiled for v in t.variables}
        for name in variables:
            if not isinstance(name, str) or name not in seen:
                hint = f"its templates have {sorted(seen)}" if compiled else "pass templates= the prompt text"
                raise ConfigurationError(
                    f"dynamic_variables: {name!r} is not a variable of any template ({hint})",
                    field="dynamic_variables",
                )
        return tuple(compiled)

    def __getstate__(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if k != "_lock"}
        state["_churn"] = OrderedDict()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # -- public ---------------------------------------------------------------------------------------------------

    def explain(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        dynamic: Mapping[str, str] | None = None,
        scope: str | None = None,
    ) -> str:
        """The plan's report as a readable table (:meth:`PrefixReport.format`)."""
        return self.plan(messages, tools=tools, dynamic=dynamic, scope=scope).report.format()

    def plan(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        dynamic: Mapping[str, str] | None = None,
        scope: str | None = None,
    ) -> PrefixPlan:
        """Plan one request. ``dynamic={"label": "value"}`` marks values to move (every occurrence in the
        preamble); ``scope`` overrides the formatter's for OpenAI's ``prompt_cache_key``. Never mutates its
        input."""
        original = _check_messages(messages)
        original_tools = _check_tools(tools)
        marked = _check_dynamic(dynamic)
        if scope is not None and not isinstance(scope, str):
            raise ConfigurationError(f"scope must be a string, got {scope!r}", field="scope")
        scope = scope if scope is not None else self.scope
        reason = _unsafe_reason(original)
        if reason is not None:
            message = f"request sent unchanged: {reason}; the planner cannot reorder it safely"
            if self.on_unsafe == "raise":
                raise ConfigurationError(
                    message + " (fix the message order, or on_unsafe='warn' to send such requests unchanged)",
                    field="messages",
                )
            return self._unchanged(original, original_tools, [message])
        return self._plan(original, original_tools, marked, scope, messages, tools)

    # -- internals ------------------------------------------------------------------------------------------------

    def _unchanged(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, warnings: list[str]
    ) -> PrefixPlan:
        from frugal_chains.accounting.tokens import count_message_tokens

        total = count_message_tokens(_strip_cc(messages), model=self.model, tools=_strip_cc(tools))
        cost, uncached, _ = self._costs(total, 0, None, 0.0)
        report = PrefixReport(
            provider=self.provider,
            model=self.model,
            total_tokens=total,
            calls_per_hour=self.calls_per_hour,
            cost_per_call_usd=cost,
            cost_per_call_uncached_usd=uncached,
            warnings=tuple(warnings),
        )
        return PrefixPlan(
            messages=messages,
            tools=tools,
            params={},
            prefix_hash=_sha({"tools": _strip_cc(tools), "messages": []}),
            report=report,
            changed=False,
        )

    def _move_in(
        self,
        text: str,
        index: int,
        kind: str,
        marked: Mapping[str, str],
        labels: _Labels,
        spans: list[DynamicSpan],
    ) -> str:
        """``text`` with its dynamic values replaced by placeholders (values registered in ``labels``)."""
        detect = self.detect if kind == "system" else ()

        def moved(value: str, base: str, vkind: str, source: SpanSource, start: int = 0, end: int = 0) -> str:
            label = labels.add(base, value, vkind)
            if not any(s.label == label and s.message_index == index and s.source == source for s in spans):
                spans.append(DynamicSpan(vkind, value, label, source, index, start, end))
            return placeholder(label)

        # Pieces of the text: "own" (the template's own text, or the whole text without a template), "value" (a
        # variable's value left in place) and "moved" (a placeholder, never read again).
        # 1. a template: the text is rebuilt from it (byte-stable); the listed variables are moved, a variable
        # whose whole value is a date, time, id or email is moved as detected, the others (retrieved passages...)
        # stay as they are and detectors only read the template's own text
        pieces: list[tuple[str, str]] | None = None
        for tpl in self.templates:
            m = tpl.pattern.fullmatch(text)
            if m is None:
                continue
            pieces = []
            for literal, name, _spec, _conv in string.Formatter().parse(tpl.text):
                pieces += _split_placeholders(literal, "own")
                if name is None:
                    continue
                value = m.group(name)
                vkind = classify_value(value) if value else "name"
                if _PLACEHOLDER.fullmatch(value):  # moved by an earlier plan
                    pieces.append((value, "moved"))
                elif name in self.dynamic_variables and value:
                    pieces.append((moved(value, name, vkind, "variable"), "moved"))
                elif vkind in detect:
                    pieces.append((moved(value, _BASE_LABELS[vkind], vkind, "detected"), "moved"))
                else:
                    pieces += _split_placeholders(value, "value")
            break
        if pieces is None:
            pieces = _split_placeholders(text, "own")
        # 2. values the caller marked for this call
        for label_name, value in marked.items():
            left = r"(?<!\w)" if re.match(r"\w", value[0]) else ""
            right = r"(?!\w)" if re.match(r"\w", value[-1]) else ""
            pattern = re.compile(left + re.escape(value) + right)
            if not any(part != "moved" and pattern.search(piece) for piece, part in pieces):
                continue
            replacement = moved(value, label_name, classify_value(value), "marked")
            out: list[tuple[str, str]] = []
            for piece, part in pieces:
                if part == "moved":
                    out.append((piece, part))
                    continue
                pos = 0
                for found in pattern.finditer(piece):
                    out += [(piece[pos : found.start()], part), (replacement, "moved")]
                    pos = found.end()
                out.append((piece[pos:], part))
            pieces = out
        # 3. detectors, on system prompts only (examples and documents are content)
        if detect:
            out = []
            for piece, part in pieces:
                if part != "own":
                    out.append((piece, part))
                    continue
                pos = 0
                for span in find_dynamic_spans(piece, detect):
                    label = moved(
                        span.text, _BASE_LABELS[span.kind], span.kind, "detected", span.start, span.end
                    )
                    out += [(piece[pos : span.start], part), (label, "moved")]
                    pos = span.end
                out.append((piece[pos:], part))
            pieces = out
        return "".join(piece for piece, _ in pieces)

    def _plan(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        marked: Mapping[str, str],
        scope: str | None,
        source: Sequence[Mapping[str, Any]],
        source_tools: Sequence[Mapping[str, Any]] | None,
    ) -> PrefixPlan:
        anthropic_style = self.rules.max_breakpoints > 0
        n_pre = _preamble_length(messages)
        preamble = messages[:n_pre]
        conversation = messages[n_pre:]
        first_user = next((i for i, m in enumerate(conversation) if _role(m) == "user"), None)

        # 1. a context block from an earlier plan comes back out (planning twice changes nothing)
        labels = _Labels()

        def take_block(content: Any) -> Any:
            if isinstance(content, str):
                stable, values = split_context_block(content)
                for v in values:
                    labels.recover(v)
                return stable
            if content is None:
                return None
            kept: list[Any] = []
            for part in content:
                if _is_text_part(part) and CONTEXT_HEADER in part["text"]:
                    stable, values = split_context_block(part["text"])
                    for v in values:
                        labels.recover(v)
                    if not values:
                        kept.append(part)
                    elif stable:
                        kept.append({**part, "text": stable})
                else:
                    kept.append(part)
            return kept

        def take_leading_block(content: Any) -> Any:
            if isinstance(content, str):
                return take_block(content) if content.startswith(CONTEXT_HEADER) else content
            if content:
                first = content[0]
                if _is_text_part(first) and first["text"].startswith(CONTEXT_HEADER):
                    return [*take_block([first]), *content[1:]]
            return content

        # only where this planner writes a block: the system messages; the first user turn when the preamble has
        # examples or documents, as its first text (a user typing the header mid-message, or into a request whose
        # block goes in the system message, injects nothing); the end of the preamble when there is no user turn
        has_marked = any(_kind(m) != "system" for m in preamble)
        for k, m in enumerate(preamble):
            if "content" in m and (_kind(m) == "system" or (first_user is None and k == len(preamble) - 1)):
                m["content"] = take_block(m["content"])
        if first_user is not None and has_marked:
            m = conversation[first_user]
            m["content"] = take_leading_block(m.get("content"))
        # a placeholder no block explains (typed into the prompt) keeps its label: a value moved now gets another
        start = len(placeholder("")) - 1  # "[see request context: "
        for m in preamble:
            for typed in _PLACEHOLDER.finditer(_text_of(m.get("content"))):
                labels.reserve(typed.group()[start:-1])

        # 2. dynamic values out of the preamble, into placeholders
        spans: list[DynamicSpan] = []
        for i, m in enumerate(preamble):
            kind = _kind(m) or "system"
            m["content"] = _map_texts(
                m.get("content"),
                lambda t, i=i, kind=kind: self._move_in(t, i, kind, marked, labels, spans),
            )
        churn = self._observe_churn(preamble, scope)

        # 3. order: system, examples, documents (tools travel apart); relative order kept within each kind
        ordered = [preamble[k] for k in _preamble_order(preamble, n_pre)]
        values = list(labels.values.values())
        block = render_context_block(values)
        only_system = bool(ordered) and all(_kind(m) == "system" for m in ordered)
        stable_system_part: tuple[int, int] | None = None  # (message, part) of the last stable system text
        if block and only_system:
            merged = ordered[0]
            if len(ordered) > 1:
                parts: list[Any] = []
                for m in ordered:
                    parts.extend(_parts(m.get("content")))
                if not anthropic_style and all(isinstance(m.get("content"), str) for m in ordered):
                    merged = {**ordered[0], "content": "\n\n".join(str(m["content"]) for m in ordered)}
                else:
                    merged = {**ordered[0], "content": parts}
            content = merged.get("content")
            if anthropic_style:
                parts = _parts(content)
                stable_system_part = (0, len(parts) - 1) if parts else None
                merged = {**merged, "content": [*parts, {"type": "text", "text": block}]}
            elif isinstance(content, str) or content is None:
                merged = {**merged, "content": f"{content}\n\n{block}" if content else block}
            else:
                merged = {**merged, "content": [*content, {"type": "text", "text": block}]}
            ordered = [merged]
        elif block and first_user is not None:
            m = conversation[first_user]
            content = m.get("content")
            if anthropic_style or not (isinstance(content, str) or content is None):
                new_content: Any = [{"type": "text", "text": block}, *_parts(content)]
            else:
                new_content = f"{block}\n\n{content}" if content else block
            conversation[first_user] = {**m, "content": new_content}
        elif block and ordered:
            m = ordered[-1]
            content = m.get("content")
            if anthropic_style or not (isinstance(content, str) or content is None):
                ordered[-1] = {**m, "content": [*_parts(content), {"type": "text", "text": block}]}
            else:
                ordered[-1] = {**m, "content": f"{content}\n\n{block}" if content else block}
        out_messages = [*ordered, *conversation]

        # 4. the stable prefix and its hash
        stable_messages = [_strip_cc(self._without_block(m)) for m in ordered]
        prefix_hash = _sha(
            {
                "tools": _strip_cc(tools),
                "messages": [{**m, "content": _parts(m.get("content"))} for m in stable_messages],
            }
        )

        warnings: list[str] = []
        # a marked value moved now, or by an earlier plan (its label came back from the context block)
        missing = [
            label
            for label, value in marked.items()
            if label not in labels.values and not any(s.source == "marked" and s.text == value for s in spans)
        ]
        if missing:
            warnings.append(
                f"dynamic value(s) not found in the preamble, nothing moved for: {', '.join(missing)}"
            )
        if spans:
            moved = ", ".join(dict.fromkeys(s.label for s in spans))
            warnings.append(f"dynamic content found and moved to the request context: {moved}")
        tool_texts = [json.dumps(_strip_cc(tool), ensure_ascii=False) for tool in tools or ()]
        first_seen, tools_changed = self._observe_tools(tool_texts, scope)
        for i, tool in enumerate(tools or ()):
            fn = tool.get("function")
            name = fn.get("name") if isinstance(fn, Mapping) else tool.get("name")
            if i in tools_changed:
                warnings.append(
                    f"tool {name or i!r} changed between calls: tools come first in the cached prefix, so a "
                    "definition that changes per call breaks the cache for everything after it"
                )
            elif i in first_seen:
                # said once per tool and formatter (a date in an example of a description is usually fixed)
                found = find_dynamic_spans(tool_texts[i], self.detect)
                if found:
                    warnings.append(
                        f"dynamic content found in tool {name or i!r} ({found[0].kind} {found[0].text!r}): tools "
                        "come first in the cached prefix, so a value that changes there breaks the cache; it is "
                        "left in place"
                    )
        for c in churn:
            warnings.append(
                f"the system prompt changed between calls: {c.before[:60]!r} -> {c.after[:60]!r} (message "
                f"{c.message_index}); if it varies per call, mark it dynamic (dynamic={{...}}, or a template "
                f"variable in dynamic_variables=)"
            )

        # 5. provider specifics
        from frugal_chains.accounting.tokens import count_message_tokens

        total = count_message_tokens(_strip_cc(out_messages), model=self.model, tools=_strip_cc(tools))
        prefix_tokens = self._prefix_tokens(tools, stable_messages)
        params: dict[str, Any] = {}
        breakpoints: tuple[Breakpoint, ...] = ()
        ttl: str | None = None
        cacheable = 0
        if anthropic_style:
            breakpoints, ttl, cacheable = self._place_breakpoints(
                out_messages, tools, ordered, stable_system_part, only_system and bool(block), warnings
            )
            price = self._price()
            reuse = self._reuse(_TTL_MINUTES[ttl]) if ttl else 0.0
            cost, uncached, _ = self._costs(total, cacheable, ttl, reuse, price)
        elif self.rules.implicit:
            minimum = self.rules.min_cacheable_tokens
            if prefix_tokens and prefix_tokens < minimum:
                warnings.append(
                    f"prefix below the minimum: the stable prefix is {prefix_tokens:,} tokens, {self.model} "
                    f"caches prefixes from {minimum:,}"
                )
            elif prefix_tokens:
                cacheable = prefix_tokens
                if self.provider == "openai":  # cached in 128-token increments past the first 1,024
                    cacheable = minimum + (prefix_tokens - minimum) // 128 * 128 if minimum else prefix_tokens
            reuse = self._reuse(self.rules.implicit_ttl_minutes) if cacheable else 0.0
            cost, uncached, _ = self._costs(total, cacheable, None, reuse)
        else:
            reuse = 0.0
            cost, uncached, _ = self._costs(total, 0, None, 0.0)
        if self.rules.prompt_cache_key:
            key = hashlib.sha256(f"{prefix_hash}\x00{scope or ''}".encode()).hexdigest()[:32]
            params["prompt_cache_key"] = f"fc-{key}"

        report = PrefixReport(
            provider=self.provider,
            model=self.model,
            total_tokens=total,
            cacheable_tokens=cacheable,
            breakpoints=breakpoints,
            ttl=ttl,
            reuse_rate=round(reuse, 4),
            calls_per_hour=self.calls_per_hour,
            cost_per_call_usd=cost,
            cost_per_call_uncached_usd=uncached,
            dynamic_spans=tuple(spans),
            churn=tuple(churn),
            warnings=tuple(warnings),
        )
        changed = out_messages != [dict(m) for m in source] or (tools or None) != (
            [dict(t) for t in source_tools] if source_tools is not None else None
        )
        return PrefixPlan(
            messages=out_messages,
            tools=tools,
            params=params,
            prefix_hash=prefix_hash,
            report=report,
            changed=changed,
            context=tuple(values),
        )

    @staticmethod
    def _without_block(message: Mapping[str, Any]) -> dict[str, Any]:
        content = message.get("content")
        if isinstance(content, str):
            return {**message, "content": split_context_block(content)[0]}
        if content is None:
            return dict(message)
        kept = [p for p in content if not (_is_text_part(p) and p["text"].startswith(CONTEXT_HEADER))]
        return {**message, "content": kept}

    def _prefix_tokens(self, tools: list[dict[str, Any]] | None, stable: list[dict[str, Any]]) -> int:
        from frugal_chains.accounting.tokens import count_message_tokens

        if not stable and not tools:
            return 0
        return count_message_tokens(stable, model=self.model, tools=_strip_cc(tools)) - 3

    def _reuse(self, ttl_minutes: float) -> float:
        """P(the previous call came within the cache lifetime), Poisson arrivals at ``calls_per_hour``."""
        return 1.0 - math.exp(-self.calls_per_hour / 60.0 * ttl_minutes)

    def _price(self) -> Any:
        from frugal_chains.accounting.pricing import PriceBook

        book = self.prices if self.prices is not None else _default_book()
        provider = _LITELLM_PROVIDER.get(self.provider, self.provider)
        if not isinstance(book, PriceBook):  # pragma: no cover - checked at construction
            return None
        price, _known = book.lookup(self.model, provider, required=False)
        return price

    def _costs(
        self, total: int, cacheable: int, ttl: str | None, reuse: float, price: Any = None
    ) -> tuple[float | None, float | None, Any]:
        """(expected input USD per call with caching, without, the price used)."""
        if price is None:
            price = self._price()
        if price is None:
            return None, None, None
        p = price.for_input(total)
        uncached = total * p.input / 1e6
        if not cacheable:
            return uncached, uncached, p
        if ttl == "1h":
            write = p.cache_write_1h_rate
        elif ttl == "5m":
            write = p.cache_write_rate
        else:  # implicit caching: no write premium
            write = p.input
        cached = (
            cacheable * (reuse * p.cache_read_rate + (1 - reuse) * write) + (total - cacheable) * p.input
        ) / 1e6
        return cached, uncached, p

    def _choose_ttl(self, prefix_tokens: int) -> str | None:
        """The TTL to ask for: the configured one, or the cheapest expected cost per call (None: do not cache)."""
        ttls = self.rules.ttls
        if self.ttl != "auto":
            return self.ttl
        default = "5m" if "5m" in ttls else ttls[0]
        price = self._price()
        if price is None:
            return default
        p = price.for_input(prefix_tokens)
        costs: dict[str | None, float] = {None: prefix_tokens * p.input}
        for ttl in ttls:
            h = self._reuse(_TTL_MINUTES[ttl])
            write = p.cache_write_1h_rate if ttl == "1h" else p.cache_write_rate
            costs[ttl] = prefix_tokens * (h * p.cache_read_rate + (1 - h) * write)
        best = min(costs, key=lambda k: costs[k])
        if costs[best] >= costs[None]:
            return None
        # the 5-minute lifetime unless the 1-hour one saves more than 1% (its writes cost more on a miss)
        if best == "1h" and "5m" in costs and costs["5m"] <= costs["1h"] * (1 + _TTL_TOLERANCE):
            return "5m"
        return best

    def _place_breakpoints(
        self,
        out: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        ordered: list[dict[str, Any]],
        stable_system_part: tuple[int, int] | None,
        system_has_block: bool,
        warnings: list[str],
    ) -> tuple[tuple[Breakpoint, ...], str | None, int]:
        """Add ``cache_control`` markers to ``out`` and ``tools`` in place; (breakpoints, ttl, cacheable)."""
        from frugal_chains.accounting.tokens import count_message_tokens

        limit = self.rules.max_breakpoints
        minimum = self.rules.min_cacheable_tokens
        model = self.model
        tools_tokens = (count_message_tokens([], model=model, tools=_strip_cc(tools)) - 3) if tools else 0

        def cum_at(mi: int | None, pi: int | None) -> int:
            """Tokens of tools + messages up to (message mi, part pi) included."""
            if mi is None:
                return tools_tokens
            before = _strip_cc(out[:mi])
            msg = _strip_cc(out[mi])
            if pi is not None:
                msg = {**msg, "content": _parts(msg.get("content"))[: pi + 1]}
            return tools_tokens + count_message_tokens([*before, msg], model=model) - 3

        # markers already in the request (yours, or from an earlier plan)
        existing: list[tuple[int | None, int | None]] = []
        if tools:
            existing += [(None, None) for t in tools if "cache_control" in t]
        for index, m in enumerate(out):
            if "cache_control" in m:
                existing.append((index, None))
            content = m.get("content")
            if isinstance(content, list):
                existing += [(index, k) for k, p in enumerate(content) if _has_cc(p)]
        if len(existing) > limit:
            warnings.append(
                f"too many breakpoints asked: the request has {len(existing)} cache_control markers and "
                f"{self.provider} allows {limit}; kept the first {limit}"
            )
            for mi, pi in existing[limit:]:
                if mi is None:
                    assert tools is not None
                    for t in reversed(tools):
                        if "cache_control" in t:
                            del t["cache_control"]
                            break
                elif pi is None:
                    out[mi] = {k: v for k, v in out[mi].items() if k != "cache_control"}
                else:
                    content = list(out[mi]["content"])
                    content[pi] = {k: v for k, v in content[pi].items() if k != "cache_control"}
                    out[mi] = {**out[mi], "content": content}
            existing = existing[:limit]

        # candidate positions: ends of the stable segments
        candidates: list[tuple[int | None, int | None]] = []
        if tools:
            candidates.append((None, None))
        n_ordered = len(ordered)
        last_of: dict[str, int] = {}
        for index in range(n_ordered):
            last_of[_kind(out[index]) or "system"] = index
        for kind in ("system", "example", "document"):
            last = last_of.get(kind)
            if last is None:
                continue
            if kind == "system" and stable_system_part is not None and system_has_block:
                candidates.append(stable_system_part)
                continue
            parts = _parts(out[last].get("content"))
            k = len(parts) - 1
            while (
                k >= 0
                and _is_text_part(parts[k])
                and (not parts[k]["text"] or parts[k]["text"].startswith(CONTEXT_HEADER))
            ):
                k -= 1
            if k >= 0 and isinstance(parts[k], Mapping):
                candidates.append((last, k))
        sized = [(pos, cum_at(*pos)) for pos in candidates]
        largest = max((c for _, c in sized), default=0)
        eligible = [(pos, c) for pos, c in sized if c >= minimum]
        ttl: str | None = None
        new: list[tuple[int | None, int | None]] = []
        if sized and not eligible:
            warnings.append(
                f"prefix below the minimum: the stable prefix is {largest:,} tokens, {model} caches prefixes "
                f"from {minimum:,}; no breakpoint placed"
            )
        elif eligible:
            ttl = self._choose_ttl(max(c for _, c in eligible))
            if ttl is None:
                warnings.append(
                    f"caching would cost more than it saves at calls_per_hour={self.calls_per_hour:g}: no "
                    "breakpoint placed (raise calls_per_hour, or pass ttl='5m' to cache anyway)"
                )
            else:
                free = [(pos, c) for pos, c in eligible if pos not in existing]
                budget = limit - len(existing)
                if budget <= 0 and free:
                    warnings.append(
                        f"too many breakpoints asked: the request already has {len(existing)} cache_control "
                        f"markers ({self.provider} allows {limit}); no breakpoint added"
                    )
                else:
                    # the deepest prefix first, then the largest stable segments
                    free.sort(key=lambda pc: -pc[1])
                    chosen = free[:1]
                    rest = free[1:]
                    seg = {pos: c - max((c2 for p2, c2 in sized if c2 < c), default=0) for pos, c in sized}
                    rest.sort(key=lambda pc: -seg[pc[0]])
                    chosen += rest[: max(0, budget - 1)]
                    new = [pos for pos, _ in chosen]
        if new and existing and ttl is not None:
            ttl = self._ttl_in_order(ttl, new, existing, out, tools, warnings)
        # declined: the preamble was worth no caching at this reuse rate (below the minimum is not a decline)
        declined = bool(eligible) and ttl is None
        conversation_at = self._conversation_mark(
            out, n_ordered, existing, new, limit, minimum, cum_at, declined
        )
        marker: dict[str, str] = {"type": "ephemeral"}
        if ttl == "1h":
            marker = {"type": "ephemeral", "ttl": "1h"}
        for mi, pi in new:
            if mi is None:
                assert tools is not None
                tools[-1] = {**tools[-1], "cache_control": dict(marker)}
                continue
            parts = _parts(out[mi].get("content"))
            assert pi is not None
            parts[pi] = {**parts[pi], "cache_control": dict(marker)}
            out[mi] = {**out[mi], "content": parts}
        if conversation_at is not None:
            mi, pi = conversation_at
            parts = _parts(out[mi].get("content"))
            parts[pi] = {**parts[pi], "cache_control": {"type": "ephemeral"}}  # 5m: the next turn comes soon
            out[mi] = {**out[mi], "content": parts}
            new = [*new, conversation_at]
        all_positions = sorted(
            {*existing, *new}, key=lambda p: (-1 if p[0] is None else p[0], -1 if p[1] is None else p[1])
        )
        bps: list[Breakpoint] = []
        cacheable = 0
        for mi, pi in all_positions:
            c = cum_at(mi, pi)
            in_conversation = conversation_at is not None and (mi, pi) == conversation_at
            if c >= minimum and not in_conversation:
                cacheable = max(cacheable, c)
            cc: Any
            if mi is None:
                cc = (tools or [{}])[-1].get("cache_control")
            elif pi is None:
                cc = out[mi].get("cache_control")
            else:
                cc = _parts(out[mi].get("content"))[pi].get("cache_control")
            bp_ttl = cc.get("ttl", "5m") if isinstance(cc, Mapping) else "5m"
            bps.append(
                Breakpoint(
                    message_index=mi,
                    part_index=pi,
                    on_tools=mi is None,
                    prefix_tokens=c,
                    ttl=str(bp_ttl),
                    caller=(mi, pi) not in new,
                    conversation=in_conversation,
                )
            )
        if ttl is None and bps:
            ttl = next((b.ttl for b in reversed(bps) if not b.conversation), None)
        if not cacheable:
            ttl = None
        return tuple(bps), ttl, cacheable

    def _conversation_mark(
        self,
        out: list[dict[str, Any]],
        n_ordered: int,
        existing: list[tuple[int | None, int | None]],
        new: list[tuple[int | None, int | None]],
        limit: int,
        minimum: int,
        cum_at: Callable[[int | None, int | None], int],
        declined: bool,
    ) -> tuple[int, int] | None:
        """Where a marker closing the conversation goes (the last part of the last message), or None: only with
        ``cache_conversation``, an assistant turn already in the conversation, a free slot, a prefix at the
        minimum (a preamble below it does not stop a long conversation), and caching not declined as not worth
        it at ``calls_per_hour``."""
        if not self.cache_conversation or declined or len(out) <= n_ordered:
            return None
        if not any(m.get("role") == "assistant" for m in out[n_ordered:]):
            return None
        if any(mi is not None and mi >= n_ordered for mi, _ in existing):
            return None  # the conversation already carries a marker (yours, or an earlier plan's)
        if len(existing) + len(new) >= limit:
            return None
        last = len(out) - 1
        parts = _parts(out[last].get("content"))
        k = len(parts) - 1
        while k >= 0 and not (isinstance(parts[k], Mapping) and parts[k].get("type") in _MARKABLE):
            k -= 1
        if k < 0 or (_is_text_part(parts[k]) and not parts[k]["text"]):
            return None
        if cum_at(last, k) < minimum:
            return None
        return (last, k)

    @staticmethod
    def _ttl_in_order(
        ttl: str,
        new: list[tuple[int | None, int | None]],
        existing: list[tuple[int | None, int | None]],
        out: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        warnings: list[str],
    ) -> str:
        """Anthropic wants 1-hour breakpoints before 5-minute ones: follow the lifetimes of your markers."""

        def order(pos: tuple[int | None, int | None]) -> tuple[int, int]:
            return (-1 if pos[0] is None else pos[0], -1 if pos[1] is None else pos[1])

        def ttl_at(pos: tuple[int | None, int | None]) -> str:
            mi, pi = pos
            if mi is None:
                cc = next((t["cache_control"] for t in reversed(tools or []) if "cache_control" in t), None)
            elif pi is None:
                cc = out[mi].get("cache_control")
            else:
                cc = _parts(out[mi].get("content"))[pi].get("cache_control")
            return str(cc.get("ttl", "5m")) if isinstance(cc, Mapping) else "5m"

        first_new, last_new = min(map(order, new)), max(map(order, new))
        if ttl == "1h" and any(ttl_at(p) == "5m" and order(p) < last_new for p in existing):
            warnings.append(
                "a 1-hour breakpoint cannot follow your 5-minute one: the planner's markers use 5m"
            )
            return "5m"
        if ttl == "5m" and any(ttl_at(p) == "1h" and order(p) > first_new for p in existing):
            warnings.append(
                "a 5-minute breakpoint cannot precede your 1-hour one: the planner's markers use 1h"
            )
            return "1h"
        return ttl

    def _observe_tools(self, texts: list[str], scope: str | None) -> tuple[set[int], set[int]]:
        """Which tools this formatter sees for the first time, and which changed since the previous call."""
        first: set[int] = set()
        changed: set[int] = set()
        with self._lock:
            for i, text in enumerate(texts):
                key = (scope, -1 - i)  # tools share the churn memory, at negative positions
                previous = self._churn.get(key)
                if previous is None:
                    first.add(i)
                elif previous[0] != text:
                    changed.add(i)
                self._churn[key] = (text, (previous[1] if previous else 0) + (i in changed))
                self._churn.move_to_end(key)
                while len(self._churn) > _CHURN_KEYS:
                    self._churn.popitem(last=False)
        return first, changed

    def _observe_churn(self, preamble: list[dict[str, Any]], scope: str | None) -> list[ChurnSpan]:
        """Compare each preamble message's stable text with the previous call's (report only)."""
        found: list[ChurnSpan] = []
        with self._lock:
            for i, m in enumerate(preamble):
                text = _text_of(m.get("content"))[:_CHURN_CHARS]
                key = (scope, i)
                previous = self._churn.get(key)
                changes = previous[1] if previous else 0
                if previous is not None and previous[0] != text:
                    before, after = _diff(previous[0], text)
                    # an edit inside the same prompt, not another prompt sent through the same formatter
                    if len(text) - len(after) >= _CHURN_SHARED * max(len(text), len(previous[0])):
                        changes += 1
                        found.append(ChurnSpan(message_index=i, before=before, after=after, seen=changes))
                self._churn[key] = (text, changes)
                self._churn.move_to_end(key)
                while len(self._churn) > _CHURN_KEYS:
                    self._churn.popitem(last=False)
        return found


_BOOK: list[Any] = []
_BOOK_LOCK = threading.Lock()


def _default_book() -> Any:
    """One shared default price book (LiteLLM's prices), built on first use."""
    with _BOOK_LOCK:
        if not _BOOK:
            from frugal_chains.accounting.pricing import PriceBook

            _BOOK.append(PriceBook())
        return _BOOK[0]
