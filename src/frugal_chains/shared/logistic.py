"""A small L2 logistic regression (Newton's method, standardised features): :class:`Logistic`, :func:`fit_logistic`
and :func:`choose_l2` (the ``l2="auto"`` penalty search). Shared by the router's trained scorer, the trained answer
verifier and the cache guard's pair-model fit; a model is serialised as a plain JSON-able dict."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from frugal_chains.errors import ConfigurationError

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

__all__ = ["L2_GRID", "Logistic", "choose_l2", "fit_logistic"]

L2_GRID: tuple[float, ...] = (0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0)
"""The penalties ``l2="auto"`` tries on its sample of at most ``AUTO_ROWS`` rows (see :func:`choose_l2`)."""
AUTO_ROWS = 3000
AUTO_FOLDS = 3


@dataclass(frozen=True)
class Logistic:
    """``p = sigmoid(bias + weights . ((x - mean) / scale))``."""

    weights: tuple[float, ...]
    bias: float
    mean: tuple[float, ...]
    scale: tuple[float, ...]

    @property
    def n_features(self) -> int:
        return len(self.weights)

    def predict(self, x: NDArray[Any]) -> NDArray[np.float64]:
        """Probabilities for the rows of ``x`` (2-d) or one row (1-d: returns a 1-element array)."""
        import numpy as np

        rows = np.atleast_2d(np.asarray(x, np.float64))
        if rows.shape[1] != self.n_features:
            raise ConfigurationError(
                f"the model expects {self.n_features} features, got {rows.shape[1]} (was it fit with another "
                "embedder?)",
                field="model",
            )
        z = (rows - np.asarray(self.mean)) / np.asarray(self.scale)
        return _sigmoid(self.bias + z @ np.asarray(self.weights))

    def to_dict(self) -> dict[str, Any]:
        # full precision: a rounded scale of a nearly constant column could become 0
        return {
            "weights": list(self.weights),
            "bias": self.bias,
            "mean": list(self.mean),
            "scale": list(self.scale),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Logistic:
        try:
            weights = tuple(float(v) for v in d["weights"])
            mean = tuple(float(v) for v in d["mean"])
            scale = tuple(float(v) for v in d["scale"])
            bias = float(d["bias"])
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigurationError(f"not a saved logistic model: {e}", field="model") from e
        if not (len(weights) == len(mean) == len(scale)):
            raise ConfigurationError("a saved logistic model has fields of different lengths", field="model")
        return cls(weights=weights, bias=bias, mean=mean, scale=scale)


def fit_logistic(
    x: NDArray[Any],
    y: Sequence[float] | NDArray[Any],
    *,
    l2: float = 1.0,
    iterations: int = 50,
    sample_weight: Sequence[float] | NDArray[Any] | None = None,
) -> Logistic:
    """Fit on rows ``x`` (n x d) and labels ``y`` in {0, 1} (Newton steps; ``l2`` on standardised weights).

    Example:
        >>> import numpy as np
        >>> x = np.array([[0.0], [0.1], [0.9], [1.0]] * 5)
        >>> m = fit_logistic(x, [0, 0, 1, 1] * 5)
        >>> bool(m.predict(np.array([0.95]))[0] > 0.5)
        True
    """
    import numpy as np

    xs = np.asarray(x, np.float64)
    ys = np.asarray(y, np.float64)
    if xs.ndim != 2 or len(xs) != len(ys) or len(ys) == 0:
        raise ConfigurationError(
            f"need a 2-d feature matrix with one row per label, got shape {xs.shape} and {len(ys)} labels",
            field="labels",
        )
    w_s = np.ones(len(ys)) if sample_weight is None else np.asarray(sample_weight, np.float64)
    mean, scale = _standardisation(xs)
    z = _design(xs, mean, scale)
    beta = _newton(z, ys, w_s, float(l2), np.zeros(z.shape[1]), iterations)
    return Logistic(
        weights=tuple(float(v) for v in beta[1:]),
        bias=float(beta[0]),
        mean=tuple(float(v) for v in mean),
        scale=tuple(float(v) for v in scale),
    )


def _sigmoid(logits: NDArray[Any]) -> NDArray[np.float64]:
    import numpy as np

    out: NDArray[np.float64] = 1.0 / (1.0 + np.exp(-np.clip(logits, -35, 35)))
    return out


def _standardisation(xs: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Column means and scales; a (nearly) constant column is left unscaled, so its weight stays ~0."""
    mean, scale = xs.mean(axis=0), xs.std(axis=0)
    scale[scale < 1e-6] = 1.0
    return mean, scale


def _design(
    xs: NDArray[np.float64], mean: NDArray[np.float64], scale: NDArray[np.float64]
) -> NDArray[np.float64]:
    """The standardised rows with an intercept column first."""
    import numpy as np

    return np.hstack([np.ones((len(xs), 1)), (xs - mean) / scale])


