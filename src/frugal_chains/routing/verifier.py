"""A trained answer verifier: FrugalGPT's answer scorer, a classifier on question + answer fit on labelled outcomes.

FrugalGPT (Chen, Zaharia, Zou, 2023) decides whether to accept a cheap model's answer with a small model that
scores the (question, answer) pair, trained on examples where the answer is known to be right or wrong.
:class:`TrainedVerifier` does the same without fine-tuning anything: a logistic regression (``fit_logistic``) on

* **embeddings** of the question and of the answer (the default offline MiniLM, or any embedder), their
  elementwise product and their cosine; and
* **cheap answer features** that carry over between tasks: length, how many numbers, a final-answer marker
  (``####``, "the answer is"), hedges ("I think", "not sure", "assuming"), repeated lines, share of digits, an answer
  that looks cut off, arithmetic the answer writes down that does not add up ("16 - 3 = 12"), how many of the
  question's numbers the answer uses, whether the final number is a fraction, its size, whether it is the result of
  one of the answer's own calculations, and the question's length and count of numbers.

The embedding block has ``3 * dim + 1`` features, far more than the handful of cheap ones; fit jointly with them
on a few hundred labels it drowns them (on two thirds of GSM8K: cross-validated AUC 0.66 instead of 0.78 for the
cheap features alone). So it is **stacked**: a separate, strongly regularised logistic regression on the embedding
block is fit first, and its out-of-fold log-odds (5-fold, stratified) become one feature of the final model, beside
the cheap features and the cosine. Where the embeddings carry signal (open-ended answers, a narrow domain) the
final model weighs that feature up; where they do not, it weighs it down instead of overfitting.

Measured on RouteLLM's GSM8K outcomes (1,319 Mixtral-8x7B answers, graded correct or not; default embedder and
settings): AUC **0.79** with 5-fold cross-validation (0.79 on a held-out third when fit on the other two thirds).
On that data the embeddings add nothing over the cheap features (also 0.79): grade-school maths is judged by its
arithmetic, not by its topic. The cascade built on it is measured by ``benchmarks/routing.py``.

Example:
    >>> from frugal_chains.routing import TrainedVerifier
    >>> from frugal_chains.testing import HashEmbeddings
    >>> questions = [f"What is {i} + {i}?" for i in range(1, 21)]
    >>> answers = [f"{i} + {i} = {2 * i}. The answer is {2 * i}." if i % 2 else f"I think it is {i}.{i}"
    ...            for i in range(1, 21)]
    >>> labels = [i % 2 for i in range(1, 21)]
    >>> verifier = TrainedVerifier.fit(questions, answers, labels, embedder=HashEmbeddings())
    >>> verifier.score("What is 30 + 30?", "30 + 30 = 60. The answer is 60.") > 0.5
    True
    >>> verifier.score("What is 30 + 30?", "I think it is 30.5") < 0.5
    True
"""

from __future__ import annotations

import ast
import json
import math
import os
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from frugal_chains._progress import progress_bar, wants_progress
from frugal_chains.errors import ConfigurationError
from frugal_chains.routing.gates.common import tool_calls_key
from frugal_chains.routing.gates.extract import FINAL_MARKER, find_numbers
from frugal_chains.routing.types import GateContext, GateResult, Message, TierAnswer, content_text
from frugal_chains.shared.logistic import Logistic, fit_logistic

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from frugal_chains.embeddings import Embedder

__all__ = ["ANSWER_FEATURES", "TrainedVerifier", "answer_features"]

_FORMAT = "frugal_chains.TrainedVerifier"
_VERSION = 1
_FEATURES_VERSION = "qa-v1"
_INNER_FOLDS = 5

Question = str | Sequence[Message]
"""A question: a string, or an OpenAI-format conversation (the last user turn is the question)."""

