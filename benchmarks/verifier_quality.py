"""Verifier quality: what the shipped cross-encoder (``CrossEncoderVerifier``) adds to the semantic cache.

Runs the real ``AnswerCache`` (in-memory index, default embedder all-MiniLM-L6-v2 int8) in three set-ups:

* **cosine alone** at ``DEFAULT_THRESHOLD`` (no guard, no bypass);
* **cosine + guard**, the default (``HitGuard()``, default bypass policy);
* **cosine pre-filter + guard + cross-encoder**: semantic candidates with cosine >= the pre-filter (the cache's
  ``threshold``), passing ``HitGuard()``, served only when ``CrossEncoderVerifier(cutoff)`` agrees; this is the
  rule of a cache whose verifier checks every semantic candidate from the pre-filter up.

on (a) QQP ``eval_4k`` pairwise (store text_a, look up text_b, each pair in its own partition) and (b) the
BANKING77 ``test.csv`` replay (seeded shuffle, FAQ mode: ``BypassPolicy(user_specific=False)``), the same
protocols as ``benchmarks/cache_quality.py``. Then (c) the precision / hit-rate curve over the cutoff at the chosen
pre-filter: a CURVE ON THE EVALUATION DATA, for reading only, NOT used to pick anything.

The pre-filter and the cutoff were chosen with ``--validation RUN_DIR`` (the run folder of
``scripts/train_verifier.py``): the same set-ups on the held-out validation fold (QQP pairs never trained on,
weighted to eval_4k's published composition of 50% duplicates / 25% hard / 25% random negatives; a BANKING77
replay of held-out *train* texts). Rule: for each pre-filter in 0.70 / 0.75 / 0.80, the lowest cutoff (step 0.01)
with QQP precision >= 0.90 and BANKING77 wrong share <= 0.03; the pre-filter with the most QQP hits wins.

``--latency``: the verifier's time per candidate (tokenise + model, no score cache), one pair at a time and as a
batch of 5 (a lookup's ``k``), with 1 and 2 onnxruntime threads: p50 / p95.

Usage::

    python benchmarks/verifier_quality.py [--data DIR] [--json] [--limit N] [--seed 0]
        [--prefilter 0.75] [--cutoff 0.5] [--validation RUN_DIR] [--latency]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import machine_info  # noqa: E402
from cache_quality import _bank_metrics, _data_dir, load_banking, load_qqp  # noqa: E402

from frugal_chains.cache import AnswerCache, CacheRequest, cache_scope  # noqa: E402
from frugal_chains.cache.guard import DEFAULT_THRESHOLD, BypassPolicy, HitGuard  # noqa: E402
from frugal_chains.cache.guard.cross_encoder import (  # noqa: E402
    DEFAULT_VERIFIER_CUTOFF,
    VERIFIER_PREFILTER,
    CrossEncoderVerifier,
)
from frugal_chains.cache.normalize import normalize  # noqa: E402
from frugal_chains.embeddings import MiniLMEmbedder  # noqa: E402

QQP_MIN_HIT, QQP_PRECISION = 0.50, 0.90
BANK_MAX_WRONG, BANK_MIN_HIT = 0.03, 0.35
PREFILTERS = (0.70, 0.75, 0.80)
CUTOFFS = tuple(round(i / 100, 2) for i in range(1, 100))
CURVE_NOTE = "CURVE ON THE EVALUATION DATA: for reading only, NOT used to pick the pre-filter or the cutoff"
_WORD = re.compile(r"\w+")


class _Recorder:
    """A verifier that accepts every candidate and remembers the pairs it saw (for the arithmetic curve)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def verify(self, query: str, cached: str, similarity: float) -> bool:
        self.seen.append((query, cached))
        return True

    async def averify(self, query: str, cached: str, similarity: float) -> bool:
        return self.verify(query, cached, similarity)


# ------------------------------------------------------------------------------------------------ QQP


def _neg_kind(row: dict[str, Any]) -> str | None:
    if row["label"] == 1:
        return None
    if "neg_kind" in row:
        return str(row["neg_kind"])
    a, b = (set(_WORD.findall(row[k].lower())) for k in ("text_a", "text_b"))
    jac = len(a & b) / len(a | b) if a and b else 0.0
    return "hard" if jac >= 0.6 else "random"


