"""The learned pair model: 12 lexical features of a (query, cached) pair (:func:`pair_features`) and the logistic
regression on them that gives ``P(same answer)`` (:class:`PairModel`, shipped as ``_guard_data/pair_model.json``)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

from frugal_chains.cache.guard.lexical import DATA_PACKAGE, parse_question, rarity
from frugal_chains.errors import ConfigurationError

__all__ = ["FEATURE_NAMES", "PairModel", "pair_features"]


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
    a, b = parse_question(query), parse_question(cached)
    only_a = a.content - b.all_stems
    only_b = b.content - a.all_stems
    union = a.content | b.content
    jac = len(a.content & b.content) / len(union) if union else 1.0
    ra = sum(rarity(a.content_raw[w]) for w in only_a)
    rb = sum(rarity(b.content_raw[w]) for w in only_b)
    rmax = max(
        [rarity(a.content_raw[w]) for w in only_a] + [rarity(b.content_raw[w]) for w in only_b] + [0.0]
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
    return PairModel.from_json(resources.files(DATA_PACKAGE).joinpath("pair_model.json").read_text("utf-8"))
