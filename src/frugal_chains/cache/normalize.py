"""Text normalisation applied before a question is hashed (exact tier) or embedded (semantic tier).

:func:`normalize` makes superficially different spellings of the same question share a key:

1. Unicode NFKC (full-width letters, ligatures, non-breaking spaces ...), then ``casefold()``; a lone surrogate
   (``"\\ud800"``: not a character, and not encodable as UTF-8) becomes U+FFFD, so every embedder and store
   takes the text;
2. *volatile spans* become placeholders, so a request id or a timestamp pasted into a prompt does not
   defeat the cache: date-times and clock times with seconds -> ``<ts>``; UUIDs, long hex strings
   (>= 16 hex digits with at least one digit) and long digit runs (>= 10 digits) -> ``<id>``;
3. runs of whitespace collapse to one space; leading/trailing whitespace and trailing punctuation
   (``? . ! , ; : …`` and their full-width forms) are stripped.

Plain dates (``2024-05-01``), short numbers, amounts and units are **kept**: they usually decide the
answer. The hit guard (:mod:`frugal_chains.cache.guard`) always compares the *raw* texts, so it still
sees numbers and entities that normalisation keeps or drops.

Example:
    >>> normalize("  What  is the \uff23\uff25\uff2f of Apple?? ")
    'what is the ceo of apple'
    >>> normalize("Summarise ticket 3f2a9c1e-8b7d-4c2e-9f1a-0b1c2d3e4f5a sent 2024-05-01T10:22:33Z")
    'summarise ticket <id> sent <ts>'
    >>> normalize("Is 17 prime?") == normalize("is 17 prime")
    True
    >>> normalize("Is 17 prime?") == normalize("Is 19 prime?")
    False
"""

from __future__ import annotations

import re
import unicodedata

from frugal_chains.shared.text import without_surrogates

__all__ = ["ID_PLACEHOLDER", "TS_PLACEHOLDER", "has_content", "normalize", "volatile_spans"]

TS_PLACEHOLDER = "<ts>"
ID_PLACEHOLDER = "<id>"

# Order matters: date-times before ids (a timestamp's digits must not become "<id>").
_DATETIME = re.compile(
    r"\b\d{4}-\d{2}-\d{2}[t ]\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:z|[+-]\d{2}:?\d{2})?(?![\w:])"
)
_CLOCK_WITH_SECONDS = re.compile(r"\b\d{1,2}:\d{2}:\d{2}(?:[.,]\d+)?(?:z|[+-]\d{2}:?\d{2})?(?![\w:])")
_UUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")
_LONG_HEX = re.compile(r"\b(?:0x)?(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{16,}\b")
_LONG_DIGITS = re.compile(r"(?<![\d.,])\d{10,}(?![\d.,]\d)")
_WS = re.compile(r"\s+")
_TRAILING_PUNCT = re.compile("[\\s?.!,;:\u2026\u3002\uff1f\uff01\uff0c\uff1b\uff1a]+$")

_VOLATILE: tuple[tuple[re.Pattern[str], str], ...] = (
    (_DATETIME, TS_PLACEHOLDER),
    (_CLOCK_WITH_SECONDS, TS_PLACEHOLDER),
    (_UUID, ID_PLACEHOLDER),
    (_LONG_HEX, ID_PLACEHOLDER),
    (_LONG_DIGITS, ID_PLACEHOLDER),
)


def _fold(text: str) -> str:
    return without_surrogates(unicodedata.normalize("NFKC", text).casefold())


def has_content(text: str) -> bool:
    """True when ``text`` has a letter or a digit in any script. ``""``, ``"?"``, ``"..."`` or ``"?!"`` have none:
    they all normalise to ``""``, and the cache never serves nor stores them (one could not tell them apart).

    Example:
        >>> has_content("?"), has_content(" ... "), has_content("Why?"), has_content("¿أين؟"), has_content("42")
        (False, False, True, True, True)
    """
    return any(ch.isalnum() for ch in text)


def volatile_spans(text: str) -> list[str]:
    """The volatile spans :func:`normalize` would replace, in order of the rules (for logs and tests).

    Args:
        text: raw text.

    Returns:
        The matched substrings of the NFKC-casefolded text.

    Example:
        >>> volatile_spans("order 12345678901 at 10:22:33")
        ['10:22:33', '12345678901']
    """
    folded = _fold(text)
    found: list[str] = []
    for pattern, placeholder in _VOLATILE:
        found.extend(m.group(0) for m in pattern.finditer(folded))
        folded = pattern.sub(placeholder, folded)
    return found


def normalize(text: str, *, mask_volatile: bool = True) -> str:
    """Normalise a question for the cache key and for embedding.

    Args:
        text: the raw question (last user turn).
        mask_volatile: replace timestamps and long ids with ``<ts>`` / ``<id>`` (default ``True``).

    Returns:
        The normalised text (may be empty if the input was only whitespace and punctuation).

    Example:
        >>> normalize("\uff28\uff4f\uff57 do I\u00a0reset my password?!")
        'how do i reset my password'
        >>> normalize("Call at 2024-05-01 10:00", mask_volatile=False)
        'call at 2024-05-01 10:00'
    """
    out = _fold(text)
    if mask_volatile:
        for pattern, placeholder in _VOLATILE:
            out = pattern.sub(placeholder, out)
    out = _WS.sub(" ", out).strip()
    return _TRAILING_PUNCT.sub("", out)
