"""Pick routing thresholds from labelled outcomes: replay the cascade offline and search for a target.

An outcome records, for one request, how good each tier's answer was (and optionally what it cost and what a
verifier said about it). :func:`simulate` replays the engine's decisions on such data for given thresholds;
:func:`operating_curve` sweeps the scorer's threshold; :func:`calibrate` searches the thresholds that meet a
target — a share of the strongest tier's quality, or a cap on the share of requests that reach the strongest
tier — and returns a :class:`Calibration` you can save and turn into a :class:`~frugal_chains.routing.RoutingPolicy`.

The replay follows the engine exactly: a request starts on ``RoutingPolicy(thresholds).start_tier(score)``; on
each tier below the last, when a gate threshold is set and the outcome has a gate score for that tier, the request
escalates when the gate score is below the threshold (the cost of every tier tried is paid), else the tier's
answer is accepted; the strongest tier is not gated.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from frugal_chains.errors import ConfigurationError
from frugal_chains.routing.policy import RoutingPolicy
from frugal_chains.routing.types import Message

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    from frugal_chains.routing.types import Scorer

__all__ = [
    "Calibration",
    "LabelledOutcome",
    "SimResult",
    "calibrate",
    "knob_thresholds",
    "operating_curve",
    "simulate",
]

TargetKind = Literal["target_quality", "max_strong_share"]
_KIND = "frugal_chains.routing.Calibration"
_MAX_SCORE_CANDIDATES = 257
_MAX_GATE_CANDIDATES = 129
_EPS = 1e-12


def _numbers(values: Any, field: str, *, allow_none: bool = False) -> tuple[Any, ...]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ConfigurationError(
            f"{field} must be a sequence with one number per tier, got {values!r}", field=field
        )
    out: list[float | None] = []
    for v in values:
        if v is None and allow_none:
            out.append(None)
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
            raise ConfigurationError(f"{field} must hold finite numbers, got {v!r}", field=field)
        out.append(float(v))
    return tuple(out)


@dataclass(frozen=True, kw_only=True)
class LabelledOutcome:
    """What every tier did on one request: the data :func:`calibrate` and :func:`simulate` replay.

    Example:
        >>> from frugal_chains.routing import LabelledOutcome
        >>> o = LabelledOutcome(messages="What is 2 + 2?", quality=(1.0, 1.0), cost_usd=(0.0001, 0.003))
        >>> o.n_tiers, o.messages[0]["content"]
        (2, 'What is 2 + 2?')
    """

    messages: Sequence[Message]
    """The conversation as the scorer sees it (a string is stored as one user turn)."""
    quality: tuple[float, ...]
    """The quality of each tier's answer, cheapest first: 0/1 correctness (``(0.0, 1.0)`` = the weak tier was
    wrong, the strong one right), or a judge's score (e.g. MT-Bench 1-10). At least two tiers."""
    cost_usd: tuple[float, ...] | None = None
    """What calling each tier cost for this request (USD, >= 0); ``None`` when unknown (costs are then not
    reported)."""
    gate_scores: tuple[float | None, ...] | None = None
    """For each tier, a verifier's P(good) of that tier's answer in [0, 1] (``None`` for a tier without one; the
    strongest tier is never gated, so its entry may be left out or ``None``); ``None`` when there is no gate."""

    def __post_init__(self) -> None:
        msgs: Any = self.messages
        if isinstance(msgs, str):
            object.__setattr__(self, "messages", ({"role": "user", "content": msgs},))
        elif not isinstance(msgs, Sequence) or not all(isinstance(m, Mapping) for m in msgs):
            raise ConfigurationError(
                "messages must be a string or a list of OpenAI-format message dicts", field="messages"
            )
        quality = _numbers(self.quality, "quality")
        if len(quality) < 2:
            raise ConfigurationError(
                f"quality needs one number per tier (at least two tiers), got {len(quality)}", field="quality"
            )
        object.__setattr__(self, "quality", quality)
        n = len(quality)
        if self.cost_usd is not None:
            cost = _numbers(self.cost_usd, "cost_usd")
            if len(cost) != n or any(c < 0 for c in cost):
                raise ConfigurationError(
                    f"cost_usd needs {n} non-negative numbers (one per tier, like quality), got {cost}",
                    field="cost_usd",
                )
            object.__setattr__(self, "cost_usd", cost)
        if self.gate_scores is not None:
            gates = _numbers(self.gate_scores, "gate_scores", allow_none=True)
            if len(gates) == n - 1:
                gates = (*gates, None)
            if len(gates) != n or any(g is not None and not 0.0 <= g <= 1.0 for g in gates):
                raise ConfigurationError(
                    f"gate_scores needs {n} (or {n - 1}) numbers in [0, 1] or None, one per tier, got {gates}",
                    field="gate_scores",
                )
            object.__setattr__(self, "gate_scores", gates)

    @property
    def n_tiers(self) -> int:
        return len(self.quality)


