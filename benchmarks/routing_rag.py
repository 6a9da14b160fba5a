"""The router inside RAG prompts: RouteLLM's GSM8K and MMLU questions wrapped in real templates.

The machinery of ``routing.py`` (its loaders, folds, calibration, replay tiers and the real
``frugal_chains.langchain.CascadeChatModel``; imported, not copied), with each test question sent the way a RAG
application sends it (``rag_templates.py``): LangChain's RAG prompt with the retrieved context in the system message
or in the user message (hub ``rlm/rag-prompt``), LlamaIndex's chat text-QA template. The context is the top-k
passages retrieved (cosine, default embedder) from a small Natural Questions corpus: mostly irrelevant to maths and
exam questions, as retrieval often is.

Per fold (grouped k-fold, seeded, as ``routing.py``): the ``TrainedScorer`` is fit and both scorers are calibrated
(``frugal_chains.routing.calibrate`` on out-of-fold training scores, quality >= 0.95 x strong) on the training
folds' BARE questions by default -- a user fits the router on questions, then deploys it in a RAG app
(``--train-on template``: on the training folds rendered in the same layout). Every test question then goes through
the cascade in each layout. Reported per layout and scorer, pooled over folds:

* calibrated: the strong-model share and quality / strong quality at the thresholds calibrated on training
  (what a deployment gets; thresholds fit on bare questions need not hold on templated ones);
* curve: the lowest strong share whose quality >= 0.95 x strong, over every threshold of the scores the cascade
  recorded (how well the scores still rank the questions, whatever the threshold);
* the mean score the scorer gave (a shift shows the template, not the question, being scored).

Usage::

    python benchmarks/routing_rag.py [--data DIR] [--dataset gsm8k|mmlu ...] [--limit N] [--folds 5] [--seed 0]
        [--k 2] [--corpus-size 1500] [--layout NAME ...] [--train-on bare|template] [--scorer both|heuristic|trained]
        [--json]
        [--embedding-cache FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
from machine_info import machine  # noqa: E402
from rag_templates import ROUTER_LAYOUTS, Retriever, as_messages, nq_corpus, render  # noqa: E402
from routing import (  # noqa: E402
    INNER_FOLDS,
    ROUTELLM_PRICES,
    TARGET,
    Replay,
    TrainedScores,
    _policy,
    _subsample,
    calibrate_thresholds,
    group_folds,
    inner_oof,
    litellm_prices,
    outcomes,
    run_cascade,
)
from routing_data import LOADERS, Dataset, Item, data_dir  # noqa: E402
from routing_embed import MemoEmbedder  # noqa: E402
from routing_metrics import read_off, sweep_1d  # noqa: E402

from frugal_chains.routing import HeuristicScorer  # noqa: E402
from frugal_chains.testing.replay import replay_key  # noqa: E402

DATASETS = ("gsm8k", "mmlu")
SCORERS = ("heuristic scorer", "trained scorer")


def templated(ds: Dataset, retriever: Retriever, layouts: list[str]) -> dict[str, list[Item]]:
    """The items of ``ds`` in every layout; the replay tables learn each templated request's key."""
    ids = retriever.top_k([it.prompt for it in ds.items])
    out: dict[str, list[Item]] = {}
    for layout in layouts:
        items = []
        for it, got in zip(ds.items, ids, strict=True):
            conv = as_messages(render(layout, it.prompt, retriever.texts(got)))
            for table in ds.replay.values():
                table[replay_key(conv, ds.replay_key)] = table[replay_key(it.messages, ds.replay_key)]
            items.append(dataclasses.replace(it, messages=conv))
        out[layout] = items
    return out


def _user_texts(items: list[Item]) -> list[str]:
    return [str(m["content"]) for it in items for m in it.messages if m["role"] == "user"]


