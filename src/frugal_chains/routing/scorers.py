"""Pre-call scorers: how likely is it that the cheapest tier is **not** good enough for this conversation?

=============================  ===========================================================================
:class:`HeuristicScorer`       hand-set weights over cheap text features (no training, a few microseconds)
:class:`TrainedScorer`         an embedding classifier fit on your own labelled outcomes
:class:`CallableScorer`        your function (sync or async), ``messages -> float in [0, 1]``
=============================  ===========================================================================

Every scorer takes OpenAI-format messages (a plain string is accepted as one user turn) and returns a number in
[0, 1]; the :class:`~frugal_chains.routing.RoutingPolicy` turns it into a starting tier.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import math
import numbers
import re
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

from frugal_chains.errors import ConfigurationError
from frugal_chains.routing.types import Message, content_text, user_turns
from frugal_chains.shared.logistic import Logistic, choose_l2, fit_logistic

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    from frugal_chains.embeddings import Embedder

__all__ = ["CallableScorer", "HeuristicScorer", "TrainedScorer"]

Conversation = str | Sequence[Message]
"""One user turn as a string, or a list of OpenAI-format messages."""


def _as_messages(conversation: Any, field: str) -> Sequence[Message]:
    """``conversation`` as a message list (a string is one user turn); ConfigurationError naming ``field``."""
    if isinstance(conversation, str):
        return ({"role": "user", "content": conversation},)
    if isinstance(conversation, Sequence) and not isinstance(conversation, bytes):
        for m in conversation:
            if not isinstance(m, Mapping):
                raise ConfigurationError(
                    f"{field}: a conversation must be a string or a list of OpenAI-format message dicts "
                    f"({{'role': 'user', 'content': '...'}}), got an item of type {type(m).__name__}",
                    field=field,
                )
        return conversation
    raise ConfigurationError(
        f"{field}: a conversation must be a string or a list of OpenAI-format message dicts, got "
        f"{type(conversation).__name__}",
        field=field,
    )


def _finite(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise ConfigurationError(f"{field} must be a finite number, got {value!r}", field=field)
    return float(value)


# ---------------------------------------------------------------------------------------------------------------
# heuristic scorer
# ---------------------------------------------------------------------------------------------------------------

_SCAN_CHARS = 4000
"""Longer turns are scanned on their first and last 2000 characters (the length feature sees everything)."""
_PREVIOUS_SCAN_CHARS = 2000

_WORDS = re.compile(r"[a-z0-9']+")
_MATH_EXPR = re.compile(r"[0-9][-+*/^=<>\u00d7\u00f7 ]{1,3}[0-9(]")
_VARIABLE = re.compile(r"\^\d|(?<![a-z])[a-z] ?= ?-?\d")
_LATEX = re.compile(
    r"\\(?:frac|sum|int|sqrt|cdot|times|prod|lim|infty|alpha|beta|gamma|theta|pi|sigma|mathbb|begin|left|right"
    r"|le|ge|neq|partial|binom)\b|\$[^$\n]{1,200}\$"
)
_LIST_ITEM = re.compile(r"(?:^|[\s:;])(?:\(?\d{1,2}[.)]|[-*\u2022]|\(?[a-h]\))\s+[a-z]", re.MULTILINE)
_GREETING = re.compile(
    r"^\W*(?:hi|hello|hey|yo|thanks|thank you|thx|ty|ok|okay|cool|great|nice|awesome|perfect|good (?:morning"
    r"|afternoon|evening|night)|bye|goodbye|see you|yes|no|yep|nope|sure|got it|lol|sounds good)\b"
)
_SHORT_FACT = re.compile(
    r"^\W*(?:what|who|whom|whose|when|where|which|how old|how tall|how far|how long|how big|is|are|was|were|does"
    r"|do|did|can|could|will|define|spell|name|list)\b"
)
# Substrings whose every occurrence is a sign of code (counted with str.count, which is fast).
_CODE_MARKS = (
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
_CODE_ASK, _MATH_ASK, _REASONING, _CONSTRAINT, _CREATIVE_VERB, _CREATIVE_NOUN, _CREATIVE_ADJ = range(7)
_CLASSIFY, _TRANSLATE, _UNIT, _N_CATEGORIES = 7, 8, 9, 10


def _lexicon(groups: Mapping[int, str]) -> dict[str, int]:
    return {w: cat for cat, words in groups.items() for w in words.split()}


_EXACT = _lexicon(
    {
        _CODE_ASK: "code codes coding function functions method methods script scripts program programs programming "
        "bug bugs debug regex sql query queries api apis python javascript typescript java rust golang html css "
        "react unittest pytest segfault runtime complexity compile compiler class classes variable variables loop "
        "loops array arrays dataframe pandas numpy git docker kubernetes",
        _MATH_ASK: "solve solves solving solved prove proof proofs proving derive derived compute equation equations "
        "inequality theorem lemma matrix matrices vector vectors polynomial simplify percent percentage average "
        "ratio remainder prime primes modulo geometry triangle angle area volume variance median",
        _REASONING: "why compare compares compared comparing comparison contrast design designs designed designing "
        "evaluate justify implication implications critique reason reasoning debate argue assess assessment "
        "tradeoff tradeoffs nuanced nuance",
        _CONSTRAINT: "must exactly within format formatted formatting json yaml xml csv markdown table bullet bullets "
        "without ensure strictly require required don't shouldn't never always only concise",
        _CREATIVE_VERB: "write compose draft create generate produce",
        _CREATIVE_NOUN: "essay essays story stories poem poems report article blog letter speech novel chapter "
        "proposal song lyrics screenplay narrative paper thesis outline documentation guide tutorial",
        _CREATIVE_ADJ: "detailed comprehensive thorough",
        _CLASSIFY: "classify categorize categorise sentiment label spam",
        _TRANSLATE: "translate translation translated",
        _UNIT: "words sentences paragraphs lines characters items points",
    }
)
_PREFIX6 = _lexicon(
    {
        _CODE_ASK: "implem refact debugg algori compil recurs progra script",
        _MATH_ASK: "deriva integr probab calcul statis eigenv polyno factor",
        _REASONING: "explai analys analyz optimi archit strate recomm justif evalua implic reason",
    }
)
# Multi-word phrases, searched in the lower-case turn when their first word occurs in it.
_PHRASES: dict[int, tuple[str, ...]] = {
    _CODE_ASK: (
        "unit test",
        "stack trace",
        "data structure",
        "big-o",
        "big o",
        "c++",
        "c#",
        "time complexity",
    ),
    _MATH_ASK: ("how many", "how much", "expected value", "sum of", "product of"),
    _REASONING: (
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
    _CONSTRAINT: (
        "at least",
        "at most",
        "no more than",
        "no less than",
        "no longer than",
        "do not",
        "make sure",
        "should not",
    ),
    _CREATIVE_ADJ: ("in detail", "long form", "long-form", "business plan"),
    _CLASSIFY: ("true or false", "yes or no", "is this spam", "positive or negative"),
}
_PHRASE_FIRST: dict[str, list[tuple[str, int]]] = {}
for _cat, _phrases in _PHRASES.items():
    for _phrase in _phrases:
        _PHRASE_FIRST.setdefault(_WORDS.findall(_phrase)[0], []).append((_phrase, _cat))
_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")
_UNIT_CONSTRAINT = re.compile(r"\d+\s*(?:words|sentences|paragraphs|lines|characters|items|points)")


def _scan(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text.lower()
    half = limit // 2
    return (text[:half] + "\n" + text[-half:]).lower()


def _word_counts(text: str) -> tuple[list[int], int, int]:
    """(hits per lexicon category, number tokens, "<number> words"-style length constraints) of a lower-case text."""
    tokens = _WORDS.findall(text)
    cats = list(map(_EXACT.get, tokens))
    long_words = [w for w in tokens if len(w) > 6 and w not in _EXACT]
    if long_words:
        cats.extend(map(_PREFIX6.get, [w[:6] for w in long_words]))
        cats.extend(_CODE_ASK for w in long_words if w.endswith(("error", "exception")))
    found = Counter(cats)
    counts = [found[k] for k in range(_N_CATEGORIES)]
    for first in _PHRASE_FIRST.keys() & set(tokens):
        for phrase, cat in _PHRASE_FIRST[first]:
            if phrase in text:
                counts[cat] += 1
    numbers = len(_NUMBER.findall(text))
    units = len(_UNIT_CONSTRAINT.findall(text)) if counts[_UNIT] and numbers else 0
    return counts, numbers, units


def _sat(count: float, at: float) -> float:
    """``count / at`` capped at 1 (a feature saturates at ``at`` hits)."""
    return count / at if count < at else 1.0


_DEFAULT_WEIGHTS: Mapping[str, float] = MappingProxyType(
    {
        "length": 1.6,
        "code": 1.2,
        "code_ask": 0.8,
        "math": 0.9,
        "math_ask": 1.0,
        "reasoning": 1.0,
        "multi_part": 0.9,
        "constraints": 0.6,
        "creative": 0.8,
        "easy": -1.5,
        "depth": 0.4,
        "history": 0.5,
        "previous_hard": 0.5,
        "tools": 0.5,
    }
)
_DEFAULT_BIAS = -2.2
_LOG_LENGTH = math.log1p(1200)
_LOG_HISTORY = math.log1p(8000)


class HeuristicScorer:
    """A training-free baseline: ``sigmoid(bias + sum(weight * feature))`` over cheap features of the conversation.

    Each feature is a number in [0, 1] (``length`` up to 1.5) computed from a word lexicon, substring counts and a
    few precompiled regular expressions, mostly on the last user turn; a typical prompt is scored in a few tens of
    microseconds (no tokenizer, no model).
    Turns longer than 4,000 characters are scanned on their first and last 2,000 (``length`` sees all of them).

    ================  =======  ====================================================================================
    feature           weight   what it measures
    ================  =======  ====================================================================================
    ``length``         1.6     ``log(1 + chars) / log(1 + 1200)`` of the last user turn, capped at 1.5
    ``code``           1.2     code in the turn: a fence (1.0) plus 0.25 per sign (``def``, ``import``, braces,
                               ``;`` at a line end, ``==``, ``=>``, ``()``, ``print(``, a Python traceback ...)
    ``code_ask``       0.8     programming words (function, bug, implement, regex, SQL, Python, ``FooError`` ...),
                               2 saturate
    ``math``           0.9     arithmetic expressions and LaTeX (0.5 each) plus numbers (0.1 each)
    ``math_ask``       1.0     solve, prove, calculate, derive, integral, probability, how many ..., 2 saturate
    ``reasoning``      1.0     why, explain, compare, analyse, step by step, trade-off, design, optimise ...,
                               2 saturate
    ``multi_part``     0.9     0.5 per ``?`` after the first, 0.25 per numbered or bulleted item
    ``constraints``    0.6     must, exactly, at least, format, JSON, "in 200 words", do not ..., 3 saturate
    ``creative``       0.8     "write an essay / story / report ...", detailed, comprehensive, long-form
    ``easy``          -1.5     1.0 for a short greeting or thanks, 0.9 for translating a short text, 0.8 for a
                               classification ask, 0.7 for a short factual question without harder signals
    ``depth``          0.4     ``(user turns - 1) / 4``, capped at 1
    ``history``        0.5     ``log(1 + chars) / log(1 + 8000)`` of the earlier user and assistant turns
    ``previous_hard``  0.5     code, maths or reasoning words in the previous user turn (a terse follow-up to a
                               hard question is still hard), 3 saturate
    ``tools``          0.5     tool results and tool calls in the conversation, 4 saturate
    ================  =======  ====================================================================================

    Args:
        weights: overrides for some of the weights above (the others keep their defaults); an unknown name
            raises :class:`~frugal_chains.errors.ConfigurationError` (``field="weights"``).
        bias: the intercept (default -2.2: a short question without any hard signal scores below 0.2).

    :meth:`features` returns the feature values, to explain a score or to fit your own weights.

    Example:
        >>> from frugal_chains.routing import HeuristicScorer
        >>> scorer = HeuristicScorer()
        >>> easy = scorer.score([{"role": "user", "content": "hi, thanks!"}])
        >>> hard = scorer.score([{"role": "user", "content": "Write a Python function that solves x^2 - 5x + 6 = 0 "
        ...                       "and prove it is correct. 1. explain the algorithm 2. give its complexity"}])
        >>> easy < 0.1 < 0.8 < hard
        True
        >>> scorer.features("hi, thanks!")["easy"]
        1.0
        >>> HeuristicScorer(weights={"easy": 0.0}).score("hi, thanks!") > easy  # without the "easy" discount
        True
    """

    DEFAULT_WEIGHTS: Mapping[str, float] = _DEFAULT_WEIGHTS
    """The default weight of each feature (read-only)."""
    DEFAULT_BIAS: float = _DEFAULT_BIAS

    def __init__(self, *, weights: Mapping[str, float] | None = None, bias: float = _DEFAULT_BIAS) -> None:
        merged = dict(_DEFAULT_WEIGHTS)
        if weights is not None:
            if not isinstance(weights, Mapping):
                raise ConfigurationError(
                    f"weights must be a mapping of feature name to weight, got {type(weights).__name__}",
                    field="weights",
                )
            unknown = sorted(str(k) for k in weights if k not in _DEFAULT_WEIGHTS)
            if unknown:
                raise ConfigurationError(
                    f"unknown heuristic feature(s) {unknown}; the features are {sorted(_DEFAULT_WEIGHTS)}",
                    field="weights",
                )
            for k, v in weights.items():
                merged[k] = _finite(v, "weights")
        self._weights = merged
        self._bias = _finite(bias, "bias")
        self._items = tuple(merged.items())

    @property
    def name(self) -> str:
        return "heuristic"

    @property
    def weights(self) -> dict[str, float]:
        """The weights in use (a copy)."""
        return dict(self._weights)

    @property
    def bias(self) -> float:
        return self._bias

    def __repr__(self) -> str:
        changed = {k: v for k, v in self._weights.items() if v != _DEFAULT_WEIGHTS[k]}
        return f"HeuristicScorer(weights={changed}, bias={self._bias})"

    def features(self, messages: Conversation) -> dict[str, float]:
        """The feature values of a conversation (see the class docstring), each in [0, 1.5].

        Example:
            >>> from frugal_chains.routing import HeuristicScorer
            >>> f = HeuristicScorer().features("Why is the sky blue? Explain step by step.")
            >>> f["reasoning"], f["multi_part"], f["code"]
            (1.0, 0.0, 0.0)
        """
        msgs = _as_messages(messages, "messages")
        users: list[str] = []
        earlier_chars = 0
        tool_events = 0
        for m in msgs:
            role = m.get("role")
            if role in ("user", "human"):
                text = content_text(m.get("content"))
                users.append(text)
                earlier_chars += len(text)
            elif role in ("assistant", "ai"):
                earlier_chars += len(content_text(m.get("content")))
                if m.get("tool_calls"):
                    tool_events += 1
            elif role in ("tool", "function"):
                tool_events += 1
        raw = users[-1] if users else ""
        n = len(raw)
        earlier_chars -= n
        text = _scan(raw, _SCAN_CHARS)
        counts, numbers, unit_counts = _word_counts(text)

        code = (1.0 if "```" in text or "~~~" in text else 0.0) + 0.25 * sum(
            text.count(c) for c in _CODE_MARKS
        )
        math_hits = 0.5 * len(_MATH_EXPR.findall(text)) + 0.1 * numbers
        if "^" in text or "=" in text:
            math_hits += 0.5 * len(_VARIABLE.findall(text))
        if "\\" in text or "$" in text:
            math_hits += 0.5 * len(_LATEX.findall(text))
        multi = 0.5 * max(0, text.count("?") - 1)
        if "1." in text or "1)" in text or "\n" in text or "a)" in text:
            multi += 0.25 * len(_LIST_ITEM.findall(text))
        hard_words = counts[_CODE_ASK] + counts[_MATH_ASK] + counts[_REASONING]

        easy = 0.0
        if n < 40 and _GREETING.search(text):
            easy = 1.0
        elif n < 200 and counts[_TRANSLATE]:
            easy = 0.9
        elif n < 400 and counts[_CLASSIFY]:
            easy = 0.8
        elif n < 100 and hard_words == 0 and code == 0 and math_hits < 0.5 and _SHORT_FACT.search(text):
            easy = 0.7

        creative = counts[_CREATIVE_ADJ] or (counts[_CREATIVE_VERB] and counts[_CREATIVE_NOUN])

        previous_hard = 0.0
        if len(users) > 1:
            prev = _scan(users[-2], _PREVIOUS_SCAN_CHARS)
            pc = _word_counts(prev)[0]
            hits = pc[_CODE_ASK] + pc[_MATH_ASK] + pc[_REASONING] + (2 if "```" in prev else 0)
            previous_hard = _sat(hits, 3)

        return {
            "length": min(1.5, math.log1p(n) / _LOG_LENGTH),
            "code": min(1.0, code),
            "code_ask": _sat(counts[_CODE_ASK], 2),
            "math": min(1.0, math_hits),
            "math_ask": _sat(counts[_MATH_ASK], 2),
            "reasoning": _sat(counts[_REASONING], 2),
            "multi_part": min(1.0, multi),
            "constraints": _sat(counts[_CONSTRAINT] + unit_counts, 3),
            "creative": 1.0 if creative else 0.0,
            "easy": easy,
            "depth": _sat(max(0, len(users) - 1), 4),
            "history": min(1.0, math.log1p(earlier_chars) / _LOG_HISTORY),
            "previous_hard": previous_hard,
            "tools": _sat(tool_events, 4),
        }

    def score(self, messages: Conversation) -> float:
        """``sigmoid(bias + sum(weight * feature))``: 0 = easy, 1 = needs a stronger tier."""
        f = self.features(messages)
        z = self._bias
        for k, w in self._items:
            z += w * f[k]
        return 1.0 / (1.0 + math.exp(-z))

    async def ascore(self, messages: Conversation) -> float:
        """Same as :meth:`score` (pure CPU, microseconds: it runs on the event loop)."""
        return self.score(messages)


# ---------------------------------------------------------------------------------------------------------------
# trained scorer
# ---------------------------------------------------------------------------------------------------------------

_MAX_EARLIER_TURNS = 8
_FEATURES = "last_turn+mean_earlier_user_turns+log1p_chars+log1p_user_turns"
_KIND_SCORER = "frugal_chains.routing.TrainedScorer"


def _turn_texts(messages: Sequence[Message]) -> tuple[str, list[str], int]:
    """(last user turn, up to 8 earlier user turns, number of user turns)."""
    turns = user_turns(messages)
    if not turns:
        return "", [], 0
    return turns[-1], turns[:-1][-_MAX_EARLIER_TURNS:], len(turns)


def _check_int(value: Any, field: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigurationError(f"{field} must be an int >= {minimum}, got {value!r}", field=field)
    return value


class TrainedScorer:
    """An embedding classifier fit on **your own** outcomes: which tier was good enough for each request.

    Features of a conversation: the embedding of the last user turn, the mean embedding of up to 8 earlier user
    turns (zeros for a single turn), ``log(1 + characters of the last turn)`` and ``log(1 + number of user turns)``.
    It sees only the conversation. An ordinal model: one L2 logistic regression per tier boundary ``b`` estimates
    ``P(label > b)`` (the cheapest good-enough tier is above ``b``); :meth:`score` is their mean, i.e. the
    expected label divided by ``n_tiers - 1``. With two tiers it is P(the cheap tier is not good enough).

    Build one with :meth:`fit` or :meth:`load`. The embedder defaults to
    :func:`frugal_chains.embeddings.default_embedder` (offline MiniLM, a few ms per conversation; the process-wide
    instance, whose model loads on its first use). The model records the embedder's name and size, and loading it
    with another embedder raises :class:`~frugal_chains.errors.ConfigurationError` (``field="embedder"``). Scoring
    is thread-safe (the models are immutable; the embedder must be thread-safe, as the default one is).

    Args:
        boundaries: one fitted :class:`~frugal_chains.shared.logistic.Logistic` per tier boundary
            (``n_tiers - 1`` of them), each over ``2 * embedder_dim + 2`` features.
        embedder: the embedder the models were fit with (any object :func:`~frugal_chains.embeddings.as_embedder`
            accepts); ``None`` uses the default embedder.
        embedder_name: the name of the embedder the models were fit with (checked against ``embedder``).
        embedder_dim: its vector size (checked too).
        meta: provenance (number of examples, label counts, ``l2``), saved with the model.

    Example:
        >>> from frugal_chains.routing import TrainedScorer
        >>> from frugal_chains.testing import FakeEmbeddings
        >>> easy = [f"what is the capital of country {i}" for i in range(20)]
        >>> hard = [f"prove the theorem about prime gaps number {i} rigorously" for i in range(20)]
        >>> scorer = TrainedScorer.fit(easy + hard, [0] * 20 + [1] * 20, embedder=FakeEmbeddings(dim=64))
        >>> scorer.score("what is the capital of country 99") < 0.5 < scorer.score("prove the theorem on prime gaps")
        True
        >>> again = TrainedScorer.from_json(scorer.to_json(), embedder=FakeEmbeddings(dim=64))
        >>> again.score("hello") == scorer.score("hello")
        True
    """

    def __init__(
        self,
        boundaries: Sequence[Logistic],
        *,
        embedder: Any = None,
        embedder_name: str,
        embedder_dim: int,
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        models = tuple(boundaries)
        if not models or not all(isinstance(m, Logistic) for m in models):
            raise ConfigurationError(
                "boundaries must be one or more fitted Logistic models (use TrainedScorer.fit or .load)",
                field="boundaries",
            )
        if not isinstance(embedder_name, str) or not embedder_name:
            raise ConfigurationError("embedder_name must be a non-empty string", field="embedder_name")
        _check_int(embedder_dim, "embedder_dim", 1)
        expected = 2 * embedder_dim + 2
        for m in models:
            if m.n_features != expected:
                raise ConfigurationError(
                    f"each boundary model must have {expected} features (2 x embedder_dim + 2), got {m.n_features}",
                    field="boundaries",
                )
        self._boundaries = models
        self._embedder_name = embedder_name
        self._embedder_dim = embedder_dim
        self.meta: dict[str, Any] = dict(meta or {})
        self._embedder: Embedder = self._resolve(embedder)

    # -- facts ---------------------------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return "trained"

    @property
    def n_tiers(self) -> int:
        return len(self._boundaries) + 1

    @property
    def boundaries(self) -> tuple[Logistic, ...]:
        """The per-boundary models: ``boundaries[b]`` estimates ``P(label > b)``."""
        return self._boundaries

    @property
    def embedder_name(self) -> str:
        return self._embedder_name

    @property
    def embedder_dim(self) -> int:
        return self._embedder_dim

    @property
    def embedder(self) -> Embedder:
        return self._embedder

    def __repr__(self) -> str:
        return (
            f"TrainedScorer(n_tiers={self.n_tiers}, embedder={self._embedder_name!r}, dim={self._embedder_dim}, "
            f"n={self.meta.get('n')})"
        )

    def _resolve(self, embedder: Any) -> Embedder:
        from frugal_chains.embeddings import as_embedder, default_embedder

        emb = default_embedder() if embedder is None else as_embedder(embedder)
        if emb.name != self._embedder_name:
            raise ConfigurationError(
                f"this scorer was fit with the embedder {self._embedder_name!r} (dim {self._embedder_dim}), but the "
                f"embedder given is {emb.name!r}: pass embedder= the same embedder, or refit the scorer",
                field="embedder",
            )
        dim = getattr(emb, "dim", None)
        if isinstance(dim, int) and dim != self._embedder_dim:
            raise ConfigurationError(
                f"this scorer was fit with {self._embedder_name!r} vectors of dim {self._embedder_dim}, but the "
                f"embedder gives dim {dim}: pass the same embedder, or refit the scorer",
                field="embedder",
            )
        return emb

    # -- features ------------------------------------------------------------------------------------------------
    @staticmethod
    def _texts(convs: Sequence[Sequence[Message]]) -> tuple[list[tuple[str, list[str], int]], list[str]]:
        parts = [_turn_texts(c) for c in convs]
        seen: dict[str, None] = {}
        for last, earlier, _ in parts:
            seen[last] = None
            for t in earlier:
                seen[t] = None
        return parts, list(seen)

    def _check_vectors(self, vecs: Any, n: int) -> NDArray[np.float64]:
        import numpy as np

        arr = np.asarray(vecs, np.float64)
        if arr.ndim != 2 or arr.shape != (n, self._embedder_dim):
            raise ConfigurationError(
                f"the embedder returned an array of shape {arr.shape}, expected ({n}, {self._embedder_dim})",
                field="embedder",
            )
        return arr

    def _matrix(
        self, parts: Sequence[tuple[str, list[str], int]], texts: Sequence[str], vecs: NDArray[np.float64]
    ) -> NDArray[np.float64]:
        return _feature_matrix(parts, {t: i for i, t in enumerate(texts)}, vecs, self._embedder_dim)

    def _predict(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        import numpy as np

        probs = np.vstack([m.predict(x) for m in self._boundaries])
        out: NDArray[np.float64] = probs.mean(axis=0)
        return out

    def _embed(self, texts: Sequence[str], batch_size: int) -> NDArray[np.float64]:
        import numpy as np

        if not texts:
            return np.zeros((0, self._embedder_dim))
        chunks = [
            self._check_vectors(
                self._embedder.embed(list(texts[i : i + batch_size])), len(texts[i : i + batch_size])
            )
            for i in range(0, len(texts), batch_size)
        ]
        return np.vstack(chunks)

    # -- scoring -------------------------------------------------------------------------------------------------
    def boundary_scores(self, messages: Conversation) -> tuple[float, ...]:
        """``P(label > b)`` for each tier boundary ``b`` (one number for two tiers).

        Example:
            >>> from frugal_chains.routing import TrainedScorer
            >>> from frugal_chains.testing import FakeEmbeddings
            >>> s = TrainedScorer.fit(["hi", "hello", "prove it", "derive it", "a proof"], [0, 0, 2, 1, 2],
            ...                       embedder=FakeEmbeddings())
            >>> len(s.boundary_scores("prove this"))
            2
        """
        parts, texts = self._texts([_as_messages(messages, "messages")])
        x = self._matrix(parts, texts, self._embed(texts, len(texts) or 1))
        return tuple(float(m.predict(x)[0]) for m in self._boundaries)

    def score(self, messages: Conversation) -> float:
        """The mean of :meth:`boundary_scores`: 0 = the cheapest tier will do, 1 = the strongest is needed."""
        return self.score_many([messages])[0]

    async def ascore(self, messages: Conversation) -> float:
        """Async :meth:`score` (embeds with ``embedder.aembed``)."""
        parts, texts = self._texts([_as_messages(messages, "messages")])
        vecs = self._check_vectors(await self._embedder.aembed(texts), len(texts))
        return float(self._predict(self._matrix(parts, texts, vecs))[0])

    def score_many(self, conversations: Sequence[Conversation], batch_size: int = 64) -> list[float]:
        """Scores of many conversations, embedded in batches of ``batch_size`` distinct texts (for benchmarks
        and :func:`~frugal_chains.routing.calibrate`).

        Example:
            >>> from frugal_chains.routing import TrainedScorer
            >>> from frugal_chains.testing import FakeEmbeddings
            >>> s = TrainedScorer.fit(["hi", "hello", "prove it", "derive it"], [0, 0, 1, 1],
            ...                       embedder=FakeEmbeddings())
            >>> many = s.score_many(["hi", "prove it"])
            >>> [round(v, 9) for v in many] == [round(s.score("hi"), 9), round(s.score("prove it"), 9)]
            True
        """
        _check_int(batch_size, "batch_size", 1)
        if isinstance(conversations, str):
            raise ConfigurationError(
                "conversations must be a list: pass [conversation]", field="conversations"
            )
        convs = [_as_messages(c, "conversations") for c in conversations]
        if not convs:
            return []
        parts, texts = self._texts(convs)
        x = self._matrix(parts, texts, self._embed(texts, batch_size))
        return [float(v) for v in self._predict(x)]

    # -- fitting -------------------------------------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        conversations: Sequence[Conversation],
        labels: Sequence[int],
        *,
        embedder: Any = None,
        n_tiers: int | None = None,
        l2: float | Literal["auto"] = "auto",
        sample_weight: Sequence[float] | None = None,
        batch_size: int = 64,
    ) -> TrainedScorer:
        """Fit on labelled outcomes.

        Args:
            conversations: each a string (one user turn) or a list of OpenAI-format messages, as the cascade
                would see it before any model answers.
            labels: for each conversation, the index of the **cheapest tier whose answer was good enough**
                (``0 .. n_tiers - 1``; the strongest tier's index when none was).
            embedder: the embedder (default: :func:`frugal_chains.embeddings.default_embedder`). Score with the
                same one.
            n_tiers: the number of tiers (default ``max(labels) + 1``; at least 2). A boundary with no example
                above it (e.g. nobody needed the third tier) gets a constant model at the smoothed base rate.
            l2: the L2 penalty on standardised weights (> 0), or ``"auto"`` (the default): per tier boundary, the
                penalty with the lowest 3-fold cross-validated log-loss on (a sample of at most 3,000 of) these
                examples, from 0.3 to 3,000 (:func:`~frugal_chains.shared.logistic.choose_l2`). A few dozen
                examples and 770 features need a strong penalty, ten thousand a light one; ``"auto"`` finds
                it without any data but these. The value used is saved in ``meta["l2"]`` (with more than two
                tiers, a list with one value per tier boundary, ``None`` for a boundary with one class only).
            sample_weight: optional non-negative weight per example (e.g. the request's cost).
            batch_size: texts per embedding call.

        Raises:
            ConfigurationError: lengths differ (``labels``), a label is out of range or only one class occurs
                (``labels``), or another argument is invalid (named in ``field``).

        Example:
            >>> from frugal_chains.routing import TrainedScorer
            >>> from frugal_chains.testing import FakeEmbeddings
            >>> convs = [[{"role": "user", "content": "hi"}], "thanks!", "prove Fermat's last theorem", "derive E=mc^2"]
            >>> TrainedScorer.fit(convs, [0, 0, 1, 1], embedder=FakeEmbeddings()).n_tiers
            2
        """
        import numpy as np

        from frugal_chains.embeddings import as_embedder, default_embedder

        if isinstance(conversations, str) or not isinstance(conversations, Sequence):
            raise ConfigurationError(
                "conversations must be a list of strings or message lists", field="conversations"
            )
        convs = [_as_messages(c, "conversations") for c in conversations]
        if not convs:
            raise ConfigurationError(
                "conversations is empty: fit needs labelled examples", field="conversations"
            )
        if isinstance(labels, str):
            raise ConfigurationError("labels must be a list of tier indices", field="labels")
        try:
            labs = list(labels)
        except TypeError as e:
            raise ConfigurationError("labels must be a list of tier indices", field="labels") from e
        if len(labs) != len(convs):
            raise ConfigurationError(
                f"got {len(convs)} conversations but {len(labs)} labels: one label per conversation",
                field="labels",
            )
        ints: list[int] = []
        for lab in labs:
            if isinstance(lab, bool) or not isinstance(lab, (int, np.integer)):
                raise ConfigurationError(f"labels must be tier indices (ints), got {lab!r}", field="labels")
            ints.append(int(lab))
        if n_tiers is None:
            n_tiers = max(max(ints) + 1, 2)
        _check_int(n_tiers, "n_tiers", 2)
        bad = sorted({v for v in ints if not 0 <= v < n_tiers})
        if bad:
            raise ConfigurationError(
                f"labels must be in 0..{n_tiers - 1} (the cheapest good-enough tier), got {bad}",
                field="labels",
            )
        if len(set(ints)) < 2:
            raise ConfigurationError(
                f"every label is {ints[0]}: the scorer needs examples of at least two tiers to learn anything",
                field="labels",
            )
        auto = isinstance(l2, str) and l2 == "auto"
        if not auto:
            if isinstance(l2, str):
                raise ConfigurationError(f'l2 must be a positive number or "auto", got {l2!r}', field="l2")
            l2 = _finite(l2, "l2")
            if l2 <= 0:
                raise ConfigurationError(f"l2 must be > 0, got {l2}", field="l2")
        _check_int(batch_size, "batch_size", 1)
        weights = None
        if sample_weight is not None:
            weights = np.asarray([_finite(w, "sample_weight") for w in sample_weight], np.float64)
            if len(weights) != len(ints) or (weights < 0).any() or weights.sum() <= 0:
                raise ConfigurationError(
                    "sample_weight needs one non-negative weight per example, not all zero",
                    field="sample_weight",
                )

        emb = default_embedder() if embedder is None else as_embedder(embedder)
        parts, texts = cls._texts(convs)
        raw = [
            np.asarray(emb.embed(texts[i : i + batch_size]), np.float64)
            for i in range(0, len(texts), batch_size)
        ]
        vecs = np.vstack(raw)
        dim = int(vecs.shape[1])
        if vecs.shape[0] != len(texts):
            raise ConfigurationError(
                f"the embedder returned {vecs.shape[0]} vectors for {len(texts)} texts", field="embedder"
            )
        x = _feature_matrix(parts, {t: i for i, t in enumerate(texts)}, vecs, dim)
        y = np.asarray(ints)
        models: list[Logistic] = []
        used_l2: list[float | None] = []  # per boundary; None for a constant one
        for b in range(n_tiers - 1):
            yb = (y > b).astype(np.float64)
            positives = float(yb.sum()) if weights is None else float((weights * yb).sum())
            total = float(len(yb)) if weights is None else float(weights.sum())
            if 0 < yb.sum() < len(yb):
                l2_b = _auto_l2(x, yb, weights) if auto else float(l2)
                used_l2.append(l2_b)
                fitted = _fit_varying(x, yb, l2=l2_b, sample_weight=weights)
            else:  # no example on one side of this boundary: a constant at the smoothed base rate
                used_l2.append(None)
                p = (positives + 0.5) / (total + 1.0)
                fitted = Logistic(
                    weights=(0.0,) * x.shape[1],
                    bias=math.log(p / (1 - p)),
                    mean=(0.0,) * x.shape[1],
                    scale=(1.0,) * x.shape[1],
                )
            # What is saved is what is used: scores after save/load are identical.
            models.append(Logistic.from_dict(fitted.to_dict()))
        counts = [int((y == k).sum()) for k in range(n_tiers)]
        return cls(
            models,
            embedder=emb,
            embedder_name=emb.name,
            embedder_dim=dim,
            meta={
                "n": len(ints),
                "label_counts": counts,
                # two tiers: the penalty; more: one per tier boundary (None where the boundary is constant)
                "l2": (used_l2[0] if n_tiers == 2 else used_l2) if auto else l2,
                "l2_auto": auto,
                "weighted": weights is not None,
            },
        )

    # -- persistence ---------------------------------------------------------------------------------------------
    def to_json(self) -> str:
        """The model as a small JSON document (embedder name and size, tiers, one logistic model per boundary)."""
        return json.dumps(
            {
                "kind": _KIND_SCORER,
                "version": 1,
                "features": _FEATURES,
                "embedder": {"name": self._embedder_name, "dim": self._embedder_dim},
                "n_tiers": self.n_tiers,
                "boundaries": [m.to_dict() for m in self._boundaries],
                "meta": self.meta,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str | bytes, *, embedder: Any = None) -> TrainedScorer:
        """Load a model written by :meth:`to_json`; ``embedder`` must be the one it was fit with (default: the
        default embedder). Bad JSON raises ConfigurationError(``field="json"``); another embedder,
        ConfigurationError(``field="embedder"``).
        """
        return cls._parse(text, embedder, "json")

    @classmethod
    def _parse(cls, text: str | bytes, embedder: Any, field: str) -> TrainedScorer:
        try:
            d = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as e:
            raise ConfigurationError(f"not a saved TrainedScorer (invalid JSON: {e})", field=field) from e
        if not isinstance(d, dict) or d.get("kind") != _KIND_SCORER:
            raise ConfigurationError("not a saved TrainedScorer (missing kind)", field=field)
        if d.get("features") != _FEATURES:
            raise ConfigurationError(
                f"the saved scorer uses features {d.get('features')!r}; this version reads {_FEATURES!r}: refit it",
                field=field,
            )
        try:
            name = d["embedder"]["name"]
            dim = d["embedder"]["dim"]
            boundaries = [Logistic.from_dict(m) for m in d["boundaries"]]
            n_tiers = int(d["n_tiers"])
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigurationError(f"not a saved TrainedScorer: {e!r}", field=field) from e
        if n_tiers != len(boundaries) + 1:
            raise ConfigurationError(
                f"the saved scorer has {len(boundaries)} boundary models for {n_tiers} tiers", field=field
            )
        meta = d.get("meta")
        return cls(
            boundaries,
            embedder=embedder,
            embedder_name=name,
            embedder_dim=dim,
            meta=meta if isinstance(meta, dict) else {},
        )

    def save(self, path: str | Path) -> None:
        """Write :meth:`to_json` to ``path``."""
        Path(path).write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path, *, embedder: Any = None) -> TrainedScorer:
        """Read a model written by :meth:`save` (errors as in :meth:`from_json`, with ``field="path"`` for an
        unreadable file or bad JSON).

        Example:
            >>> import os, tempfile
            >>> from frugal_chains.routing import TrainedScorer
            >>> from frugal_chains.testing import FakeEmbeddings
            >>> s = TrainedScorer.fit(["hi", "hey", "prove it", "derive it"], [0, 0, 1, 1], embedder=FakeEmbeddings())
            >>> path = os.path.join(tempfile.mkdtemp(), "scorer.json")
            >>> s.save(path)
            >>> TrainedScorer.load(path, embedder=FakeEmbeddings()).score("hey") == s.score("hey")
            True
        """
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigurationError(f"cannot read the scorer file {str(path)!r}: {e}", field="path") from e
        return cls._parse(text, embedder, "path")


def _auto_l2(x: NDArray[np.float64], y: NDArray[np.float64], weights: NDArray[np.float64] | None) -> float:
    """``l2="auto"``: :func:`choose_l2` on the columns that vary (as :func:`_fit_varying` fits them)."""
    return choose_l2(x[:, _varying(x)], y, sample_weight=weights)


def _varying(x: NDArray[np.float64]) -> NDArray[np.bool_]:
    """The columns that are not (nearly) constant; at least the first one."""
    varying: NDArray[np.bool_] = x.std(axis=0) > 1e-6
    if not varying.any():
        varying[0] = True
    return varying


def _fit_varying(
    x: NDArray[np.float64], y: NDArray[np.float64], *, l2: float, sample_weight: NDArray[np.float64] | None
) -> Logistic:
    """:func:`fit_logistic` on the columns that vary; (nearly) constant columns (the earlier-turns block of
    single-turn data, dead embedding dimensions) get weight 0 and scale 1, which is what a fit on all columns gives,
    at a fraction of the cost, and keeps the saved scales (rounded to 8 decimals) away from 0."""
    import numpy as np

    varying = _varying(x)
    if varying.all():
        return fit_logistic(x, y, l2=l2, sample_weight=sample_weight)
    part = fit_logistic(x[:, varying], y, l2=l2, sample_weight=sample_weight)
    weights = np.zeros(x.shape[1])
    weights[varying] = part.weights
    mean = x.mean(axis=0)
    mean[varying] = part.mean
    scale = np.ones(x.shape[1])
    scale[varying] = part.scale
    return Logistic(
        weights=tuple(float(v) for v in weights),
        bias=part.bias,
        mean=tuple(float(v) for v in mean),
        scale=tuple(float(v) for v in scale),
    )


def _feature_matrix(
    parts: Sequence[tuple[str, list[str], int]], index: Mapping[str, int], vecs: NDArray[np.float64], dim: int
) -> NDArray[np.float64]:
    """Rows ``[emb(last), mean emb(earlier), log1p(chars of last), log1p(user turns)]``."""
    import numpy as np

    x = np.zeros((len(parts), 2 * dim + 2))
    for row, (last, earlier, turns) in enumerate(parts):
        x[row, :dim] = vecs[index[last]]
        if earlier:
            x[row, dim : 2 * dim] = vecs[[index[t] for t in earlier]].mean(axis=0)
        x[row, 2 * dim] = math.log1p(len(last))
        x[row, 2 * dim + 1] = math.log1p(turns)
    return x


# ---------------------------------------------------------------------------------------------------------------
# callable scorer
# ---------------------------------------------------------------------------------------------------------------


def _is_async_callable(fn: Any) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))  # noqa: B004


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class CallableScorer:
    """Your own scorer: a function ``messages -> float in [0, 1]``, sync or ``async def``.

    :meth:`ascore` awaits an async function and calls a sync one directly. :meth:`score` calls a sync function;
    an async one is run to completion with ``asyncio.run`` when no event loop is running in this thread (e.g.
    ``model.invoke`` in a script), and raises ``TypeError`` (use ``ascore`` / ``ainvoke``) when one is. A result
    that is not a number in [0, 1] (or is NaN) raises ``ValueError`` naming the scorer; ``True``/``False`` count
    as 1/0.

    Args:
        fn: the function; it receives the OpenAI-format message list.
        name: shown in metadata and errors (default: the function's name).

    Example:
        >>> from frugal_chains.routing import CallableScorer
        >>> scorer = CallableScorer(lambda msgs: 0.9 if "proof" in msgs[-1]["content"] else 0.1, name="proofs")
        >>> scorer.score([{"role": "user", "content": "a proof please"}]), scorer.name
        (0.9, 'proofs')
        >>> async def remote(msgs):
        ...     return 0.3
        >>> import asyncio
        >>> asyncio.run(CallableScorer(remote).ascore([{"role": "user", "content": "hi"}]))
        0.3
    """

    def __init__(
        self, fn: Callable[[Sequence[Message]], float | Awaitable[float]], name: str | None = None
    ) -> None:
        if not callable(fn):
            raise ConfigurationError(
                f"fn must be a callable taking the messages and returning a score, got {type(fn).__name__}",
                field="fn",
            )
        if name is None:
            name = getattr(fn, "__name__", None) or type(fn).__name__
            if name == "<lambda>":
                name = "callable"
        if not isinstance(name, str) or not name:
            raise ConfigurationError("name must be a non-empty string", field="name")
        self._fn = fn
        self._name = name
        self._async = _is_async_callable(fn)

    @property
    def name(self) -> str:
        return self._name

    def __repr__(self) -> str:
        return f"CallableScorer({self._name!r})"

    def _check(self, value: Any) -> float:
        if isinstance(value, bool):
            return 1.0 if value else 0.0
        if isinstance(value, str) or not hasattr(value, "__float__"):
            raise ValueError(
                f"scorer {self._name!r} returned {value!r} ({type(value).__name__}); a score must be a number in "
                "[0, 1]"
            )
        v = float(value)
        if not 0.0 <= v <= 1.0:  # also catches NaN
            raise ValueError(f"scorer {self._name!r} returned {value!r}; a score must be a number in [0, 1]")
        return v

    def score(self, messages: Conversation) -> float:
        """Call the function (see the class docstring for async functions)."""
        msgs = _as_messages(messages, "messages")
        if self._async and _loop_running():
            raise TypeError(
                f"scorer {self._name!r} is async and an event loop is running: use ascore() (ainvoke/astream) "
                "instead of score()"
            )
        result: Any = self._fn(msgs)
        if inspect.isawaitable(result):
            if _loop_running():
                if inspect.iscoroutine(result):
                    result.close()
                raise TypeError(
                    f"scorer {self._name!r} returned an awaitable while an event loop is running: use ascore()"
                )
            if not inspect.iscoroutine(result):
                raise TypeError(f"scorer {self._name!r} returned a non-coroutine awaitable: use ascore()")
            result = asyncio.run(result)
        return self._check(result)

    async def ascore(self, messages: Conversation) -> float:
        """Await (or call) the function."""
        msgs = _as_messages(messages, "messages")
        result: Any = self._fn(msgs)
        if inspect.isawaitable(result):
            result = await result
        return self._check(result)
