"""Dynamic spans: the parts of an otherwise stable prompt that change from call to call.

Detectors (each a regular expression that runs in linear time; no guessing of names from free text):

* ``"date"``: ISO dates (``2026-12-07``), ``December 7, 2026``, ``Dec 7th 2026``, ``7 Dec 2026``,
  ``7th of December, 2026``, numeric dates (``12/07/2026``, ``07.12.2026``), with an optional weekday in front
  (``Monday, December 7, 2026``). A date followed by a time (``2024-05-15 15:00:00 EST``,
  ``2026-12-07T14:32:00Z``, ``December 7, 2026 at 2:30 PM``) is one span.
* ``"time"``: ``14:32``, ``14:32:05``, ``2:30 PM``, ``2 pm``, with an optional zone (``UTC``, ``EST``, ``+01:00``).
* ``"uuid"``: ``123e4567-e89b-12d3-a456-426614174000``.
* ``"request_id"``: prefixed ids (``req_8f3a9c2d``, ``trace-4bf92f35``, ``chatcmpl-...``) and long hex or base62
  tokens (12 characters or more) with six digits or more, or letters and digits interleaved (``a8f3e9b2c4d1``);
  not a word with a number in it (``base64encoded``).
* ``"email"``: ``alice@example.com``.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from frugal_chains.errors import ConfigurationError

__all__ = [
    "DEFAULT_DETECTORS",
    "DETECTORS",
    "DynamicSpan",
    "SpanSource",
    "classify_value",
    "find_dynamic_spans",
]

SpanSource = Literal["detected", "variable", "marked"]

DETECTORS: tuple[str, ...] = ("date", "time", "uuid", "request_id", "email")
"""Every detector name."""
DEFAULT_DETECTORS: tuple[str, ...] = DETECTORS
"""The detectors :class:`~frugal_chains.prefix.PrefixFormatter` runs by default (all of them)."""


@dataclass(frozen=True)
class DynamicSpan:
    """One value that varies between calls, found in stable content.

    Example:
        >>> from frugal_chains.prefix import find_dynamic_spans
        >>> [(s.kind, s.text) for s in find_dynamic_spans("The current time is 2024-05-15 15:00:00 EST.")]
        [('date', '2024-05-15 15:00:00 EST')]
    """

    kind: str
    """"date", "time", "uuid", "request_id", "email", or "name" for a variable's value that is none of those."""
    text: str
    """The value, as it appeared."""
    label: str = ""
    """Its label in the request context block ("date", "date 2", "request id", a variable's name...)."""
    source: SpanSource = "detected"
    """How it was found: a detector, a template variable, or a value you marked (``dynamic=``)."""
    message_index: int | None = None
    """Index of the input message it was found in."""
    start: int = 0
    """Offset of the value in the text a detector scanned (after template variables and marked values were
    replaced); 0 for variables and marked values."""
    end: int = 0
    """Offset just past the value (0 for variables and marked values)."""


_MONTH = (
    r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|"
    r"Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)\.?"
)
_WEEKDAY = (
    r"(?:(?:Mon|Tues|Wednes|Thurs|Fri|Satur|Sun)day|Mon|Tue|Tues|Wed|Thu|Thur|Thurs|Fri|Sat|Sun)\.?,?\s+"
)
_DAY = r"(?:[12]\d|3[01]|0?[1-9])(?:st|nd|rd|th)?"
_DATE_CORE = (
    r"(?:"
    r"\d{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])"  # 2026-12-07
    r"|\d{4}/(?:0?[1-9]|1[0-2])/(?:0?[1-9]|[12]\d|3[01])"  # 2026/12/07
    r"|(?:0?[1-9]|[12]\d|3[01])[/.-](?:0?[1-9]|[12]\d|3[01])[/.-]\d{4}"  # 12/07/2026, 07.12.2026
    r"|(?:0?[1-9]|[12]\d|3[01])/(?:0?[1-9]|[12]\d|3[01])/\d{2}(?![\d/])"  # 12/07/26
    rf"|{_MONTH}\s+{_DAY},?\s+\d{{4}}"  # December 7, 2026
    rf"|{_DAY}\s+(?:of\s+)?{_MONTH},?\s+\d{{4}}"  # 7 Dec 2026, 7th of December, 2026
    r")"
)
_ZONE = (
    r"(?:\s?(?:Z|[+-](?:[01]\d|2[0-3]):?[0-5]\d)"
    r"|\s(?:UTC|GMT)(?:[+-]\d{1,2}(?::?\d{2})?)?"
    r"|\s(?:[ECMP][SD]T|AK[SD]T|HST|BST|IST|CES?T|EES?T|WES?T|JST|KST|HKT|SGT|AES?T|AEDT|NZ[SD]T|MSK))"
)
_CLOCK = r"(?:[01]?\d|2[0-3]):[0-5]\d(?::[0-5]\d(?:\.\d{1,9})?)?(?:\s?[AaPp](?:\.[Mm]\.|[Mm]\b))?"
_HOUR_AMPM = r"(?:1[0-2]|0?[1-9])\s?[AaPp](?:\.[Mm]\.|[Mm]\b)"
_TIME_CORE = rf"(?:{_CLOCK}|{_HOUR_AMPM}){_ZONE}?(?![\w:])"

