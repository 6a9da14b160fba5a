"""The trained verifier with the real default embedder (offline MiniLM): fit, score, save and load."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import pytest

from frugal_chains.routing import GateContext, TierAnswer, TrainedVerifier
from tests.shared_data import shared_data

ROOT = Path(__file__).resolve().parents[2]
WEAK = "mistralai/Mixtral-8x7B-Instruct-v0.1"


def auc(scores: list[float], labels: list[int]) -> float:
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    return sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))


def synthetic(n: int, seed: int) -> tuple[list[str], list[str], list[int]]:
    rng = random.Random(seed)
    qs, ans, ys = [], [], []
    for i in range(n):
        a, b = rng.randint(3, 60), rng.randint(3, 60)
        q = f"A shop sells {a} cups in the morning and {b} in the afternoon. How many cups does it sell?"
        if i % 2 == 0:
            text = f"Morning and afternoon: {a} + {b} = {a + b}.\n#### {a + b}"
        elif i % 4 == 1:
            text = f"Morning and afternoon: {a} + {b} = {a + b + rng.randint(1, 9)}.\n#### {a + b + 1}"
        else:
            text = "I'm not sure, it depends on the day. Probably around half of them."
        qs.append(q)
        ans.append(text)
        ys.append(int(i % 2 == 0))
    return qs, ans, ys


def test_real_embedder_fit_score_save_load(tmp_path: Path) -> None:
    qs, ans, ys = synthetic(40, seed=1)
    verifier = TrainedVerifier.fit(qs, ans, ys)  # the default embedder
    assert verifier.embedder_name == "all-MiniLM-L6-v2-int8" and verifier.embedder_dim == 384
    tq, ta, ty = synthetic(20, seed=2)
    scores = verifier.score_many(tq, ta)
    assert auc(scores, ty) > 0.95

    path = tmp_path / "verifier.json"
    verifier.save(path)
    loaded = TrainedVerifier.load(path)  # embedder=None: the default, whose name matches
    assert loaded.score_many(tq, ta) == pytest.approx(scores, abs=1e-5)
    ctx = GateContext(
        messages=[{"role": "user", "content": tq[0]}],
        answer=TierAnswer(text=ta[0]),
        tier="cheap",
        tier_index=0,
        n_tiers=2,
    )
    assert loaded.check(ctx).passed


def _gsm8k() -> Path | None:
    base = shared_data()
    path = base / "routellm_gsm8k" / "gsm8k_responses.csv" if base is not None else None
    return path if path is not None and path.is_file() else None


@pytest.mark.skipif(
    _gsm8k() is None, reason="RouteLLM's GSM8K outcomes are not in $FRUGAL_CHAINS_DATA/../shared/data"
)
def test_gsm8k_mixtral_answers_are_ranked_better_than_chance() -> None:
    """A small slice of real outcomes: fit on 80 Mixtral answers, rank the next 40 (0.82 on this slice; AUC 0.79
    with 5-fold CV on all 1,319 rows; the slice only guards against a broken pipeline)."""
    path = _gsm8k()
    assert path is not None
    with path.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))[:120]
    qs = [r["prompt"] for r in rows]
    ans = [r[f"{WEAK}_response"] for r in rows]
    ys = [int(r[WEAK] == "True") for r in rows]
    verifier = TrainedVerifier.fit(qs[:80], ans[:80], ys[:80])
    assert auc(verifier.score_many(qs[80:], ans[80:]), ys[80:]) > 0.7