def _weights(rows: list[dict[str, Any]], composition: bool) -> list[float]:
    """1 per row, or weights giving eval_4k's composition (50% duplicates, 25% hard, 25% random negatives)."""
    if not composition:
        return [1.0] * len(rows)
    kinds = ["dup" if r["label"] == 1 else _neg_kind(r) for r in rows]
    share = {"dup": 0.5, "hard": 0.25, "random": 0.25}
    count = {k: kinds.count(k) for k in share}
    return [share[k] * len(rows) / count[k] for k in kinds]  # type: ignore[index]


def qqp_metrics(rows: list[dict[str, Any]], served: list[bool], weights: list[float]) -> dict[str, Any]:
    n_pos = sum(r["label"] == 1 for r in rows)
    hits_w = sum(w for s, w in zip(served, weights, strict=True) if s)
    good_w = sum(w for r, s, w in zip(rows, served, weights, strict=True) if s and r["label"] == 1)
    good = sum(1 for r, s in zip(rows, served, strict=True) if s and r["label"] == 1)
    kinds = [_neg_kind(r) for r in rows]
    fh = {}
    for kind in ("hard", "random"):
        n = kinds.count(kind)
        fh[f"false_hit_{kind}"] = (
            sum(1 for k, s in zip(kinds, served, strict=True) if s and k == kind) / n if n else 0.0
        )
    return {
        "precision": good_w / hits_w if hits_w else 1.0,
        "hit_rate_dups": good / n_pos if n_pos else 0.0,
        **fh,
        "hits": sum(served),
        "n": len(rows),
    }


def qqp_outcomes(
    rows: list[dict[str, Any]], make: Callable[[], AnswerCache]
) -> tuple[list[bool], list[tuple[str, str] | None]]:
    """Per pair: whether the cache served it, and the semantic candidate its verifier was asked about (if any)."""
    cache = make()
    served: list[bool] = []
    asked: list[tuple[str, str] | None] = []
    rec = cache.verifier if isinstance(cache.verifier, _Recorder) else None
    for r in rows:
        before = len(rec.seen) if rec else 0
        with cache_scope(tenant_id=f"pair-{r['id']}"):
            cache.update(CacheRequest.from_prompt(r["text_a"]), str(r["id"]))
            served.append(cache.lookup(CacheRequest.from_prompt(r["text_b"])) is not None)
        asked.append(rec.seen[-1] if rec and len(rec.seen) > before else None)
    return served, asked


def qqp_curve(
    rows: list[dict[str, Any]],
    embedder: Any,
    verifier: CrossEncoderVerifier,
    prefilter: float,
    weights: list[float],
    cutoffs: tuple[float, ...],
) -> list[dict[str, Any]]:
    """Metrics at each cutoff for ``prefilter`` + guard + verifier: one cache pass with a recording verifier, then
    arithmetic (one entry per partition: a pair is served at cutoff c when it was served exactly, or its one
    candidate passed the guard and scores >= c)."""
    served, asked = qqp_outcomes(
        rows,
        lambda: AnswerCache(embedder=embedder, threshold=prefilter, guard=HitGuard(), verifier=_Recorder()),
    )
    pairs = [p for p in asked if p is not None]
    scores = dict(zip(pairs, verifier.score_many(pairs), strict=True))
    out = []
    for c in cutoffs:
        s = [ok and (p is None or scores[p] >= c) for ok, p in zip(served, asked, strict=True)]
        out.append({"cutoff": c, **qqp_metrics(rows, s, weights)})
    return out


# ------------------------------------------------------------------------------------------------ BANKING77


def bank_replay(rows: list[tuple[str, str]], cache: AnswerCache) -> dict[str, Any]:
    hits = wrong = 0
    for text, intent in rows:
        req = CacheRequest.from_prompt(text)
        res = cache.lookup(req)
        if res is None:
            cache.update(req, intent)
        else:
            hits += 1
            wrong += res.answer != intent
    return _bank_metrics(len(rows), hits, wrong, cache.stats.bypassed)


def _faq() -> Callable[[str], str | None]:
    return BypassPolicy(user_specific=False).reason


def bank_with(rows: list[tuple[str, str]], embedder: Any, verifier: Any, prefilter: float) -> dict[str, Any]:
    cache = AnswerCache(
        embedder=embedder, threshold=prefilter, guard=HitGuard(), verifier=verifier, bypass=_faq()
    )
    return bank_replay(rows, cache)