_PATTERNS: dict[str, re.Pattern[str]] = {
    "date": re.compile(
        rf"(?<![\w/.-])(?:{_WEEKDAY})?{_DATE_CORE}(?:(?:T|,?\s+(?:at\s+)?){_TIME_CORE})?(?![\w/])",
        re.IGNORECASE,
    ),
    "time": re.compile(rf"(?<![\w:.])(?:{_TIME_CORE})"),
    "uuid": re.compile(
        r"(?<![\w-])[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}(?![\w-])"
    ),
    "request_id": re.compile(
        r"(?<![\w-])(?:"
        r"(?:req|request|trace|span|run|msg|sess|session|call|chatcmpl|conv|txn|evt|event|job|corr|rid|ticket)"
        r"[_-][A-Za-z0-9][A-Za-z0-9_-]{5,}"
        r"|[A-Za-z0-9]{12,}"
        r")(?![\w-])"
    ),
    "email": re.compile(r"(?<![\w.%+-])[\w.%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![\w-])"),
}
_PRIORITY = {"email": 0, "uuid": 1, "date": 2, "time": 3, "request_id": 4}


_PREFIXED_ID = re.compile(r"[A-Za-z]+[_-]")


def _accept(kind: str, text: str) -> bool:
    if kind != "request_id":
        return True
    if _PREFIXED_ID.match(text):  # req_..., trace-...: any digit will do
        return any(c.isdigit() for c in text)
    # a bare token: many digits (ORD1234567890, 20240515150000) or letters and digits interleaved (a8f3e9b2c4d1);
    # not a word with a number in it (base64encoded, iso8601format)
    digits = sum(c.isdigit() for c in text)
    switches = sum(a.isdigit() != b.isdigit() for a, b in itertools.pairwise(text))
    return digits >= 6 or switches >= 3


def _check_detect(detect: Sequence[str]) -> tuple[str, ...]:
    if isinstance(detect, str) or not isinstance(detect, Sequence):
        raise ConfigurationError(
            f"detect must be a list of detector names from {list(DETECTORS)}, got {detect!r}", field="detect"
        )
    unknown = [d for d in detect if d not in DETECTORS]
    if unknown:
        raise ConfigurationError(
            f"detect: unknown detector(s) {unknown}; use names from {list(DETECTORS)}", field="detect"
        )
    return tuple(detect)


def find_dynamic_spans(text: str, detect: Sequence[str] = DEFAULT_DETECTORS) -> list[DynamicSpan]:
    """The dynamic values a text holds, in order, without overlaps (the longest wins; an email beats the
    id-like token inside it). Labels are left empty (the planner numbers them).

    Example:
        >>> from frugal_chains.prefix import find_dynamic_spans
        >>> text = "Today is Monday, December 7, 2026. Request req_8f3a9c2d1e, contact ops@example.com at 2:30 PM."
        >>> for span in find_dynamic_spans(text):
        ...     print(span.kind, "|", span.text)
        date | Monday, December 7, 2026
        request_id | req_8f3a9c2d1e
        email | ops@example.com
        time | 2:30 PM
    """
    kinds = _check_detect(detect)
    found: list[tuple[int, int, int, str]] = []
    for kind in kinds:
        for m in _PATTERNS[kind].finditer(text):
            if m.end() > m.start() and _accept(kind, m.group()):
                found.append((m.start(), -(m.end() - m.start()), _PRIORITY[kind], kind))
    found.sort()
    spans: list[DynamicSpan] = []
    taken_until = -1
    # longest first at each start; a later candidate overlapping a kept one is dropped, unless it is longer and
    # strictly contains nothing kept (handled by sorting: the longest at the earliest start wins)
    for start, neg_len, _prio, kind in found:
        end = start - neg_len
        if start < taken_until:
            continue
        spans.append(DynamicSpan(kind=kind, text=text[start:end], start=start, end=end))
        taken_until = end
    return spans


def classify_value(value: str) -> str:
    """The kind of a whole value: a detector's name when one matches all of it, else ``"name"``.

    Example:
        >>> from frugal_chains.prefix.spans import classify_value
        >>> classify_value("2026-12-07"), classify_value("Alice"), classify_value("a@b.io")
        ('date', 'name', 'email')
    """
    stripped = value.strip()
    for kind in ("email", "uuid", "date", "time", "request_id"):
        m = _PATTERNS[kind].fullmatch(stripped)
        if m is not None and _accept(kind, stripped):
            return kind
    return "name"
