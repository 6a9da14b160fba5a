"""What the hit guard reads in a question: tokens, stemmed content words, numbers (``two`` = ``2``), dates, units
and currencies, negation, entity-like words and question words (:func:`parse_question`); word rarity; opposites
(``enable``/``disable``, ``legal``/``illegal``); swapped directions (``from A to B`` vs ``from B to A``); and the word
classes of ``_guard_data/word_classes.txt`` -- audience and roles (children / adults, buyer / seller), order and
direction (ascending / descending, before / after), comparatives and superlatives (largest / smallest, cheaper /
more expensive) and scope (free / paid tier, online / in store) -- compared by :func:`class_difference`."""

from __future__ import annotations

import gzip
import math
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

__all__ = [
    "DATA_PACKAGE",
    "WORD_CLASSES",
    "ParsedQuestion",
    "class_difference",
    "class_values",
    "direction_swapped",
    "fold",
    "opposite_words",
    "parse_question",
    "rarity",
]

DATA_PACKAGE = "frugal_chains.cache._guard_data"

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


def fold(text: str) -> str:
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
    raw = resources.files(DATA_PACKAGE).joinpath("common_words.txt.gz").read_bytes()
    words = gzip.decompress(raw).decode("utf-8").split()
    return {w: i for i, w in enumerate(words)}


def rarity(word: str) -> float:
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
class ParsedQuestion:
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
def parse_question(text: str) -> ParsedQuestion:
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
    return ParsedQuestion(
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


def opposite_words(only_a: set[str], only_b: set[str], a: ParsedQuestion, b: ParsedQuestion) -> str | None:
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


def direction_swapped(a: str, b: str) -> bool:
    ma, mb = _DIRECTION.search(fold(a)), _DIRECTION.search(fold(b))
    if not ma or not mb:
        return False
    a1, a2 = _stem(ma.group(1).split()[-1]), _stem(ma.group(2))
    b1, b2 = _stem(mb.group(1).split()[-1]), _stem(mb.group(2))
    return a1 == b2 and a2 == b1 and a1 != a2


# --------------------------------------------------------------------------------------------------
# word classes: audience, order, comparative, scope (data: _guard_data/word_classes.txt)
# --------------------------------------------------------------------------------------------------

#: The word classes :func:`class_difference` compares, in the order they are checked.
WORD_CLASSES: tuple[str, ...] = ("audience", "order", "comparative", "scope")


@dataclass(frozen=True)
class _Group:
    cls: str
    name: str
    one_sided: bool


@dataclass(frozen=True)
class _WordClassTable:
    groups: tuple[_Group, ...]
    phrases: dict[tuple[str, ...], tuple[int, str] | None]  # phrase -> (group index, value); None = shadow
    longest: int


def _parse_word_classes(text: str) -> _WordClassTable:
    groups: list[_Group] = []
    phrases: dict[tuple[str, ...], tuple[int, str] | None] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            parts = line.strip("[]").split()
            if (
                len(parts) not in (2, 3)
                or parts[0] not in WORD_CLASSES
                or parts[2:] not in ([], ["one-sided"])
            ):
                raise ValueError(f"word_classes.txt line {lineno}: bad group header {raw!r}")
            groups.append(_Group(parts[0], parts[1], len(parts) == 3))
            continue
        value, sep, words = line.partition(":")
        if not sep or not groups:
            raise ValueError(f"word_classes.txt line {lineno}: expected 'value: word, word' under a [group]")
        target = None if value.strip() == "-" else (len(groups) - 1, value.strip())
        for entry in words.split(","):
            phrase = tuple(_WORD.findall(fold(entry)))
            if not phrase:
                continue
            if phrase in phrases and phrases[phrase] != target:
                raise ValueError(f"word_classes.txt line {lineno}: {' '.join(phrase)!r} is listed twice")
            phrases[phrase] = target
    return _WordClassTable(tuple(groups), phrases, max((len(p) for p in phrases), default=1))


@lru_cache(maxsize=1)
def _word_classes() -> _WordClassTable:
    return _parse_word_classes(resources.files(DATA_PACKAGE).joinpath("word_classes.txt").read_text("utf-8"))


@lru_cache(maxsize=4096)
def _class_values(tokens: tuple[str, ...]) -> dict[int, tuple[str, ...]]:
    """Group index -> the values named, in order of first appearance."""
    table = _word_classes()
    found: dict[int, list[str]] = {}
    i = 0
    while i < len(tokens):
        for n in range(min(table.longest, len(tokens) - i), 0, -1):
            phrase = tokens[i : i + n]
            if phrase in table.phrases:
                hit = table.phrases[phrase]
                if hit is not None and hit[1] not in found.setdefault(hit[0], []):
                    found[hit[0]].append(hit[1])
                i += n
                break
        else:
            i += 1
    return {g: tuple(v) for g, v in found.items()}


def class_values(text: str) -> dict[str, frozenset[str]]:
    """The word-class values a question names, by ``"class group"`` (longest phrase first, whole tokens).

    Example:
        >>> class_values("What is the maximum daily dose of paracetamol for children?")
        {'audience age': frozenset({'child'}), 'comparative magnitude': frozenset({'large'})}
        >>> class_values("Which shipping option is more expensive?")
        {'comparative price': frozenset({'expensive'})}
    """
    groups = _word_classes().groups
    found = _class_values(parse_question(text).tokens)
    return {f"{groups[g].cls} {groups[g].name}": frozenset(v) for g, v in sorted(found.items())}


def class_difference(a: ParsedQuestion, b: ParsedQuestion, classes: frozenset[str] | set[str]) -> str | None:
    """``"<class>: <values>/<values>"`` when the two questions name different values of a word-class group
    (``"audience: child/adult"``, ``"order: ascending/descending"``), else ``None``.

    A group fires when each side names a value the other does not; a *one-sided* group (age, pregnancy,
    domestic / international) also fires when only one side names one (``-`` stands for none); an audience
    group also fires when both sides name the same roles in another order (``guest ... host`` vs ``host ...
    guest``).

    Args:
        a: the parsed incoming question.
        b: the parsed cached question.
        classes: which classes to compare, from :data:`WORD_CLASSES`.

    Example:
        >>> q = parse_question
        >>> class_difference(q("sort ascending"), q("sort descending"), {"order"})
        'order: ascending/descending'
        >>> class_difference(q("Dose of ibuprofen for kids?"), q("Dose of ibuprofen?"), {"audience"})
        'audience: child/-'
        >>> class_difference(q("Ibuprofen dose for kids?"), q("Ibuprofen dose for children?"), {"audience"}) is None
        True
    """
    if not classes:
        return None
    groups = _word_classes().groups
    va, vb = _class_values(a.tokens), _class_values(b.tokens)
    for cls in WORD_CLASSES:
        if cls not in classes:
            continue
        for g, group in enumerate(groups):
            if group.cls != cls:
                continue
            xa, xb = va.get(g, ()), vb.get(g, ())
            if set(xa) == set(xb):
                if cls == "audience" and len(xa) > 1 and xa != xb:
                    return f"{cls}: {','.join(xa)}/{','.join(xb)}"
                continue
            if xa and xb and (set(xa) <= set(xb) or set(xb) <= set(xa)):
                continue  # "best and worst" vs "worst": one side adds a value, none is swapped
            if not group.one_sided and not (xa and xb):
                continue
            return f"{cls}: {','.join(sorted(xa)) or '-'}/{','.join(sorted(xb)) or '-'}"
    return None
