"""benchmarks/cache_rag.py and benchmarks/routing_rag.py run end to end on a tiny sample, and their figures hang
together: the bare layout reproduces cache_quality.py, and a cache keyed on the system prompt holding the retrieved
context never hits a pair whose two questions retrieved different passages."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.shared_data import shared_data

ROOT = Path(__file__).resolve().parents[2]
DATA = shared_data() or ROOT.parent / "shared" / "data"


def _run(script: str, *args: str) -> dict:  # type: ignore[type-arg]
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--json", "--data", str(DATA), *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)  # type: ignore[no-any-return]


@pytest.mark.skipif(
    not (DATA / "qqp_gptcache" / "eval_4k.jsonl").exists()
    or not (DATA / "nq_open_lostinthemiddle" / "nq-open-oracle.jsonl.gz").exists(),
    reason="QQP / BANKING77 / NQ passages are not in $FRUGAL_CHAINS_DATA or ../shared/data",
)
def test_cache_rag_benchmark_tiny() -> None:
    res = _run(
        "cache_rag.py",
        "--limit",
        "24",
        "--corpus-size",
        "60",
        "--layout",
        "bare",
        "--layout",
        "langchain_system",
        "--layout",
        "llamaindex_qa_chat",
    )
    assert list(res["layouts"]) == ["bare", "langchain_system", "llamaindex_qa_chat"]
    base = _run("cache_quality.py", "--limit", "24", "--no-redis", "--no-sweep")
    default = next(v for k, v in base["rows"].items() if k.startswith("frugal-chains default"))
    bare = res["layouts"]["bare"]
    assert bare["qqp_pairwise"] == default["qqp_pairwise"]
    assert bare["banking"] == default["banking"]
    agree = res["retrieval_agreement"]
    for key in ("qqp_duplicates", "qqp_non_duplicates", "banking_same_intent"):
        assert 0.0 <= agree[key]["same_list"] <= agree[key]["same_set"] <= 1.0
    assert agree["qqp_duplicates"]["pairs"] + agree["qqp_non_duplicates"]["pairs"] == 24
    # the retrieved context is an exact part of the key: a pair hits only when both retrieved the same passages
    system = res["layouts"]["langchain_system"]["qqp_pairwise"]
    assert system["hit_rate_dups"] <= agree["qqp_duplicates"]["same_set"] + 1e-9
    for row in res["layouts"].values():
        assert row["qqp_pairwise"]["n"] == 24 and row["banking"]["n"] == 24
        assert 0.0 <= row["qqp_pairwise"]["precision"] <= 1.0
    # chain level: a real RAG chain / query engine cached before retrieval on the question alone hits what the
    # bare question hits, and a hit runs neither the retriever nor the model
    chain_level = res["chain_level"]
    assert set(chain_level) == {"langchain chain", "llama_index engine"}
    for row in chain_level.values():
        for key in ("precision", "hit_rate_dups", "false_hit_hard", "false_hit_random", "hits"):
            assert row["qqp_pairwise"][key] == bare["qqp_pairwise"][key], key
        assert row["banking"]["hit_rate"] == bare["banking"]["hit_rate"]
        assert row["banking"]["wrong_share_of_hits"] == bare["banking"]["wrong_share_of_hits"]
        qqp_runs, bank_runs = row["runs"]["qqp"], row["runs"]["banking"]
        assert qqp_runs["model_calls"] == 2 * 24 - row["qqp_pairwise"]["hits"]
        assert bank_runs["model_calls"] == 24 - row["banking"]["hits"]
        assert qqp_runs["retrievals"] == qqp_runs["model_calls"]
        assert bank_runs["retrievals"] == bank_runs["model_calls"]


@pytest.mark.skipif(
    not (DATA / "routellm_gsm8k" / "gsm8k_responses.csv").exists()
    or not (DATA / "nq_open_lostinthemiddle" / "nq-open-oracle.jsonl.gz").exists(),
    reason="RouteLLM's GSM8K outcomes / NQ passages are not in $FRUGAL_CHAINS_DATA or ../shared/data",
)
def test_routing_rag_benchmark_tiny() -> None:
    res = _run(
        "routing_rag.py",
        "--dataset",
        "gsm8k",
        "--limit",
        "60",
        "--folds",
        "3",
        "--corpus-size",
        "60",
        "--layout",
        "langchain_user",
    )
    d = res["datasets"]["gsm8k"]
    assert d["n"] == 60 and d["strong_quality"] > d["weak_quality"]
    assert set(d["layouts"]) == {"bare", "langchain_user"}
    for rows in d["layouts"].values():
        assert set(rows) == {"heuristic scorer", "trained scorer"}
        for m in rows.values():
            assert 0.0 <= m["calibrated_strong_share"] <= 1.0
            assert 0.0 <= m["mean_score"] <= 1.0
            assert len(m["thresholds"]) == 3
            curve = m["curve_strong_share"]
            assert curve is None or 0.0 <= curve <= 1.0
    # the same scorer and thresholds on the same bare questions: the bare row is the routing.py protocol
    bare = d["layouts"]["bare"]["heuristic scorer"]
    assert bare["calibrated_rel_quality"] > 0.5