class _AtCutoff:
    """The shared verifier (and its score cache) at another cutoff."""

    def __init__(self, inner: CrossEncoderVerifier, cutoff: float) -> None:
        self.inner, self.cutoff = inner, cutoff

    def verify(self, query: str, cached: str, similarity: float) -> bool:
        return self.inner.score(query, cached) >= self.cutoff

    async def averify(self, query: str, cached: str, similarity: float) -> bool:
        return self.verify(query, cached, similarity)


# ------------------------------------------------------------------------------------------------ runs


def _embedder(texts: set[str]) -> MiniLMEmbedder:
    emb = MiniLMEmbedder(cache_size=80_000)
    todo = sorted({normalize(t) for t in texts})
    for i in range(0, len(todo), 256):
        emb.embed(todo[i : i + 256])
    return emb


def baseline_rows(
    qqp: list[dict[str, Any]], bank: list[tuple[str, str]], embedder: Any, weights: list[float]
) -> dict[str, Any]:
    thr = DEFAULT_THRESHOLD
    plain_q, _ = qqp_outcomes(
        qqp, lambda: AnswerCache(embedder=embedder, threshold=thr, guard=False, bypass=False)
    )
    guard_q, _ = qqp_outcomes(qqp, lambda: AnswerCache(embedder=embedder, threshold=thr, guard=HitGuard()))
    return {
        f"cosine alone (threshold {thr:.2f})": {
            "qqp_pairwise": qqp_metrics(qqp, plain_q, weights),
            "banking": bank_replay(
                bank, AnswerCache(embedder=embedder, threshold=thr, guard=False, bypass=_faq())
            ),
        },
        f"cosine + guard, the default (threshold {thr:.2f} + HitGuard)": {
            "qqp_pairwise": qqp_metrics(qqp, guard_q, weights),
            "banking": bank_replay(
                bank, AnswerCache(embedder=embedder, threshold=thr, guard=HitGuard(), bypass=_faq())
            ),
        },
    }


def run_eval(args: argparse.Namespace) -> dict[str, Any]:
    data = _data_dir(args.data)
    qqp = load_qqp(data, args.limit)
    bank = load_banking(data, args.limit, args.seed)
    t0 = time.perf_counter()
    embedder = _embedder({t for r in qqp for t in (r["text_a"], r["text_b"])} | {t for t, _ in bank})
    verifier = CrossEncoderVerifier(cutoff=args.cutoff, cache_size=200_000, threads=args.threads)
    weights = _weights(qqp, False)
    rows = baseline_rows(qqp, bank, embedder, weights)
    label = f"cosine >= {args.prefilter:.2f} + guard + cross-encoder >= {args.cutoff:.2f}"
    served, _ = qqp_outcomes(
        qqp,
        lambda: AnswerCache(embedder=embedder, threshold=args.prefilter, guard=HitGuard(), verifier=verifier),
    )
    rows[label] = {
        "qqp_pairwise": qqp_metrics(qqp, served, weights),
        "banking": bank_with(bank, embedder, verifier, args.prefilter),
    }
    curve_q = qqp_curve(qqp, embedder, verifier, args.prefilter, weights, CUTOFFS)
    at = next(m for m in curve_q if abs(m["cutoff"] - args.cutoff) < 1e-9)
    if {k: at[k] for k in rows[label]["qqp_pairwise"]} != rows[label]["qqp_pairwise"]:
        raise AssertionError(
            f"the arithmetic curve disagrees with the cache: {at} != {rows[label]['qqp_pairwise']}"
        )
    curve_b = [
        {"cutoff": c, **bank_with(bank, embedder, _AtCutoff(verifier, c), args.prefilter)}
        for c in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
    ]
    return {
        "machine": machine_info.machine(),
        "data": str(data),
        "prefilter": args.prefilter,
        "cutoff": args.cutoff,
        "verifier": repr(verifier),
        "seed": args.seed,
        "rows": rows,
        "goals": _goals(rows[label]),
        "curve": {
            "note": CURVE_NOTE,
            "prefilter": args.prefilter,
            "qqp_pairwise": [
                m
                for m in curve_q
                if round(m["cutoff"] * 100) % 5 == 0 or abs(m["cutoff"] - args.cutoff) < 1e-9
            ],
            "banking": curve_b,
        },
        "seconds": round(time.perf_counter() - t0, 1),
    }


