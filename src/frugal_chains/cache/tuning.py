"""Pick the similarity threshold for *your* traffic from labelled question pairs.

Give it pairs ``(text_a, text_b, label)`` (1 = the same answer serves both, 0 = it does not), an
embedder and a guard; :func:`tune_threshold` computes precision and hit rate at every threshold (a hit
= cosine similarity >= threshold **and** the guard lets it through) and returns the threshold with the
highest hit rate whose precision reaches the target. The CLI wraps it as
``frugal-chains cache tune --pairs FILE.jsonl``.

* precision = correct hits / all hits (how often a served cached answer is right);
* hit rate = correct hits / positive pairs (how many duplicates the cache catches);
* false-hit rate = wrong hits / negative pairs.

:func:`fit_pair_model` refits the guard's logistic-regression pair model on your own pairs.

Example:
    >>> import numpy as np
    >>> class Toy:  # a stand-in embedder: 2-d vectors by keyword
    ...     name, dim = "toy", 2
    ...     def embed(self, texts):
    ...         v = np.array([[1.0, 0.1] if "refund" in t else [0.1, 1.0] for t in texts], np.float32)
    ...         return v / np.linalg.norm(v, axis=1, keepdims=True)
    ...     async def aembed(self, texts):
    ...         return self.embed(texts)
    >>> pairs = [LabelledPair("refund please", "i want a refund", 1),
    ...          LabelledPair("refund please", "track parcel", 0)]
    >>> r = tune_threshold(pairs, embedder=Toy(), guard=None, target_precision=0.9)
    >>> r.reached, r.precision, r.hit_rate
    (True, 1.0, 1.0)
"""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from frugal_chains._progress import progress_bar, wants_progress
from frugal_chains.cache.guard import FEATURE_NAMES, HitGuard, PairModel, pair_features
from frugal_chains.cache.normalize import normalize
from frugal_chains.errors import ConfigurationError

if TYPE_CHECKING:
    import numpy as np

    from frugal_chains.embeddings import Embedder

__all__ = [
    "CurvePoint",
    "LabelledPair",
    "TuningResult",
    "fit_pair_model",
    "format_curve",
    "load_pairs",
    "pair_similarities",
    "tune_threshold",
]


@dataclass(frozen=True)
class LabelledPair:
    """Two questions and whether one cached answer serves both (``label`` 1) or not (0).

    Example:
        >>> LabelledPair("How do I reset my password?", "I forgot my password", 1).label
        1
    """

    text_a: str
    text_b: str
    label: int


@dataclass(frozen=True)
class CurvePoint:
    """Precision and hit rate at one threshold.

    Example:
        >>> CurvePoint(0.8, 0.95, 0.6, 0.03, 120).precision
        0.95
    """

    threshold: float
    precision: float
    hit_rate: float
    false_hit_rate: float
    hits: int


