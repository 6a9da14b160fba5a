"""benchmarks/cache_quality.py's verifier rows: the simulated LLM judge is the gold label with a seeded share of
flipped answers, and on a tiny sample the strict rows hang together with the default (strict with a perfect oracle
serves exactly the duplicates the default serves: it removes wrong hits and never adds one)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.shared_data import shared_data

ROOT = Path(__file__).resolve().parents[2]
DATA = shared_data() or ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT / "benchmarks"))
from cache_quality import gold_same, simulated_judge  # noqa: E402

sys.path.pop(0)

QQP = [
    {
        "id": 1,
        "text_a": "How do I learn Python?",
        "text_b": "What is the best way to learn Python?",
        "label": 1,
    },
    {"id": 2, "text_a": "Is coffee bad for you?", "text_b": "Is tea bad for you?", "label": 0},
]
BANK = [
    ("My card has not arrived", "card_arrival"),
    ("Where is my new card?", "card_arrival"),
    ("Reset PIN", "pin"),
]


def test_gold_same_reads_the_labels_in_both_directions_and_normalised() -> None:
    gold = gold_same(QQP, BANK)
    assert gold("What is the best way to learn Python?", "How do I learn Python?")
    assert gold("how do i learn python", "WHAT IS THE BEST WAY TO LEARN PYTHON")
    assert not gold("Is tea bad for you?", "Is coffee bad for you?")
    assert gold("Where is my new card?", "My card has not arrived")
    assert not gold("Reset PIN", "My card has not arrived")
    assert not gold("unknown", "texts")


def test_the_simulated_judge_flips_a_seeded_share_of_pairs() -> None:
    pairs = [(f"question {i}", f"cached {i}") for i in range(4000)]
    truth = {p: i % 2 == 0 for i, p in enumerate(pairs)}

    def gold(query: str, cached: str) -> bool:
        return truth[(query, cached)]

    assert all(simulated_judge(gold, 0.0, 0).verify(q, c, 0.9) == truth[(q, c)] for q, c in pairs)
    assert all(simulated_judge(gold, 1.0, 0).verify(q, c, 0.9) != truth[(q, c)] for q, c in pairs)
    judge = simulated_judge(gold, 0.05, 0)
    first = [judge.verify(q, c, 0.9) for q, c in pairs]
    wrong = sum(a != truth[p] for a, p in zip(first, pairs, strict=True))
    assert 0.04 * len(pairs) <= wrong <= 0.06 * len(pairs)
    # the same pair always gets the same answer, whatever the order; another seed flips other pairs
    assert [judge.verify(q, c, 0.9) for q, c in reversed(pairs)] == first[::-1]
    other = [simulated_judge(gold, 0.05, 1).verify(q, c, 0.9) for q, c in pairs]
    assert other != first


@pytest.mark.skipif(
    not (DATA / "qqp_gptcache" / "eval_4k.jsonl").exists(),
    reason="QQP / BANKING77 are not in $FRUGAL_CHAINS_DATA or ../shared/data",
)
def test_cache_quality_verifier_rows_tiny() -> None:
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "cache_quality.py"),
            "--json",
            "--data",
            str(DATA),
            "--limit",
            "120",
            "--no-redis",
            "--no-sweep",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    res: dict[str, Any] = json.loads(out.stdout)
    rows = res["rows"]
    default = next(v for k, v in rows.items() if k.startswith("frugal-chains default"))
    [cross] = [v for k, v in rows.items() if k.startswith("default + CrossEncoderVerifier()")]
    [strict] = [v for k, v in rows.items() if "strict" in k and "shipped cross-encoder" in k]
    [judge] = [v for k, v in rows.items() if "SIMULATED LLM judge" in k]
    [oracle] = [v for k, v in rows.items() if "perfect oracle" in k]
    assert res["judge_error"] == 0.05
    pw = "qqp_pairwise"
    # strict with a perfect oracle serves exactly the duplicates the default serves, and no wrong semantic hit
    assert oracle[pw]["hit_rate_dups"] == default[pw]["hit_rate_dups"]
    assert oracle[pw]["hits"] <= default[pw]["hits"]
    assert judge[pw]["hit_rate_dups"] <= oracle[pw]["hit_rate_dups"]
    # strict never verifies below the threshold: it serves no more than the default, nor than the wider band
    assert strict[pw]["hits"] <= min(default[pw]["hits"], cross[pw]["hits"])
    assert oracle["banking"]["wrong_share_of_hits"] == 0.0
    for row in (cross, strict, judge, oracle):
        assert row[pw]["n"] == 120 and row["banking"]["n"] == 120
