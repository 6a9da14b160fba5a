"""Hit guard: reject a semantic match when the two questions differ in what decides the answer.

An embedding puts "How do I enable 2FA?" and "How do I disable 2FA?" close together; a cache that
serves one answer for both is wrong. :class:`HitGuard` compares the **raw** texts of the incoming
question and the cached one and rejects the hit when they differ in

* numbers (``3`` vs ``5``, ``1,000`` = ``1000``, ``two`` = ``2``), dates (month and weekday names),
* units and currencies (``km`` vs ``miles``, ``$`` vs ``€``),
* negation (one side says ``not``/``never``/``can't``/``without``, the other does not),
* opposites (``enable``/``disable``, ``buy``/``sell``, ``legal``/``illegal`` ...),
* named entities (capitalised words not at sentence start, acronyms, words with digits) swapped
  between the two sides,
* direction (``from A to B`` vs ``from B to A``),

and finally scores the pair with a small logistic-regression model (12 lexical features, coefficients
shipped as ``_guard_data/pair_model.json``, fitted on held-out Quora Question Pairs -- ``pairs.jsonl.gz``
minus every eval_4k id and text -- and BANKING77 *training* pairs, see :mod:`frugal_chains.cache.tuning`);
a pair passes at ``P(same answer) >= 0.60``. Defaults: every rule on, the shipped model, cutoff 0.60,
meant for :data:`DEFAULT_THRESHOLD` (0.86). A check takes a few tens of microseconds.

:func:`bypass_reason` says when a question must skip the semantic tier altogether: time-sensitive
("today", "latest", "current price"), user-specific ("my order", "my account") and
context-dependent ("this video", "translate this", "the above").

A stronger verifier (a cross-encoder, or a cheap LLM judge) plugs in through the :class:`Verifier`
protocol; :class:`CallableVerifier` wraps plain functions.

Example:
    >>> guard = HitGuard()
    >>> guard.check("How do I enable 2FA?", "How do I disable 2FA?")
    GuardVerdict(ok=False, reason='opposite: enable/disable')
    >>> guard.check("Who is the CEO of Apple?", "Who is the CEO of Google?").reason
    'entity: apple/google'
    >>> guard.check("How can I reset my password?", "how do i reset my password").ok
    True
"""

from __future__ import annotations

import asyncio
import gzip
import json
import math
import re
import unicodedata
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any, Protocol, runtime_checkable

from frugal_chains.errors import ConfigurationError

__all__ = [
    "DEFAULT_THRESHOLD",
    "BypassPolicy",
    "CallableVerifier",
    "GuardVerdict",
    "HitGuard",
    "PairModel",
    "Verifier",
    "bypass_reason",
    "pair_features",
]

#: Cosine *similarity* (0..1, higher = stricter) for the default embedder (all-MiniLM-L6-v2 int8),
#: used together with the default :class:`HitGuard` (whose pair model passes ``P(same answer) >= 0.60``).
#: Tuned on held-out training data only (QQP pairs outside eval_4k, BANKING77 train; see
#: :mod:`frugal_chains.cache.tuning`): on validation 0.86 + cutoff 0.60 gave QQP precision 0.761 at hit
#: rate 0.510 and a BANKING77 replay with 41.6% hits, 3.6% of them wrong.
DEFAULT_THRESHOLD: float = 0.86

_DATA = "frugal_chains.cache._guard_data"

# --------------------------------------------------------------------------------------------------
# tokenisation helpers
# --------------------------------------------------------------------------------------------------


def _wordset(words: str) -> frozenset[str]:
    return frozenset(words.split())


_WORD = re.compile(r"[^\W_]+(?:['\u2019][^\W_]+)*|[$€£¥₹%°]")
_NUM_SUFFIX = re.compile(r"\d+(?:st|nd|rd|th|s|k|m|x|gb|mb|km|kg|g|p)")
_NUM = re.compile(r"(?<![\w.])[-+]?\d[\d,]*(?:\.\d+)?")

_STOP = _wordset(
    """a an the and or but if of to in on at by for from with as into onto about over under than then so
    is are was were be been being am do does did doing done have has had having can could will would shall
    should may might must i me my mine we us our you your he him his she her it its they them their this
    that these those there here what which who whom whose why how when where whats hows whos one ones
    some any all each every very really just also too much many more most get got getting use using used
    s t d ll ve re m way ways best good thing things someone something anyone anything people person quora
    please possible know tell find make want need like would"""
)

_NEGATORS = _wordset(
    """not no never none nobody nothing neither nor without cannot cant dont doesnt didnt isnt arent wasnt
    werent wont wouldnt shouldnt couldnt hasnt havent hadnt mustnt aint unable"""
)