@dataclass(frozen=True, kw_only=True)
class SimResult:
    """The figures of one replay (:func:`simulate`, a point of :func:`operating_curve`).

    Example:
        >>> from frugal_chains.routing.calibration import LabelledOutcome, simulate
        >>> data = [LabelledOutcome(messages="easy", quality=(1.0, 1.0), cost_usd=(1.0, 10.0)),
        ...         LabelledOutcome(messages="hard", quality=(0.0, 1.0), cost_usd=(1.0, 10.0))]
        >>> r = simulate(data, [0.2, 0.9], (0.5,))
        >>> r.quality_share, r.strong_share, r.cost_share
        (1.0, 0.5, 0.55)
    """

    thresholds: tuple[float, ...] | None
    """The scorer thresholds replayed (``None``: every request starts on the cheapest tier)."""
    gate_threshold: float | None
    """The gate threshold replayed (``None``: no gate)."""
    quality: float
    """Mean quality of the answers returned."""
    quality_share: float
    """``quality`` / mean quality of always calling the strongest tier; NaN (undefined) when the strongest tier's
    mean quality is not positive (e.g. every outcome labelled 0)."""
    strong_share: float
    """Share of requests whose answer came from the strongest tier (started there or escalated to it)."""
    cost_usd: float | None
    """Total USD over the outcomes, every tier tried counted; ``None`` when an outcome has no costs."""
    cost_share: float | None
    """``cost_usd`` / cost of always calling the strongest tier (``None`` without costs)."""
    n: int
    """Number of outcomes."""
    tier_shares: tuple[float, ...] = ()
    """Share of requests answered by each tier."""
    escalated_share: float = 0.0
    """Share of requests that escalated at least once."""
    quality_share_se: float = 0.0
    """Standard error of ``quality_share`` over the requests (delta method for a ratio of paired means: the
    spread of ``quality_i - quality_share * strong_quality_i``); what ``calibrate(confidence=...)`` uses."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-able figures."""
        return {
            "thresholds": None if self.thresholds is None else list(self.thresholds),
            "gate_threshold": self.gate_threshold,
            "quality": self.quality,
            "quality_share": self.quality_share,
            "strong_share": self.strong_share,
            "cost_usd": self.cost_usd,
            "cost_share": self.cost_share,
            "n": self.n,
            "tier_shares": list(self.tier_shares),
            "escalated_share": self.escalated_share,
            "quality_share_se": self.quality_share_se,
        }


def knob_thresholds(t: float, n_tiers: int) -> tuple[float, ...]:
    """The thresholds :func:`calibrate` searches with more than two tiers: one knob ``t`` in [0, 1] gives
    ``(t, t + (1 - t) / 2, t + 3 (1 - t) / 4, ...)``; ``t = 0.5`` gives
    :func:`~frugal_chains.routing.policy.default_thresholds`. With two tiers it is ``(t,)``.

    Example:
        >>> from frugal_chains.routing.calibration import knob_thresholds
        >>> knob_thresholds(0.5, 3), knob_thresholds(0.2, 2)
        ((0.5, 0.75), (0.2,))
    """
    t = float(t)
    return (t, *(1.0 - (1.0 - t) * 0.5**i for i in range(1, n_tiers - 1)))


# ---------------------------------------------------------------------------------------------------------------
# the replay
# ---------------------------------------------------------------------------------------------------------------


