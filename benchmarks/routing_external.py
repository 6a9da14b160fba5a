"""Diagnostic: does training the MT-Bench scorer on *other* GPT-4-1106 vs Mixtral outcomes help (as RouteLLM trains
on Arena data)?

Fits ``TrainedScorer`` per MT-Bench fold (8 folds grouped by prompt, seed 0, as ``benchmarks/routing.py``) on:

* ``arena_bench_v1``: 293 hard Chatbot-Arena prompts with GPT-4 1-10 scores of both models; label 0 when
  Mixtral's score >= GPT-4-Turbo's (= gpt-4-1106-preview);
* ``alpacaeval_per_model``: AlpacaEval 2's 805 instructions; label 0 when P(Mixtral-8x7B (concise) beats the
  gpt4_1106_preview reference) >= 0.5 (CC BY-NC data: read here, never shipped);

alone ("external only") or added to the training folds, for ``l2=1.0`` and ``l2="auto"``, and prints the curve
read-off at 0.95 x GPT-4's mean MT-Bench score (turn-1 routing, both turns to that model). The read-off picks the
threshold on the test folds, so this is a diagnostic of which training data to use, not a result; the results are
``benchmarks/routing.py``'s.

Usage::

    python benchmarks/routing_external.py [--data DIR] [--embedding-cache FILE] [--json]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from routing import DEFAULT_FOLDS, ROUTELLM_PRICES, TARGET, group_folds, outcomes  # noqa: E402
from routing_data import data_dir, load_mtbench  # noqa: E402
from routing_embed import MemoEmbedder  # noqa: E402
from routing_metrics import read_off, sweep_1d  # noqa: E402

from frugal_chains.routing import HeuristicScorer, TrainedScorer  # noqa: E402


def external_examples(data: Path) -> list[tuple[str, str, int]]:
    """(source, prompt, label) with label 0 when Mixtral was good enough against GPT-4-1106."""
    out: list[tuple[str, str, int]] = []
    with (data / "arena_bench_v1" / "questions.jsonl").open(encoding="utf-8") as f:
        prompts = {q["question_id"]: q["prompt"] for q in map(json.loads, f) if q}
    with (data / "arena_bench_v1" / "scores.csv").open(encoding="utf-8", newline="") as f:
        for r in csv.DictReader(f):
            weak, strong = int(r["Mixtral-8x7B-Instruct-v0.1"]), int(r["gpt-4-turbo"])
            if weak >= 0 and strong >= 0:  # -1: the judge's output was not parseable
                out.append(("arena_bench_v1", prompts[r["question_id"]], 0 if weak >= strong else 1))
    ae = data / "alpacaeval_per_model"
    with (ae / "instructions.jsonl").open(encoding="utf-8") as f:
        instructions = {row["idx"]: row["instruction"] for row in map(json.loads, f) if row}
    with (ae / "preferences_weighted_alpaca_eval_gpt4_turbo.csv").open(encoding="utf-8", newline="") as f:
        for r in csv.DictReader(f):
            v = r["Mixtral-8x7B-Instruct-v0.1_concise"]
            if v:  # value - 1 = P(Mixtral beats the gpt4_1106_preview reference)
                out.append(("alpacaeval", instructions[int(r["idx"])], 0 if float(v) - 1 >= 0.5 else 1))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--data", help="data directory (default: $FRUGAL_CHAINS_DATA or ../shared/data)")
    p.add_argument("--embedding-cache", help="keep the embeddings in this .npz file between runs")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = p.parse_args(argv)
    from frugal_chains.embeddings import default_embedder

    data = data_dir(args.data)
    ds = load_mtbench(data)
    items = ds.items
    ext = external_examples(data)
    memo = MemoEmbedder(default_embedder(), args.embedding_cache)
    memo.precompute([it.prompt for it in items] + [e[1] for e in ext])
    memo.save()
    o = outcomes(items, ROUTELLM_PRICES)
    k = DEFAULT_FOLDS["mtbench"]
    folds = group_folds(items, k, 0)
    want = TARGET * o.strong_quality

    def share(score: np.ndarray) -> float:
        point = read_off(sweep_1d(o, score), want, o.strong_cost)
        return float("nan") if point is None else float(point["strong_share"])

    rows: list[dict[str, Any]] = []
    configs = [
        ("MT-Bench training folds only", None, True),
        ("arena_bench_v1 only", "arena_bench_v1", False),
        ("arena_bench_v1 + training folds", "arena_bench_v1", True),
        ("arena_bench_v1 + AlpacaEval 2 only", "all", False),
        ("arena_bench_v1 + AlpacaEval 2 + training folds", "all", True),
    ]
    for l2 in (1.0, "auto"):
        for name, source, in_dist in configs:
            chosen = [e for e in ext if source == "all" or e[0] == source] if source else []
            score = np.zeros(len(items))
            for f in range(k):
                tr, te = np.flatnonzero(folds != f), np.flatnonzero(folds == f)
                convs: list[Any] = [items[i].messages for i in tr] if in_dist else []
                labels = [items[i].label for i in tr] if in_dist else []
                model = TrainedScorer.fit(
                    convs + [e[1] for e in chosen], labels + [e[2] for e in chosen], embedder=memo, l2=l2
                )
                score[te] = model.score_many([items[i].messages for i in te])
            rows.append(
                {"training data": name, "l2": l2, "n_external": len(chosen), "strong_share": share(score)}
            )
    heur = np.array([HeuristicScorer().score(it.messages) for it in items])
    rows.append(
        {"training data": "(heuristic scorer)", "l2": None, "n_external": 0, "strong_share": share(heur)}
    )
    res = {
        "dataset": "mtbench",
        "n": len(items),
        "label0_share_mtbench": float(np.mean([it.label == 0 for it in items])),
        "label0_share_external": {
            src: float(np.mean([e[2] == 0 for e in ext if e[0] == src]))
            for src in ("arena_bench_v1", "alpacaeval")
        },
        "rows": rows,
    }
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    print(
        f"MT-Bench ({len(items)} questions), turn-1 routing, strong share at quality >= {TARGET} x GPT-4 "
        "(curve read-off on the test folds: a diagnostic)"
    )
    print(
        f"'Mixtral good enough' share: MT-Bench {res['label0_share_mtbench']:.0%}, "
        + ", ".join(f"{k} {v:.0%}" for k, v in res["label0_share_external"].items())
    )
    print(f"\n  {'training data':50} {'l2':>6} {'strong share':>13}")
    for r in rows:
        print(f"  {r['training data']:50} {r['l2']!s:>6} {r['strong_share']:>12.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
