"""The request context block: where the values moved out of the stable prefix go.

::

    Request context (values referred to above):
    - date: 2026-12-07
    - user_name: Alice

Same values give the same bytes. A value with a line break, or with spaces at either end, is written as a JSON
string so the block stays one line per value and parses back exactly.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

from frugal_chains.prefix.spans import classify_value

__all__ = [
    "CONTEXT_HEADER",
    "ContextValue",
    "placeholder",
    "render_context_block",
    "split_context_block",
]

CONTEXT_HEADER = "Request context (values referred to above):"
"""The first line of the block."""

_PLACEHOLDER = "[see request context: {label}]"
_LINE = re.compile(r"- (?P<label>[^:\n]+): (?P<value>.*)")
_LABEL_KINDS = {"date": "date", "time": "time", "uuid": "uuid", "request id": "request_id", "email": "email"}


def placeholder(label: str) -> str:
    """The byte-stable text that replaces a moved value.

    Example:
        >>> from frugal_chains.prefix.context import placeholder
        >>> placeholder("date")
        '[see request context: date]'
    """
    return _PLACEHOLDER.format(label=label)


@dataclass(frozen=True)
class ContextValue:
    """One line of the request context block.

    Example:
        >>> from frugal_chains.prefix import ContextValue
        >>> ContextValue("user_name", "Alice", "name").line()
        '- user_name: Alice'
    """

    label: str
    """The label the placeholder names ("date", "date 2", "request id", a variable's name...)."""
    value: str
    """The value, exactly as it was in the prompt."""
    kind: str = "name"
    """"date", "time", "uuid", "request_id", "email" (from the label, else from the value), or "name" (a value that
    is none of those)."""

    def line(self) -> str:
        """The value's line in the block."""
        value = self.value
        if "\n" in value or "\r" in value or value != value.strip() or value.startswith('"'):
            value = json.dumps(value, ensure_ascii=False)
        return f"- {self.label}: {value}"


def _kind_of(label: str, value: str) -> str:
    base = re.sub(r" \d+$", "", label)
    kind = _LABEL_KINDS.get(base)
    if kind is not None:
        return kind
    return classify_value(value)


def render_context_block(values: Sequence[ContextValue]) -> str:
    """The block for ``values`` (``""`` when there is none).

    Example:
        >>> from frugal_chains.prefix import ContextValue
        >>> from frugal_chains.prefix.context import render_context_block
        >>> print(render_context_block([ContextValue("date", "2026-12-07", "date")]))
        Request context (values referred to above):
        - date: 2026-12-07
    """
    if not values:
        return ""
    return "\n".join([CONTEXT_HEADER, *(v.line() for v in values)])


def _parse_value(raw: str) -> str:
    if raw.startswith('"'):
        try:
            decoded = json.loads(raw)
        except ValueError:
            return raw
        if isinstance(decoded, str):
            return decoded
    return raw


def split_context_block(text: str) -> tuple[str, list[ContextValue]]:
    """Remove a request context block from ``text`` and parse it: ``(text without the block, values)``.

    The blank line that joined the block to the text goes with it, so splitting a planned text gives back the
    text before planning. A text without a block comes back unchanged with no values.

    Example:
        >>> from frugal_chains.prefix import split_context_block
        >>> text = ("Today is [see request context: date].\\n\\n"
        ...         "Request context (values referred to above):\\n- date: 2026-12-07\\n- user_name: Alice")
        >>> stable, values = split_context_block(text)
        >>> stable
        'Today is [see request context: date].'
        >>> [(v.label, v.value, v.kind) for v in values]
        [('date', '2026-12-07', 'date'), ('user_name', 'Alice', 'name')]
    """
    if text.startswith(CONTEXT_HEADER):
        start = 0
    else:
        start = text.find("\n" + CONTEXT_HEADER)
        if start < 0:
            return text, []
        start += 1
    pos = start + len(CONTEXT_HEADER)
    values: list[ContextValue] = []
    while pos < len(text) and text[pos] == "\n":
        line_end = text.find("\n", pos + 1)
        line_end = len(text) if line_end < 0 else line_end
        m = _LINE.fullmatch(text, pos + 1, line_end)
        if m is None:
            break
        value = _parse_value(m.group("value"))
        values.append(ContextValue(m.group("label"), value, _kind_of(m.group("label"), value)))
        pos = line_end
    before, after = text[:start], text[pos:]
    if before.endswith("\n\n"):
        before = before[:-2]
    elif after.startswith("\n\n"):
        after = after[2:]
    elif before.endswith("\n"):
        before = before[:-1]
    return before + after, values