def _goals(row: dict[str, Any]) -> dict[str, Any]:
    q, b = row["qqp_pairwise"], row["banking"]
    return {
        "qqp_precision_ge_0.90_at_hit_ge_0.50": bool(
            q["precision"] >= QQP_PRECISION and q["hit_rate_dups"] >= QQP_MIN_HIT
        ),
        "banking_hit_ge_0.35_at_wrong_le_0.03": bool(
            b["hit_rate"] >= BANK_MIN_HIT and b["wrong_share_of_hits"] <= BANK_MAX_WRONG
        ),
    }


def run_validation(args: argparse.Namespace) -> dict[str, Any]:
    """Choose the pre-filter and the cutoff on the validation fold of a training run."""
    run = Path(args.validation)
    qqp = [
        {"id": i, **json.loads(line)} for i, line in enumerate((run / "val_qqp.jsonl").open(encoding="utf-8"))
    ]
    import random

    bank = [(r["text"], r["category"]) for r in map(json.loads, (run / "val_banking_texts.jsonl").open())]
    random.Random(args.seed).shuffle(bank)
    if args.limit:
        qqp, bank = qqp[: args.limit], bank[: args.limit]
    t0 = time.perf_counter()
    embedder = _embedder({t for r in qqp for t in (r["text_a"], r["text_b"])} | {t for t, _ in bank})
    verifier = CrossEncoderVerifier(cache_size=300_000, threads=args.threads)
    weights = _weights(qqp, True)
    rows = baseline_rows(qqp, bank, embedder, weights)
    per_prefilter: dict[str, Any] = {}
    for pf in PREFILTERS:
        curve = qqp_curve(qqp, embedder, verifier, pf, weights, CUTOFFS)
        first = next((m for m in curve if m["precision"] >= QQP_PRECISION), None)
        choice: dict[str, Any] = {"qqp_first_cutoff_precision_ge_0.90": first}
        if first is not None:
            c = first["cutoff"]
            while True:
                b = bank_with(bank, embedder, _AtCutoff(verifier, c), pf)
                if b["wrong_share_of_hits"] <= BANK_MAX_WRONG or c >= 0.99:
                    break
                c = round(c + 0.01, 2)
            m = next(m for m in curve if abs(m["cutoff"] - c) < 1e-9)
            choice.update(cutoff=c, qqp_pairwise=m, banking=b)
        per_prefilter[f"{pf:.2f}"] = choice
    ok = {k: v for k, v in per_prefilter.items() if "cutoff" in v}
    best = max(
        ok, key=lambda k: (ok[k]["qqp_pairwise"]["hit_rate_dups"], ok[k]["banking"]["hit_rate"]), default=None
    )
    return {
        "machine": machine_info.machine(),
        "run": str(run),
        "qqp_weighting": "eval_4k composition: 50% duplicates, 25% hard (token Jaccard >= 0.6), 25% random negatives",
        "rows": rows,
        "per_prefilter": per_prefilter,
        "chosen": None if best is None else {"prefilter": float(best), "cutoff": ok[best]["cutoff"]},
        "seconds": round(time.perf_counter() - t0, 1),
    }


def run_latency(args: argparse.Namespace) -> dict[str, Any]:
    data = _data_dir(args.data)
    rows = load_qqp(data, None)[: args.latency_pairs]
    pairs = [(r["text_b"], r["text_a"]) for r in rows]
    out: dict[str, Any] = {"machine": machine_info.machine(), "pairs": len(pairs)}
    for threads in (1, 2):
        v = CrossEncoderVerifier(cache_size=0, threads=threads)
        v.score_many(pairs[:20])  # load and warm up
        single = []
        for q, c in pairs:
            t = time.perf_counter()
            v.verify(q, c, 0.9)
            single.append((time.perf_counter() - t) * 1000)
        batch = []
        for i in range(0, len(pairs) - 4, 5):
            t = time.perf_counter()
            v.score_many(pairs[i : i + 5])
            batch.append((time.perf_counter() - t) * 1000 / 5)
        out[f"threads_{threads}"] = {
            "single_ms_p50": round(statistics.median(single), 2),
            "single_ms_p95": round(statistics.quantiles(single, n=20)[18], 2),
            "batch5_ms_per_pair_p50": round(statistics.median(batch), 2),
            "batch5_ms_per_pair_p95": round(statistics.quantiles(batch, n=20)[18], 2),
        }
    return out


