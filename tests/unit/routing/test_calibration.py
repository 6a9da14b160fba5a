"""Calibration: the offline replay matches the engine, and calibrate() meets its targets."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from frugal_chains import ConfigurationError, Price
from frugal_chains.routing import (
    Calibration,
    CallableScorer,
    Cascade,
    GateContext,
    GateResult,
    HeuristicScorer,
    LabelledOutcome,
    RoutingPolicy,
    TierAnswer,
    TierSpec,
    TrainedScorer,
    calibrate,
)
from frugal_chains.routing.calibration import SimResult, knob_thresholds, operating_curve, simulate
from frugal_chains.testing import HashEmbeddings


def dataset(
    n: int,
    *,
    seed: int = 0,
    n_tiers: int = 2,
    gates: bool = False,
    informative: float = 0.8,
) -> tuple[list[LabelledOutcome], list[float]]:
    """Outcomes where the cheap tier fails on ~30% of requests, and scores that see it with noise."""
    rng = random.Random(seed)
    outcomes, scores = [], []
    for i in range(n):
        difficulty = rng.random()
        quality = tuple(
            1.0 if difficulty < (k + 1) / n_tiers + 0.2 or k == n_tiers - 1 else 0.0 for k in range(n_tiers)
        )
        if n_tiers == 2:
            quality = (1.0 if difficulty < 0.7 else 0.0, 1.0 if rng.random() < 0.95 else 0.0)
        cost = tuple(round(0.001 * 10**k * (1 + rng.random()), 6) for k in range(n_tiers))
        gate_scores = None
        if gates:
            gate_scores = tuple(
                min(1.0, max(0.0, (0.75 if q else 0.25) + rng.gauss(0, 0.15))) for q in quality[:-1]
            )
        outcomes.append(
            LabelledOutcome(messages=f"request {i}", quality=quality, cost_usd=cost, gate_scores=gate_scores)
        )
        noisy = informative * difficulty + (1 - informative) * rng.random()
        scores.append(round(min(1.0, max(0.0, noisy)), 4))
    return outcomes, scores


# ---------------------------------------------------------------------------------------------------------------
# the replay matches the engine


class LookupGate:
    """A gate that passes when the outcome's recorded gate score for this tier is >= threshold."""

    name = "lookup"
    needs_full_answer = True

    def __init__(self, by_id: dict[str, LabelledOutcome], threshold: float) -> None:
        self.by_id, self.threshold = by_id, threshold

    def check(self, ctx: GateContext) -> GateResult:
        o = self.by_id[ctx.question]
        g = None if o.gate_scores is None else o.gate_scores[ctx.tier_index]
        return GateResult(gate=self.name, passed=g is None or g >= self.threshold, score=g)

    async def acheck(self, ctx: GateContext) -> GateResult:
        return self.check(ctx)


def engine_replay(
    outcomes: list[LabelledOutcome],
    scores: list[float],
    thresholds: tuple[float, ...] | None,
    gate: float | None,
) -> tuple[float, float, float]:
    """Run every outcome through the real Cascade: (mean quality, strong share, total cost)."""
    by_id = {o.messages[0]["content"]: o for o in outcomes}
    score_of = {o.messages[0]["content"]: s for o, s in zip(outcomes, scores, strict=True)}
    k = outcomes[0].n_tiers
    tiers = [TierSpec(name=f"t{i}", model=f"m{i}", price=Price(input=0, output=0)) for i in range(k)]
    engine = Cascade(
        tiers,
        scorer=CallableScorer(lambda m: score_of[m[-1]["content"]]),
        gates=[LookupGate(by_id, gate)] if gate is not None else [],
        policy=RoutingPolicy(thresholds=thresholds),
    )
    quality = cost = 0.0
    strong = 0
    for o in outcomes:
        result = engine.run(list(o.messages), lambda i: TierAnswer(text=str(i)))
        quality += o.quality[result.tier_index]
        assert o.cost_usd is not None
        cost += sum(o.cost_usd[a.tier_index] for a in result.attempts)
        strong += result.tier_index == k - 1
    return quality / len(outcomes), strong / len(outcomes), cost