class _Data:
    """The outcomes as arrays (quality, cost, gate scores with NaN for "no gate score")."""

    def __init__(self, outcomes: Sequence[LabelledOutcome]) -> None:
        import numpy as np

        if isinstance(outcomes, (str, bytes)) or not isinstance(outcomes, Sequence):
            raise ConfigurationError("outcomes must be a list of LabelledOutcome", field="outcomes")
        items = list(outcomes)
        if not items:
            raise ConfigurationError(
                "outcomes is empty: calibration needs labelled outcomes", field="outcomes"
            )
        for o in items:
            if not isinstance(o, LabelledOutcome):
                raise ConfigurationError(
                    f"outcomes must be LabelledOutcome objects, got {type(o).__name__}", field="outcomes"
                )
        k = items[0].n_tiers
        if any(o.n_tiers != k for o in items):
            raise ConfigurationError(
                "every outcome must have the same number of tiers (len(quality))", field="outcomes"
            )
        self.items = items
        self.n = len(items)
        self.k = k
        self.quality = np.array([o.quality for o in items], np.float64)
        self.cost: NDArray[np.float64] | None = None
        if all(o.cost_usd is not None for o in items):
            self.cost = np.array([o.cost_usd for o in items], np.float64)
        self.gates: NDArray[np.float64] | None = None
        if any(o.gate_scores is not None for o in items):
            g = np.full((self.n, k), np.nan)
            for i, o in enumerate(items):
                if o.gate_scores is not None:
                    g[i] = [np.nan if v is None else v for v in o.gate_scores]
            g[:, k - 1] = np.nan  # the strongest tier is not gated
            self.gates = g if not np.isnan(g).all() else None
        self.strong_quality = float(self.quality[:, k - 1].mean())
        self.strong_cost = None if self.cost is None else float(self.cost[:, k - 1].sum())
        zeros = np.zeros((self.n, 1))
        self.cum_cost = None if self.cost is None else np.hstack([zeros, np.cumsum(self.cost, axis=1)])
        self.rows = np.arange(self.n)
        # contiguous columns for the per-tier sums in run()
        self.quality_cols = [np.ascontiguousarray(self.quality[:, t]) for t in range(k)]
        # second moments for quality_share_se, in units of the strong tier's mean quality (no overflow for big
        # judge scales; the ratio's standard error is then read off directly)
        unit = self.strong_quality if self.strong_quality > 0 else 1.0
        q_unit = self.quality / unit
        strong_col = q_unit[:, k - 1]
        self.quality_sq_cols = [np.ascontiguousarray(q_unit[:, t] ** 2) for t in range(k)]
        self.quality_x_strong_cols = [np.ascontiguousarray(q_unit[:, t] * strong_col) for t in range(k)]
        self.strong_sq_sum = float((strong_col**2).sum())
        self.cum_cost_cols = (
            None
            if self.cum_cost is None
            else [np.ascontiguousarray(self.cum_cost[:, t]) for t in range(k + 1)]
        )

    def scores(self, scores: Sequence[float] | NDArray[Any] | None) -> NDArray[np.float64]:
        import numpy as np

        if scores is None:
            return np.zeros(self.n)
        if isinstance(scores, (str, bytes)):
            raise ConfigurationError("scores must be a list of numbers", field="scores")
        arr = np.asarray([float("nan") if s is None else s for s in scores], np.float64)
        if arr.ndim != 1 or len(arr) != self.n:
            raise ConfigurationError(
                f"scores needs one score per outcome ({self.n}), got {arr.shape}", field="scores"
            )
        bad = ~np.isnan(arr) & ((arr < 0) | (arr > 1))
        if bad.any():
            raise ConfigurationError(
                f"scores must be in [0, 1] (a scorer's output), got {arr[bad][:3].tolist()}", field="scores"
            )
        return arr

    def fails(self, gate_thresholds: Sequence[float | None]) -> NDArray[np.bool_] | None:
        """``fails[g, i, t]``: request ``i`` fails the gate on tier ``t`` at ``gate_thresholds[g]`` (a missing
        gate score, the strongest tier and ``None`` = no gate never fail)."""
        import numpy as np

        if self.gates is None or all(g is None for g in gate_thresholds):
            return None
        gt = np.array([np.nan if g is None else g for g in gate_thresholds], np.float64)
        with np.errstate(invalid="ignore"):
            out: NDArray[np.bool_] = self.gates[None, :, :] < gt[:, None, None]
        return out

    def run(
        self,
        start: NDArray[np.int64],
        thresholds: tuple[float, ...] | None,
        gate_thresholds: Sequence[float | None],
        fails: NDArray[np.bool_] | None,
    ) -> list[SimResult]:
        """Walk every request up from ``start`` (the engine's rules) once per gate threshold, and summarise."""
        import numpy as np

        final = np.repeat(start[None, :], len(gate_thresholds), axis=0)
        if fails is not None:
            for i in range(self.k - 1):
                moving = (final == i) & fails[:, :, i]
                final[moving] = i + 1
        # Per-tier masks: faster than gathering quality[i, final[g, i]].
        quality = np.zeros(len(gate_thresholds))
        quality_sq = np.zeros(len(gate_thresholds))
        quality_x_strong = np.zeros(len(gate_thresholds))
        cost = None if self.cum_cost is None else -float(self.cum_cost[self.rows, start].sum())
        costs = np.zeros(len(gate_thresholds))
        shares = np.zeros((len(gate_thresholds), self.k))
        for t in range(self.k):
            mask = final == t
            shares[:, t] = np.count_nonzero(mask, axis=1) / self.n
            # elementwise products, not ``mask @ column``: BLAS is erratic (milliseconds) on a 1 x n matrix
            quality += (mask * self.quality_cols[t]).sum(axis=1)
            quality_sq += (mask * self.quality_sq_cols[t]).sum(axis=1)
            quality_x_strong += (mask * self.quality_x_strong_cols[t]).sum(axis=1)
            if self.cum_cost_cols is not None:
                costs += (mask * self.cum_cost_cols[t + 1]).sum(axis=1)
        quality /= self.n
        if cost is not None:
            costs += cost
        escalated = (final > start[None, :]).mean(axis=1)
        strong = self.strong_quality
        out = []
        for g, gate_threshold in enumerate(gate_thresholds):
            q = float(quality[g])
            # a share of the strongest tier's mean quality is undefined when that mean is not positive: NaN
            q_share = q / strong if strong > 0 else math.nan
            se = 0.0 if strong > 0 else math.nan
            if strong > 0 and self.n > 1:
                # residuals d_i = x_i - r * y_i of the ratio r = mean(x) / mean(y) (x, y in units of mean(y));
                # sum(d) = 0 at r, so sum(d^2) / (n - 1) is their variance and the ratio's SE is sqrt(var / n)
                ss = float(
                    quality_sq[g] - 2 * q_share * quality_x_strong[g] + q_share**2 * self.strong_sq_sum
                )
                se = math.sqrt(max(ss, 0.0) / (self.n - 1) / self.n) if math.isfinite(ss) else math.inf
            c = None if cost is None else float(costs[g])
            c_share = None
            if c is not None and self.strong_cost is not None:
                c_share = c / self.strong_cost if self.strong_cost > 0 else (1.0 if c <= 0 else math.inf)
            tiers = tuple(float(v) for v in shares[g])
            out.append(
                SimResult(
                    thresholds=thresholds,
                    gate_threshold=gate_threshold,
                    quality=q,
                    quality_share=q_share,
                    strong_share=tiers[-1],
                    cost_usd=c,
                    cost_share=c_share,
                    n=self.n,
                    tier_shares=tiers,
                    escalated_share=float(escalated[g]),
                    quality_share_se=se,
                )
            )
        return out

    def starts(self, scores: NDArray[np.float64], thresholds: tuple[float, ...] | None) -> NDArray[np.int64]:
        """The engine's start tiers for non-decreasing thresholds, vectorised (NaN scores start at 0)."""
        import numpy as np

        if thresholds is None:
            return np.zeros(self.n, np.int64)
        th = np.asarray(thresholds[: self.k - 1], np.float64)
        out = np.searchsorted(th, np.nan_to_num(scores, nan=-1.0), side="right").astype(np.int64)
        return out