def evaluate(
    ds: Dataset, views: dict[str, list[Item]], args: argparse.Namespace, memo: MemoEmbedder, ll: Any
) -> dict[str, Any]:
    t0 = time.perf_counter()
    bare = ds.items
    n = len(bare)
    k = args.folds
    inner = min(INNER_FOLDS, k - 1)
    folds = group_folds(bare, k, args.seed)
    rep = Replay(ds, ll)
    trained = TrainedScores(memo)
    heur = HeuristicScorer()
    o = outcomes(bare, ROUTELLM_PRICES)
    scorers = SCORERS if args.scorer == "both" else (args.scorer + " scorer",)
    recs: dict[tuple[str, str], list[dict[str, Any]]] = {
        (layout, s): [{}] * n for layout in views for s in scorers
    }
    thresholds: dict[tuple[str, str], list[float | None]] = {key: [] for key in recs}
    train_views = ["bare"] if args.train_on == "bare" else list(views)
    for f in range(k):
        tr, te = np.flatnonzero(folds != f), np.flatnonzero(folds == f)
        o_tr = o.take(tr)
        for tv in train_views:
            train = [views[tv][i] if tv in views else bare[i] for i in tr]
            labels = [it.label for it in train]
            groups = [it.group for it in train]
            convs = [it.messages for it in train]

            def fit_score(
                a: np.ndarray, b: np.ndarray, convs: list[Any] = convs, labels: list[int] = labels
            ) -> np.ndarray:
                s = trained.scorer([convs[i] for i in a], [labels[i] for i in a])
                return np.array(s.score_many([convs[i] for i in b]))

            runs: list[tuple[str, Any, Any]] = []
            if "trained scorer" in scorers:
                oof = inner_oof(len(tr), inner, args.seed + 101 * f, fit_score, groups)
                scorer = trained.scorer(convs, labels)
                runs.append(("trained scorer", scorer, calibrate_thresholds(train, o_tr, oof, None)))
            if "heuristic scorer" in scorers:
                h_tr = np.array([heur.score(m) for m in convs])
                runs.append(("heuristic scorer", heur, calibrate_thresholds(train, o_tr, h_tr, None)))
            test_layouts = list(views) if args.train_on == "bare" else [tv]
            for layout in test_layouts:
                test = [views[layout][i] for i in te]
                for name, sc, th in runs:
                    got = run_cascade(rep, rep.cascade(scorer=sc, policy=_policy(th)), test)
                    store = recs[(layout, name)]
                    for i, r in zip(te, got, strict=True):
                        store[i] = r
                    thresholds[(layout, name)].append(th.scorer)
    out: dict[str, Any] = {
        "n": n,
        "folds": k,
        "excluded_contaminated": ds.excluded,
        "strong_quality": o.strong_quality,
        "weak_quality": float(o.qw.mean()),
        "layouts": {},
    }
    want = TARGET * o.strong_quality
    for (layout, name), rs in recs.items():
        tier = np.array([r["tier"] for r in rs])
        quality = float(np.mean([r["quality"] for r in rs]))
        scores = np.array([r["score"] for r in rs], float)
        p = read_off(sweep_1d(o, scores), want, o.strong_cost)
        out["layouts"].setdefault(layout, {})[name] = {
            "calibrated_strong_share": float(tier.mean()),
            "calibrated_rel_quality": quality / o.strong_quality if o.strong_quality else 0.0,
            "curve_strong_share": None if p is None else p["strong_share"],
            "mean_score": float(scores.mean()),
            "thresholds": thresholds[(layout, name)],
        }
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def _p(v: float | None) -> str:
    return "  n/a" if v is None else f"{100 * v:5.1f}%"


