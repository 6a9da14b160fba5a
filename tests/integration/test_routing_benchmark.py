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
