"""Router decision overhead: how long the pre-call decision takes, on real prompts, on CPU.

Measured per call (p50 / p99 / max, milliseconds), on distinct real prompts from RouteLLM's GSM8K, MMLU and
MT-Bench sets (MT-Bench: the turn-1 conversation and the 2-turn conversation with the weak model's first answer):

* ``HeuristicScorer.score`` (goal: < 1 ms);
* ``TrainedScorer.score`` **including the embedding** with the real default embedder (all-MiniLM-L6-v2 int8,
  ONNX on CPU) whose LRU cache is disabled (``cache_size=0``) and every text distinct, so no call is served from
  a cache (goal: < 10 ms), and the embedding of the same texts alone (the scorer embeds the last user turn and up
  to 8 earlier ones). The scorer is fit on 800 GSM8K + MMLU prompts other than the timed ones;
* the same ``TrainedScorer`` with the router's fast embedder, ``MiniLMEmbedder(model=FAST_MODEL)``
  (paraphrase-MiniLM-L3-v2, 3 layers, 128 tokens), fit on the same prompts;
* ``Cascade.route()`` (the engine: scorer + policy), with the heuristic, the trained scorer and a cost-aware
  policy (which also counts the prompt's tokens);
* ``CascadeChatModel.invoke`` overhead beyond the tier call: the cascade over two instant ``ReplayChatModel``
  tiers minus calling that tier directly (medians; LangChain's run machinery of the extra run included).

Usage::

    python benchmarks/routing_overhead.py [--data DIR] [--n 300] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from routing_data import STRONG, WEAK, data_dir, load_gsm8k, load_mmlu, load_mtbench, mtbench_conversation  # noqa: E402

from frugal_chains import Price  # noqa: E402
from frugal_chains.routing import Cascade, HeuristicScorer, RoutingPolicy, TierSpec, TrainedScorer  # noqa: E402
from frugal_chains.routing.types import user_turns  # noqa: E402

GOALS_MS = {"heuristic": 1.0, "trained": 10.0}
PRICES = {WEAK: Price(input=0.24, output=0.24), STRONG: Price(input=24.7, output=24.7)}


def _ms(samples: Sequence[float]) -> dict[str, float]:
    s = sorted(samples)
    n = len(s)
    return {
        "p50_ms": round(1000 * statistics.median(s), 4),
        "p99_ms": round(1000 * s[min(n - 1, int(0.99 * n))], 4),
        "max_ms": round(1000 * s[-1], 4),
        "mean_ms": round(1000 * statistics.fmean(s), 4),
        "n": n,
    }


def timed(fn: Callable[[Any], Any], inputs: Sequence[Any], warmup: int = 5) -> list[float]:
    for x in inputs[:warmup]:
        fn(x)
    out = []
    for x in inputs:
        t0 = time.perf_counter()
        fn(x)
        out.append(time.perf_counter() - t0)
    return out


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def workloads(
    data: Path, n: int, seed: int
) -> tuple[dict[str, list[list[dict[str, Any]]]], list[Any], list[int]]:
    """Timed conversations per data set, and (conversations, labels) to fit the trained scorer on (disjoint)."""
    rng = random.Random(seed)
    gsm, mmlu, mt = load_gsm8k(data), load_mmlu(data), load_mtbench(data)
    timed_sets: dict[str, list[list[dict[str, Any]]]] = {}
    fit_convs: list[Any] = []
    fit_labels: list[int] = []
    for name, items in (("gsm8k", gsm.items), ("mmlu", mmlu.items)):
        pool = list(items)
        rng.shuffle(pool)
        seen: set[str] = set()
        chosen = []
        for it in pool:
            if it.prompt not in seen and len(chosen) < n:
                seen.add(it.prompt)
                chosen.append(it.messages)
        timed_sets[name] = chosen
        rest = [it for it in pool if it.prompt not in seen][:400]
        fit_convs += [it.messages for it in rest]
        fit_labels += [it.label for it in rest]
    convs = []
    for it in mt.items:
        convs.append(it.messages)
        convs.append(mtbench_conversation(it.extra["turns"], it.extra["answers"][WEAK], 2))
    timed_sets["mtbench"] = convs[: 2 * n]
    return timed_sets, fit_convs, fit_labels


def run(args: argparse.Namespace) -> dict[str, Any]:
    from frugal_chains.embeddings import FAST_MODEL, MiniLMEmbedder
    from frugal_chains.langchain import CascadeChatModel
    from frugal_chains.routing import RouterStats
    from frugal_chains.testing.replay import ReplayChatModel, replay_key

    data = data_dir(args.data)
    sets, fit_convs, fit_labels = workloads(data, args.n, args.seed)
    heur = HeuristicScorer()
    fit_embedder = MiniLMEmbedder(cache_size=10_000)
    trained = TrainedScorer.fit(fit_convs, fit_labels, embedder=fit_embedder)
    cold = MiniLMEmbedder(cache_size=0)  # no LRU: every timed call runs the model
    scorer = TrainedScorer.from_json(trained.to_json(), embedder=cold)
    # the router's fast embedder (paraphrase-MiniLM-L3-v2), fit on the same prompts
    fast_fit = TrainedScorer.fit(
        fit_convs, fit_labels, embedder=MiniLMEmbedder(model=FAST_MODEL, cache_size=10_000)
    )
    cold_fast = MiniLMEmbedder(model=FAST_MODEL, cache_size=0)
    fast = TrainedScorer.from_json(fast_fit.to_json(), embedder=cold_fast)
    for conv in fit_convs[:10]:  # load the ONNX sessions and warm them up on texts that are not timed
        scorer.score(conv)
        fast.score(conv)
    tiers = [
        TierSpec(name="weak", model=WEAK, price=PRICES[WEAK]),
        TierSpec(name="strong", model=STRONG, price=PRICES[STRONG]),
    ]
    results: dict[str, Any] = {"scorers": {}, "route": {}, "cascade_chat_model": {}}
    for name, convs in sets.items():
        row = {
            "heuristic": _ms(timed(heur.score, convs)),
            "trained (embedding included)": _ms(timed(scorer.score, convs, warmup=0)),
            "of which the embedding (same texts)": _ms(
                timed(lambda c: cold.embed([t for t in user_turns(c)[-9:]]), convs, warmup=0)
            ),
            "trained, fast embedder (embedding incl.)": _ms(timed(fast.score, convs, warmup=0)),
        }
        results["scorers"][name] = row
    every = [c for convs in sets.values() for c in convs]
    engines = {
        "Cascade.route, heuristic": Cascade(tiers, scorer=heur, policy=RoutingPolicy(thresholds=(0.5,))),
        "Cascade.route, trained": Cascade(tiers, scorer=scorer, policy=RoutingPolicy(thresholds=(0.5,))),
        "Cascade.route, trained, fast embedder": Cascade(
            tiers, scorer=fast, policy=RoutingPolicy(thresholds=(0.5,))
        ),
        "Cascade.route, heuristic, cost-aware": Cascade(
            tiers, scorer=heur, policy=RoutingPolicy(thresholds=(0.5,), cost_aware=True)
        ),
    }
    for name, engine in engines.items():
        sample = every if "trained" not in name else every[:: max(1, len(every) // args.n)]
        results["route"][name] = _ms(timed(engine.route, sample, warmup=0 if "trained" in name else 5))
    # CascadeChatModel over instant replay tiers: invoke minus the direct tier call
    convs = sets["gsm8k"]
    table = {replay_key(c): "ok" for c in convs}
    weak = ReplayChatModel(model=WEAK, table=table)
    strong = ReplayChatModel(model=STRONG, table=table)
    direct = timed(weak.invoke, convs)
    results["cascade_chat_model"]["tier called directly (ReplayChatModel.invoke)"] = _ms(direct)
    for name, kwargs in (
        ("CascadeChatModel.invoke, no scorer", {}),
        ("CascadeChatModel.invoke, heuristic scorer", {"scorer": heur, "thresholds": (0.99,)}),
    ):
        model = CascadeChatModel(
            tiers=[weak, strong], tier_names=["weak", "strong"], prices=PRICES, stats=RouterStats(), **kwargs
        )
        t = timed(model.invoke, convs)
        row = _ms(t)
        row["overhead_p50_ms"] = round(
            row["p50_ms"]
            - results["cascade_chat_model"]["tier called directly (ReplayChatModel.invoke)"]["p50_ms"],
            4,
        )
        results["cascade_chat_model"][name] = row
    results["goals_ms"] = GOALS_MS
    kinds = (
        ("heuristic", "heuristic", "heuristic"),
        ("trained", "trained", "trained (embedding included)"),
        ("trained, fast embedder", "trained", "trained, fast embedder (embedding incl.)"),
    )
    worst = {
        kind: max(results["scorers"][s][key]["p99_ms"] for s in results["scorers"]) for kind, _, key in kinds
    }
    worst_p50 = {
        kind: max(results["scorers"][s][key]["p50_ms"] for s in results["scorers"]) for kind, _, key in kinds
    }
    results["goal_of"] = {kind: goal for kind, goal, _ in kinds}
    results["goal_met"] = {k: worst[k] < GOALS_MS[g] for k, g in results["goal_of"].items()}
    results["goal_met_p50"] = {k: worst_p50[k] < GOALS_MS[g] for k, g in results["goal_of"].items()}
    results["worst_p99_ms"] = worst
    results["worst_p50_ms"] = worst_p50
    results["machine"] = (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs ({_cpu_model()}), Python "
        f"{platform.python_version()}; shared with other jobs: timings are noisy"
    )
    results["embedder"] = f"{cold.name} (cache_size=0); fast: {cold_fast.name}"
    results["trained_scorer_fit_on"] = len(fit_convs)
    return results


def format_table(r: dict[str, Any]) -> str:
    lines = [
        f"machine: {r['machine']}",
        f"embedder: {r['embedder']}; trained scorer fit on {r['trained_scorer_fit_on']} other prompts",
        "",
        f"{'pre-call scorer':40s} {'data set':9s} {'p50 ms':>9s} {'p99 ms':>9s} {'max ms':>9s} {'n':>5s}",
    ]
    for ds, row in r["scorers"].items():
        for name, m in row.items():
            lines.append(
                f"{name:40s} {ds:9s} {m['p50_ms']:9.3f} {m['p99_ms']:9.3f} {m['max_ms']:9.3f} {m['n']:5d}"
            )
    lines += ["", f"{'engine':40s} {'':9s} {'p50 ms':>9s} {'p99 ms':>9s} {'max ms':>9s} {'n':>5s}"]
    for name, m in r["route"].items():
        lines.append(
            f"{name:40s} {'all':9s} {m['p50_ms']:9.3f} {m['p99_ms']:9.3f} {m['max_ms']:9.3f} {m['n']:5d}"
        )
    lines += [
        "",
        f"{'LangChain, instant replay tiers (GSM8K)':50s} {'p50 ms':>9s} {'p99 ms':>9s} {'overhead p50':>13s}",
    ]
    for name, m in r["cascade_chat_model"].items():
        over = f"{m['overhead_p50_ms']:13.3f}" if "overhead_p50_ms" in m else " " * 13
        lines.append(f"{name:50s} {m['p50_ms']:9.3f} {m['p99_ms']:9.3f} {over}")
    lines.append("")
    for k, g in r["goal_of"].items():
        goal = r["goals_ms"][g]
        p99 = "MET" if r["goal_met"][k] else "MISSED"
        p50 = "MET" if r["goal_met_p50"][k] else "MISSED"
        lines.append(
            f"Goal: {k} scorer < {goal:g} ms on every data set: p99 {p99} (worst p99 "
            f"{r['worst_p99_ms'][k]:.3f} ms); p50 {p50} (worst p50 {r['worst_p50_ms'][k]:.3f} ms)"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--data", help="data directory (default: $FRUGAL_CHAINS_DATA or ../shared/data)")
    p.add_argument("--n", type=int, default=300, help="timed prompts per data set (default 300)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = p.parse_args(argv)
    if args.n < 10:
        p.error("--n must be >= 10")
    r = run(args)
    print(json.dumps(r, indent=2) if args.json else format_table(r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