ANSWER_FEATURES: tuple[str, ...] = (
    "log_answer_chars",
    "log_answer_numbers",
    "has_final_marker",
    "log_hedges",
    "repeated_line_share",
    "digit_share",
    "looks_truncated",
    "log_equations",
    "wrong_equation_share",
    "any_wrong_equation",
    "question_numbers_used",
    "final_not_integer",
    "log_final_magnitude",
    "final_differs_from_last_result",
    "final_is_a_result",
    "log_question_chars",
    "log_question_numbers",
    "has_number",
)
"""Names of the cheap features :func:`answer_features` returns, in order."""

_HEDGE = re.compile(
    r"\bnot (?:sure|certain)\b|\bunclear\b|\bapproximately\b|\bassum|\bprobably\b|\bperhaps\b|\bmaybe\b|\bmight\b"
    r"|\bi think\b|\bi believe\b|\bhowever\b|\bround(?:ed|ing)?\b|\bnot possible\b|\bcan(?:no|')?t (?:have|be)\b"
    r"|\bestimate|\bi (?:don'?t|do not) know\b",
    re.IGNORECASE,
)
_EQUATION = re.compile(
    r"([\d.,\s+\-*/x\u00d7\u00f7()$%]*\d[\d.,\s+\-*/x\u00d7\u00f7()$%]*)=\s*\$?(-?\d[\d,]*(?:\.\d+)?)(?![\d.]\d)"
)
_OPERATOR = re.compile(r"[+\-*/]")
_TERMINAL = frozenset(".!?)]}\"'`*")


def _eval_arithmetic(expr: str) -> float | None:
    """The value of a plain arithmetic expression (numbers, + - * / and parentheses), else None."""
    expr = (
        expr.replace(",", "")
        .replace("$", "")
        .replace("\u00d7", "*")
        .replace("\u00f7", "/")
        .replace("x", "*")
        .replace("%", "/100")
        .strip()
    )
    if not expr or len(expr) > 200 or not _OPERATOR.search(expr.lstrip("-")):
        return None
    try:
        tree = ast.parse(expr, mode="eval")
    except (SyntaxError, ValueError, RecursionError):
        return None

    def ev(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, (int, float))
            and not isinstance(node.value, bool)
        ):
            return float(node.value)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            v = ev(node.operand)
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div)):
            a, b = ev(node.left), ev(node.right)
            if isinstance(node.op, ast.Add):
                return a + b
            if isinstance(node.op, ast.Sub):
                return a - b
            if isinstance(node.op, ast.Mult):
                return a * b
            return a / b
        raise ValueError("not arithmetic")

    try:
        value = ev(tree)
    except (ValueError, ZeroDivisionError, OverflowError, RecursionError):
        return None
    return value if math.isfinite(value) else None


def _floats(text: str) -> list[float]:
    out = []
    for d in find_numbers(text):
        v = float(d)
        if math.isfinite(v):
            out.append(v)
    return out


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))