@pytest.mark.parametrize("n_tiers", [2, 3])
@pytest.mark.parametrize("gate", [None, 0.5, 0.7])
def test_simulate_matches_the_engine(n_tiers: int, gate: float | None) -> None:
    outcomes, scores = dataset(150, seed=n_tiers, n_tiers=n_tiers, gates=True)
    thresholds = knob_thresholds(0.6, n_tiers)
    r = simulate(outcomes, scores, thresholds, gate_threshold=gate)
    quality, strong, cost = engine_replay(outcomes, scores, thresholds, gate)
    assert r.quality == pytest.approx(quality)
    assert r.strong_share == pytest.approx(strong)
    assert r.cost_usd == pytest.approx(cost)
    assert r.n == 150 and sum(r.tier_shares) == pytest.approx(1.0)
    if gate is not None:
        assert r.escalated_share > 0


def test_simulate_by_hand() -> None:
    data = [
        LabelledOutcome(messages="a", quality=(1.0, 1.0), cost_usd=(1.0, 10.0), gate_scores=(0.9,)),
        LabelledOutcome(messages="b", quality=(0.0, 1.0), cost_usd=(1.0, 10.0), gate_scores=(0.2,)),
        LabelledOutcome(messages="c", quality=(0.0, 1.0), cost_usd=(1.0, 10.0), gate_scores=(0.8,)),
        LabelledOutcome(messages="d", quality=(1.0, 0.0), cost_usd=(1.0, 10.0), gate_scores=(None,)),
    ]
    scores = [0.1, 0.2, 0.9, 0.3]
    # no gate: c starts strong, the rest stay cheap
    r = simulate(data, scores, (0.5,))
    assert (r.quality, r.strong_share, r.cost_usd) == (0.75, 0.25, 13.0)
    assert r.quality_share == 1.0 and r.cost_share == pytest.approx(13 / 40)
    assert r.tier_shares == (0.75, 0.25) and r.escalated_share == 0.0
    # with the gate: b escalates (pays both: 1 + 10), d has no gate score and is accepted
    r = simulate(data, scores, (0.5,), gate_threshold=0.5)
    assert (r.quality, r.strong_share, r.cost_usd, r.escalated_share) == (1.0, 0.5, 23.0, 0.25)
    assert r.thresholds == (0.5,) and r.gate_threshold == 0.5
    # no scorer: everything starts cheap
    r = simulate(data, None, None, gate_threshold=0.5)
    assert (r.strong_share, r.cost_usd) == (0.25, 14.0)  # only b escalates
    # None / NaN scores start on the cheapest tier, as in the engine
    r = simulate(data, [None, float("nan"), 0.9, 0.3], (0.5,))  # type: ignore[list-item]
    assert r.tier_shares == (0.75, 0.25)
    # a policy instead of thresholds gives the same
    assert simulate(data, scores, None, policy=RoutingPolicy(thresholds=(0.5,))) == simulate(
        data, scores, (0.5,)
    )
    # no costs: no cost figures
    bare = [LabelledOutcome(messages="a", quality=(1.0, 1.0))]
    r = simulate(bare, [0.0], (0.5,))
    assert r.cost_usd is None and r.cost_share is None


