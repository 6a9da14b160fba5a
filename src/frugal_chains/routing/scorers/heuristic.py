"""The heuristic scorer: hand-set weights over cheap text features of the conversation (no training)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType

from frugal_chains.errors import ConfigurationError
from frugal_chains.routing.scorers.inputs import Conversation, as_messages, finite
from frugal_chains.routing.scorers.lexicon import (
    CLASSIFY,
    CODE_ASK,
    CODE_MARKS,
    CONSTRAINT,
    CREATIVE_ADJ,
    CREATIVE_NOUN,
    CREATIVE_VERB,
    GREETING,
    LATEX,
    LIST_ITEM,
    MATH_ASK,
    MATH_EXPR,
    PREVIOUS_SCAN_CHARS,
    REASONING,
    SCAN_CHARS,
    SHORT_FACT,
    TRANSLATE,
    VARIABLE,
    saturate,
    scan_text,
    word_counts,
)
from frugal_chains.routing.types import content_text
from frugal_chains.shared.question import QuestionKey, as_question_key

__all__ = ["HeuristicScorer"]


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
        question_key: selects what "the last user turn" is (default :class:`~frugal_chains.QuestionKey` ()): in a
            known RAG template (LlamaIndex's text-QA and refine prompts, LangChain's RAG prompts) the features are
            those of the question, not of the template and its passages, so a templated question scores as the
            bare one.

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

    def __init__(
        self,
        *,
        weights: Mapping[str, float] | None = None,
        bias: float = _DEFAULT_BIAS,
        question_key: QuestionKey | None = None,
    ) -> None:
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
                merged[k] = finite(v, "weights")
        self._weights = merged
        self._bias = finite(bias, "bias")
        self._items = tuple(merged.items())
        self._question_key = as_question_key(question_key)

    @property
    def question_key(self) -> QuestionKey:
        """What is scored: the question the :class:`~frugal_chains.QuestionKey` selects from the last user turn."""
        return self._question_key

    def with_question_key(self, question_key: QuestionKey | None) -> HeuristicScorer:
        """The same weights, selecting the question with ``question_key`` (the cascade's ``question_key=``)."""
        return type(self)(weights=self._weights, bias=self._bias, question_key=question_key)

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
        msgs = self._question_key.view(as_messages(messages, "messages"))
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
        text = scan_text(raw, SCAN_CHARS)
        counts, numbers, unit_counts = word_counts(text)

        code = (1.0 if "```" in text or "~~~" in text else 0.0) + 0.25 * sum(
            text.count(c) for c in CODE_MARKS
        )
        math_hits = 0.5 * len(MATH_EXPR.findall(text)) + 0.1 * numbers
        if "^" in text or "=" in text:
            math_hits += 0.5 * len(VARIABLE.findall(text))
        if "\\" in text or "$" in text:
            math_hits += 0.5 * len(LATEX.findall(text))
        multi = 0.5 * max(0, text.count("?") - 1)
        if "1." in text or "1)" in text or "\n" in text or "a)" in text:
            multi += 0.25 * len(LIST_ITEM.findall(text))
        hard_words = counts[CODE_ASK] + counts[MATH_ASK] + counts[REASONING]

        easy = 0.0
        if n < 40 and GREETING.search(text):
            easy = 1.0
        elif n < 200 and counts[TRANSLATE]:
            easy = 0.9
        elif n < 400 and counts[CLASSIFY]:
            easy = 0.8
        elif n < 100 and hard_words == 0 and code == 0 and math_hits < 0.5 and SHORT_FACT.search(text):
            easy = 0.7

        creative = counts[CREATIVE_ADJ] or (counts[CREATIVE_VERB] and counts[CREATIVE_NOUN])

        previous_hard = 0.0
        if len(users) > 1:
            prev = scan_text(users[-2], PREVIOUS_SCAN_CHARS)
            pc = word_counts(prev)[0]
            hits = pc[CODE_ASK] + pc[MATH_ASK] + pc[REASONING] + (2 if "```" in prev else 0)
            previous_hard = saturate(hits, 3)

        return {
            "length": min(1.5, math.log1p(n) / _LOG_LENGTH),
            "code": min(1.0, code),
            "code_ask": saturate(counts[CODE_ASK], 2),
            "math": min(1.0, math_hits),
            "math_ask": saturate(counts[MATH_ASK], 2),
            "reasoning": saturate(counts[REASONING], 2),
            "multi_part": min(1.0, multi),
            "constraints": saturate(counts[CONSTRAINT] + unit_counts, 3),
            "creative": 1.0 if creative else 0.0,
            "easy": easy,
            "depth": saturate(max(0, len(users) - 1), 4),
            "history": min(1.0, math.log1p(earlier_chars) / _LOG_HISTORY),
            "previous_hard": previous_hard,
            "tools": saturate(tool_events, 4),
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
