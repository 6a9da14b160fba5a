"""The heuristic scorer's word lists and patterns: a word lexicon by category (programming, maths, reasoning,
constraints, creative writing, classification, translation, length units), multi-word phrases, signs of code and
maths, greetings and short factual questions, and :func:`word_counts`, which counts a text's hits per category."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping

__all__ = [
    "CLASSIFY",
    "CODE_ASK",
    "CODE_MARKS",
    "CONSTRAINT",
    "CREATIVE_ADJ",
    "CREATIVE_NOUN",
    "CREATIVE_VERB",
    "GREETING",
    "LATEX",
    "LIST_ITEM",
    "MATH_ASK",
    "MATH_EXPR",
    "N_CATEGORIES",
    "PREVIOUS_SCAN_CHARS",
    "REASONING",
    "SCAN_CHARS",
    "SHORT_FACT",
    "TRANSLATE",
    "UNIT",
    "VARIABLE",
    "saturate",
    "scan_text",
    "word_counts",
]

SCAN_CHARS = 4000
"""Longer turns are scanned on their first and last 2000 characters (the length feature sees everything)."""
PREVIOUS_SCAN_CHARS = 2000

_WORDS = re.compile(r"[a-z0-9']+")
MATH_EXPR = re.compile(r"[0-9][-+*/^=<>\u00d7\u00f7 ]{1,3}[0-9(]")
VARIABLE = re.compile(r"\^\d|(?<![a-z])[a-z] ?= ?-?\d")
LATEX = re.compile(
    r"\\(?:frac|sum|int|sqrt|cdot|times|prod|lim|infty|alpha|beta|gamma|theta|pi|sigma|mathbb|begin|left|right"
    r"|le|ge|neq|partial|binom)\b|\$[^$\n]{1,200}\$"
)
LIST_ITEM = re.compile(r"(?:^|[\s:;])(?:\(?\d{1,2}[.)]|[-*\u2022]|\(?[a-h]\))\s+[a-z]", re.MULTILINE)
GREETING = re.compile(
    r"^\W*(?:hi|hello|hey|yo|thanks|thank you|thx|ty|ok|okay|cool|great|nice|awesome|perfect|good (?:morning"
    r"|afternoon|evening|night)|bye|goodbye|see you|yes|no|yep|nope|sure|got it|lol|sounds good)\b"
)
SHORT_FACT = re.compile(
    r"^\W*(?:what|who|whom|whose|when|where|which|how old|how tall|how far|how long|how big|is|are|was|were|does"
    r"|do|did|can|could|will|define|spell|name|list)\b"
)
# Substrings whose every occurrence is a sign of code (counted with str.count, which is fast).
CODE_MARKS = (
    "def ",
    "class ",
    "function(",
    "import ",
    "#include",
    "=>",
    "->",
    "==",
    "!=",
    "&&",
    "||",
    "()",
    "{",
    "}",
    ";\n",
    "console.log",
    "print(",
    "traceback (most recent call last)",
    "</",
)

# Word lexicon: every token of the turn is looked up once (exact form, then its first six letters).
CODE_ASK, MATH_ASK, REASONING, CONSTRAINT, CREATIVE_VERB, CREATIVE_NOUN, CREATIVE_ADJ = range(7)
CLASSIFY, TRANSLATE, UNIT, N_CATEGORIES = 7, 8, 9, 10


def _lexicon(groups: Mapping[int, str]) -> dict[str, int]:
    return {w: cat for cat, words in groups.items() for w in words.split()}


_EXACT = _lexicon(
    {
        CODE_ASK: "code codes coding function functions method methods script scripts program programs programming "
        "bug bugs debug regex sql query queries api apis python javascript typescript java rust golang html css "
        "react unittest pytest segfault runtime complexity compile compiler class classes variable variables loop "
        "loops array arrays dataframe pandas numpy git docker kubernetes",
        MATH_ASK: "solve solves solving solved prove proof proofs proving derive derived compute equation equations "
        "inequality theorem lemma matrix matrices vector vectors polynomial simplify percent percentage average "
        "ratio remainder prime primes modulo geometry triangle angle area volume variance median",
        REASONING: "why compare compares compared comparing comparison contrast design designs designed designing "
        "evaluate justify implication implications critique reason reasoning debate argue assess assessment "
        "tradeoff tradeoffs nuanced nuance",
        CONSTRAINT: "must exactly within format formatted formatting json yaml xml csv markdown table bullet bullets "
        "without ensure strictly require required don't shouldn't never always only concise",
        CREATIVE_VERB: "write compose draft create generate produce",
        CREATIVE_NOUN: "essay essays story stories poem poems report article blog letter speech novel chapter "
        "proposal song lyrics screenplay narrative paper thesis outline documentation guide tutorial",
        CREATIVE_ADJ: "detailed comprehensive thorough",
        CLASSIFY: "classify categorize categorise sentiment label spam",
        TRANSLATE: "translate translation translated",
        UNIT: "words sentences paragraphs lines characters items points",
    }
)
_PREFIX6 = _lexicon(
    {
        CODE_ASK: "implem refact debugg algori compil recurs progra script",
        MATH_ASK: "deriva integr probab calcul statis eigenv polyno factor",
        REASONING: "explai analys analyz optimi archit strate recomm justif evalua implic reason",
    }
)
# Multi-word phrases, searched in the lower-case turn when their first word occurs in it.
_PHRASES: dict[int, tuple[str, ...]] = {
    CODE_ASK: (
        "unit test",
        "stack trace",
        "data structure",
        "big-o",
        "big o",
        "c++",
        "c#",
        "time complexity",
    ),
    MATH_ASK: ("how many", "how much", "expected value", "sum of", "product of"),
    REASONING: (
        "step by step",
        "step-by-step",
        "pros and cons",
        "trade-off",
        "trade off",
        "difference between",
        "what would happen",
        "how would",
        "think through",
        "in depth",
        "root cause",
        "best way",
    ),
    CONSTRAINT: (
        "at least",
        "at most",
        "no more than",
        "no less than",
        "no longer than",
        "do not",
        "make sure",
        "should not",
    ),
    CREATIVE_ADJ: ("in detail", "long form", "long-form", "business plan"),
    CLASSIFY: ("true or false", "yes or no", "is this spam", "positive or negative"),
}
_PHRASE_FIRST: dict[str, list[tuple[str, int]]] = {}
for _cat, _phrases in _PHRASES.items():
    for _phrase in _phrases:
        _PHRASE_FIRST.setdefault(_WORDS.findall(_phrase)[0], []).append((_phrase, _cat))
_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")
_UNIT_CONSTRAINT = re.compile(r"\d+\s*(?:words|sentences|paragraphs|lines|characters|items|points)")


def scan_text(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text.lower()
    half = limit // 2
    return (text[:half] + "\n" + text[-half:]).lower()


def word_counts(text: str) -> tuple[list[int], int, int]:
    """(hits per lexicon category, number tokens, "<number> words"-style length constraints) of a lower-case text."""
    tokens = _WORDS.findall(text)
    cats = list(map(_EXACT.get, tokens))
    long_words = [w for w in tokens if len(w) > 6 and w not in _EXACT]
    if long_words:
        cats.extend(map(_PREFIX6.get, [w[:6] for w in long_words]))
        cats.extend(CODE_ASK for w in long_words if w.endswith(("error", "exception")))
    found = Counter(cats)
    counts = [found[k] for k in range(N_CATEGORIES)]
    for first in _PHRASE_FIRST.keys() & set(tokens):
        for phrase, cat in _PHRASE_FIRST[first]:
            if phrase in text:
                counts[cat] += 1
    numbers = len(_NUMBER.findall(text))
    units = len(_UNIT_CONSTRAINT.findall(text)) if counts[UNIT] and numbers else 0
    return counts, numbers, units


def saturate(count: float, at: float) -> float:
    """``count / at`` capped at 1 (a feature saturates at ``at`` hits)."""
    return count / at if count < at else 1.0