def test_simulate_rejects_bad_input() -> None:
    data, scores = dataset(10)
    cases: list[tuple[Any, str]] = [
        (lambda: simulate(data, scores[:5], (0.5,)), "scores"),
        (lambda: simulate(data, [1.5] * 10, (0.5,)), "scores"),
        (lambda: simulate(data, scores, (0.5, 0.7)), "thresholds"),
        (lambda: simulate(data, scores, (1.5,)), "thresholds"),
        (lambda: simulate(data, scores, (0.5,), gate_threshold=2.0), "gate_threshold"),
        (lambda: simulate(data, scores, (0.5,), policy=RoutingPolicy(thresholds=(0.5,))), "policy"),
        (lambda: simulate([], [], (0.5,)), "outcomes"),
        (
            lambda: simulate([*data, LabelledOutcome(messages="x", quality=(1, 1, 1))], [*scores, 0.1], None),
            "outcomes",
        ),
        (lambda: simulate(["x"], [0.1], None), "outcomes"),  # type: ignore[list-item]
    ]
    for fn, field in cases:
        with pytest.raises(ConfigurationError) as e:
            fn()
        assert e.value.field == field


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"quality": (1.0,)}, "quality"),
        ({"quality": (1.0, float("nan"))}, "quality"),
        ({"quality": "10"}, "quality"),
        ({"quality": (1.0, 1.0), "cost_usd": (1.0,)}, "cost_usd"),
        ({"quality": (1.0, 1.0), "cost_usd": (1.0, -1.0)}, "cost_usd"),
        ({"quality": (1.0, 1.0), "gate_scores": (1.5,)}, "gate_scores"),
        ({"quality": (1.0, 1.0, 1.0), "gate_scores": (0.5,)}, "gate_scores"),
        ({"quality": (1.0, 1.0), "messages": 42}, "messages"),
    ],
)
def test_labelled_outcome_validation(kwargs: dict[str, Any], field: str) -> None:
    kwargs.setdefault("messages", "q")
    with pytest.raises(ConfigurationError) as e:
        LabelledOutcome(**kwargs)
    assert e.value.field == field


def test_labelled_outcome_normalises() -> None:
    o = LabelledOutcome(messages="q", quality=[0, 1], cost_usd=[1, 2], gate_scores=[0.5])  # type: ignore[arg-type]
    assert o.messages == ({"role": "user", "content": "q"},)
    assert o.quality == (0.0, 1.0) and o.cost_usd == (1.0, 2.0) and o.gate_scores == (0.5, None)
    msgs = [{"role": "user", "content": "a"}]
    assert LabelledOutcome(messages=msgs, quality=(1, 1)).messages is msgs


# ---------------------------------------------------------------------------------------------------------------
# calibrate


def brute_force(outcomes: list[LabelledOutcome], scores: list[float]) -> list[SimResult]:
    """Every threshold (each distinct score, and "never"), replayed one by one."""
    points = [simulate(outcomes, scores, None)]
    points += [simulate(outcomes, scores, (s,)) for s in sorted(set(scores))]
    return points


def test_calibrate_meets_a_quality_target_with_the_fewest_strong_calls() -> None:
    outcomes, scores = dataset(300, seed=1)
    cal = calibrate(outcomes, scores=scores, target_quality=0.95)
    assert cal.met and cal.target_kind == "target_quality" and cal.target_value == 0.95
    assert cal.quality_share >= 0.95
    # the expected figures are simulate's at the chosen thresholds
    r = simulate(outcomes, scores, cal.thresholds, gate_threshold=cal.gate_threshold)
    assert (cal.quality_share, cal.strong_share, cal.cost_share) == (
        r.quality_share,
        r.strong_share,
        r.cost_share,
    )
    assert cal.n == 300 and cal.n_tiers == 2 and cal.gate_threshold is None
    # no threshold meets the target with fewer strong calls
    best = min(p.strong_share for p in brute_force(outcomes, scores) if p.quality_share >= 0.95)
    assert cal.strong_share == best
    # and the informative scorer beats sending everything to the strong tier by a wide margin
    assert cal.strong_share < 0.6