def _newton(
    z: NDArray[np.float64],
    ys: NDArray[np.float64],
    w_s: NDArray[np.float64],
    l2: float,
    beta: NDArray[np.float64],
    iterations: int = 50,
) -> NDArray[np.float64]:
    """Newton steps from ``beta`` on the design ``z`` (first column the intercept, not penalised)."""
    import numpy as np

    reg = np.full(z.shape[1], l2)
    reg[0] = 0.0
    beta = beta.copy()
    for _ in range(iterations):
        p = _sigmoid(z @ beta)
        grad = z.T @ (w_s * (p - ys)) + reg * beta
        hess = (z * (w_s * p * (1 - p))[:, None]).T @ z + np.diag(reg + 1e-9)
        step = np.linalg.solve(hess, grad)
        beta -= step
        if float(np.abs(step).max()) < 1e-8:
            break
    return beta


def choose_l2(
    x: NDArray[Any],
    y: Sequence[float] | NDArray[Any],
    *,
    sample_weight: Sequence[float] | NDArray[Any] | None = None,
    grid: Sequence[float] = L2_GRID,
    folds: int = AUTO_FOLDS,
    max_rows: int = AUTO_ROWS,
    seed: int = 0,
    on_fit: Callable[[], None] | None = None,
) -> float:
    """The L2 penalty with the lowest cross-validated log-loss, on the training data only (``l2="auto"``).

    A stratified ``folds``-fold split (seeded, deterministic) of at most ``max_rows`` rows drawn from ``x``; each
    penalty of ``grid`` is fit on the other folds and scored by the held-out (weighted) log-loss; ties go to the
    larger penalty. The chosen value is the full fit's penalty too (as scikit-learn's ``LogisticRegressionCV``
    refits with the ``C`` it chose: the strength of a prior does not grow with the data), multiplied by the mean
    ``sample_weight`` of the sample so that the units of the weights do not change the model. The rarer class
    keeps at least ``2 * folds`` rows in the sample; with fewer examples than that in either class the middle
    value of ``grid`` is returned (too little data to tell). ``on_fit`` is called after each of the (at most
    ``folds * len(grid)``) cross-validation fits (a progress bar).

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> x = rng.normal(size=(60, 40))       # 40 noise features, 60 examples: a small penalty overfits
        >>> y = (x[:, 0] + 0.5 * rng.normal(size=60) > 0).astype(float)
        >>> choose_l2(x, y) > 1.0
        True
    """
    import numpy as np

    xs = np.asarray(x, np.float64)
    ys = np.asarray(y, np.float64)
    n = len(ys)
    w_all = np.ones(n) if sample_weight is None else np.asarray(sample_weight, np.float64)
    values = sorted({float(v) for v in grid})
    if not values or values[0] <= 0:
        raise ConfigurationError("the l2 grid needs positive penalties", field="l2")
    total = float(w_all.sum())
    if total <= 0:
        raise ConfigurationError("sample_weight must not be all zero", field="sample_weight")
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(ys > 0.5), np.flatnonzero(ys <= 0.5)
    if min(n, max_rows) < n:  # a stratified sample keeps the class balance, and enough of the rarer class
        m = max_rows
        small, large = (pos, neg) if len(pos) <= len(neg) else (neg, pos)
        k_small = min(len(small), max(2 * folds, round(m * len(small) / n)))
        small = rng.choice(small, size=k_small, replace=False)
        large = rng.choice(large, size=min(len(large), m - k_small), replace=False)
        pos, neg = (small, large) if len(pos) <= len(neg) else (large, small)
    sampled = np.concatenate([pos, neg])
    # The CV fits use the sample's weights normalised to mean 1; the full fit uses the raw weights, whose data term
    # is w_mean times larger, so the chosen penalty is multiplied by w_mean: the units of sample_weight do not
    # change the model. The penalty itself is kept from the CV fits to the full fit (a prior's strength does not
    # grow with the data), as scikit-learn's LogisticRegressionCV refits with the C it chose.
    w_mean = float(w_all[sampled].mean())
    if w_mean <= 0:
        w_mean = total / n
    w_all = w_all / w_mean
    if min(len(pos), len(neg)) < 2 * folds:
        return values[len(values) // 2] * w_mean
    fold = np.full(n, -1, dtype=np.int64)  # -1: not in the sample
    for part in (pos, neg):
        shuffled = rng.permutation(part)
        fold[shuffled] = np.arange(len(shuffled)) % folds
    losses = dict.fromkeys(values, 0.0)
    for j in range(folds):
        tr, te = np.flatnonzero((fold >= 0) & (fold != j)), np.flatnonzero(fold == j)
        mean, scale = _standardisation(xs[tr])
        z_tr, z_te = _design(xs[tr], mean, scale), _design(xs[te], mean, scale)
        beta = np.zeros(z_tr.shape[1])
        for l2 in reversed(values):  # largest first, each fit warm-started from the previous one
            beta = _newton(z_tr, ys[tr], w_all[tr], l2, beta)
            if on_fit is not None:
                on_fit()
            p = np.clip(_sigmoid(z_te @ beta), 1e-6, 1 - 1e-6)
            losses[l2] += float(-(w_all[te] * (ys[te] * np.log(p) + (1 - ys[te]) * np.log(1 - p))).sum())
    best = values[-1]
    for l2 in reversed(values):  # ties keep the larger penalty
        if losses[l2] < losses[best] - 1e-9:
            best = l2
    return best * w_mean
