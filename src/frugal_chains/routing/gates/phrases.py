"""The refusal and uncertainty phrases :class:`~frugal_chains.routing.RefusalGate` looks for, and how answer text
is normalised and cut into sentences before they are matched."""

from __future__ import annotations

import re
import unicodedata

__all__ = [
    "KEY_OPENING_SENTENCES",
    "REFUSAL_PATTERNS",
    "SHORT_SENTENCE_WORDS",
    "UNCERTAINTY_PATTERNS",
    "normalise_phrase_text",
    "split_sentences",
]

# Patterns run on normalised text: NFKC, casefolded, apostrophes removed ("I'm" -> "im"), spaces squeezed.
_CANT = r"(?:cant|cannot|can not|wont|will not|am unable to|im unable to|am not able to|im not able to)"
REFUSAL_PATTERNS: tuple[str, ...] = (
    rf"\bi {_CANT} (?:help|assist|comply|fulfil|fulfill|answer (?:that|this|your)|do (?:that|this)"
    r"|provide (?:that|this|any|help|assistance|an answer|information|the information)|support (?:that|this)"
    r"|engage|participate)\b",
    r"\bi(?:m| am) (?:unable|not able|not allowed|not permitted) to\b",
    r"\bas an ai(?: language model| model| assistant| developed by|,)",
    r"\bi (?:must|have to|will have to) (?:decline|refuse)\b",
    r"\bi(?:m| am) (?:sorry|afraid),? (?:but )?i (?:cant|cannot|can not|wont|am unable|im unable|am not able"
    r"|im not able|dont|do not)\b",
    r"\bi apologi[sz]e,? (?:but )?i (?:cant|cannot|can not|wont|am unable|im unable)\b",
    r"\b(?:that|this)(?:s| is) not something i (?:can|am able to|m able to) (?:help|assist)",
    r"\bi (?:cant|cannot|wont|will not) (?:help|assist) (?:you )?with\b",
)
UNCERTAINTY_PATTERNS: tuple[str, ...] = (
    r"\bi(?:m| am) not (?:sure|certain|confident)\b",
    r"\bi(?:m| am) uncertain\b",
    # "I don't know." / "I don't know what ..." but not "I don't know of any reason not to ..."
    r"\bi (?:dont|do not) know(?=\s*(?:[.,;:!?)]|$)|\s+(?:the answer|the exact|the correct|the specific|what|which"
    r"|who|whom|where|when|why|how|if|whether|for sure|for certain|exactly|enough|much about|anything about))",
    r"\bi (?:cant|cannot|can not|am unable to|im unable to|am not able to|im not able to) (?:determine|say for "
    r"(?:sure|certain)|be (?:sure|certain)|tell for (?:sure|certain)|know)\b",
    r"\bit(?:s| is) (?:unclear|not clear|impossible to (?:say|determine|know|tell)|hard to say|difficult to say)\b"
    r"(?!\s+to\b)",
    r"\b(?:there(?:s| is| are) (?:not|no)|there isnt|there arent) (?:enough|sufficient) (?:information|data"
    r"|details|context)\b",
    r"\b(?:insufficient|not enough) information\b",
    r"\b(?:cannot|cant|can not) be determined\b",
    r"\bi have no (?:way of knowing|idea)\b",
)
_APOSTROPHES = re.compile(r"['\u2019\u2018\u02bc\u0060\u00b4\u2032]")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
SHORT_SENTENCE_WORDS = 8
KEY_OPENING_SENTENCES = 2


# Quoted or code spans are someone else's words ('people say "I don't know"'): they are not matched.
_QUOTED = re.compile(
    '"[^"\n]{0,300}"|\u201c[^\u201c\u201d\n]{0,300}\u201d|`[^`\n]{0,300}`'
    "|(?<!\\w)['\u2018](?:[^'\u2018\u2019\n]|['\u2019](?=\\w)){1,300}?['\u2019](?!\\w)"
)


def normalise_phrase_text(text: str) -> str:
    text = _QUOTED.sub(" ", unicodedata.normalize("NFKC", text))
    text = text.casefold()
    text = _APOSTROPHES.sub("", text)
    return re.sub(r"[ \t\r\f\v]+", " ", text)


def split_sentences(text: str) -> list[str]:
    out = []
    for s in _SENTENCE_END.split(text):
        s = s.strip(' *_>#-"“”`')
        if s:
            out.append(s)
    return out