def test_calibrate_under_a_cap_maximises_quality() -> None:
    outcomes, scores = dataset(300, seed=2)
    cal = calibrate(outcomes, scores=scores, max_strong_share=0.2)
    assert cal.met and cal.target_kind == "max_strong_share" and cal.strong_share <= 0.2
    best = max(p.quality_share for p in brute_force(outcomes, scores) if p.strong_share <= 0.2)
    assert cal.quality_share == pytest.approx(best)
    zero = calibrate(outcomes, scores=scores, max_strong_share=0.0)
    assert zero.thresholds is None and zero.strong_share == 0.0 and zero.met


def test_an_unreachable_target_returns_the_best_point_unmet() -> None:
    """Gate only (no scorer sends a request to the strong tier at once) and a verifier that trusts the cheap tier's
    wrong answers: no point reaches the target; the best one is returned with ``met=False``."""
    outcomes = [
        LabelledOutcome(
            messages=f"q{i}", quality=(float(i < 6), 1.0), gate_scores=(0.9 if i >= 8 else 0.2 + i / 100,)
        )
        for i in range(10)
    ]
    cal = calibrate(outcomes, target_quality=1.0)
    assert not cal.met
    best = max(
        simulate(outcomes, None, None, gate_threshold=g).quality_share
        for g in [None, *sorted({o.gate_scores[0] for o in outcomes if o.gate_scores})]  # type: ignore[index]
    )
    assert cal.quality_share == pytest.approx(best) == pytest.approx(0.8)


@pytest.mark.parametrize("target", [1.5, 1.01, 95])
def test_a_quality_target_above_one_is_rejected_naming_the_field_and_the_range(target: float) -> None:
    outcomes, scores = dataset(20)
    with pytest.raises(ConfigurationError) as e:
        calibrate(outcomes, scores=scores, target_quality=target)
    assert e.value.field == "target_quality"
    assert "target_quality" in str(e.value) and "(0, 1]" in str(e.value)


def test_all_zero_quality_never_reports_a_target_met() -> None:
    """The strongest tier's mean quality is 0: a share of it is undefined (NaN), and a quality target raises
    instead of claiming the goal met on nothing."""
    import math

    outcomes = [LabelledOutcome(messages=f"q{i}", quality=(0.0, 0.0), cost_usd=(0.1, 1.0)) for i in range(10)]
    scores = [i / 10 for i in range(10)]
    r = simulate(outcomes, scores, (0.5,))
    assert math.isnan(r.quality_share) and math.isnan(r.quality_share_se)
    assert r.quality == 0.0 and r.strong_share == 0.5
    for kwargs in ({}, {"target_quality": 0.95}, {"target_quality": 0.5, "confidence": 0.9}):
        with pytest.raises(ConfigurationError) as e:
            calibrate(outcomes, scores=scores, **kwargs)  # type: ignore[arg-type]
        assert e.value.field == "outcomes" and "target_quality" in str(e.value)
    # a cap on the strong share needs no share of quality: it is calibrated, its quality share reported as NaN
    capped = calibrate(outcomes, scores=scores, max_strong_share=0.3)
    assert capped.met and capped.strong_share <= 0.3 and math.isnan(capped.quality_share)
    # saved as strict JSON (null, not a bare NaN that strict parsers reject), read back as NaN
    import json

    text = capped.to_json()
    assert "NaN" not in text and json.loads(text)["quality_share"] is None
    assert math.isnan(Calibration.from_json(text).quality_share)
    # negative judge scores on the strongest tier: a share of them is undefined too
    negative = [LabelledOutcome(messages="q", quality=(1.0, -1.0))]
    assert math.isnan(simulate(negative, None, None).quality_share)
    with pytest.raises(ConfigurationError):
        calibrate(negative, scores=[0.5])