def answer_features(question: str, answer: str) -> list[float]:
    """The cheap features of a (question, answer) pair, named by :data:`ANSWER_FEATURES`.

    Example:
        >>> from frugal_chains.routing.verifier import ANSWER_FEATURES, answer_features
        >>> f = dict(zip(ANSWER_FEATURES, answer_features("Tom has 3 apples and buys 4. How many?",
        ...                                               "3 + 4 = 8\\n#### 8")))
        >>> f["has_final_marker"], f["any_wrong_equation"], f["question_numbers_used"], f["final_is_a_result"]
        (1.0, 1.0, 1.0, 1.0)
    """
    a = answer.strip()
    a_nums = _floats(a)
    q_nums = _floats(question)
    markers = list(FINAL_MARKER.finditer(a))
    final: float | None = None
    if markers:
        after = _floats(a[markers[-1].end() :])
        final = after[0] if after else None
    if final is None and a_nums:
        final = a_nums[-1]

    lines = [line.strip() for line in a.splitlines() if line.strip()]
    repeated = 1.0 - len(set(lines)) / len(lines) if lines else 0.0
    visible = [c for c in a if not c.isspace()]
    digit_share = sum(c.isdigit() for c in visible) / len(visible) if visible else 0.0
    last_line = lines[-1] if lines else ""
    truncated = 0.0 if (not a or a[-1] in _TERMINAL or FINAL_MARKER.search(last_line)) else 1.0

    n_eq = n_wrong = 0
    results: list[float] = []
    for m in _EQUATION.finditer(a):
        rhs_tokens = find_numbers(m.group(2))
        if not rhs_tokens:
            continue
        rhs = float(rhs_tokens[0])
        if not math.isfinite(rhs):
            continue
        results.append(rhs)
        lhs = _eval_arithmetic(m.group(1))
        if lhs is None:
            continue
        n_eq += 1
        if abs(lhs - rhs) > max(0.01, 0.01 * abs(lhs)):  # "2/3 = 0.67" is right, "16 - 3 = 12" is not
            n_wrong += 1

    q_set = {round(v, 6) for v in q_nums}
    a_set = {round(v, 6) for v in a_nums}
    used = len(q_set & a_set) / len(q_set) if q_set else 0.0
    not_integer = 1.0 if final is not None and not _close(final, round(final)) else 0.0
    magnitude = math.log1p(min(abs(final), 1e300)) if final is not None else 0.0
    differs = 1.0 if final is not None and results and markers and not _close(results[-1], final) else 0.0
    is_result = 1.0 if final is not None and any(_close(final, r) for r in results) else 0.0
    return [
        math.log1p(len(a)),
        math.log1p(len(a_nums)),
        1.0 if markers else 0.0,
        math.log1p(len(_HEDGE.findall(a.replace("\u2019", "'")))),
        repeated,
        digit_share,
        truncated,
        math.log1p(n_eq),
        n_wrong / n_eq if n_eq else 0.0,
        1.0 if n_wrong else 0.0,
        used,
        not_integer,
        magnitude,
        differs,
        is_result,
        math.log1p(len(question)),
        math.log1p(len(q_nums)),
        0.0 if final is None else 1.0,
    ]


def _question_text(question: Question, field: str = "questions") -> str:
    """A string as is; a conversation: the last user turn, then the earlier user turns (newest first), so an
    embedder that truncates long inputs keeps the question."""
    if isinstance(question, str):
        return question
    if isinstance(question, Sequence) and all(isinstance(m, Mapping) for m in question):
        messages: list[Mapping[str, Any]] = [m for m in question if isinstance(m, Mapping)]
        turns = [content_text(m.get("content")) for m in messages if m.get("role") in ("user", "human")]
        if not turns:
            turns = [content_text(m.get("content")) for m in messages]
        return "\n\n".join(reversed([t for t in turns if t.strip()] or [""]))
    raise ConfigurationError(
        f"a question must be a string or a list of OpenAI-format message dicts, got {type(question).__name__}",
        field=field,
    )


def _answer_text(answer: str | TierAnswer) -> str:
    if isinstance(answer, TierAnswer):
        if answer.text.strip() or not answer.tool_calls:
            return answer.text
        return tool_calls_key(answer)
    if isinstance(answer, str):
        return answer
    raise ConfigurationError(f"an answer must be a string, got {type(answer).__name__}", field="answers")


def _check_threshold(threshold: object) -> float:
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, (int, float))
        or not 0.0 <= float(threshold) <= 1.0
    ):
        raise ConfigurationError(
            f"threshold must be a number in [0, 1], got {threshold!r}", field="threshold"
        )
    return float(threshold)


def _check_batch_size(batch_size: object) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigurationError(f"batch_size must be an int >= 1, got {batch_size!r}", field="batch_size")
    return batch_size


def _logit(p: NDArray[Any]) -> NDArray[Any]:
    import numpy as np

    q = np.clip(p, 1e-6, 1 - 1e-6)
    out: NDArray[Any] = np.log(q / (1 - q))
    return out


def _embedding_block(q: NDArray[Any], a: NDArray[Any]) -> NDArray[Any]:
    import numpy as np

    cos = (q * a).sum(axis=1, keepdims=True)
    out: NDArray[Any] = np.hstack([q, a, q * a, cos])
    return out


def _stratified_folds(labels: NDArray[Any], k: int) -> NDArray[Any]:
    import numpy as np

    rng = np.random.default_rng(0)
    folds = np.empty(len(labels), dtype=np.int64)
    for cls in (0, 1):
        idx = np.flatnonzero(labels == cls)
        folds[rng.permutation(idx)] = np.arange(len(idx)) % k
    return folds