_WORD_NUMBERS = {
    "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6", "seven": "7",
    "eight": "8", "nine": "9", "ten": "10", "eleven": "11", "twelve": "12", "thirteen": "13",
    "fourteen": "14", "fifteen": "15", "sixteen": "16", "seventeen": "17", "eighteen": "18",
    "nineteen": "19", "twenty": "20", "thirty": "30", "forty": "40", "fifty": "50", "hundred": "100",
    "thousand": "1000", "million": "1000000", "billion": "1000000000", "first": "1", "second": "2",
    "third": "3", "fourth": "4", "fifth": "5", "half": "0.5", "dozen": "12",
}  # fmt: skip

_MONTHS = {
    "jan": "jan", "january": "jan", "feb": "feb", "february": "feb", "mar": "mar", "march": "mar",
    "apr": "apr", "april": "apr", "may": "may", "jun": "jun", "june": "jun", "jul": "jul", "july": "jul",
    "aug": "aug", "august": "aug", "sep": "sep", "sept": "sep", "september": "sep", "oct": "oct",
    "october": "oct", "nov": "nov", "november": "nov", "dec": "dec", "december": "dec",
    "monday": "mon", "tuesday": "tue", "wednesday": "wed", "thursday": "thu", "friday": "fri",
    "saturday": "sat", "sunday": "sun",
}  # fmt: skip
# "may", "mar", "jan" ... are ordinary words too: only count them as dates next to a number.
_AMBIGUOUS_MONTHS = frozenset({"may", "mar", "jan", "jun", "jul", "aug", "sep", "oct", "nov", "dec", "apr"})

_UNITS = {
    "km": "km", "kms": "km", "kilometer": "km", "kilometers": "km", "kilometre": "km", "kilometres": "km",
    "mile": "mi", "miles": "mi", "mi": "mi", "m": "m", "meter": "m", "meters": "m", "metre": "m",
    "metres": "m", "cm": "cm", "mm": "mm", "inch": "in", "inches": "in", "foot": "ft", "feet": "ft",
    "ft": "ft", "kg": "kg", "kgs": "kg", "kilo": "kg", "kilos": "kg", "kilogram": "kg", "kilograms": "kg",
    "lb": "lb", "lbs": "lb", "pound": "lb", "pounds": "lb", "g": "g", "gram": "g", "grams": "g",
    "oz": "oz", "ounce": "oz", "ounces": "oz", "l": "l", "liter": "l", "liters": "l", "litre": "l",
    "litres": "l", "ml": "ml", "gallon": "gal", "gallons": "gal", "celsius": "c", "fahrenheit": "f",
    "kelvin": "k", "gb": "gb", "mb": "mb", "tb": "tb", "kb": "kb", "ghz": "ghz", "mhz": "mhz",
    "mph": "mph", "kmh": "kmh", "hour": "h", "hours": "h", "hr": "h", "hrs": "h", "minute": "min",
    "minutes": "min", "min": "min", "mins": "min", "second": "s", "seconds": "s", "sec": "s", "secs": "s",
    "day": "d", "days": "d", "week": "wk", "weeks": "wk", "month": "mo", "months": "mo", "year": "y",
    "years": "y", "yr": "y", "yrs": "y", "$": "usd", "usd": "usd", "dollar": "usd", "dollars": "usd",
    "€": "eur", "eur": "eur", "euro": "eur", "euros": "eur", "£": "gbp", "gbp": "gbp", "¥": "jpy",
    "yen": "jpy", "jpy": "jpy", "₹": "inr", "inr": "inr", "rupee": "inr", "rupees": "inr", "rs": "inr",
    "%": "pct", "percent": "pct", "percentage": "pct", "°": "deg", "degree": "deg", "degrees": "deg",
    "bitcoin": "btc", "btc": "btc", "cad": "cad", "aud": "aud", "chf": "chf", "cny": "cny", "yuan": "cny",
    "watt": "w", "watts": "w", "kw": "kw", "kwh": "kwh", "volt": "v", "volts": "v",
}  # fmt: skip
# Units that only count when a number stands next to them (otherwise "m", "g", "l" are just letters,
# and "day"/"year" are ordinary words).
_UNITS_NEED_NUMBER = frozenset(
    {"m", "g", "l", "mi", "min", "s", "d", "h", "wk", "mo", "y", "in", "ft", "c", "f", "k", "w", "v", "deg"}
)

