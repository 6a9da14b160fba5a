"""A small L2 logistic regression (Newton's method, standardised features) shared by the trained scorer and the
trained verifier; serialised as plain JSON-able dicts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from frugal_chains.errors import ConfigurationError

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

__all__ = ["Logistic", "fit_logistic"]


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
        logits = self.bias + z @ np.asarray(self.weights)
        out: NDArray[np.float64] = 1.0 / (1.0 + np.exp(-np.clip(logits, -35, 35)))
        return out

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
    mean = xs.mean(axis=0)
    scale = xs.std(axis=0)
    scale[scale < 1e-6] = 1.0  # a (nearly) constant column: left unscaled, its weight stays ~0
    z = np.hstack([np.ones((len(ys), 1)), (xs - mean) / scale])
    beta = np.zeros(z.shape[1])
    reg = np.full(z.shape[1], float(l2))
    reg[0] = 0.0
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(z @ beta, -35, 35)))
        grad = z.T @ (w_s * (p - ys)) + reg * beta
        hess = (z * (w_s * p * (1 - p))[:, None]).T @ z + np.diag(reg + 1e-9)
        step = np.linalg.solve(hess, grad)
        beta -= step
        if float(np.abs(step).max()) < 1e-8:
            break
    return Logistic(
        weights=tuple(float(v) for v in beta[1:]),
        bias=float(beta[0]),
        mean=tuple(float(v) for v in mean),
        scale=tuple(float(v) for v in scale),
    )