@dataclass(frozen=True)
class TuningResult:
    """The outcome of :func:`tune_threshold`.

    Attributes:
        threshold: the chosen cosine-similarity threshold.
        precision: precision at that threshold.
        hit_rate: hit rate on positive pairs at that threshold.
        false_hit_rate: share of negative pairs served at that threshold.
        reached: whether ``precision >= target_precision`` (if not, ``threshold`` is the most precise point).
        target_precision: the requested precision.
        n_pairs: number of pairs; ``n_positive`` of them labelled 1.
        curve: every evaluated threshold, ascending.

    Example:
        >>> r = TuningResult(0.8, 0.9, 0.5, 0.05, True, 0.9, 10, 5, [CurvePoint(0.8, 0.9, 0.5, 0.05, 3)])
        >>> print(r.table().splitlines()[0])
        threshold  precision  hit_rate  false_hits  hits
    """

    threshold: float
    precision: float
    hit_rate: float
    false_hit_rate: float
    reached: bool
    target_precision: float
    n_pairs: int
    n_positive: int
    curve: list[CurvePoint] = field(repr=False)

    def table(self, step: int = 1) -> str:
        """A printable table of the curve (every ``step``-th point, the chosen one marked with ``*``)."""
        return format_curve(self, step=step)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict."""
        return {
            "threshold": self.threshold,
            "precision": self.precision,
            "hit_rate": self.hit_rate,
            "false_hit_rate": self.false_hit_rate,
            "reached": self.reached,
            "target_precision": self.target_precision,
            "n_pairs": self.n_pairs,
            "n_positive": self.n_positive,
            "curve": [vars(p) for p in self.curve],
        }


def format_curve(result: TuningResult, *, step: int = 1) -> str:
    """Render a :class:`TuningResult` curve as a fixed-width table.

    Example:
        >>> r = TuningResult(0.8, 0.9, 0.5, 0.05, True, 0.9, 10, 5, [CurvePoint(0.8, 0.9, 0.5, 0.05, 3)])
        >>> print(format_curve(r))
        threshold  precision  hit_rate  false_hits  hits
        *   0.800      0.900     0.500       0.050     3
        chosen threshold 0.800: precision 0.900 (target 0.90), hit rate 0.500 on 5 positive of 10 pairs
    """
    lines = ["threshold  precision  hit_rate  false_hits  hits"]
    for i, p in enumerate(result.curve):
        chosen = math.isclose(p.threshold, result.threshold)
        if i % max(step, 1) and not chosen:
            continue
        mark = "*" if chosen else " "
        lines.append(
            f"{mark}{p.threshold:8.3f}  {p.precision:9.3f} {p.hit_rate:9.3f}  {p.false_hit_rate:10.3f} {p.hits:5d}"
        )
    verdict = "" if result.reached else " -- TARGET NOT REACHED (most precise threshold shown)"
    lines.append(
        f"chosen threshold {result.threshold:.3f}: precision {result.precision:.3f} "
        f"(target {result.target_precision:.2f}), hit rate {result.hit_rate:.3f} on {result.n_positive} "
        f"positive of {result.n_pairs} pairs{verdict}"
    )
    return "\n".join(lines)


def load_pairs(path: str | Path) -> list[LabelledPair]:
    """Read labelled pairs from JSONL (optionally ``.gz``): one ``{"text_a", "text_b", "label"}`` per line.

    Extra fields are ignored; blank lines are skipped. ``label`` may be 0/1, ``true``/``false``.

    Raises:
        ConfigurationError: the file is missing, or a row is not a JSON object, lacks a field, has an
            empty text or a label other than 0/1 -- the message names the line and the field.

    Example:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "pairs.jsonl")
        >>> _ = open(p, "w").write('{"text_a": "a?", "text_b": "b?", "label": 1}\\n')
        >>> load_pairs(p)
        [LabelledPair(text_a='a?', text_b='b?', label=1)]
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigurationError(f"pairs file {str(p)!r} does not exist or is not a file.", field="pairs")
    opener = gzip.open if p.suffix == ".gz" else open
    out: list[LabelledPair] = []
    with opener(p, "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{p.name} line {lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigurationError(f"{where}: not valid JSON ({exc.msg}).", field="pairs") from exc
            if not isinstance(row, dict):
                raise ConfigurationError(
                    f'{where}: expected a JSON object {{"text_a": ..., "text_b": ..., "label": 0|1}}.',
                    field="pairs",
                )
            for name in ("text_a", "text_b"):
                value = row.get(name)
                if not isinstance(value, str) or not value.strip():
                    raise ConfigurationError(
                        f"{where}: field {name!r} must be a non-empty string.", field=name
                    )
            label = row.get("label")
            if isinstance(label, bool):
                label = int(label)
            if label not in (0, 1) or (isinstance(label, float) and not label.is_integer()):
                raise ConfigurationError(
                    f"{where}: field 'label' must be 0 or 1 (got {label!r}).", field="label"
                )
            out.append(LabelledPair(row["text_a"], row["text_b"], int(label)))
    if not out:
        raise ConfigurationError(f"pairs file {str(p)!r} holds no pairs.", field="pairs")
    return out


def _coerce(pairs: Iterable[LabelledPair | Sequence[Any]]) -> list[LabelledPair]:
    out: list[LabelledPair] = []
    for i, p in enumerate(pairs):
        if isinstance(p, LabelledPair):
            out.append(p)
            continue
        try:
            a, b, label = p
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(
                f"pairs[{i}] must be a LabelledPair or a (text_a, text_b, label) tuple.", field="pairs"
            ) from exc
        if int(label) not in (0, 1):
            raise ConfigurationError(f"pairs[{i}]: label must be 0 or 1, got {label!r}.", field="label")
        out.append(LabelledPair(str(a), str(b), int(label)))
    if not out:
        raise ConfigurationError("pairs is empty: give at least one labelled pair.", field="pairs")
    return out


def pair_similarities(
    pairs: Sequence[LabelledPair],
    embedder: Embedder,
    *,
    batch_size: int = 64,
    progress: bool | None = False,
) -> np.ndarray:
    """Cosine similarity of each pair's normalised texts (embedded in batches, each distinct text once).

    ``progress``: a bar on stderr over the batches (``None``: when stderr is a terminal).

    Example:
        >>> import numpy as np
        >>> class Same:
        ...     name, dim = "same", 2
        ...     def embed(self, texts): return np.tile(np.array([[0.6, 0.8]], np.float32), (len(texts), 1))
        ...     async def aembed(self, texts): return self.embed(texts)
        >>> pair_similarities([LabelledPair("a", "b", 1)], Same()).round(3).tolist()
        [1.0]
    """
    import numpy as np

    texts = sorted({normalize(t) for p in pairs for t in (p.text_a, p.text_b)}, key=len)
    index = {t: i for i, t in enumerate(texts)}
    chunks = []
    with progress_bar(
        "embedding the pairs", math.ceil(len(texts) / batch_size), progress=progress
    ) as advance:
        for i in range(0, len(texts), batch_size):
            chunks.append(np.asarray(embedder.embed(texts[i : i + batch_size]), dtype=np.float32))
            advance(1)
    vecs = np.concatenate(chunks) if chunks else np.zeros((0, 1), np.float32)
    ia = np.array([index[normalize(p.text_a)] for p in pairs])
    ib = np.array([index[normalize(p.text_b)] for p in pairs])
    sims: np.ndarray = np.einsum("ij,ij->i", vecs[ia], vecs[ib])
    return sims


def tune_threshold(
    pairs: Iterable[LabelledPair | Sequence[Any]],
    *,
    embedder: Embedder | None = None,
    guard: HitGuard | None = None,
    target_precision: float = 0.9,
    thresholds: Sequence[float] | None = None,
    similarities: Sequence[float] | None = None,
    progress: bool | None = None,
) -> TuningResult:
    """Precision / hit-rate curve over thresholds, and the threshold reaching ``target_precision``.

    Args:
        pairs: :class:`LabelledPair` rows or ``(text_a, text_b, label)`` tuples (see :func:`load_pairs`).
        embedder: the embedder the cache will use (default: ``frugal_chains.embeddings.default_embedder()``).
        guard: the hit guard the cache will use (``None`` = threshold only). It sees the raw texts.
        target_precision: the wanted precision, in (0, 1].
        thresholds: the thresholds to evaluate (default 0.50, 0.51, ... 0.99).
        similarities: precomputed cosine similarities, one per pair (skips embedding).
        progress: a progress bar on stderr while the pairs are embedded and the guard checks them: ``None``
            (default) when stderr is a terminal, ``True`` always, ``False`` never.

    Returns:
        A :class:`TuningResult`: the threshold with the highest hit rate among those reaching the target
        (ties: the higher threshold); if none reaches it, the most precise threshold with ``reached=False``.

    Raises:
        ConfigurationError: bad target, no positive pairs, or mismatched ``similarities``.
    """
    import numpy as np

    rows = _coerce(pairs)
    wants_progress(progress)  # a bad value fails before the work
    if not 0.0 < target_precision <= 1.0:
        raise ConfigurationError(
            f"target_precision must be in (0, 1], got {target_precision!r}.", field="target_precision"
        )
    labels = np.array([p.label for p in rows], dtype=bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0:
        raise ConfigurationError(
            "pairs has no positive (label 1) pair: the hit rate is undefined.", field="pairs"
        )
    if similarities is not None:
        sims = np.asarray(similarities, dtype=np.float64)
        if sims.shape != (len(rows),):
            raise ConfigurationError(
                f"similarities has {sims.size} values for {len(rows)} pairs.", field="similarities"
            )
    else:
        if embedder is None:
            from frugal_chains.embeddings import default_embedder

            embedder = default_embedder()
        sims = pair_similarities(rows, embedder, progress=progress).astype(np.float64)
    if guard is not None:
        checked = []
        with progress_bar("checking the pairs with the hit guard", len(rows), progress=progress) as advance:
            for p, s in zip(rows, sims, strict=True):
                checked.append(guard.check(p.text_a, p.text_b, float(s)).ok)
                advance(1)
        ok = np.array(checked, dtype=bool)
    else:
        ok = np.ones(len(rows), dtype=bool)
    grid = list(thresholds) if thresholds is not None else [round(0.5 + 0.01 * i, 2) for i in range(50)]
    if not grid:
        raise ConfigurationError("thresholds is empty.", field="thresholds")
    curve: list[CurvePoint] = []
    for t in sorted(grid):
        hit = ok & (sims >= t)
        tp = int((hit & labels).sum())
        fp = int((hit & ~labels).sum())
        precision = tp / (tp + fp) if tp + fp else 1.0
        curve.append(CurvePoint(float(t), precision, tp / n_pos, fp / n_neg if n_neg else 0.0, tp + fp))
    good = [p for p in curve if p.precision >= target_precision and p.hits > 0]
    if good:
        best = max(good, key=lambda p: (p.hit_rate, p.threshold))
        reached = True
    else:
        best = max(curve, key=lambda p: (p.precision if p.hits else 0.0, p.hit_rate))
        reached = False
    return TuningResult(
        threshold=best.threshold,
        precision=best.precision,
        hit_rate=best.hit_rate,
        false_hit_rate=best.false_hit_rate,
        reached=reached,
        target_precision=target_precision,
        n_pairs=len(rows),
        n_positive=n_pos,
        curve=curve,
    )


def fit_pair_model(
    pairs: Sequence[LabelledPair],
    similarities: Sequence[float],
    *,
    l2: float = 1.0,
    iterations: int = 50,
    cutoff: float = 0.5,
    sample_weight: Sequence[float] | None = None,
    meta: dict[str, Any] | None = None,
) -> PairModel:
    """Fit the guard's logistic-regression pair model (Newton's method, L2 penalty) on labelled pairs.

    Args:
        pairs: labelled pairs (ideally those a cache would actually see: similarity near or above the threshold).
        similarities: their cosine similarities under the embedder the cache uses.
        l2: ridge penalty on the standardised weights.
        iterations: Newton steps.
        cutoff: the probability cutoff stored in the model.
        sample_weight: optional per-pair weights.
        meta: provenance stored in the model.

    Returns:
        A :class:`~frugal_chains.cache.guard.PairModel`; pass it as ``HitGuard(model=...)``.

    Example:
        >>> pairs = [LabelledPair("how do i learn python", "best way to learn python", 1),
        ...          LabelledPair("how do i learn python", "how do i learn cobol", 0)] * 5
        >>> m = fit_pair_model(pairs, [0.9, 0.8] * 5)
        >>> m.score("how do i learn python", "best way to learn python", 0.9) > 0.5
        True
    """
    import numpy as np

    from frugal_chains.shared.logistic import fit_logistic

    rows = _coerce(pairs)
    if len(similarities) != len(rows):
        raise ConfigurationError(
            f"{len(similarities)} similarities for {len(rows)} pairs.", field="similarities"
        )
    x = np.array(
        [pair_features(p.text_a, p.text_b, float(s)) for p, s in zip(rows, similarities, strict=True)],
        np.float64,
    )
    y = np.array([p.label for p in rows], np.float64)
    fit = fit_logistic(x, y, l2=l2, iterations=iterations, sample_weight=sample_weight)
    return PairModel(
        weights=fit.weights,
        bias=fit.bias,
        mean=fit.mean,
        scale=fit.scale,
        cutoff=cutoff,
        meta={"features": list(FEATURE_NAMES), **(meta or {})},
    )