_ANTONYMS: tuple[tuple[str, str], ...] = (
    ("enable", "disable"), ("activate", "deactivate"), ("buy", "sell"), ("bought", "sold"),
    ("increase", "decrease"), ("increase", "reduce"), ("add", "remove"), ("before", "after"),
    ("start", "stop"), ("open", "close"), ("import", "export"), ("upload", "download"), ("win", "lose"),
    ("best", "worst"), ("advantage", "disadvantage"), ("pro", "con"), ("positive", "negative"),
    ("max", "min"), ("maximum", "minimum"), ("more", "less"), ("most", "least"), ("fast", "slow"),
    ("cheap", "expensive"), ("hot", "cold"), ("male", "female"), ("man", "woman"), ("men", "women"),
    ("boy", "girl"), ("rich", "poor"), ("love", "hate"), ("good", "bad"), ("true", "false"),
    ("agree", "disagree"), ("accept", "reject"), ("allow", "block"), ("lock", "unlock"),
    ("encrypt", "decrypt"), ("install", "uninstall"), ("subscribe", "unsubscribe"),
    ("connect", "disconnect"), ("deposit", "withdraw"), ("send", "receive"), ("sent", "received"),
    ("debit", "credit"), ("borrow", "lend"), ("inbound", "outbound"), ("incoming", "outgoing"),
    ("north", "south"), ("east", "west"), ("left", "right"), ("first", "last"), ("early", "late"),
    ("high", "low"), ("higher", "lower"), ("gain", "loss"), ("gain", "lose"), ("profit", "loss"),
    ("pass", "fail"), ("success", "failure"), ("succeed", "fail"), ("old", "new"), ("older", "younger"),
    ("big", "small"), ("bigger", "smaller"), ("large", "small"), ("long", "short"), ("longer", "shorter"),
    ("better", "worse"), ("easy", "hard"), ("easiest", "hardest"), ("light", "dark"), ("up", "down"),
    ("push", "pull"), ("input", "output"), ("internal", "external"), ("inside", "outside"),
    ("above", "below"), ("top", "bottom"), ("front", "back"), ("import", "export"), ("join", "leave"),
    ("hire", "fire"), ("arrive", "depart"), ("arrival", "departure"), ("online", "offline"),
    ("public", "private"), ("include", "exclude"), ("maximize", "minimize"), ("wife", "husband"),
    ("son", "daughter"), ("father", "mother"), ("brother", "sister"), ("girlfriend", "boyfriend"),
    ("introvert", "extrovert"), ("capitalism", "socialism"), ("republican", "democrat"),
    ("liberal", "conservative"), ("odd", "even"), ("sunrise", "sunset"), ("winter", "summer"),
    ("spring", "autumn"), ("morning", "evening"), ("day", "night"), ("past", "future"),
    ("lowest", "highest"), ("smallest", "largest"), ("weakest", "strongest"), ("weak", "strong"),
    ("pros", "cons"), ("top_up", "withdraw"), ("refund", "charge"), ("freeze", "unfreeze"),
    ("physical", "virtual"), ("domestic", "international"), ("fixed", "variable"),
)  # fmt: skip
_NEG_PREFIXES = ("un", "dis", "in", "im", "il", "ir", "non", "de", "anti")

_TIME_SENSITIVE = re.compile(
    r"\b(today|todays|tonight|tomorrow|yesterday|right now|now|currently|current|latest|newest|most recent|"
    r"recently|recent|this (?:week|weekend|month|year|morning|evening|season)|next (?:week|month|year)|"
    r"last (?:night|week|weekend|month)|at the moment|as of now|up to date|breaking news|live score|"
    r"stock price|share price|exchange rate|weather|forecast|score of the|who won)\b"
)
_USER_SPECIFIC = re.compile(
    r"\b(?:my|our)\s+(?:[^\W\d_]+\s+)?(?:account|accounts|order|orders|balance|bill|bills|invoice|invoices|"
    r"package|parcel|delivery|shipment|subscription|plan|booking|reservation|ticket|claim|statement|"
    r"application|appointment|refund|payment|payments|transaction|transactions|transfer|transfers|"
    r"card|cards|profile|history|case|loan|mortgage|policy|contract|flight|points|credit score|"
    r"test results?|results?|grades?|salary|pension|tax return|deposit|withdrawal|pin|password)\b"
)
_CONTEXT_DEPENDENT = re.compile(
    r"\b(?:(?:this|that|these|those|the following|the above|the attached|attached|below|above)\s+"
    r"(?:video|videos|image|images|picture|pictures|photo|photos|pic|pics|screenshot|code|snippet|script|"
    r"function|query|text|article|document|doc|file|pdf|link|url|passage|paragraph|sentence|essay|email|"
    r"message|letter|poem|song|lyrics|chart|graph|table|diagram|equation|problem|puzzle|riddle|quote|"
    r"statement|post|tweet|comment|answer|error|output|log|stack trace|data|list|word|phrase|gif|meme)|"
    r"(?:translate|summari[sz]e|explain|rewrite|paraphrase|proofread|correct|fix|review|debug|solve|"
    r"simplify|shorten|format|analy[sz]e)\s+(?:this|that|it|these|the following|the above|below|above)|"
    r"the above|as above|mentioned above|given above|shown above|shown below|given below|the following|"
    r"in the picture|in the image|in the video|in this picture|in this image|"
    r"what does (?:this|that|it) mean|what is (?:this|that)(?: thing)?$|who is (?:this|that)$)\b"
)


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold().replace("\u2019", "'")