# ------------------------------------------------------------------------------------------------ output


def _row_line(name: str, row: dict[str, Any]) -> str:
    q, b = row["qqp_pairwise"], row["banking"]
    return (
        f"{name:58s} {q['precision']:7.3f} {q['hit_rate_dups']:7.3f} {q['false_hit_hard']:7.3f} "
        f"{q['false_hit_random']:7.3f} | {b['hit_rate']:7.3f} {b['wrong_share_of_hits']:7.3f}"
    )


def format_table(res: dict[str, Any]) -> str:
    m = res["machine"]
    lines = [f"machine: {m['system']}, {m['nproc']} usable CPUs, load {m['load_avg_1m_at_start']} at start"]
    if "threads_1" in res:
        for k in ("threads_1", "threads_2"):
            lines.append(f"{k}: " + ", ".join(f"{a} {b}" for a, b in res[k].items()))
        lines.append("goal: < 15 ms p50 per candidate on 2 cores")
        return "\n".join(lines)
    head = (
        f"{'system':58s} {'prec':>7s} {'hit':>7s} {'FH hard':>7s} {'FH rand':>7s} | {'hit':>7s} {'wrong':>7s}"
    )
    lines += [f"{'':58s} {'QQP pairwise':^31s} | {'BANKING77 replay':^15s}", head]
    for name, row in res["rows"].items():
        lines.append(_row_line(name, row))
    if "per_prefilter" in res:
        lines += ["", "VALIDATION FOLD (QQP weighted to eval_4k's composition); per pre-filter:"]
        for pf, ch in res["per_prefilter"].items():
            if "cutoff" in ch:
                lines.append(_row_line(f"cosine >= {pf} + guard + cross-encoder >= {ch['cutoff']:.2f}", ch))
            else:
                lines.append(f"cosine >= {pf}: precision 0.90 never reached")
        lines.append(f"chosen: {res['chosen']}")
        return "\n".join(lines)
    lines += [
        "goals: QQP precision >= 0.90 at hit >= 0.50; BANKING77 hit >= 0.35 at wrong <= 0.03",
        f"  {res['goals']}",
    ]
    c = res["curve"]
    lines += [
        "",
        f"{c['note']} (pre-filter {c['prefilter']:.2f})",
        f"{'cutoff':>6s} {'prec':>7s} {'hit':>7s}",
    ]
    lines += [
        f"{p['cutoff']:6.2f} {p['precision']:7.3f} {p['hit_rate_dups']:7.3f}" for p in c["qqp_pairwise"]
    ]
    lines += ["BANKING77:", f"{'cutoff':>6s} {'hit':>7s} {'wrong':>7s}"]
    lines += [
        f"{p['cutoff']:6.2f} {p['hit_rate']:7.3f} {p['wrong_share_of_hits']:7.3f}" for p in c["banking"]
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--data", help="data directory (default: $FRUGAL_CHAINS_DATA or ../shared/data)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N rows of each set")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--seed", type=int, default=0, help="shuffle seed of the BANKING77 replay")
    p.add_argument(
        "--prefilter", type=float, default=VERIFIER_PREFILTER, help="the cache threshold (pre-filter)"
    )
    p.add_argument("--cutoff", type=float, default=DEFAULT_VERIFIER_CUTOFF, help="the verifier's cutoff")
    p.add_argument("--threads", type=int, default=1, help="onnxruntime threads of the verifier")
    p.add_argument(
        "--validation", metavar="RUN_DIR", help="choose pre-filter and cutoff on a run's validation fold"
    )
    p.add_argument("--latency", action="store_true", help="time the verifier per candidate instead")
    p.add_argument("--latency-pairs", type=int, default=400)
    args = p.parse_args(argv)
    if args.latency:
        res = run_latency(args)
    elif args.validation:
        res = run_validation(args)
    else:
        res = run_eval(args)
    print(json.dumps(res, indent=2) if args.json else format_table(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
