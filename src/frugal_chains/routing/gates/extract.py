"""Numbers in answers: every number of a text (``1,000`` and ``$18`` included), the final answer after a marker
(``####``, "the answer is", "final answer"), and :func:`default_extract`, the answer key
:class:`~frugal_chains.routing.SelfConsistencyGate` compares by."""

from __future__ import annotations

import re
import unicodedata
from decimal import Decimal, InvalidOperation

__all__ = ["FINAL_MARKER", "default_extract", "final_number", "find_numbers", "format_number", "to_decimal"]


# "1,000" is a thousand, "(1,2)" two numbers.
_NUMBER = re.compile(r"(?<![\w.])-?\$?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?")
FINAL_MARKER = re.compile(
    r"####|\bthe (?:final |correct )?answer is\b|\bfinal answer\b|\\boxed\{|\banswer\s*[:=]", re.IGNORECASE
)


def to_decimal(token: str) -> Decimal | None:
    s = token.replace(",", "").replace("$", "")
    try:
        d = Decimal(s)
    except InvalidOperation:
        return None
    return d if d.is_finite() else None


def find_numbers(text: str) -> list[Decimal]:
    """Every number in ``text`` (``1,000`` and ``$18`` included), in order."""
    out: list[Decimal] = []
    for m in _NUMBER.finditer(text):
        d = to_decimal(m.group())
        if d is not None:
            out.append(d)
    return out


def final_number(text: str) -> Decimal | None:
    """The number after the last final-answer marker (``####``, "the answer is" ...), else the last number."""
    markers = list(FINAL_MARKER.finditer(text))
    if markers:
        after = find_numbers(text[markers[-1].end() :])
        if after:
            return after[0]
    nums = find_numbers(text)
    return nums[-1] if nums else None


def format_number(d: Decimal) -> str:
    """``3.0`` -> ``"3"``, ``2.50`` -> ``"2.5"``, ``1000`` -> ``"1000"``."""
    if d == d.to_integral_value():
        return str(int(d))
    return format(d.normalize(), "f")


_PUNCT = re.compile(r"[^\w\s]+")
_SPACE = re.compile(r"\s+")


def default_extract(text: str) -> str:
    """The final answer of ``text``, normalised for comparison (used by :class:`SelfConsistencyGate`).

    With numbers in the text: the number after the last ``####`` / "the answer is" / "final answer", else the last
    number, with commas and ``$`` removed and ``3.0 == 3``. Without numbers: the casefolded text with punctuation
    and whitespace squeezed.

    Example:
        >>> from frugal_chains.routing.gates import default_extract
        >>> default_extract("3 + 4 = 7, so the answer is 1,000.0 apples")
        '1000'
        >>> default_extract("  Paris!  ") == default_extract("paris")
        True
    """
    number = final_number(text)
    if number is not None:
        return format_number(number)
    return _SPACE.sub(" ", _PUNCT.sub(" ", unicodedata.normalize("NFKC", text).casefold())).strip()