def test_calibrate_with_a_gate() -> None:
    """Useless scores, an informative verifier: the gate does the work, and beats the scorer alone."""
    outcomes, _ = dataset(300, seed=4, gates=True)
    flat = [0.5] * len(outcomes)
    with_gate = calibrate(outcomes, scores=flat, target_quality=0.95)
    without = calibrate(outcomes, scores=flat, target_quality=0.95, use_gate=False)
    assert with_gate.met and without.met
    assert with_gate.gate_threshold is not None and with_gate.thresholds is None
    assert without.gate_threshold is None and without.strong_share == 1.0
    assert with_gate.strong_share < 0.5
    r = simulate(outcomes, flat, with_gate.thresholds, gate_threshold=with_gate.gate_threshold)
    assert with_gate.quality_share == r.quality_share and with_gate.strong_share == r.strong_share
    # gate only: no scores at all
    only = calibrate(outcomes, target_quality=0.95)
    assert only.thresholds is None and only.gate_threshold == with_gate.gate_threshold
    assert only.meta["scorer"] is None and only.meta["gate"] is True


def test_calibrate_computes_scores_with_a_scorer() -> None:
    outcomes, scores = dataset(120, seed=5)
    by_text = {o.messages[0]["content"]: s for o, s in zip(outcomes, scores, strict=True)}
    scorer = CallableScorer(lambda m: by_text[m[-1]["content"]], name="lookup")
    assert calibrate(outcomes, scorer=scorer) == calibrate(outcomes, scores=scores)  # default target 0.95
    assert calibrate(outcomes, scorer=scorer).meta["scorer"] == "lookup"
    heuristic = calibrate(outcomes, scorer=HeuristicScorer())
    assert heuristic.met and heuristic.meta["scorer"] == "heuristic"


def test_calibrate_uses_score_many_of_a_trained_scorer() -> None:
    emb = HashEmbeddings(dim=32)
    scorer = TrainedScorer.fit(["hi", "hey", "prove it", "derive it"], [0, 0, 1, 1], embedder=emb)
    outcomes = [
        LabelledOutcome(messages=t, quality=(float(t.startswith("h")), 1.0))
        for t in ["hi", "hey", "prove it"]
    ]
    emb.calls = 0
    cal = calibrate(outcomes, scorer=scorer, target_quality=1.0)
    assert emb.calls == 1  # one batch for all outcomes
    assert cal.met and cal.strong_share == pytest.approx(1 / 3)


def test_more_than_two_tiers_use_one_knob() -> None:
    outcomes, scores = dataset(240, seed=6, n_tiers=3)
    cal = calibrate(outcomes, scores=scores, target_quality=0.97)
    assert cal.met and cal.n_tiers == 3
    assert cal.thresholds is not None and cal.thresholds == knob_thresholds(cal.thresholds[0], 3)
    r = simulate(outcomes, scores, cal.thresholds)
    assert (cal.quality_share, cal.strong_share) == (r.quality_share, r.strong_share)
    assert cal.policy().start_tier(0.99, n_tiers=3) == 2


def test_knob_thresholds() -> None:
    assert knob_thresholds(0.5, 4) == (0.5, 0.75, 0.875)
    assert knob_thresholds(0.1, 2) == (0.1,)  # exactly t, no rounding
    assert knob_thresholds(1.0, 3) == (1.0, 1.0)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"scores": "SCORES", "target_quality": 0.9, "max_strong_share": 0.3}, "target_quality"),
        ({"scores": "SCORES", "target_quality": 95}, "target_quality"),
        ({"scores": "SCORES", "target_quality": 0.0}, "target_quality"),
        ({"scores": "SCORES", "target_quality": float("nan")}, "target_quality"),
        ({"scores": "SCORES", "target_quality": True}, "target_quality"),
        ({"scores": "SCORES", "max_strong_share": 1.5}, "max_strong_share"),
        ({"scores": "SCORES", "max_strong_share": -0.1}, "max_strong_share"),
        ({}, "scores"),  # neither scores nor a scorer, and no gate scores
        ({"scores": [0.1] * 3}, "scores"),
        ({"scores": "SCORES", "scorer": HeuristicScorer()}, "scores"),
        ({"scores": "SCORES", "confidence": 1.0}, "confidence"),
        ({"scores": "SCORES", "confidence": 0.3}, "confidence"),
        ({"scores": "SCORES", "confidence": True}, "confidence"),
        ({"scores": "SCORES", "confidence": "high"}, "confidence"),
        ({"scores": "SCORES", "max_strong_share": 0.3, "confidence": 0.9}, "confidence"),
    ],
)
def test_calibrate_rejects_bad_input(kwargs: dict[str, Any], field: str) -> None:
    outcomes, scores = dataset(20)
    kwargs = {k: scores if isinstance(v, str) else v for k, v in kwargs.items()}
    with pytest.raises(ConfigurationError) as e:
        calibrate(outcomes, **kwargs)
    assert e.value.field == field
    if "max_strong_share" in kwargs and "target_quality" in kwargs:
        assert "target_quality" in str(e.value) and "max_strong_share" in str(e.value)


