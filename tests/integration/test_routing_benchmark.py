"""benchmarks/routing.py runs end to end (quick mode, MT-Bench) through the real cascade and its figures hang
together."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.shared_data import shared_data

ROOT = Path(__file__).resolve().parents[2]
DATA = shared_data() or ROOT.parent / "shared" / "data"


@pytest.mark.skipif(
    not (DATA / "routellm_mtbench" / "judgements.jsonl").exists(),
    reason="RouteLLM's MT-Bench outcomes are not in $FRUGAL_CHAINS_DATA or ../shared/data",
)
def test_routing_benchmark_quick_mtbench() -> None:
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "routing.py"),
            "--quick",
            "--dataset",
            "mtbench",
            "--json",
            "--data",
            str(DATA),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    mt = json.loads(out.stdout)["datasets"]["mtbench"]
    assert mt["n"] == 72 and mt["excluded_contaminated"] == 8
    assert mt["strong_quality"] > mt["weak_quality"]
    oracle, random = mt["oracle"]["strong_share"], mt["random"]["strong_share"]
    assert 0 < oracle < random < 1
    assert mt["replay_calls"]["weak"] > 0 and mt["replay_calls"]["strong"] > 0
    goal = mt["goal"]
    assert goal["goal"] == 0.14 and isinstance(goal["goal_met"], bool)
    assert oracle <= goal["curve_strong_share"] <= 1


@pytest.mark.skipif(
    not (DATA / "arena_bench_v1" / "scores.csv").exists(),
    reason="arena_bench_v1 / alpacaeval_per_model are not in $FRUGAL_CHAINS_DATA or ../shared/data",
)
def test_external_training_examples_of_the_mtbench_diagnostic() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from routing_external import external_examples
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    ext = external_examples(DATA)
    by_source = {s: [e for e in ext if e[0] == s] for s in ("arena_bench_v1", "alpacaeval")}
    # 300 Arena prompts minus the ones whose judge output was not parseable for either model; 805 instructions
    assert 280 <= len(by_source["arena_bench_v1"]) <= 300
    assert len(by_source["alpacaeval"]) == 805
    assert all(e[1].strip() and e[2] in (0, 1) for e in ext)
    # GPT-4-1106 is the stronger model on both: "Mixtral good enough" is the minority label
    for rows in by_source.values():
        assert 0.05 < sum(e[2] == 0 for e in rows) / len(rows) < 0.5