@lru_cache(maxsize=65536)
def _stem(word: str) -> str:
    """A crude suffix stripper: enough to match ``losing``/``lose``, ``cards``/``card``."""
    w = word
    if w.endswith("'s"):
        w = w[:-2]
    w = w.replace("'", "")
    for suffix, repl in (("ies", "y"), ("ves", "f"), ("sses", "ss"), ("ing", ""), ("ed", ""), ("es", ""),
                         ("s", ""), ("ly", "")):  # fmt: skip
        if w.endswith(suffix) and len(w) - len(suffix) >= 3 and not w.endswith("ss"):
            w = w[: -len(suffix)] + repl
            break
    if len(w) > 3 and w[-1] == w[-2] and w[-1] not in "aeiousl":
        w = w[:-1]  # "stopp" -> "stop"
    if len(w) > 4 and w.endswith("e"):
        w = w[:-1]
    return w


@lru_cache(maxsize=1)
def _common_words() -> dict[str, int]:
    raw = resources.files(_DATA).joinpath("common_words.txt.gz").read_bytes()
    words = gzip.decompress(raw).decode("utf-8").split()
    return {w: i for i, w in enumerate(words)}


def _rarity(word: str) -> float:
    """0 (very common) .. 1 (unknown): log-rank in a frequency-ordered word list (o200k BPE order)."""
    if word.isdigit():
        return 1.0
    rank = _common_words().get(word)
    if rank is None:
        rank = _common_words().get(_stem(word))
    if rank is None:
        return 1.0
    return math.log1p(rank) / math.log1p(30000)


@dataclass(frozen=True)
class _Parsed:
    tokens: tuple[str, ...]
    content: frozenset[str]  # stemmed content words
    content_raw: dict[str, str]  # stem -> a surface form
    all_stems: frozenset[str]
    numbers: frozenset[str]
    dates: frozenset[str]
    units: frozenset[str]
    negated: bool
    entities: frozenset[str]  # stems of entity words
    entity_raw: dict[str, str]  # stem -> surface form
    wh: frozenset[str]


_WH = frozenset({"what", "why", "how", "when", "where", "who", "which", "whom", "whose"})


@lru_cache(maxsize=4096)
def _parse(text: str) -> _Parsed:
    norm = unicodedata.normalize("NFKC", text).replace("\u2019", "'")
    folded = norm.casefold()
    tokens = tuple(_WORD.findall(folded))
    numbers: set[str] = set()
    for m in _NUM.finditer(folded):
        raw = m.group(0).replace(",", "").lstrip("+")
        try:
            value = float(raw)
        except ValueError:
            continue
        numbers.add(repr(value))
    for tok in tokens:
        if tok in _WORD_NUMBERS and tok not in ("one", "second", "first"):
            numbers.add(repr(float(_WORD_NUMBERS[tok])))
        elif tok[:1].isdigit() and _NUM_SUFFIX.fullmatch(tok):
            numbers.add(repr(float(re.sub(r"[a-z]+$", "", tok))))
    has_num = bool(numbers)
    dates: set[str] = set()
    units: set[str] = set()
    for i, tok in enumerate(tokens):
        unit_tok = re.sub(r"^\d+(?:\.\d+)?", "", tok) if tok[:1].isdigit() else tok
        if tok not in _MONTHS and unit_tok not in _UNITS:
            continue
        near_num = any(
            t[:1].isdigit() or t in _WORD_NUMBERS for t in tokens[max(0, i - 1) : i + 2] if t != tok
        ) or bool(re.fullmatch(r"\d+[a-z]+", tok))
        if tok in _MONTHS and (tok not in _AMBIGUOUS_MONTHS or near_num):
            dates.add(_MONTHS[tok])
        if unit_tok in _UNITS:
            unit = _UNITS[unit_tok]
            if unit not in _UNITS_NEED_NUMBER or (near_num and has_num):
                units.add(unit)
    negated = any(t in _NEGATORS or t.endswith("n't") for t in tokens)
    # entities: capitalised words not at a sentence start, acronyms, words mixing letters and digits
    entities: set[str] = set()
    entity_raw: dict[str, str] = {}
    for m in re.finditer(r"[^\W_]+(?:['\u2019][^\W_]+)*", norm):
        word = m.group(0)
        start = m.start()
        j = start - 1
        while j >= 0 and norm[j].isspace():
            j -= 1
        sentence_start = j < 0 or norm[j] in '.?!:;"(\n'
        low = word.casefold()
        if low in _STOP or low in _NEGATORS or low == "i":
            continue
        mixed = any(c.isdigit() for c in word) and any(c.isalpha() for c in word)
        acronym = len(word) >= 2 and word.isupper() and word.isalpha()
        capital = word[:1].isupper() and not sentence_start
        if mixed or acronym or capital:
            entities.add(_stem(low))
            entity_raw.setdefault(_stem(low), low)
    content_raw: dict[str, str] = {}
    for tok in tokens:
        if tok in _STOP or tok in _NEGATORS or tok in _WH:
            continue
        if tok[:1].isdigit():
            continue
        content_raw.setdefault(_stem(tok), tok)
    return _Parsed(
        tokens=tokens,
        content=frozenset(content_raw),
        content_raw=content_raw,
        all_stems=frozenset(_stem(t) for t in tokens),
        numbers=frozenset(numbers),
        dates=frozenset(dates),
        units=frozenset(units),
        negated=negated,
        entities=frozenset(entities),
        entity_raw=entity_raw,
        wh=frozenset(t for t in tokens if t in _WH),
    )