def _check_gate_threshold(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ConfigurationError(
            f"gate_threshold must be None or a number in [0, 1], got {value!r}", field="gate_threshold"
        )
    return float(value)


def simulate(
    outcomes: Sequence[LabelledOutcome],
    scores: Sequence[float] | None,
    thresholds: Sequence[float] | None,
    gate_threshold: float | None = None,
    policy: RoutingPolicy | None = None,
) -> SimResult:
    """Replay the cascade on labelled outcomes with the engine's rules (see the module docstring).

    Args:
        outcomes: what each tier did on each request.
        scores: the scorer's score of each request (``None``: no scorer, every request starts on the cheapest
            tier; a ``None`` or NaN score starts there too, as in the engine).
        thresholds: the scorer thresholds (``None``: start on the cheapest tier).
        gate_threshold: escalate from a tier whose gate score is below it (``None``: no gate).
        policy: a :class:`~frugal_chains.routing.RoutingPolicy` to use instead of ``thresholds`` (pass
            ``thresholds=None`` with it). Its ``cost_aware`` weighing needs prompt sizes and prices the outcomes do
            not have, so it is not applied.

    Example:
        >>> from frugal_chains.routing.calibration import LabelledOutcome, simulate
        >>> data = [LabelledOutcome(messages="q", quality=(0.0, 1.0), cost_usd=(1.0, 10.0), gate_scores=(0.2,))]
        >>> r = simulate(data, [0.1], (0.5,), gate_threshold=0.5)  # starts cheap, the gate escalates it
        >>> r.quality, r.strong_share, r.cost_usd, r.escalated_share
        (1.0, 1.0, 11.0, 1.0)
    """
    import numpy as np

    data = _Data(outcomes)
    gate_threshold = _check_gate_threshold(gate_threshold)
    if policy is not None:
        if not isinstance(policy, RoutingPolicy):
            raise ConfigurationError("policy must be a RoutingPolicy", field="policy")
        if thresholds is not None:
            raise ConfigurationError("pass thresholds= or policy=, not both", field="policy")
    else:
        policy = RoutingPolicy(thresholds=None if thresholds is None else tuple(thresholds))
    policy.check_tiers(data.k)
    arr = data.scores(scores)
    start = np.array(
        [0 if scores is None else policy.start_tier(float(s), n_tiers=data.k) for s in arr], np.int64
    )
    return data.run(start, policy.thresholds, [gate_threshold], data.fails([gate_threshold]))[0]


def _candidates(values: NDArray[np.float64], limit: int) -> list[float]:
    """The distinct values, or ``limit`` quantiles of them (both extremes included)."""
    import numpy as np

    v = np.unique(values[~np.isnan(values)])
    if len(v) > limit:
        v = np.unique(np.quantile(v, np.linspace(0.0, 1.0, limit), method="nearest"))
    return [float(x) for x in v]


def operating_curve(
    outcomes: Sequence[LabelledOutcome],
    scores: Sequence[float],
    *,
    gate_threshold: float | None = None,
    max_points: int = _MAX_SCORE_CANDIDATES,
) -> list[SimResult]:
    """The cost / quality curve of a threshold sweep: one :class:`SimResult` per scorer threshold (the distinct
    scores, or ``max_points`` quantiles of them, with :func:`knob_thresholds` for more than two tiers), plus the
    point "never start above the cheapest tier" (``thresholds=None``), sorted by strong share.

    Example:
        >>> from frugal_chains.routing.calibration import LabelledOutcome, operating_curve
        >>> data = [LabelledOutcome(messages=str(i), quality=(float(i < 3), 1.0)) for i in range(4)]
        >>> [(p.thresholds, p.strong_share, p.quality_share) for p in operating_curve(data, [0.1, 0.2, 0.3, 0.9])]
        [(None, 0.0, 0.75), ((0.9,), 0.25, 1.0), ((0.3,), 0.5, 1.0), ((0.2,), 0.75, 1.0), ((0.1,), 1.0, 1.0)]
    """
    data = _Data(outcomes)
    gate_threshold = _check_gate_threshold(gate_threshold)
    if isinstance(max_points, bool) or not isinstance(max_points, int) or max_points < 2:
        raise ConfigurationError(f"max_points must be an int >= 2, got {max_points!r}", field="max_points")
    arr = data.scores(scores)
    points = _sweep(data, arr, [gate_threshold], max_points)
    points.sort(key=lambda p: (p.strong_share, -1.0 if p.thresholds is None else -p.thresholds[0]))
    return points


def _sweep(
    data: _Data,
    scores: NDArray[np.float64] | None,
    gate_thresholds: Sequence[float | None],
    limit: int = _MAX_SCORE_CANDIDATES,
) -> list[SimResult]:
    knobs: list[float | None] = [None]
    if scores is not None:
        knobs.extend(_candidates(scores, limit))
    fails = data.fails(gate_thresholds)
    out: list[SimResult] = []
    for knob in knobs:
        thresholds = None if knob is None else knob_thresholds(knob, data.k)
        start = data.starts(scores if scores is not None else data.scores(None), thresholds)
        out.extend(data.run(start, thresholds, gate_thresholds, fails))
    return out


# ---------------------------------------------------------------------------------------------------------------
# calibration
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Calibration:
    """Thresholds chosen by :func:`calibrate`, with the figures expected from them on the calibration data.

    Example:
        >>> from frugal_chains.routing import Calibration
        >>> cal = Calibration(thresholds=(0.62,), gate_threshold=None, target_kind="target_quality",
        ...                   target_value=0.95, met=True, quality_share=0.96, strong_share=0.3, cost_share=0.33, n=500)
        >>> cal.policy().thresholds
        (0.62,)
        >>> Calibration.from_json(cal.to_json()) == cal
        True
    """

    thresholds: tuple[float, ...] | None
    """The scorer thresholds for :class:`~frugal_chains.routing.RoutingPolicy` (``None``: every request starts
    on the cheapest tier and only the gate escalates)."""
    gate_threshold: float | None
    """The threshold of the gate whose scores were calibrated (e.g. ``TrainedVerifier(threshold=...)``); ``None``
    when the best point uses no gate."""
    target_kind: TargetKind
    """``"target_quality"`` (a share of the strongest tier's mean quality) or ``"max_strong_share"``."""
    target_value: float
    met: bool
    """False when no point reached the target: the thresholds are then the best available point (highest quality
    for a quality target)."""
    quality_share: float
    """Expected mean quality / the strongest tier's, on the calibration data (NaN when the strongest tier's mean
    quality is not positive: only a ``max_strong_share`` calibration can be made on such data)."""
    strong_share: float
    """Expected share of requests answered by the strongest tier."""
    cost_share: float | None
    """Expected cost / the strongest tier's cost (``None`` when the outcomes had no costs)."""
    n: int
    """Number of outcomes calibrated on."""
    n_tiers: int = 2
    meta: Mapping[str, Any] = field(default_factory=dict, compare=False)
    """Provenance: the scorer's name, whether gate scores were used, the number of points searched, the expected
    mean quality and tier shares, the ``confidence`` asked for (``None``: the point estimate) and the chosen point's
    ``quality_share_se``."""

    def __post_init__(self) -> None:
        if self.thresholds is not None:
            object.__setattr__(
                self, "thresholds", RoutingPolicy(thresholds=tuple(self.thresholds)).thresholds
            )
        object.__setattr__(self, "gate_threshold", _check_gate_threshold(self.gate_threshold))
        if self.target_kind not in ("target_quality", "max_strong_share"):
            raise ConfigurationError(
                f"target_kind must be 'target_quality' or 'max_strong_share', got {self.target_kind!r}",
                field="target_kind",
            )

    def policy(self, cost_aware: bool = False) -> RoutingPolicy:
        """The :class:`~frugal_chains.routing.RoutingPolicy` with these thresholds. ``cost_aware=True`` changes
        routing for long prompts, so the expected figures no longer hold exactly."""
        return RoutingPolicy(thresholds=self.thresholds, cost_aware=cost_aware)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": _KIND,
            "version": 1,
            "thresholds": None if self.thresholds is None else list(self.thresholds),
            "gate_threshold": self.gate_threshold,
            "target_kind": self.target_kind,
            "target_value": self.target_value,
            "met": self.met,
            "quality_share": self.quality_share,
            "strong_share": self.strong_share,
            "cost_share": self.cost_share,
            "n": self.n,
            "n_tiers": self.n_tiers,
            "meta": dict(self.meta),
        }

    def to_json(self) -> str:
        """A small JSON document (:meth:`from_json` reads it). Strict JSON: an undefined figure (NaN, e.g. the
        quality share when the strongest tier had no positive quality) is written as ``null``."""
        return json.dumps(_strict(self.to_dict()), indent=1, allow_nan=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> Calibration:
        """Read :meth:`to_json`'s output; ConfigurationError (``field="json"``) when it is not one."""
        return cls._parse(text, "json")

    @classmethod
    def _parse(cls, text: str | bytes, field: str) -> Calibration:
        try:
            d = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as e:
            raise ConfigurationError(f"not a saved Calibration (invalid JSON: {e})", field=field) from e
        if not isinstance(d, dict) or d.get("kind") != _KIND:
            raise ConfigurationError("not a saved Calibration (missing kind)", field=field)
        try:
            thresholds = d["thresholds"]
            cost_share = d.get("cost_share")
            return cls(
                thresholds=None if thresholds is None else tuple(float(t) for t in thresholds),
                gate_threshold=d.get("gate_threshold"),
                target_kind=d["target_kind"],
                target_value=float(d["target_value"]),
                met=bool(d["met"]),
                quality_share=math.nan if d["quality_share"] is None else float(d["quality_share"]),
                strong_share=float(d["strong_share"]),
                cost_share=None if cost_share is None else float(cost_share),
                n=int(d["n"]),
                n_tiers=int(d.get("n_tiers", 2)),
                meta=d.get("meta") or {},
            )
        except (ConfigurationError, KeyError, TypeError, ValueError) as e:
            if isinstance(e, ConfigurationError):
                raise ConfigurationError(f"not a valid saved Calibration: {e}", field=field) from e
            raise ConfigurationError(f"not a saved Calibration: {e!r}", field=field) from e

    def save(self, path: str | Path) -> None:
        """Write :meth:`to_json` to ``path``."""
        Path(path).write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        """Read a file written by :meth:`save`; ConfigurationError (``field="path"``) when it cannot be read or
        is not a saved calibration.

        Example:
            >>> import os, tempfile
            >>> from frugal_chains.routing import Calibration
            >>> path = os.path.join(tempfile.mkdtemp(), "routing.json")
            >>> with open(path, "w") as f:
            ...     _ = f.write("{not json")
            >>> try:
            ...     Calibration.load(path)
            ... except ConfigurationError as e:
            ...     print(e.field)
            path
        """
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigurationError(
                f"cannot read the calibration file {str(path)!r}: {e}", field="path"
            ) from e
        return cls._parse(text, "path")


def _better_for_quality(p: SimResult) -> tuple[float, ...]:
    """Sort key among points that meet a quality target: fewest strong calls, then cheapest, best, simplest."""
    return (p.strong_share, p.cost_share or 0.0, -p.quality, p.gate_threshold is not None)


def _best_quality(p: SimResult) -> tuple[float, ...]:
    """Best quality first (mean quality: the same order as the quality share, and defined when the share is
    not)."""
    return (-p.quality, p.strong_share, p.cost_share or 0.0, p.gate_threshold is not None)


def calibrate(
    outcomes: Sequence[LabelledOutcome],
    *,
    scores: Sequence[float] | None = None,
    scorer: Scorer | None = None,
    target_quality: float | None = None,
    max_strong_share: float | None = None,
    use_gate: bool = True,
    confidence: float | None = None,
) -> Calibration:
    """Choose the scorer threshold(s) (and the gate threshold) that meet a target on labelled outcomes.

    Use outcomes the scorer (and verifier) were **not** fit on, or the figures are optimistic.

    Targets (give one; ``target_quality=0.95`` when neither is given):

    * ``target_quality``: a share of the strongest tier's mean quality, in (0, 1] (1.0: as good as always calling
      the strongest tier; 95 is rejected: write 0.95). The point with the **lowest strong share** whose quality
      share reaches it wins (ties: lower cost, higher quality, no gate). A share needs a strongest tier whose mean
      quality on the outcomes is positive: when it is not (every outcome labelled 0, say), ``calibrate`` raises
      instead of reporting a target met on nothing.
    * ``max_strong_share``: at most this share of requests may reach the strongest tier, in [0, 1]. The point with
      the **highest quality** within the cap wins (ties: lower strong share, lower cost, no gate).

    Search: every distinct score (or 257 quantiles of them) as the threshold, plus "never start above the cheapest
    tier"; with more than two tiers the one knob of :func:`knob_thresholds` (``t, t + (1 - t) / 2, ...``). When
    the outcomes carry gate scores and ``use_gate`` is true, every distinct gate score (or 129 quantiles) and "no
    gate" are crossed with it. When no point meets the target, the best one is returned with ``met=False`` (for a
    quality target: the highest quality); it never raises for that.

    Args:
        outcomes: :class:`LabelledOutcome` per request, all with the same number of tiers.
        scores: the scorer's score of each outcome, or
        scorer: a scorer to compute them (``score_many`` is used when it has one). Give at most one of the two;
            with neither, only the gate threshold is searched (the outcomes must then carry gate scores).
        target_quality: see above.
        max_strong_share: see above.
        use_gate: search the gate threshold too (when the outcomes carry gate scores).
        confidence: with ``target_quality``, ask for the target with this one-sided confidence (in [0.5, 1),
            e.g. 0.9) instead of on average: a point qualifies when ``quality_share - z * quality_share_se``
            reaches the target (``z`` the normal quantile; the standard error over these outcomes). Traffic
            like the calibration data then falls below the target about ``1 - confidence`` of the time instead
            of half of it, at the price of a higher strong share. ``None`` (default): the point estimate. The
            bound is approximate: the standard error is a normal approximation (0 when every request's quality
            is an exact multiple of the strongest tier's, e.g. both tiers always right: no margin then), and
            choosing among many candidate points is optimistic, more so when a gate threshold is searched too
            (a resampling check with a gate: 22% of calibrations below the target instead of 10%).

    Raises:
        ConfigurationError: both targets given, a target out of range (``target_quality`` outside (0, 1],
            ``max_strong_share`` outside [0, 1]), a quality target on outcomes whose strongest tier's mean quality
            is not positive (``field="outcomes"``), both or neither of ``scores``/``scorer`` with no gate scores,
            ``confidence`` out of [0.5, 1) or given with ``max_strong_share``, or bad outcomes (the field is named).

    Example:
        >>> from frugal_chains.routing import LabelledOutcome, calibrate
        >>> data = [LabelledOutcome(messages=f"q{i}", quality=(float(i % 4 != 0), 1.0), cost_usd=(0.1, 1.0))
        ...         for i in range(100)]
        >>> scores = [0.9 if i % 4 == 0 else 0.2 for i in range(100)]  # a scorer that knows the hard ones
        >>> cal = calibrate(data, scores=scores, target_quality=0.99)
        >>> cal.met, cal.thresholds, cal.strong_share, round(cal.quality_share, 2)
        (True, (0.9,), 0.25, 1.0)

        A floor rather than an average: the 0.95 target on a one-sided 90% lower bound.

        >>> rng = __import__("random").Random(0)
        >>> hard = [rng.random() for _ in range(400)]
        >>> noisy = [LabelledOutcome(messages="q", quality=(float(rng.random() > h), 1.0)) for h in hard]
        >>> avg = calibrate(noisy, scores=hard, target_quality=0.95)
        >>> floor = calibrate(noisy, scores=hard, target_quality=0.95, confidence=0.9)
        >>> floor.strong_share > avg.strong_share
        True
        >>> floor.quality_share - 1.2816 * floor.meta["quality_share_se"] >= 0.95
        True
    """
    data = _Data(outcomes)
    kind: TargetKind
    if target_quality is not None and max_strong_share is not None:
        raise ConfigurationError(
            "pass either target_quality= or max_strong_share=, not both", field="target_quality"
        )
    if max_strong_share is not None:
        kind, value = "max_strong_share", max_strong_share
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
            raise ConfigurationError(
                f"max_strong_share must be a share in [0, 1] (e.g. 0.3), got {value!r}",
                field="max_strong_share",
            )
    else:
        kind, value = "target_quality", 0.95 if target_quality is None else target_quality
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < float(value) <= 1.0:
            raise ConfigurationError(
                f"target_quality must be a share of the strongest tier's quality in (0, 1] (e.g. 0.95), got "
                f"{value!r}",
                field="target_quality",
            )
        if not data.strong_quality > 0:
            raise ConfigurationError(
                f"target_quality is a share of the strongest tier's mean quality, which is "
                f"{data.strong_quality:g} on these outcomes: the share is undefined. Check the quality labels "
                "(the last number of each LabelledOutcome.quality is the strongest tier's), or calibrate with "
                "max_strong_share= instead",
                field="outcomes",
            )
    value = float(value)
    z = 0.0
    if confidence is not None:
        if kind != "target_quality":
            raise ConfigurationError(
                "confidence= goes with target_quality= (a cap on the strong share is met exactly on the data)",
                field="confidence",
            )
        if (
            isinstance(confidence, bool)
            or not isinstance(confidence, (int, float))
            or not 0.5 <= float(confidence) < 1.0
        ):
            raise ConfigurationError(
                f"confidence must be in [0.5, 1) (e.g. 0.9), got {confidence!r}", field="confidence"
            )
        from statistics import NormalDist

        z = NormalDist().inv_cdf(float(confidence))
    if scores is not None and scorer is not None:
        raise ConfigurationError("pass scores= or scorer=, not both", field="scores")
    gates_used = use_gate and data.gates is not None
    if scores is None and scorer is None and not gates_used:
        raise ConfigurationError(
            "pass scores= (one per outcome) or scorer= (to compute them); without either only a gate can be "
            "calibrated, and the outcomes have no gate_scores",
            field="scores",
        )
    score_arr = None
    if scorer is not None:
        score_arr = data.scores(_score_all(scorer, data.items))
    elif scores is not None:
        score_arr = data.scores(scores)

    gate_candidates: list[float | None] = [None]
    if gates_used and data.gates is not None:
        gate_candidates.extend(_candidates(data.gates[:, : data.k - 1].ravel(), _MAX_GATE_CANDIDATES))
    points = _sweep(data, score_arr, gate_candidates)
    if score_arr is None:  # gate only: the "never" knob is the only scorer setting
        points = [p for p in points if p.thresholds is None]

    if kind == "target_quality":
        # without a confidence no margin at all (not 0 * se: an infinite se must not matter then)
        feasible = [
            p for p in points if p.quality_share - (z * p.quality_share_se if z else 0.0) >= value - _EPS
        ]
        best = min(feasible, key=_better_for_quality) if feasible else min(points, key=_best_quality)
    else:
        feasible = [p for p in points if p.strong_share <= value + _EPS]
        best = (
            min(feasible, key=_best_quality)
            if feasible
            else min(points, key=lambda p: (p.strong_share, *_best_quality(p)))
        )
    # The expected figures are the exact replay of the chosen point.
    exact = simulate(
        data.items,
        None if score_arr is None else [float(s) for s in score_arr],
        best.thresholds,
        gate_threshold=best.gate_threshold,
    )
    return Calibration(
        thresholds=best.thresholds,
        gate_threshold=best.gate_threshold,
        target_kind=kind,
        target_value=value,
        met=bool(feasible),
        quality_share=exact.quality_share,
        strong_share=exact.strong_share,
        cost_share=exact.cost_share,
        n=data.n,
        n_tiers=data.k,
        meta={
            "scorer": getattr(scorer, "name", None)
            if scorer is not None
            else ("scores" if scores is not None else None),
            "gate": gates_used,
            "points": len(points),
            "quality": exact.quality,
            "tier_shares": list(exact.tier_shares),
            "confidence": confidence,
            "quality_share_se": exact.quality_share_se,
        },
    )


def _score_all(scorer: Any, items: Sequence[LabelledOutcome]) -> list[float]:
    many: Callable[[list[Sequence[Message]]], Sequence[float]] | None = getattr(scorer, "score_many", None)
    if callable(many):
        return [float(s) for s in many([o.messages for o in items])]
    if not callable(getattr(scorer, "score", None)):
        raise ConfigurationError(
            "scorer must implement the Scorer protocol (score(messages))", field="scorer"
        )
    return [float(scorer.score(o.messages)) for o in items]


def _strict(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, infinities) replaced by None, so it is strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    return value