def format_table(res: dict[str, Any]) -> str:
    lines = [
        f"machine: {res['machine']}",
        f"embedder {res['embedder']}; top-k {res['k']} from {res['corpus']}; scorers trained and calibrated on "
        f"{res['train_on']} training questions; target quality {TARGET} x strong",
    ]
    for name, d in res["datasets"].items():
        lines += [
            "",
            f"{name}: n={d['n']} ({d['folds']} folds; contaminated excluded {d['excluded_contaminated']}); "
            f"strong quality {d['strong_quality']:.3f}, weak {d['weak_quality']:.3f}; {d['seconds']}s",
            f"{'layout':20s} {'scorer':17s} | {'calibrated: strong':>18s} {'quality':>8s} | "
            f"{'curve: strong':>13s} | {'mean score':>10s}",
        ]
        for layout, rows in d["layouts"].items():
            for scorer, m in rows.items():
                lines.append(
                    f"{layout:20s} {scorer:17s} | {_p(m['calibrated_strong_share']):>18s} "
                    f"{_p(m['calibrated_rel_quality']):>8s} | {_p(m['curve_strong_share']):>13s} | "
                    f"{m['mean_score']:10.3f}"
                )
    lines.append(
        "  (strong: share of requests answered by the strong model; quality: / always-strong quality)"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--data", help="data directory (default: $FRUGAL_CHAINS_DATA or ../shared/data)")
    p.add_argument("--dataset", action="append", choices=DATASETS, help="only this data set (repeatable)")
    p.add_argument("--limit", type=int, default=None, help="a seeded subsample of N questions per data set")
    p.add_argument("--folds", type=int, default=5, help="folds (default 5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the folds, the subsample and the corpus")
    p.add_argument("--k", type=int, default=2, help="passages retrieved per question (default 2)")
    p.add_argument("--corpus-size", type=int, default=1500, help="NQ passages in the corpus (default 1500)")
    p.add_argument(
        "--layout", action="append", choices=ROUTER_LAYOUTS, help="only these layouts (repeatable)"
    )
    p.add_argument(
        "--train-on",
        choices=["bare", "template"],
        default="bare",
        help="fit and calibrate on the bare training questions (default) or on them in each layout",
    )
    p.add_argument(
        "--scorer",
        choices=["both", "heuristic", "trained"],
        default="both",
        help="the scorers to run (default both; the heuristic alone embeds only the corpus and the questions)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument("--embedding-cache", help="keep the embeddings in this .npz file between runs")
    args = p.parse_args(argv)
    if args.folds < 2:
        p.error("--folds must be >= 2")
    warnings.filterwarnings("ignore", category=UserWarning, module="langchain_core")
    from frugal_chains.embeddings import default_embedder

    t0 = time.perf_counter()
    data = data_dir(args.data)
    layouts = args.layout or list(ROUTER_LAYOUTS)
    if "bare" not in layouts:
        layouts.insert(0, "bare")
    memo = MemoEmbedder(default_embedder(), args.embedding_cache)
    retriever = Retriever(nq_corpus(data, args.corpus_size, args.seed), memo.embed, args.k)
    ll = litellm_prices()
    res: dict[str, Any] = {
        "machine": machine(),
        "embedder": memo.name,
        "k": args.k,
        "corpus": f"{len(retriever.passages)} NQ passages",
        "train_on": args.train_on,
        "seed": args.seed,
        "limit": args.limit,
        "datasets": {},
    }
    for name in args.dataset or list(DATASETS):
        ds = LOADERS[name](data)
        if args.limit:
            ds.items = _subsample(ds.items, args.limit, args.seed)
        memo.precompute([it.prompt for it in ds.items])
        views = templated(ds, retriever, layouts)
        if args.scorer != "heuristic":
            memo.precompute([t for items in views.values() for t in _user_texts(items)])
        memo.save()
        res["datasets"][name] = evaluate(ds, views, args, memo, ll)
        print(f"[routing_rag] {name}: {res['datasets'][name]['seconds']}s", file=sys.stderr, flush=True)
    memo.save()
    res["texts_embedded"] = memo.embedded
    res["embed_seconds"] = round(memo.embed_seconds, 1)
    res["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(res, indent=2, default=float) if args.json else format_table(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