@lru_cache(maxsize=1)
def _antonym_map() -> dict[str, frozenset[str]]:
    out: dict[str, set[str]] = {}
    for a, b in _ANTONYMS:
        sa, sb = _stem(a), _stem(b)
        out.setdefault(sa, set()).add(sb)
        out.setdefault(sb, set()).add(sa)
    return {k: frozenset(v) for k, v in out.items()}


def _opposite(only_a: set[str], only_b: set[str], a: _Parsed, b: _Parsed) -> str | None:
    amap = _antonym_map()
    for w in sorted(only_a):
        for o in amap.get(w, ()):
            if o in only_b:
                return f"opposite: {a.content_raw.get(w, w)}/{b.content_raw.get(o, o)}"
    for x, y, px, py in ((only_a, only_b, a, b), (only_b, only_a, b, a)):
        for w in sorted(x):
            for p in _NEG_PREFIXES:
                if w.startswith(p) and len(w) - len(p) >= 3 and w[len(p) :] in y:
                    return (
                        f"opposite: {px.content_raw.get(w, w)}/{py.content_raw.get(w[len(p) :], w[len(p) :])}"
                    )
    return None


_DIRECTION = re.compile(r"\bfrom\s+([^\W\d_]+(?:\s+[^\W\d_]+)?)\s+(?:to|into|in)\s+([^\W\d_]+)")


def _direction(a: str, b: str) -> bool:
    ma, mb = _DIRECTION.search(_fold(a)), _DIRECTION.search(_fold(b))
    if not ma or not mb:
        return False
    a1, a2 = _stem(ma.group(1).split()[-1]), _stem(ma.group(2))
    b1, b2 = _stem(mb.group(1).split()[-1]), _stem(mb.group(2))
    return a1 == b2 and a2 == b1 and a1 != a2


# --------------------------------------------------------------------------------------------------
# features + the learned pair model
# --------------------------------------------------------------------------------------------------

FEATURE_NAMES: tuple[str, ...] = (
    "similarity",
    "jaccard",
    "unmatched_min",
    "unmatched_max",
    "rare_unmatched_min",
    "rare_unmatched_max",
    "max_rarity_unmatched",
    "entity_one_sided",
    "wh_mismatch",
    "length_ratio",
    "number_diff",
    "negation_diff",
)


def pair_features(query: str, cached: str, similarity: float) -> list[float]:
    """The learned pair model's features for one (query, cached) pair, in :data:`FEATURE_NAMES` order.

    Args:
        query: raw incoming question.
        cached: raw cached question.
        similarity: their embedding cosine similarity.

    Returns:
        A list of floats.

    Example:
        >>> f = pair_features("What is the capital of France?", "What's the capital city of France?", 0.93)
        >>> dict(zip(FEATURE_NAMES, f))["unmatched_min"]
        0.0
    """
    a, b = _parse(query), _parse(cached)
    only_a = a.content - b.all_stems
    only_b = b.content - a.all_stems
    union = a.content | b.content
    jac = len(a.content & b.content) / len(union) if union else 1.0
    ra = sum(_rarity(a.content_raw[w]) for w in only_a)
    rb = sum(_rarity(b.content_raw[w]) for w in only_b)
    rmax = max(
        [_rarity(a.content_raw[w]) for w in only_a] + [_rarity(b.content_raw[w]) for w in only_b] + [0.0]
    )
    ea = a.entities - b.all_stems
    eb = b.entities - a.all_stems
    la, lb = max(len(a.tokens), 1), max(len(b.tokens), 1)
    return [
        float(similarity),
        jac,
        float(min(len(only_a), len(only_b))),
        float(max(len(only_a), len(only_b))),
        min(ra, rb),
        max(ra, rb),
        rmax,
        1.0 if (ea or eb) else 0.0,
        1.0 if (a.wh and b.wh and not (a.wh & b.wh)) else 0.0,
        min(la, lb) / max(la, lb),
        1.0 if a.numbers != b.numbers else 0.0,
        1.0 if a.negated != b.negated else 0.0,
    ]