def test_operating_curve() -> None:
    outcomes, scores = dataset(100, seed=7, gates=True)
    curve = operating_curve(outcomes, scores)
    assert curve[0].thresholds is None and curve[0].strong_share == 0.0
    assert curve[-1].strong_share == 1.0 and curve[-1].quality_share == 1.0
    assert [p.strong_share for p in curve] == sorted(p.strong_share for p in curve)
    assert len(curve) == len(set(scores)) + 1
    for p in curve[::10]:
        assert p == simulate(outcomes, scores, p.thresholds)
    gated = operating_curve(outcomes, scores, gate_threshold=0.5, max_points=11)
    assert len(gated) <= 12 and all(p.gate_threshold == 0.5 for p in gated)
    assert gated[0].strong_share > 0  # the gate escalates even when nothing starts strong
    assert json.loads(json.dumps(gated[0].to_dict()))["gate_threshold"] == 0.5


# ---------------------------------------------------------------------------------------------------------------
# Calibration objects


def test_calibration_round_trip_and_policy(tmp_path: Path) -> None:
    outcomes, scores = dataset(100, seed=8, gates=True)
    cal = calibrate(outcomes, scores=scores, target_quality=0.9)
    path = tmp_path / "routing.json"
    cal.save(path)
    loaded = Calibration.load(path)
    assert loaded == cal and loaded.meta == json.loads(json.dumps(cal.meta))
    assert Calibration.from_json(cal.to_json()) == cal
    assert len(path.read_text()) < 2000
    policy = loaded.policy(cost_aware=True)
    assert isinstance(policy, RoutingPolicy) and policy.thresholds == cal.thresholds and policy.cost_aware


def test_calibration_bad_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    good = Calibration(
        thresholds=(0.5,),
        gate_threshold=None,
        target_kind="target_quality",
        target_value=0.95,
        met=True,
        quality_share=0.96,
        strong_share=0.3,
        cost_share=None,
        n=10,
    )
    wrong_threshold = json.loads(good.to_json())
    wrong_threshold["thresholds"] = [1.5]
    cases: list[tuple[Any, str]] = [
        (lambda: Calibration.load(bad), "path"),
        (lambda: Calibration.load(tmp_path / "missing.json"), "path"),
        (lambda: Calibration.from_json("{oops"), "json"),
        (lambda: Calibration.from_json('{"kind": "x"}'), "json"),
        (lambda: Calibration.from_json(json.dumps(wrong_threshold)), "json"),
    ]
    for fn, field in cases:
        with pytest.raises(ConfigurationError) as e:
            fn()
        assert e.value.field == field
    with pytest.raises(ConfigurationError) as e:
        Calibration(**{**good.__dict__, "target_kind": "cheapest"})
    assert e.value.field == "target_kind"
    with pytest.raises(ConfigurationError) as e:
        Calibration(**{**good.__dict__, "thresholds": (0.7, 0.2)})
    assert e.value.field == "thresholds"