class TrainedVerifier:
    """A quality gate that scores (question, answer) with a classifier fit on your labelled outcomes: passes when
    P(good) >= ``threshold`` (``GateResult.score`` = P(good)). Build one with :meth:`fit` or :meth:`load`.

    See the module docstring for the features and the stacking of the embedding block. The verifier is
    immutable and thread-safe; the embedder (default: :func:`frugal_chains.embeddings.default_embedder`, created
    on first need) must be the one it was fit with: :meth:`load` checks its name and size.

    Args:
        model: the final logistic model (cheap features, cosine, embedding log-odds).
        embedding_model: the logistic model on the embedding block (None when there were too few labels to
            stack it; the feature is then 0).
        embedder_name: the name of the embedder it was fit with.
        embedder_dim: that embedder's vector size.
        threshold: P(good) at or above which the gate passes, in [0, 1].
        embedder: the embedder to use (must match ``embedder_name``/``embedder_dim``); ``None``: the default,
            created on first use.
        n_train: how many labelled examples it was fit on (informational).

    Example:
        >>> from frugal_chains.routing import GateContext, TierAnswer, TrainedVerifier
        >>> from frugal_chains.testing import HashEmbeddings
        >>> qs = [f"How many legs do {n} cats have?" for n in range(2, 22)]
        >>> good = [f"{n} x 4 = {4 * n}. The answer is {4 * n}." for n in range(2, 22)]
        >>> bad = ["I'm not sure, maybe a lot." for n in range(2, 22)]
        >>> v = TrainedVerifier.fit(qs + qs, good + bad, [1] * 20 + [0] * 20, embedder=HashEmbeddings())
        >>> ctx = GateContext(messages=[{"role": "user", "content": "How many legs do 30 cats have?"}],
        ...                   answer=TierAnswer(text="30 x 4 = 120. The answer is 120."), tier="cheap",
        ...                   tier_index=0, n_tiers=2)
        >>> v.check(ctx).passed, v.name
        (True, 'verifier')
        >>> v.with_threshold(1.0).check(ctx).passed
        False
    """

    def __init__(
        self,
        *,
        model: Logistic,
        embedding_model: Logistic | None,
        embedder_name: str,
        embedder_dim: int,
        threshold: float = 0.5,
        embedder: Any = None,
        n_train: int = 0,
    ) -> None:
        if not isinstance(model, Logistic) or (
            embedding_model is not None and not isinstance(embedding_model, Logistic)
        ):
            raise ConfigurationError(
                "model and embedding_model must be fitted Logistic models", field="model"
            )
        if model.n_features != len(ANSWER_FEATURES) + 2:
            raise ConfigurationError(
                f"the model has {model.n_features} features, expected {len(ANSWER_FEATURES) + 2}",
                field="model",
            )
        if embedding_model is not None and embedding_model.n_features != 3 * embedder_dim + 1:
            raise ConfigurationError(
                f"the embedding model has {embedding_model.n_features} features, expected "
                f"{3 * embedder_dim + 1} for a {embedder_dim}-dimensional embedder",
                field="embedder",
            )
        self.model = model
        self.embedding_model = embedding_model
        self.embedder_name = embedder_name
        self.embedder_dim = int(embedder_dim)
        self.threshold = _check_threshold(threshold)
        self.n_train = int(n_train)
        self._embedder: Embedder | None = None
        self._lock = threading.Lock()
        if embedder is not None:
            self._embedder = self._checked_embedder(embedder)

    # -- the embedder ------------------------------------------------------------------------------------------
    def _checked_embedder(self, embedder: Any) -> Embedder:
        from frugal_chains.embeddings import as_embedder

        emb = as_embedder(embedder)
        if emb.name != self.embedder_name or emb.dim != self.embedder_dim:
            raise ConfigurationError(
                f"this verifier was fit with the embedder {self.embedder_name!r} ({self.embedder_dim} dims); "
                f"got {emb.name!r} ({emb.dim} dims). Pass the same embedder, or refit.",
                field="embedder",
            )
        return emb

    @property
    def embedder(self) -> Embedder:
        """The embedder (the default one is created on first use)."""
        if self._embedder is None:
            with self._lock:
                if self._embedder is None:
                    from frugal_chains.embeddings import default_embedder

                    self._embedder = self._checked_embedder(default_embedder())
        return self._embedder

    @property
    def name(self) -> str:
        """``"verifier"``."""
        return "verifier"

    @property
    def needs_full_answer(self) -> bool:
        """True."""
        return True

    def __repr__(self) -> str:
        return (
            f"TrainedVerifier(embedder={self.embedder_name!r}, threshold={self.threshold}, n_train={self.n_train}, "
            f"stacked={self.embedding_model is not None})"
        )

    # -- fitting -----------------------------------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        questions: Sequence[Question],
        answers: Sequence[str],
        labels: Sequence[int | bool | float],
        *,
        embedder: Any = None,
        threshold: float = 0.5,
        l2: float = 1.0,
        embedding_l2: float = 100.0,
        batch_size: int = 64,
        progress: bool | None = None,
    ) -> TrainedVerifier:
        """Fit on labelled outcomes: ``labels[i]`` is 1 when ``answers[i]`` was a good enough answer to
        ``questions[i]``, else 0.

        Args:
            questions: strings or OpenAI-format conversations (the last user turn, then the earlier ones).
            answers: the answers, as strings.
            labels: 1/0 or True/False, both classes present.
            embedder: an :class:`~frugal_chains.embeddings.Embedder`, a LangChain ``Embeddings`` or a LlamaIndex
                embedding; default: the offline MiniLM (:func:`~frugal_chains.embeddings.default_embedder`).
            threshold: the gate's P(good) threshold, in [0, 1] (calibrate it; see ``calibrate(gate_scores=...)``).
            l2: L2 penalty of the final model (on standardised features), >= 0.
            embedding_l2: L2 penalty of the stacked embedding model, >= 0 (it has ``3 * dim + 1`` features).
            batch_size: texts per embedding call, >= 1.
            progress: a progress bar on stderr (embedding, then the fits): ``None`` (default) when stderr is a
                terminal, ``True`` always, ``False`` never.

        Raises:
            ConfigurationError: lengths differ, labels are not 0/1 or only one class, a value out of range (names
                the field).

        Example:
            >>> from frugal_chains.routing import TrainedVerifier
            >>> from frugal_chains.testing import HashEmbeddings
            >>> TrainedVerifier.fit(["q1", "q2"], ["a", "b"], [1, 1], embedder=HashEmbeddings())
            Traceback (most recent call last):
                ...
            frugal_chains.errors.ConfigurationError: labels must contain both classes (1 = good, 0 = not), got only 1
        """
        import numpy as np

        q_list, a_list = cls._check_pairs(questions, answers)
        if isinstance(labels, (str, bytes)) or not isinstance(labels, Sequence | np.ndarray):
            raise ConfigurationError("labels must be a sequence of 0/1", field="labels")
        if len(labels) != len(q_list):
            raise ConfigurationError(
                f"labels has {len(labels)} items for {len(q_list)} questions: one label per question",
                field="labels",
            )
        y_list: list[float] = []
        for v in labels:
            fv = float(v) if isinstance(v, (int, float, np.integer, np.floating, np.bool_)) else math.nan
            if fv not in (0.0, 1.0):
                raise ConfigurationError(f"labels must be 0/1 or True/False, got {v!r}", field="labels")
            y_list.append(fv)
        y = np.asarray(y_list)
        n_pos = int(y.sum())
        if n_pos in (0, len(y)):
            raise ConfigurationError(
                f"labels must contain both classes (1 = good, 0 = not), got only {int(y[0])}", field="labels"
            )
        threshold = _check_threshold(threshold)
        for name, value in (("l2", l2), ("embedding_l2", embedding_l2)):
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not 0 <= float(value) < math.inf
            ):
                raise ConfigurationError(f"{name} must be a number >= 0, got {value!r}", field=name)
        batch_size = _check_batch_size(batch_size)

        from frugal_chains.embeddings import as_embedder, default_embedder

        wants_progress(progress)  # a bad value fails before the work
        emb = as_embedder(embedder) if embedder is not None else default_embedder()
        q_texts = [_question_text(q) for q in q_list]
        a_texts = [_answer_text(a) for a in a_list]
        k = min(_INNER_FOLDS, n_pos, len(y) - n_pos)
        total = 2 * math.ceil(len(q_texts) / batch_size) + (k + 2 if k >= 2 else 1)
        with progress_bar("training the answer verifier", total, progress=progress) as advance:
            block = _embedding_block(*cls._embed(emb, q_texts, a_texts, batch_size, advance))
            cheap = np.asarray(
                [answer_features(q, a) for q, a in zip(q_texts, a_texts, strict=True)], dtype=np.float64
            )
            embedding_model: Logistic | None = None
            stacked = np.zeros(len(y))
            if k >= 2:
                folds = _stratified_folds(y, k)
                for f in range(k):
                    train = folds != f
                    inner = fit_logistic(block[train], y[train], l2=float(embedding_l2))
                    stacked[~train] = _logit(inner.predict(block[~train]))
                    advance(1)
                embedding_model = fit_logistic(block, y, l2=float(embedding_l2))
                advance(1)
            final = fit_logistic(np.hstack([cheap, block[:, -1:], stacked[:, None]]), y, l2=float(l2))
            advance(1)
        verifier = cls(
            model=final,
            embedding_model=embedding_model,
            embedder_name=emb.name,
            embedder_dim=emb.dim,
            threshold=threshold,
            n_train=len(y),
        )
        verifier._embedder = emb
        return verifier

    @staticmethod
    def _check_pairs(
        questions: Sequence[Question], answers: Sequence[Any]
    ) -> tuple[list[Question], list[Any]]:
        if isinstance(questions, (str, bytes)) or not isinstance(questions, Sequence):
            raise ConfigurationError(
                "questions must be a list (of strings or conversations)", field="questions"
            )
        if isinstance(answers, (str, bytes)) or not isinstance(answers, Sequence):
            raise ConfigurationError("answers must be a list of strings", field="answers")
        q_list, a_list = list(questions), list(answers)
        if not q_list:
            raise ConfigurationError("questions must not be empty", field="questions")
        if len(a_list) != len(q_list):
            raise ConfigurationError(
                f"answers has {len(a_list)} items for {len(q_list)} questions: one answer per question",
                field="answers",
            )
        return q_list, a_list

    @staticmethod
    def _embed(
        emb: Embedder,
        q_texts: list[str],
        a_texts: list[str],
        batch_size: int,
        advance: Callable[[int], None] | None = None,
    ) -> tuple[NDArray[Any], NDArray[Any]]:
        import numpy as np

        def run(texts: list[str]) -> NDArray[Any]:
            parts = []
            for i in range(0, len(texts), batch_size):
                parts.append(np.asarray(emb.embed(texts[i : i + batch_size])))
                if advance is not None:
                    advance(1)
            return np.vstack(parts).astype(np.float64)

        return run(q_texts), run(a_texts)

    # -- scoring -----------------------------------------------------------------------------------------------
    def _predict(
        self, q_emb: NDArray[Any], a_emb: NDArray[Any], q_texts: list[str], a_texts: list[str]
    ) -> list[float]:
        import numpy as np

        if q_emb.shape[1] != self.embedder_dim:
            raise ConfigurationError(
                f"the embedder returned {q_emb.shape[1]}-dimensional vectors; this verifier was fit with "
                f"{self.embedder_dim}",
                field="embedder",
            )
        block = _embedding_block(q_emb.astype(np.float64), a_emb.astype(np.float64))
        if self.embedding_model is not None:
            stacked = _logit(self.embedding_model.predict(block))
        else:
            stacked = np.zeros(len(block))
        cheap = np.asarray(
            [answer_features(q, a) for q, a in zip(q_texts, a_texts, strict=True)], dtype=np.float64
        )
        probs = self.model.predict(np.hstack([cheap, block[:, -1:], stacked[:, None]]))
        return [float(p) for p in probs]

    def score(self, question: Question, answer: str | TierAnswer) -> float:
        """P(the answer is good enough), in [0, 1].

        Example:
            >>> from frugal_chains.routing import TrainedVerifier
            >>> from frugal_chains.testing import HashEmbeddings
            >>> v = TrainedVerifier.fit(["2+2?", "3+3?", "4+4?", "5+5?"], ["4", "I don't know", "8", "not sure"],
            ...                         [1, 0, 1, 0], embedder=HashEmbeddings())
            >>> 0.0 <= v.score([{"role": "user", "content": "6+6?"}], "12") <= 1.0
            True
        """
        return self.score_many([question], [answer])[0]

    async def ascore(self, question: Question, answer: str | TierAnswer) -> float:
        """Async :meth:`score` (the embedder's ``aembed``)."""
        import numpy as np

        q_text, a_text = _question_text(question), _answer_text(answer)
        vectors = np.asarray(await self.embedder.aembed([q_text, a_text]))
        return self._predict(vectors[:1], vectors[1:], [q_text], [a_text])[0]

    def score_many(
        self, questions: Sequence[Question], answers: Sequence[str | TierAnswer], batch_size: int = 64
    ) -> list[float]:
        """P(good) for many pairs, embedded in batches of ``batch_size`` (for benchmarks and calibration).

        Example:
            >>> from frugal_chains.routing import TrainedVerifier
            >>> from frugal_chains.testing import HashEmbeddings
            >>> v = TrainedVerifier.fit(["a?", "b?", "c?", "d?"], ["yes. #### 1", "unsure", "no. #### 0", "hmm"],
            ...                         [1, 0, 1, 0], embedder=HashEmbeddings())
            >>> len(v.score_many(["e?", "f?"], ["#### 2", "hmm"], batch_size=1))
            2
        """
        batch_size = _check_batch_size(batch_size)
        q_list, a_list = self._check_pairs(questions, answers)
        q_texts = [_question_text(q) for q in q_list]
        a_texts = [_answer_text(a) for a in a_list]
        q_emb, a_emb = self._embed(self.embedder, q_texts, a_texts, batch_size)
        return self._predict(q_emb, a_emb, q_texts, a_texts)

    def with_threshold(self, threshold: float) -> TrainedVerifier:
        """The same verifier with another threshold (e.g. from calibration).

        Example:
            >>> from frugal_chains.routing import TrainedVerifier
            >>> from frugal_chains.testing import HashEmbeddings
            >>> v = TrainedVerifier.fit(["a", "b"], ["x", "y"], [1, 0], embedder=HashEmbeddings())
            >>> v.with_threshold(0.8).threshold, v.threshold
            (0.8, 0.5)
        """
        other = TrainedVerifier(
            model=self.model,
            embedding_model=self.embedding_model,
            embedder_name=self.embedder_name,
            embedder_dim=self.embedder_dim,
            threshold=threshold,
            n_train=self.n_train,
        )
        other._embedder = self._embedder
        return other

    # -- the gate ----------------------------------------------------------------------------------------------
    def _gate_result(self, p: float) -> GateResult:
        if p >= self.threshold:
            return GateResult(gate=self.name, passed=True, score=p)
        return GateResult(
            gate=self.name, passed=False, score=p, reason=f"P(good)={p:.3f} < {self.threshold:g}"
        )

    def check(self, ctx: GateContext) -> GateResult:
        """Score the answer to the conversation; pass when P(good) >= threshold."""
        return self._gate_result(self.score(ctx.messages, ctx.answer))

    async def acheck(self, ctx: GateContext) -> GateResult:
        """Async :meth:`check`."""
        return self._gate_result(await self.ascore(ctx.messages, ctx.answer))

    # -- persistence -------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (see :meth:`to_json`)."""
        return {
            "format": _FORMAT,
            "version": _VERSION,
            "features": _FEATURES_VERSION,
            "feature_names": [*ANSWER_FEATURES, "cosine", "embedding_log_odds"],
            "embedder": {"name": self.embedder_name, "dim": self.embedder_dim},
            "threshold": self.threshold,
            "n_train": self.n_train,
            "model": self.model.to_dict(),
            "embedding_model": None if self.embedding_model is None else self.embedding_model.to_dict(),
        }

    def to_json(self) -> str:
        """The verifier as a small JSON document (the models' weights, the embedder's name and size).

        Example:
            >>> from frugal_chains import ConfigurationError
            >>> from frugal_chains.routing import TrainedVerifier
            >>> from frugal_chains.testing import HashEmbeddings
            >>> v = TrainedVerifier.fit(["a", "b", "c", "d"], ["x", "y", "z", "w"], [1, 0, 1, 0],
            ...                         embedder=HashEmbeddings())
            >>> w = TrainedVerifier.from_json(v.to_json(), embedder=HashEmbeddings())
            >>> abs(w.score("a", "x") - v.score("a", "x")) < 1e-6
            True
            >>> try:
            ...     TrainedVerifier.from_json(v.to_json(), embedder=HashEmbeddings(dim=32))
            ... except ConfigurationError as e:
            ...     print(e.field)
            embedder
        """
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, embedder: Any = None) -> TrainedVerifier:
        """Rebuild from :meth:`to_dict`; ``embedder`` must match the one it was fit with (default: the default)."""
        if not isinstance(data, Mapping) or data.get("format") != _FORMAT:
            raise ConfigurationError("not a saved TrainedVerifier", field="model")
        if data.get("version") != _VERSION or data.get("features") != _FEATURES_VERSION:
            raise ConfigurationError(
                f"a TrainedVerifier saved in format {data.get('version')}/{data.get('features')}; this version reads "
                f"{_VERSION}/{_FEATURES_VERSION}: refit it",
                field="model",
            )
        try:
            emb_info = data["embedder"]
            name, dim = str(emb_info["name"]), int(emb_info["dim"])
            threshold = data.get("threshold", 0.5)
            raw_emb = data.get("embedding_model")
            model = Logistic.from_dict(data["model"])
            embedding_model = None if raw_emb is None else Logistic.from_dict(raw_emb)
            n_train = int(data.get("n_train", 0))
        except ConfigurationError:
            raise
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigurationError(f"a saved TrainedVerifier is incomplete: {e!r}", field="model") from e
        verifier = cls(
            model=model,
            embedding_model=embedding_model,
            embedder_name=name,
            embedder_dim=dim,
            threshold=threshold,
            n_train=n_train,
        )
        if embedder is None:
            from frugal_chains.embeddings import default_embedder

            embedder = default_embedder()
        verifier._embedder = verifier._checked_embedder(embedder)
        return verifier

    @classmethod
    def from_json(cls, text: str | bytes, *, embedder: Any = None) -> TrainedVerifier:
        """Rebuild from :meth:`to_json`.

        Raises:
            ConfigurationError: not a saved verifier (``field="model"``), or ``embedder`` (default: the default
                embedder) is not the one it was fit with (``field="embedder"``).
        """
        try:
            data = json.loads(text)
        except ValueError as e:
            raise ConfigurationError(f"not JSON: {e}", field="model") from e
        return cls.from_dict(data, embedder=embedder)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write :meth:`to_json` to ``path``.

        Example:
            >>> import tempfile, os
            >>> from frugal_chains.routing import TrainedVerifier
            >>> from frugal_chains.testing import HashEmbeddings
            >>> v = TrainedVerifier.fit(["a", "b"], ["x", "y"], [1, 0], embedder=HashEmbeddings(), threshold=0.6)
            >>> path = os.path.join(tempfile.mkdtemp(), "verifier.json")
            >>> v.save(path)
            >>> TrainedVerifier.load(path, embedder=HashEmbeddings()).threshold
            0.6
        """
        Path(path).write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, embedder: Any = None) -> TrainedVerifier:
        """Read a verifier written by :meth:`save` (see :meth:`from_json` for ``embedder``)."""
        return cls.from_json(Path(path).read_text(encoding="utf-8"), embedder=embedder)
