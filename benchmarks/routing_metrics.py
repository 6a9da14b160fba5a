"""Cost / quality arithmetic of the routing benchmark: curves over a threshold sweep, read-offs at a quality
target, the random and oracle routers, and bootstrap confidence intervals. Pure numpy, no model calls.

Conventions: per item ``qw, qs`` (quality of the weak / strong answer), ``cw, cs`` (USD of the weak / strong call).
A *router* sends an item straight to the strong model (``direct``); a *cascade* also calls the weak model first and
``escalates`` some items. An item **reaches the strong model** when it is sent there directly or escalated; its
quality is then ``qs``, else ``qw``. A cascade pays the weak call of every item it did not send directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

Arr = NDArray[np.float64]


@dataclass(frozen=True)
class Outcomes:
    """Per-item quality and cost of each model (one price book)."""

    qw: Arr
    qs: Arr
    cw: Arr
    cs: Arr

    @property
    def n(self) -> int:
        return len(self.qw)

    def take(self, idx: NDArray[np.int64]) -> Outcomes:
        return Outcomes(self.qw[idx], self.qs[idx], self.cw[idx], self.cs[idx])

    @property
    def strong_quality(self) -> float:
        return float(self.qs.mean())

    @property
    def strong_cost(self) -> float:
        return float(self.cs.sum())


def point(
    o: Outcomes, direct: NDArray[np.bool_], escalated: NDArray[np.bool_] | None = None
) -> dict[str, float]:
    """Share reaching strong, quality, quality / strong quality, cost and saving vs always-strong."""
    esc = np.zeros(o.n, bool) if escalated is None else escalated & ~direct
    strong = direct | esc
    quality = float(np.where(strong, o.qs, o.qw).mean())
    if escalated is None:  # a router: one call per item
        cost = float(np.where(direct, o.cs, o.cw).sum())
    else:  # a cascade: the weak call of every item not sent straight to strong, plus the strong calls
        cost = float(np.where(direct, o.cs, o.cw).sum() + o.cs[esc].sum())
    return {
        "strong_share": float(strong.mean()),
        "direct_share": float(direct.mean()),
        "escalated_share": float(esc.mean()),
        "quality": quality,
        "rel_quality": quality / o.strong_quality if o.strong_quality else 0.0,
        "cost_usd": cost,
        "saving": 1.0 - cost / o.strong_cost if o.strong_cost else 0.0,
    }


def sweep_1d(o: Outcomes, score: Arr, *, cascade: bool = False) -> dict[str, Arr]:
    """Every threshold of one score at once: items are sent up in decreasing ``score`` (ties together).

    ``cascade=False``: a pre-call router (``score`` = the scorer's score, up means straight to strong).
    ``cascade=True``: everything starts on weak and the items with the highest ``score`` escalate (pass
    ``1 - P(weak answer good)`` of a verifier).
    Returns arrays over the cut points (first = nothing sent up): threshold, strong_share, quality, cost.
    """
    order = np.argsort(-score, kind="stable")
    s = score[order]
    gain = (o.qs - o.qw)[order]
    extra = (o.cs if cascade else o.cs - o.cw)[order]
    ends = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]  # last index of each tie group
    cum_gain = np.r_[0.0, np.cumsum(gain)[ends]]
    cum_extra = np.r_[0.0, np.cumsum(extra)[ends]]
    n = o.n
    return {
        "threshold": np.r_[np.inf, s[ends]],
        "strong_share": np.r_[0, ends + 1] / n,
        "quality": (o.qw.sum() + cum_gain) / n,
        "cost_usd": o.cw.sum() + cum_extra,
    }


def read_off(curve: dict[str, Arr], target: float, strong_cost: float) -> dict[str, float] | None:
    """The point of ``curve`` with the lowest strong share whose quality >= ``target`` (ties: lowest cost)."""
    ok = np.flatnonzero(curve["quality"] >= target - 1e-12)
    if not len(ok):
        return None
    share = curve["strong_share"][ok]
    best = ok[share == share.min()]
    i = int(best[np.argmin(curve["cost_usd"][best])])
    out = {k: float(v[i]) for k, v in curve.items()}
    out["saving"] = 1.0 - out["cost_usd"] / strong_cost if strong_cost else 0.0
    return out


def cheapest(curve: dict[str, Arr], target: float, strong_cost: float) -> dict[str, float] | None:
    """The point of ``curve`` with the lowest cost whose quality >= ``target``."""
    ok = np.flatnonzero(curve["quality"] >= target - 1e-12)
    if not len(ok):
        return None
    i = int(ok[np.argmin(curve["cost_usd"][ok])])
    out = {k: float(v[i]) for k, v in curve.items()}
    out["saving"] = 1.0 - out["cost_usd"] / strong_cost if strong_cost else 0.0
    return out


def sweep_2d(o: Outcomes, score: Arr, escalate: Arr, *, grid: int = 41) -> dict[str, Arr]:
    """A scorer (straight to strong when ``score >= t_s``) and a gate (escalate when ``escalate >= t_g``) over a
    quantile grid of both thresholds (plus "never")."""
    ts = np.r_[np.unique(np.quantile(score, np.linspace(0, 1, grid))), np.inf]
    tg = np.r_[np.unique(np.quantile(escalate, np.linspace(0, 1, grid))), np.inf]
    rows: dict[str, list[float]] = {
        k: [] for k in ("t_scorer", "t_gate", "strong_share", "quality", "cost_usd")
    }
    base_w = o.qw
    for a in ts:
        direct = score >= a
        for b in tg:
            esc = (escalate >= b) & ~direct
            strong = direct | esc
            rows["t_scorer"].append(float(a))
            rows["t_gate"].append(float(b))
            rows["strong_share"].append(float(strong.mean()))
            rows["quality"].append(float(np.where(strong, o.qs, base_w).mean()))
            rows["cost_usd"].append(float(np.where(direct, o.cs, o.cw).sum() + o.cs[esc].sum()))
    return {k: np.asarray(v) for k, v in rows.items()}


def pareto(curve: dict[str, Arr]) -> dict[str, Arr]:
    """The points no other point beats on both strong share (lower) and quality (higher)."""
    order = np.lexsort((-curve["quality"], curve["strong_share"]))
    keep: list[int] = []
    best = -np.inf
    for i in order:
        if curve["quality"][i] > best + 1e-12:
            keep.append(int(i))
            best = curve["quality"][i]
    idx = np.asarray(keep)
    return {k: v[idx] for k, v in curve.items()}


def oracle_curve(o: Outcomes) -> dict[str, Arr]:
    """The best possible router: it sends up the items where strong beats weak, biggest gain first."""
    gain = o.qs - o.qw
    # rank by gain, and among equal gains by the cheapest extra cost (a fixed tiny tie-break)
    key = gain - 1e-9 * (o.cs - o.cw) / max(float((o.cs - o.cw).max()), 1e-12)
    return sweep_1d(o, key)


def random_router(o: Outcomes, target: float) -> dict[str, float]:
    """A router that sends a random share ``p`` to strong: expected quality ``(1-p) qw + p qs``; the ``p`` that
    reaches ``target`` (analytic, expected values)."""
    qw, qs = float(o.qw.mean()), float(o.qs.mean())
    p = min(1.0, max(0.0, (target - qw) / (qs - qw))) if qs > qw else 1.0
    cost = float((1 - p) * o.cw.sum() + p * o.cs.sum())
    return {
        "strong_share": p,
        "quality": (1 - p) * qw + p * qs,
        "cost_usd": cost,
        "saving": 1.0 - cost / o.strong_cost,
    }


def bootstrap(
    n: int, stat: Any, *, reps: int = 1000, seed: int = 0, groups: Sequence[Any] | None = None
) -> tuple[float, float]:
    """95% percentile interval of ``stat(idx)`` over ``reps`` resamples of the items (with replacement)."""
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(reps):
        idx = rng.integers(0, n, n)
        v = stat(idx)
        if v is not None and np.isfinite(v):
            vals.append(v)
    if not vals:
        return (float("nan"), float("nan"))
    lo, hi = np.percentile(vals, [2.5, 97.5])
    return float(lo), float(hi)


def curve_share_ci(
    o: Outcomes, score: Arr, frac: float, *, cascade: bool = False, reps: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """Bootstrap CI of the lowest strong share of a 1-d sweep reaching ``frac`` x the strong quality (the
    target recomputed on each resample)."""

    def stat(idx: NDArray[np.int64]) -> float | None:
        sub = o.take(idx)
        p = read_off(sweep_1d(sub, score[idx], cascade=cascade), frac * sub.strong_quality, sub.strong_cost)
        return None if p is None else p["strong_share"]

    return bootstrap(o.n, stat, reps=reps, seed=seed)


def downsample(curve: dict[str, Arr], k: int = 21) -> list[dict[str, float]]:
    """About ``k`` points of a curve, evenly spaced in strong share (first and last kept)."""
    share = curve["strong_share"]
    if len(share) <= k:
        idx = np.arange(len(share))
    else:
        targets = np.linspace(0, 1, k)
        idx = np.unique([int(np.argmin(np.abs(share - t))) for t in targets])
    return [{key: float(v[i]) for key, v in curve.items()} for i in idx]