# -- calibrate(confidence=...): the target met with a one-sided confidence, not only on average


def _population(n: int, seed: int) -> tuple[list[LabelledOutcome], list[float]]:
    """Requests whose weak answer is right with probability 1 - difficulty; the strong one with 0.9; the score
    is the difficulty plus noise (a useful, imperfect scorer)."""
    rng = random.Random(seed)
    outcomes, scores = [], []
    for _ in range(n):
        d = rng.random()
        weak, strong = float(rng.random() > d), float(rng.random() < 0.9)
        outcomes.append(LabelledOutcome(messages="q", quality=(weak, strong), cost_usd=(0.01, 0.3)))
        scores.append(min(1.0, max(0.0, d + rng.gauss(0, 0.15))))
    return outcomes, scores


def test_quality_share_se_is_the_delta_method_standard_error() -> None:
    import numpy as np

    outcomes, scores = _population(400, seed=7)
    r = simulate(outcomes, scores, (0.6,))
    start = np.array([s >= 0.6 for s in scores])
    q = np.array([o.quality for o in outcomes])
    x = np.where(start, q[:, 1], q[:, 0])
    y = q[:, 1]
    ratio = x.mean() / y.mean()
    assert r.quality_share == pytest.approx(ratio)
    expected = (x - ratio * y).std(ddof=1) / np.sqrt(len(x)) / y.mean()
    assert r.quality_share_se == pytest.approx(expected, rel=1e-9)
    # always strong: the share is exactly 1 with no spread
    assert simulate(outcomes, scores, (0.0,)).quality_share_se == pytest.approx(0.0, abs=1e-12)


def test_confidence_pays_strong_calls_for_a_lower_bound_on_the_target() -> None:
    outcomes, scores = _population(600, seed=11)
    plain = calibrate(outcomes, scores=scores, target_quality=0.95)
    sure = calibrate(outcomes, scores=scores, target_quality=0.95, confidence=0.9)
    assert plain.met and sure.met
    assert sure.strong_share > plain.strong_share
    se = sure.meta["quality_share_se"]
    assert sure.quality_share - 1.2815515655446004 * se >= 0.95 - 1e-12
    assert sure.meta["confidence"] == 0.9 and plain.meta["confidence"] is None
    assert Calibration.from_json(sure.to_json()) == sure


def test_confidence_keeps_new_traffic_above_the_target_more_often() -> None:
    """Calibrate on a sample, check on fresh traffic from the same population: the point estimate falls below the
    target about half of the time, a 0.9 lower bound much less often."""
    fresh, fresh_scores = _population(20_000, seed=999)
    below = {"plain": 0, "sure": 0}
    runs = 40
    for seed in range(runs):
        outcomes, scores = _population(400, seed=seed)
        for name, conf in (("plain", None), ("sure", 0.9)):
            cal = calibrate(outcomes, scores=scores, target_quality=0.95, confidence=conf)
            live = simulate(fresh, fresh_scores, cal.thresholds)
            below[name] += live.quality_share < 0.95
    assert below["plain"] >= 0.3 * runs
    assert below["sure"] <= 0.2 * runs


def test_huge_quality_scales_neither_overflow_nor_change_the_choice() -> None:
    big = [LabelledOutcome(messages=str(i), quality=(1e200 * (i % 2), 1e200)) for i in range(10)]
    unit = [LabelledOutcome(messages=str(i), quality=(float(i % 2), 1.0)) for i in range(10)]
    scores = [0.1 * i for i in range(10)]
    for conf in (None, 0.9):
        a = calibrate(big, scores=scores, target_quality=0.5, confidence=conf)
        b = calibrate(unit, scores=scores, target_quality=0.5, confidence=conf)
        assert (a.thresholds, a.met) == (b.thresholds, b.met)
        assert a.meta["quality_share_se"] == pytest.approx(b.meta["quality_share_se"])
