"""The trained scorer: an ordinal embedding classifier fit on your own outcomes (which tier was good enough)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from frugal_chains._progress import progress_bar, wants_progress
from frugal_chains.errors import ConfigurationError
from frugal_chains.routing.scorers.inputs import Conversation, as_messages, finite
from frugal_chains.routing.types import Message, user_turns
from frugal_chains.shared.logistic import AUTO_FOLDS, L2_GRID, Logistic, choose_l2, fit_logistic
from frugal_chains.shared.question import QuestionKey, as_question_key

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    from frugal_chains.embeddings import Embedder

__all__ = ["TrainedScorer"]

_MAX_EARLIER_TURNS = 8
_FEATURES = "last_turn+mean_earlier_user_turns+log1p_chars+log1p_user_turns"
_KIND_SCORER = "frugal_chains.routing.TrainedScorer"


def _turn_texts(messages: Sequence[Message], key: QuestionKey) -> tuple[str, list[str], int]:
    """(the question of the last user turn, up to 8 earlier user turns, number of user turns)."""
    turns = user_turns(key.view(messages))
    if not turns:
        return "", [], 0
    return turns[-1], turns[:-1][-_MAX_EARLIER_TURNS:], len(turns)


def _check_int(value: Any, field: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigurationError(f"{field} must be an int >= {minimum}, got {value!r}", field=field)
    return value


class TrainedScorer:
    """An embedding classifier fit on **your own** outcomes: which tier was good enough for each request.

    Features of a conversation: the embedding of the question (the last user turn, or the question of a RAG
    template in it: see ``question_key``), the mean embedding of up to 8 earlier user
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
        question_key: selects the question from the last user turn, for fitting and scoring (default
            :class:`~frugal_chains.QuestionKey` (): a known RAG template is scored by its question, not its
            boilerplate and passages). Not saved with the model: pass it again to :meth:`load`.

    Example:
        >>> from frugal_chains.routing import TrainedScorer
        >>> from frugal_chains.testing import HashEmbeddings
        >>> easy = [f"what is the capital of country {i}" for i in range(20)]
        >>> hard = [f"prove the theorem about prime gaps number {i} rigorously" for i in range(20)]
        >>> scorer = TrainedScorer.fit(easy + hard, [0] * 20 + [1] * 20, embedder=HashEmbeddings(dim=64))
        >>> scorer.score("what is the capital of country 99") < 0.5 < scorer.score("prove the theorem on prime gaps")
        True
        >>> again = TrainedScorer.from_json(scorer.to_json(), embedder=HashEmbeddings(dim=64))
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
        question_key: QuestionKey | None = None,
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
        self._question_key = as_question_key(question_key)
        self._embedder: Embedder = self._resolve(embedder)

    @property
    def question_key(self) -> QuestionKey:
        """What is scored: the question the :class:`~frugal_chains.QuestionKey` selects from the last user turn."""
        return self._question_key

    def with_question_key(self, question_key: QuestionKey | None) -> TrainedScorer:
        """The same models, selecting the question with ``question_key`` (the cascade's ``question_key=``)."""
        return type(self)(
            self._boundaries,
            embedder=self._embedder,
            embedder_name=self._embedder_name,
            embedder_dim=self._embedder_dim,
            meta=self.meta,
            question_key=question_key,
        )

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
    def _texts(
        convs: Sequence[Sequence[Message]], key: QuestionKey
    ) -> tuple[list[tuple[str, list[str], int]], list[str]]:
        parts = [_turn_texts(c, key) for c in convs]
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
            >>> from frugal_chains.testing import HashEmbeddings
            >>> s = TrainedScorer.fit(["hi", "hello", "prove it", "derive it", "a proof"], [0, 0, 2, 1, 2],
            ...                       embedder=HashEmbeddings())
            >>> len(s.boundary_scores("prove this"))
            2
        """
        parts, texts = self._texts([as_messages(messages, "messages")], self._question_key)
        x = self._matrix(parts, texts, self._embed(texts, len(texts) or 1))
        return tuple(float(m.predict(x)[0]) for m in self._boundaries)

    def score(self, messages: Conversation) -> float:
        """The mean of :meth:`boundary_scores`: 0 = the cheapest tier will do, 1 = the strongest is needed."""
        return self.score_many([messages])[0]

    async def ascore(self, messages: Conversation) -> float:
        """Async :meth:`score` (embeds with ``embedder.aembed``)."""
        parts, texts = self._texts([as_messages(messages, "messages")], self._question_key)
        vecs = self._check_vectors(await self._embedder.aembed(texts), len(texts))
        return float(self._predict(self._matrix(parts, texts, vecs))[0])

    def score_many(self, conversations: Sequence[Conversation], batch_size: int = 64) -> list[float]:
        """Scores of many conversations, embedded in batches of ``batch_size`` distinct texts (for benchmarks
        and :func:`~frugal_chains.routing.calibrate`).

        Example:
            >>> from frugal_chains.routing import TrainedScorer
            >>> from frugal_chains.testing import HashEmbeddings
            >>> s = TrainedScorer.fit(["hi", "hello", "prove it", "derive it"], [0, 0, 1, 1],
            ...                       embedder=HashEmbeddings())
            >>> many = s.score_many(["hi", "prove it"])
            >>> [round(v, 9) for v in many] == [round(s.score("hi"), 9), round(s.score("prove it"), 9)]
            True
        """
        _check_int(batch_size, "batch_size", 1)
        if isinstance(conversations, str):
            raise ConfigurationError(
                "conversations must be a list: pass [conversation]", field="conversations"
            )
        convs = [as_messages(c, "conversations") for c in conversations]
        if not convs:
            return []
        parts, texts = self._texts(convs, self._question_key)
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
        progress: bool | None = None,
        question_key: QuestionKey | None = None,
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
            progress: a progress bar on stderr (embedding, then the fits): ``None`` (default) when stderr is a
                terminal, ``True`` always, ``False`` never.
            question_key: selects the question of each conversation (as when scoring; default
                :class:`~frugal_chains.QuestionKey` ()).

        Raises:
            ConfigurationError: lengths differ (``labels``), a label is out of range or only one class occurs
                (``labels``), or another argument is invalid (named in ``field``).

        Example:
            >>> from frugal_chains.routing import TrainedScorer
            >>> from frugal_chains.testing import HashEmbeddings
            >>> convs = [[{"role": "user", "content": "hi"}], "thanks!", "prove Fermat's last theorem", "derive E=mc^2"]
            >>> TrainedScorer.fit(convs, [0, 0, 1, 1], embedder=HashEmbeddings()).n_tiers
            2
        """
        import numpy as np

        from frugal_chains.embeddings import as_embedder, default_embedder

        if isinstance(conversations, str) or not isinstance(conversations, Sequence):
            raise ConfigurationError(
                "conversations must be a list of strings or message lists", field="conversations"
            )
        convs = [as_messages(c, "conversations") for c in conversations]
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
            l2 = finite(l2, "l2")
            if l2 <= 0:
                raise ConfigurationError(f"l2 must be > 0, got {l2}", field="l2")
        _check_int(batch_size, "batch_size", 1)
        weights = None
        if sample_weight is not None:
            weights = np.asarray([finite(w, "sample_weight") for w in sample_weight], np.float64)
            if len(weights) != len(ints) or (weights < 0).any() or weights.sum() <= 0:
                raise ConfigurationError(
                    "sample_weight needs one non-negative weight per example, not all zero",
                    field="sample_weight",
                )

        wants_progress(progress)  # a bad value fails before the work
        emb = default_embedder() if embedder is None else as_embedder(embedder)
        key = as_question_key(question_key)
        parts, texts = cls._texts(convs, key)
        per_boundary = AUTO_FOLDS * len(L2_GRID) + 1 if auto else 1  # the CV fits, then the fit itself
        total = math.ceil(len(texts) / batch_size) + (n_tiers - 1) * per_boundary
        with progress_bar("training the router's scorer", total, progress=progress) as advance:
            raw = []
            for i in range(0, len(texts), batch_size):
                raw.append(np.asarray(emb.embed(texts[i : i + batch_size]), np.float64))
                advance(1)
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
            cv_fits = [0]

            def step() -> None:
                cv_fits[0] += 1
                advance(1)

            for b in range(n_tiers - 1):
                yb = (y > b).astype(np.float64)
                positives = float(yb.sum()) if weights is None else float((weights * yb).sum())
                total_w = float(len(yb)) if weights is None else float(weights.sum())
                before = cv_fits[0]
                if 0 < yb.sum() < len(yb):
                    l2_b = _auto_l2(x, yb, weights, on_fit=step) if auto else float(l2)
                    used_l2.append(l2_b)
                    fitted = _fit_varying(x, yb, l2=l2_b, sample_weight=weights)
                else:  # no example on one side of this boundary: a constant at the smoothed base rate
                    used_l2.append(None)
                    p = (positives + 0.5) / (total_w + 1.0)
                    fitted = Logistic(
                        weights=(0.0,) * x.shape[1],
                        bias=math.log(p / (1 - p)),
                        mean=(0.0,) * x.shape[1],
                        scale=(1.0,) * x.shape[1],
                    )
                # the CV fits skipped (too little data to cross-validate), and the fit itself
                advance(per_boundary - (cv_fits[0] - before))
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
            question_key=key,
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
    def from_json(
        cls, text: str | bytes, *, embedder: Any = None, question_key: QuestionKey | None = None
    ) -> TrainedScorer:
        """Load a model written by :meth:`to_json`; ``embedder`` must be the one it was fit with (default: the
        default embedder). Bad JSON raises ConfigurationError(``field="json"``); another embedder,
        ConfigurationError(``field="embedder"``).
        """
        return cls._parse(text, embedder, "json", question_key)

    @classmethod
    def _parse(
        cls, text: str | bytes, embedder: Any, field: str, question_key: QuestionKey | None = None
    ) -> TrainedScorer:
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
        except (ConfigurationError, KeyError, TypeError, ValueError) as e:
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
            question_key=question_key,
        )

    def save(self, path: str | Path) -> None:
        """Write :meth:`to_json` to ``path``."""
        Path(path).write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def load(
        cls, path: str | Path, *, embedder: Any = None, question_key: QuestionKey | None = None
    ) -> TrainedScorer:
        """Read a model written by :meth:`save` (errors as in :meth:`from_json`, with ``field="path"`` for an
        unreadable file or bad JSON).

        Example:
            >>> import os, tempfile
            >>> from frugal_chains.routing import TrainedScorer
            >>> from frugal_chains.testing import HashEmbeddings
            >>> s = TrainedScorer.fit(["hi", "hey", "prove it", "derive it"], [0, 0, 1, 1], embedder=HashEmbeddings())
            >>> path = os.path.join(tempfile.mkdtemp(), "scorer.json")
            >>> s.save(path)
            >>> TrainedScorer.load(path, embedder=HashEmbeddings()).score("hey") == s.score("hey")
            True
        """
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigurationError(f"cannot read the scorer file {str(path)!r}: {e}", field="path") from e
        return cls._parse(text, embedder, "path", question_key)


def _auto_l2(
    x: NDArray[np.float64],
    y: NDArray[np.float64],
    weights: NDArray[np.float64] | None,
    on_fit: Callable[[], None] | None = None,
) -> float:
    """``l2="auto"``: :func:`choose_l2` on the columns that vary (as :func:`_fit_varying` fits them)."""
    return choose_l2(x[:, _varying(x)], y, sample_weight=weights, on_fit=on_fit)


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