@dataclass(frozen=True)
class PairModel:
    """A logistic-regression pair scorer: ``P(same answer | features)``.

    Args:
        weights: one weight per feature in :data:`FEATURE_NAMES`.
        bias: the intercept.
        mean: feature means used to standardise the inputs.
        scale: feature standard deviations used to standardise the inputs.
        cutoff: the probability at or above which a pair passes.
        meta: free-form provenance (training data, date, metrics).

    Example:
        >>> m = PairModel.default()
        >>> 0.0 <= m.score("How do I learn Python?", "What is the best way to learn Python?", 0.9) <= 1.0
        True
    """

    weights: tuple[float, ...]
    bias: float
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    cutoff: float = 0.5
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        n = len(FEATURE_NAMES)
        if not (len(self.weights) == len(self.mean) == len(self.scale) == n):
            raise ConfigurationError(
                f"PairModel needs {n} weights, means and scales (one per FEATURE_NAMES entry), got "
                f"{len(self.weights)}/{len(self.mean)}/{len(self.scale)}.",
                field="weights",
            )
        if not 0.0 <= self.cutoff <= 1.0:
            raise ConfigurationError(f"cutoff must be in [0, 1], got {self.cutoff!r}.", field="cutoff")

    def probability(self, features: Sequence[float]) -> float:
        """``P(same answer)`` for a feature vector from :func:`pair_features`."""
        z = self.bias
        for w, x, mu, sd in zip(self.weights, features, self.mean, self.scale, strict=True):
            z += w * (x - mu) / sd
        if z < -35:
            return 0.0
        return 1.0 / (1.0 + math.exp(-z))

    def score(self, query: str, cached: str, similarity: float) -> float:
        """``P(same answer)`` for a pair of raw texts and their cosine similarity."""
        return self.probability(pair_features(query, cached, similarity))

    def to_json(self) -> str:
        """Serialise (the format :meth:`from_json` reads)."""
        return json.dumps(
            {
                "features": list(FEATURE_NAMES),
                "weights": list(self.weights),
                "bias": self.bias,
                "mean": list(self.mean),
                "scale": list(self.scale),
                "cutoff": self.cutoff,
                "meta": self.meta,
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str) -> PairModel:
        """Load a model written by :meth:`to_json`; raises ConfigurationError on a mismatch."""
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigurationError(f"pair model JSON is not valid JSON: {exc}", field="model") from exc
        if not isinstance(d, dict) or d.get("features") != list(FEATURE_NAMES):
            raise ConfigurationError(
                f"pair model was fitted on other features; expected {list(FEATURE_NAMES)}. Refit it with "
                "frugal_chains.cache.tuning.fit_pair_model.",
                field="model",
            )
        return cls(
            weights=tuple(float(x) for x in d["weights"]),
            bias=float(d["bias"]),
            mean=tuple(float(x) for x in d["mean"]),
            scale=tuple(float(x) for x in d["scale"]),
            cutoff=float(d.get("cutoff", 0.5)),
            meta=dict(d.get("meta", {})),
        )

    @classmethod
    def default(cls) -> PairModel:
        """The shipped model (``_guard_data/pair_model.json``)."""
        return _default_model()


@lru_cache(maxsize=1)
def _default_model() -> PairModel:
    return PairModel.from_json(resources.files(_DATA).joinpath("pair_model.json").read_text("utf-8"))


# --------------------------------------------------------------------------------------------------
# the guard
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GuardVerdict:
    """The guard's decision on one candidate hit.

    Args:
        ok: ``True`` when the cached answer may be served.
        reason: why it was rejected (``"number: 3/5"``, ``"negation"``, ``"opposite: buy/sell"``,
            ``"entity: apple/google"``, ``"model: 0.12"`` ...), ``None`` when ok.

    Example:
        >>> GuardVerdict(ok=False, reason="negation")
        GuardVerdict(ok=False, reason='negation')
    """

    ok: bool
    reason: str | None = None


_OK = GuardVerdict(ok=True)


class HitGuard:
    """Rule checks plus a learned pair model on the raw texts of a candidate semantic hit.

    The checks run in this order and the first failing one rejects the hit: numbers, dates, units,
    negation, opposites, entity swap, direction, then the pair model (``P(same answer) >=
    model_cutoff``). Each can be switched off. The default (all rules, the shipped model, cutoff 0.60
    from the model file) is what the benchmark ``benchmarks/cache_quality.py`` measures, with
    :data:`DEFAULT_THRESHOLD` (0.86).

    Args:
        numbers: reject when the sets of numbers differ (``1,000`` = ``1000``, ``two`` = ``2``).
        dates: reject when month/weekday names differ.
        units: reject when units or currencies differ.
        negation: reject when only one side is negated.
        opposites: reject when one side has a word and the other its opposite (``enable``/``disable``,
            ``legal``/``illegal``).
        entities: reject when *both* sides have an entity-like word (capitalised mid-sentence, acronym,
            letters+digits) the other side lacks.
        direction: reject ``from A to B`` vs ``from B to A``.
        model: the learned pair model; ``True`` = the shipped one, ``False``/``None`` = rules only, or a
            :class:`PairModel`.
        model_cutoff: override the model's probability cutoff (higher = stricter); default ``None`` = the
            model's own (0.60 for the shipped one).

    Example:
        >>> g = HitGuard()
        >>> g.check("Convert 5 km to miles", "Convert 10 km to miles")
        GuardVerdict(ok=False, reason='number: 5/10')
        >>> g.check("Is coffee bad for you?", "Is coffee not bad for you?").reason
        'negation'
        >>> HitGuard(model=False).check("What is your return policy?", "How do I return an item?").ok
        True
    """

    def __init__(
        self,
        *,
        numbers: bool = True,
        dates: bool = True,
        units: bool = True,
        negation: bool = True,
        opposites: bool = True,
        entities: bool = True,
        direction: bool = True,
        model: PairModel | bool | None = True,
        model_cutoff: float | None = None,
    ) -> None:
        self.numbers = numbers
        self.dates = dates
        self.units = units
        self.negation = negation
        self.opposites = opposites
        self.entities = entities
        self.direction = direction
        if model is True:
            self.model: PairModel | None = PairModel.default()
        elif model is False or model is None:
            self.model = None
        elif isinstance(model, PairModel):
            self.model = model
        else:
            raise ConfigurationError(
                f"model must be True, False, None or a PairModel, got {type(model).__name__}.", field="model"
            )
        if model_cutoff is not None and not 0.0 <= model_cutoff <= 1.0:
            raise ConfigurationError(
                f"model_cutoff must be in [0, 1], got {model_cutoff!r}.", field="model_cutoff"
            )
        self.model_cutoff = model_cutoff

    def __repr__(self) -> str:
        flags = [
            n
            for n in ("numbers", "dates", "units", "negation", "opposites", "entities", "direction")
            if getattr(self, n)
        ]
        cut = (
            self.model_cutoff
            if self.model_cutoff is not None
            else (self.model.cutoff if self.model else None)
        )
        return f"HitGuard(rules={flags}, model={'on' if self.model else 'off'}, cutoff={cut})"

    def check_rules(self, query: str, cached: str) -> GuardVerdict:
        """Only the rule checks (no model): the verdict for a pair of raw texts.

        Example:
            >>> HitGuard().check_rules("Flights from Paris to London", "Flights from London to Paris").reason
            'direction'
        """
        if query == cached:
            return _OK
        a, b = _parse(query), _parse(cached)
        if self.numbers and a.numbers != b.numbers:
            return GuardVerdict(False, f"number: {_fmt(a.numbers - b.numbers)}/{_fmt(b.numbers - a.numbers)}")
        if self.dates and a.dates != b.dates:
            return GuardVerdict(False, f"date: {_fmt(a.dates - b.dates)}/{_fmt(b.dates - a.dates)}")
        if self.units and a.units != b.units:
            return GuardVerdict(False, f"unit: {_fmt(a.units - b.units)}/{_fmt(b.units - a.units)}")
        if self.negation and a.negated != b.negated:
            return GuardVerdict(False, "negation")
        if self.opposites:
            only_a = set(a.content - b.content)
            only_b = set(b.content - a.content)
            reason = _opposite(only_a, only_b, a, b)
            if reason:
                return GuardVerdict(False, reason)
        if self.entities:
            ea = a.entities - b.all_stems
            eb = b.entities - a.all_stems
            if ea and eb:
                ra = frozenset(a.entity_raw[e] for e in ea)
                rb = frozenset(b.entity_raw[e] for e in eb)
                return GuardVerdict(False, f"entity: {_fmt(ra)}/{_fmt(rb)}")
        if self.direction and _direction(query, cached):
            return GuardVerdict(False, "direction")
        return _OK

    def check(self, query: str, cached: str, similarity: float | None = None) -> GuardVerdict:
        """Decide whether ``cached``'s answer may be served for ``query``.

        Args:
            query: the raw incoming question (last user turn).
            cached: the raw cached question.
            similarity: their cosine similarity. The pair model needs it: when ``None`` only the rules run.

        Returns:
            A :class:`GuardVerdict`.
        """
        verdict = self.check_rules(query, cached)
        if not verdict.ok or self.model is None or similarity is None or query == cached:
            return verdict
        p = self.model.score(query, cached, similarity)
        cutoff = self.model_cutoff if self.model_cutoff is not None else self.model.cutoff
        if p < cutoff:
            return GuardVerdict(False, f"model: {p:.2f}")
        return _OK


def _fmt(values: frozenset[str]) -> str:
    out = []
    for v in sorted(values):
        if v.endswith(".0") and v[:-2].lstrip("-").isdigit():
            v = v[:-2]
        out.append(v)
    return ",".join(out) or "-"


# --------------------------------------------------------------------------------------------------
# bypass policy
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BypassPolicy:
    """Which kinds of questions skip the semantic tier (the exact tier still serves identical ones).

    Args:
        time_sensitive: "today", "latest", "current", "now", "weather", "stock price" ...
        user_specific: "my order", "my account", "my balance", "my card" ... **On by default**: in a
            general assistant the answer depends on the user's own data, and a semantic hit would hand
            one user's answer to another. Turn it off for an FAQ bot whose answers are the same for
            every user (e.g. a bank's "my card has not arrived" help text), where such questions are
            the whole traffic.
        context_dependent: questions about something not in the question itself: "this video",
            "translate this", "the above", "this code".

    Example:
        >>> BypassPolicy(user_specific=False).reason("Why was my card declined?") is None
        True
        >>> BypassPolicy().reason("Why was my card declined?")
        'user-specific'
    """

    time_sensitive: bool = True
    user_specific: bool = True
    context_dependent: bool = True

    def reason(self, text: str) -> str | None:
        """``"time-sensitive"`` / ``"user-specific"`` / ``"context-dependent"``, or ``None``."""
        folded = " ".join(_fold(text).split())
        if self.context_dependent and _CONTEXT_DEPENDENT.search(folded):
            return "context-dependent"
        if self.time_sensitive and _TIME_SENSITIVE.search(folded):
            return "time-sensitive"
        if self.user_specific and _USER_SPECIFIC.search(folded):
            return "user-specific"
        return None


_DEFAULT_POLICY = BypassPolicy()


def bypass_reason(text: str, policy: BypassPolicy | None = None) -> str | None:
    """Why ``text`` must skip the semantic tier, or ``None`` when a semantic hit is allowed.

    Args:
        text: the raw question (last user turn).
        policy: which rules apply; default :class:`BypassPolicy()` (all three on).

    Returns:
        ``"time-sensitive"``, ``"user-specific"``, ``"context-dependent"`` or ``None``.

    Example:
        >>> bypass_reason("What is the latest iPhone?")
        'time-sensitive'
        >>> bypass_reason("Where is my order?")
        'user-specific'
        >>> bypass_reason("Translate this into French")
        'context-dependent'
        >>> bypass_reason("How do I learn Python?") is None
        True
    """
    return (policy or _DEFAULT_POLICY).reason(text)


# --------------------------------------------------------------------------------------------------
# verifiers
# --------------------------------------------------------------------------------------------------


@runtime_checkable
class Verifier(Protocol):
    """A stronger, slower check run after the :class:`HitGuard` (a cross-encoder, an LLM judge ...).

    Both methods get the raw incoming question, the raw cached question and their cosine similarity,
    and return ``True`` when the cached answer may be served.

    Example:
        >>> class Always:
        ...     def verify(self, query: str, cached: str, similarity: float) -> bool:
        ...         return True
        ...     async def averify(self, query: str, cached: str, similarity: float) -> bool:
        ...         return True
        >>> isinstance(Always(), Verifier)
        True
    """

    def verify(self, query: str, cached: str, similarity: float) -> bool: ...

    async def averify(self, query: str, cached: str, similarity: float) -> bool: ...


class CallableVerifier:
    """A :class:`Verifier` from plain functions.

    Args:
        fn: ``fn(query, cached, similarity) -> bool``.
        afn: optional async version; without it :meth:`averify` runs ``fn`` in a worker thread.

    Example:
        >>> v = CallableVerifier(lambda q, c, s: s >= 0.95)
        >>> v.verify("a", "b", 0.97), v.verify("a", "b", 0.9)
        (True, False)
        >>> import asyncio
        >>> asyncio.run(v.averify("a", "b", 0.99))
        True
    """

    def __init__(
        self,
        fn: Callable[[str, str, float], bool],
        afn: Callable[[str, str, float], Awaitable[bool]] | None = None,
    ) -> None:
        if not callable(fn):
            raise ConfigurationError("fn must be a callable (query, cached, similarity) -> bool.", field="fn")
        if afn is not None and not callable(afn):
            raise ConfigurationError("afn must be an async callable or None.", field="afn")
        self._fn = fn
        self._afn = afn

    def verify(self, query: str, cached: str, similarity: float) -> bool:
        """Run the sync function."""
        return bool(self._fn(query, cached, similarity))

    async def averify(self, query: str, cached: str, similarity: float) -> bool:
        """Run the async function, or the sync one in a worker thread."""
        if self._afn is not None:
            return bool(await self._afn(query, cached, similarity))
        return bool(await asyncio.to_thread(self._fn, query, cached, similarity))
