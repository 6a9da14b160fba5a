"""Semantic-cache quality: precision and hit rate of ``AnswerCache`` on held-out data, next to redisvl.

Runs the real cache class (``frugal_chains.cache.AnswerCache``, in-memory embedded index) with the
default embedder (all-MiniLM-L6-v2 int8). Every text is embedded once up front in batches; the
embedder's LRU then serves the cache's own lookups.

(a) QQP ``qqp_gptcache/eval_4k.jsonl`` (2,000 duplicates, 1,000 hard and 1,000 random negatives):
    *pairwise* -- each pair in its own partition: store text_a, look up text_b; *shared* -- one cache
    holding every text_a, look up every text_b (a hit is correct only when it returns its own pair).
    Caveat: MiniLM-family models were trained on Quora duplicates, so these figures flatter the embedder.
(b) BANKING77 ``banking77/test.csv`` traffic replay in a seeded shuffled order: each query looks up the
    cache; a hit answers with the cached entry's intent, a miss stores the query with its intent.
    The cache runs in FAQ mode: ``BypassPolicy(user_specific=False)`` (all BANKING77 queries are
    "my card ..." questions, which the default policy sends past the semantic tier).
(c) redisvl ``SemanticCache`` at its default ``distance_threshold`` (cosine distance 0.1 = similarity 0.9)
    with the same embeddings (``CustomVectorizer``), on a real Redis from ``tests/redis_server.py``;
    and a threshold-only row of ours (no guard, no bypass).
(e) The verifier (skip with ``--no-verifier``): the default plus the shipped cross-encoder
    (``AnswerCache(verifier=CrossEncoderVerifier())``, default verify band ``threshold - 0.10`` up);
    ``preset="strict"`` with the shipped verifier (every semantic hit verified); ``preset="strict"`` with a
    SIMULATED LLM judge through the ``Verifier`` protocol (a ``CallableVerifier`` answering from the gold label,
    wrong on a seeded ``--judge-error`` share of the pairs it is asked about: no LLM runs offline); and
    ``preset="strict"`` with a perfect oracle (the gold label): the ceiling of strict, bounded by the
    candidates the threshold and the guard let through.
(d) Operating points (skip with ``--no-sweep``): the similarity threshold swept from 0.70 to 0.97 (step
    0.01) for the default guard and for a threshold alone, so the two compare at an EQUAL error rate.
    This is a curve on the evaluation data, reported for comparison only: it is NOT used to pick any
    default. QQP pairwise is one pass through the real cache at the lowest threshold per system, swept
    arithmetically (with one stored entry per partition, a lookup at threshold t serves exactly when the
    0.70 pass served an exact hit, or a semantic one with similarity >= t: the guard's verdict does not
    depend on the threshold); the script asserts this agrees with the cache-measured rows at
    ``DEFAULT_THRESHOLD``. BANKING77 is one real replay per threshold per system, both in FAQ mode
    (``BypassPolicy(user_specific=False)``, ``k=5``), so the guard is the only difference.

Nothing here was used for tuning: ``DEFAULT_THRESHOLD`` and the guard model were fitted on QQP pairs
outside eval_4k and on BANKING77 *train*.

Usage::

    python benchmarks/cache_quality.py [--data DIR] [--limit N] [--json] [--no-redis] [--seed 0]
        [--candidate THRESHOLD[:CUTOFF] ...] [--no-sweep] [--no-verifier] [--judge-error 0.05]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import random
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import machine_info  # noqa: E402

from frugal_chains.cache import AnswerCache, CacheRequest, cache_scope  # noqa: E402
from frugal_chains.cache.guard import (  # noqa: E402
    DEFAULT_THRESHOLD,
    BypassPolicy,
    CallableVerifier,
    HitGuard,
    Verifier,
)
from frugal_chains.cache.guard.cross_encoder import DEFAULT_VERIFIER_CUTOFF, CrossEncoderVerifier  # noqa: E402
from frugal_chains.cache.normalize import normalize  # noqa: E402
from frugal_chains.embeddings import MiniLMEmbedder  # noqa: E402

REDISVL_DEFAULT_DISTANCE = 0.1
SWEEP = tuple(round(0.70 + i / 100, 2) for i in range(28))  # 0.70 .. 0.97
SWEEP_NOTE = (
    "CURVE ON THE EVALUATION DATA (QQP eval_4k, BANKING77 test): for comparison at equal error rate only; "
    "NOT used to pick any default"
)
QQP_MIN_HIT, QQP_PRECISION = 0.50, 0.90  # goal: precision >= 0.90 with hit rate >= 0.50
BANK_MAX_WRONG, BANK_MIN_HIT = 0.03, 0.35  # goal: >= 0.35 hits with <= 0.03 of hits wrong


def _data_dir(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    env = os.environ.get("FRUGAL_CHAINS_DATA")
    return Path(env) if env else (ROOT / ".." / "shared" / "data").resolve()


def load_qqp(data: Path, limit: int | None) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in (data / "qqp_gptcache" / "eval_4k.jsonl").open(encoding="utf-8")]
    return rows[:limit] if limit else rows


def load_banking(data: Path, limit: int | None, seed: int) -> list[tuple[str, str]]:
    with (data / "banking77" / "test.csv").open(encoding="utf-8") as f:
        rows = [(r["text"], r["category"]) for r in csv.DictReader(f)]
    random.Random(seed).shuffle(rows)
    return rows[:limit] if limit else rows


# ---------------------------------------------------------------------------------------------- ours


def _ours_factory(
    embedder: Any,
    *,
    guarded: bool,
    faq: bool,
    threshold: float,
    cutoff: float | None = None,
    verifier: Verifier | None = None,
    preset: str = "default",
) -> Callable[[], AnswerCache]:
    def make() -> AnswerCache:
        if guarded:
            bypass = BypassPolicy(user_specific=False).reason if faq else None
            guard = HitGuard(model_cutoff=cutoff)
            return AnswerCache(
                embedder=embedder,
                threshold=threshold,
                guard=guard,
                bypass=bypass,
                verifier=verifier,
                preset=preset,  # type: ignore[arg-type]
            )
        return AnswerCache(embedder=embedder, threshold=threshold, guard=False, bypass=False)

    return make


def qqp_pairwise_ours(rows: list[dict[str, Any]], make: Callable[[], AnswerCache]) -> dict[str, Any]:
    cache = make()
    served: list[bool] = []
    for r in rows:
        with cache_scope(tenant_id=f"pair-{r['id']}"):
            cache.update(CacheRequest.from_prompt(r["text_a"]), str(r["id"]))
            served.append(cache.lookup(CacheRequest.from_prompt(r["text_b"])) is not None)
    return _qqp_metrics(rows, served, served, cache.stats.bypassed)


def qqp_shared_ours(rows: list[dict[str, Any]], make: Callable[[], AnswerCache]) -> dict[str, Any]:
    cache = make()
    for r in rows:
        cache.update(CacheRequest.from_prompt(r["text_a"]), str(r["id"]))
    hit: list[bool] = []
    own: list[bool] = []
    for r in rows:
        res = cache.lookup(CacheRequest.from_prompt(r["text_b"]))
        hit.append(res is not None)
        own.append(res is not None and res.answer == str(r["id"]))
    return _qqp_metrics(rows, hit, own, cache.stats.bypassed)


def banking_ours(rows: list[tuple[str, str]], make: Callable[[], AnswerCache]) -> dict[str, Any]:
    return _bank_replay([(CacheRequest.from_prompt(text), intent) for text, intent in rows], make())


def _bank_replay(requests: list[tuple[CacheRequest, str]], cache: AnswerCache) -> dict[str, Any]:
    hits = wrong = 0
    for req, intent in requests:
        res = cache.lookup(req)
        if res is None:
            cache.update(req, intent)
        else:
            hits += 1
            wrong += res.answer != intent
    return _bank_metrics(len(requests), hits, wrong, cache.stats.bypassed)


# ---------------------------------------------------------------------------------------------- verifiers


def gold_same(qqp: list[dict[str, Any]], bank: list[tuple[str, str]]) -> Callable[[str, str], bool]:
    """The gold answer to "may this cached answer be served?": QQP, the two questions are a labelled duplicate
    pair; BANKING77, the two queries have the same intent. Texts are compared in their normalised form."""
    dups = {(normalize(r["text_b"]), normalize(r["text_a"])) for r in qqp if r["label"] == 1}
    dups |= {(b, a) for a, b in dups}
    intent = {normalize(t): i for t, i in bank}

    def same(query: str, cached: str) -> bool:
        q, c = normalize(query), normalize(cached)
        if (q, c) in dups:
            return True
        return q in intent and c in intent and intent[q] == intent[c]

    return same


def simulated_judge(gold: Callable[[str, str], bool], error: float, seed: int) -> CallableVerifier:
    """A SIMULATED LLM judge through the ``Verifier`` protocol: the gold label, flipped on a seeded ``error`` share
    of the pairs (the same pair always gets the same answer, whatever the order of the calls). ``error=0`` is a
    perfect oracle."""

    def judge(query: str, cached: str, similarity: float) -> bool:
        flip = random.Random(f"{seed}\x00{normalize(query)}\x00{normalize(cached)}").random() < error
        return gold(query, cached) != flip

    return CallableVerifier(judge)


def verifier_configs(
    thr: float, gold: Callable[[str, str], bool], error: float, seed: int
) -> dict[str, dict[str, Any]]:
    """Section (e): the rows with a verifier. One shared cross-encoder (a large score cache) for the default row;
    the strict row uses the verifier ``preset="strict"`` picks itself (the shipped one)."""
    cross = CrossEncoderVerifier(cache_size=200_000)
    band = f"{thr - 0.10:.2f}"
    return {
        f"default + CrossEncoderVerifier() (verify band {band} up, cutoff {DEFAULT_VERIFIER_CUTOFF})": dict(
            guarded=True, threshold=thr, verifier=cross
        ),
        'preset="strict", shipped cross-encoder (default verifier)': dict(
            guarded=True, threshold=thr, preset="strict"
        ),
        f'preset="strict", SIMULATED LLM judge (gold label, {error:.0%} flipped)': dict(
            guarded=True, threshold=thr, preset="strict", verifier=simulated_judge(gold, error, seed)
        ),
        'preset="strict", perfect oracle (gold label; the ceiling)': dict(
            guarded=True, threshold=thr, preset="strict", verifier=simulated_judge(gold, 0.0, seed)
        ),
    }


# ---------------------------------------------------------------------------------------------- sweep


def qqp_pairwise_outcomes(
    rows: list[dict[str, Any]], make: Callable[[], AnswerCache]
) -> tuple[list[tuple[str, float] | None], int]:
    """Per pair, what a lookup at the cache's (lowest) threshold served: (tier, similarity) or None."""
    cache = make()
    out: list[tuple[str, float] | None] = []
    for r in rows:
        with cache_scope(tenant_id=f"pair-{r['id']}"):
            cache.update(CacheRequest.from_prompt(r["text_a"]), str(r["id"]))
            res = cache.lookup(CacheRequest.from_prompt(r["text_b"]))
        out.append(None if res is None else (res.tier, res.similarity))
    return out, cache.stats.bypassed


def _served_at(outcomes: list[tuple[str, float] | None], threshold: float) -> list[bool]:
    import numpy as np

    t = np.float32(threshold)  # the index compares float32 similarities with a float32 threshold
    return [o is not None and (o[0] == "exact" or bool(np.float32(o[1]) >= t)) for o in outcomes]


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return all(abs(a[k] - b[k]) < 1e-12 if isinstance(a[k], float) else a[k] == b[k] for k in a)


def qqp_pairwise_sweep(
    rows: list[dict[str, Any]], make: Callable[[float], AnswerCache], check: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """QQP pairwise metrics at every SWEEP threshold (one cache pass at the lowest one, then arithmetic)."""
    outcomes, bypassed = qqp_pairwise_outcomes(rows, lambda: make(min(SWEEP)))
    curve = []
    for thr in SWEEP:
        served = _served_at(outcomes, thr)
        curve.append({"threshold": thr, **_qqp_metrics(rows, served, served, bypassed)})
    if check is not None:  # consistency: the arithmetic at the default threshold == the cache-measured row
        served = _served_at(outcomes, DEFAULT_THRESHOLD)
        at_default = _qqp_metrics(rows, served, served, bypassed)
        if min(SWEEP) > DEFAULT_THRESHOLD or not _same(at_default, check):  # not an `assert`: survives -O
            raise AssertionError(
                f"pairwise sweep disagrees with the cache-measured row: {at_default} != {check}"
            )
    return curve


def banking_sweep(rows: list[tuple[str, str]], make: Callable[[float], AnswerCache]) -> list[dict[str, Any]]:
    """One real BANKING77 replay per SWEEP threshold."""
    requests = [(CacheRequest.from_prompt(text), intent) for text, intent in rows]
    return [{"threshold": thr, **_bank_replay(requests, make(thr))} for thr in SWEEP]


def _sweep_summary(qqp: list[dict[str, Any]], bank: list[dict[str, Any]]) -> dict[str, Any]:
    ok_q = [m for m in qqp if m["hit_rate_dups"] >= QQP_MIN_HIT]
    best_q = max(ok_q, key=lambda m: (m["precision"], -m["threshold"]), default=None)
    first_p = next((m for m in qqp if m["precision"] >= QQP_PRECISION), None)
    ok_b = [m for m in bank if m["wrong_share_of_hits"] <= BANK_MAX_WRONG]
    best_b = max(ok_b, key=lambda m: (m["hit_rate"], m["threshold"]), default=None)
    hi_b = max((m for m in bank if m["hit_rate"] >= BANK_MIN_HIT), key=lambda m: m["threshold"], default=None)
    return {
        "qqp_best_precision_at_hit_ge_0.50": None
        if best_q is None
        else {k: best_q[k] for k in ("threshold", "precision", "hit_rate_dups")},
        "qqp_hit_rate_where_precision_first_ge_0.90": None
        if first_p is None
        else {k: first_p[k] for k in ("threshold", "precision", "hit_rate_dups")},
        "banking_best_hit_rate_at_wrong_le_0.03": None
        if best_b is None
        else {k: best_b[k] for k in ("threshold", "hit_rate", "wrong_share_of_hits")},
        "banking_wrong_share_at_highest_threshold_with_hit_ge_0.35": None
        if hi_b is None
        else {k: hi_b[k] for k in ("threshold", "hit_rate", "wrong_share_of_hits")},
    }


def operating_points(
    embedder: Any,
    qqp: list[dict[str, Any]],
    bank: list[tuple[str, str]],
    rows: dict[str, dict[str, Any]],
    labels: tuple[str, str],
) -> dict[str, Any]:
    """The threshold sweep for the default guard and for a threshold alone (section d)."""
    faq = BypassPolicy(user_specific=False).reason
    guarded_label, plain_label = labels
    systems: dict[str, dict[str, Any]] = {
        "default guard (HitGuard())": {
            "qqp": lambda t: AnswerCache(embedder=embedder, threshold=t, guard=HitGuard()),
            "bank": lambda t: AnswerCache(embedder=embedder, threshold=t, guard=HitGuard(), k=5, bypass=faq),
            "row": guarded_label,
            "qqp_config": "HitGuard(), default bypass policy (as row (a))",
        },
        "threshold only (guard=False)": {
            "qqp": lambda t: AnswerCache(embedder=embedder, threshold=t, guard=False, bypass=False),
            "bank": lambda t: AnswerCache(embedder=embedder, threshold=t, guard=False, k=5, bypass=faq),
            "row": plain_label,
            "qqp_config": "guard=False, bypass=False (as row (a))",
        },
    }
    out: dict[str, Any] = {
        "note": SWEEP_NOTE,
        "thresholds": list(SWEEP),
        "banking_config": "FAQ mode for both: AnswerCache(k=5, bypass=BypassPolicy(user_specific=False).reason)",
        "systems": {},
    }
    for name, sysd in systems.items():
        t1 = time.perf_counter()
        row = rows.get(sysd["row"])
        q = qqp_pairwise_sweep(qqp, sysd["qqp"], row["qqp_pairwise"] if row else None)
        b = banking_sweep(bank, sysd["bank"])
        if row is not None and name.startswith("default"):  # same configuration as the row: must agree
            at = next(m for m in b if abs(m["threshold"] - DEFAULT_THRESHOLD) < 1e-9)
            if not _same({k: at[k] for k in row["banking"]}, row["banking"]):
                raise AssertionError(
                    f"banking sweep disagrees with the cache-measured row: {at} != {row['banking']}"
                )
        out["systems"][name] = {
            "qqp_config": sysd["qqp_config"],
            "qqp_pairwise": q,
            "banking": b,
            "summary": _sweep_summary(q, b),
            "seconds": round(time.perf_counter() - t1, 1),
        }
    return out


# ---------------------------------------------------------------------------------------------- metrics


def _qqp_metrics(
    rows: list[dict[str, Any]], hit: list[bool], own: list[bool], bypassed: int
) -> dict[str, Any]:
    n_pos = sum(r["label"] == 1 for r in rows)
    n_hard = sum(r.get("neg_kind") == "hard" for r in rows)
    n_rand = sum(r.get("neg_kind") == "random" for r in rows)
    correct = sum(1 for r, h, o in zip(rows, hit, own, strict=True) if h and o and r["label"] == 1)
    hits = sum(hit)
    hard = sum(1 for r, h in zip(rows, hit, strict=True) if h and r.get("neg_kind") == "hard")
    rand = sum(1 for r, h in zip(rows, hit, strict=True) if h and r.get("neg_kind") == "random")
    return {
        "precision": correct / hits if hits else 1.0,
        "hit_rate_dups": correct / n_pos if n_pos else 0.0,
        "false_hit_hard": hard / n_hard if n_hard else 0.0,
        "false_hit_random": rand / n_rand if n_rand else 0.0,
        "hits": hits,
        "bypassed": bypassed,
        "n": len(rows),
    }


def _bank_metrics(n: int, hits: int, wrong: int, bypassed: int) -> dict[str, Any]:
    return {
        "hit_rate": hits / n if n else 0.0,
        "wrong_share_of_hits": wrong / hits if hits else 0.0,
        "hits": hits,
        "bypassed": bypassed,
        "n": n,
    }


# ---------------------------------------------------------------------------------------------- redisvl


@contextlib.contextmanager
def _redis() -> Iterator[str]:
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        from redis_server import RedisServer
    finally:
        sys.path.pop(0)
    with RedisServer() as server:
        yield server.url


def _redisvl_cache(url: str, embedder: Any, name: str, filterable: bool) -> Any:
    from redisvl.extensions.cache.llm import SemanticCache
    from redisvl.utils.vectorize import CustomVectorizer

    def embed(text: str) -> list[float]:
        return [float(x) for x in embedder.embed([text])[0]]

    def embed_many(texts: list[str]) -> list[list[float]]:
        return [[float(x) for x in row] for row in embedder.embed(texts)]

    vectorizer = CustomVectorizer(embed=embed, embed_many=embed_many)
    fields = [{"name": "pair", "type": "tag"}] if filterable else None
    return SemanticCache(
        name=name,
        redis_url=url,
        vectorizer=vectorizer,
        distance_threshold=REDISVL_DEFAULT_DISTANCE,
        filterable_fields=fields,
        overwrite=True,
    )


def _nz(text: str) -> str:
    """The text our cache embeds (its normalised form); redisvl refuses empty prompts."""
    return normalize(text) or text


def redisvl_runs(
    url: str, embedder: Any, qqp: list[dict[str, Any]], bank: list[tuple[str, str]]
) -> dict[str, dict[str, Any]]:
    from redisvl.query.filter import Tag

    out: dict[str, dict[str, Any]] = {}
    # same vectors as ours: redisvl gets the normalised text (our cache embeds normalize(question))
    c = _redisvl_cache(url, embedder, "fc_qqp_pairwise", True)
    served = []
    for r in qqp:
        c.store(_nz(r["text_a"]), str(r["id"]), filters={"pair": str(r["id"])})
        res = c.check(_nz(r["text_b"]), filter_expression=Tag("pair") == str(r["id"]))
        served.append(bool(res))
    out["qqp_pairwise"] = _qqp_metrics(qqp, served, served, 0)
    c.delete()
    c = _redisvl_cache(url, embedder, "fc_qqp_shared", False)
    for r in qqp:
        c.store(_nz(r["text_a"]), str(r["id"]))
    hit, own = [], []
    for r in qqp:
        res = c.check(_nz(r["text_b"]))
        hit.append(bool(res))
        own.append(bool(res) and res[0]["response"] == str(r["id"]))
    out["qqp_shared"] = _qqp_metrics(qqp, hit, own, 0)
    c.delete()
    c = _redisvl_cache(url, embedder, "fc_banking", False)
    hits = wrong = 0
    for text, intent in bank:
        res = c.check(_nz(text))
        if res:
            hits += 1
            wrong += res[0]["response"] != intent
        else:
            c.store(_nz(text), intent)
    out["banking"] = _bank_metrics(len(bank), hits, wrong, 0)
    c.delete()
    return out


# ---------------------------------------------------------------------------------------------- main


def run(args: argparse.Namespace) -> dict[str, Any]:
    data = _data_dir(args.data)
    qqp = load_qqp(data, args.limit)
    bank = load_banking(data, args.limit, args.seed)
    embedder = MiniLMEmbedder(cache_size=60_000)
    texts = sorted(
        {normalize(t) for r in qqp for t in (r["text_a"], r["text_b"])} | {normalize(t) for t, _ in bank}
    )
    t0 = time.perf_counter()
    for i in range(0, len(texts), 256):
        embedder.embed(texts[i : i + 256])
    embed_s = time.perf_counter() - t0
    thr = DEFAULT_THRESHOLD
    default_label = f"frugal-chains default (threshold {thr:.2f} + HitGuard)"
    plain_label = f"frugal-chains threshold only ({thr:.2f})"
    configs: dict[str, dict[str, Any]] = {
        default_label: dict(guarded=True, threshold=thr),
        plain_label: dict(guarded=False, threshold=thr),
    }
    for cand in args.candidate or []:
        c_thr, _, c_cut = cand.partition(":")
        cut = float(c_cut) if c_cut else None
        label = f"frugal-chains candidate (threshold {float(c_thr):.2f} + HitGuard cutoff {cut})"
        configs[label] = dict(guarded=True, threshold=float(c_thr), cutoff=cut)
    if not args.no_verifier:
        configs.update(verifier_configs(thr, gold_same(qqp, bank), args.judge_error, args.seed))
    results: dict[str, Any] = {
        "machine": machine_info.machine(),
        "threshold": thr,
        "judge_error": None if args.no_verifier else args.judge_error,
        "guard": repr(HitGuard()),
        "embedder": embedder.name,
        "embed_seconds": round(embed_s, 1),
        "texts_embedded": len(texts),
        "seed": args.seed,
        "rows": {},
    }
    for label, cfg in configs.items():
        t1 = time.perf_counter()
        row = {
            "qqp_pairwise": qqp_pairwise_ours(qqp, _ours_factory(embedder, faq=False, **cfg)),
            "qqp_shared": qqp_shared_ours(qqp, _ours_factory(embedder, faq=False, **cfg)),
            "banking": banking_ours(bank, _ours_factory(embedder, faq=True, **cfg)),
        }
        row["seconds"] = round(time.perf_counter() - t1, 1)
        results["rows"][label] = row
    if not args.no_redis:
        t1 = time.perf_counter()
        with _redis() as url:
            row = redisvl_runs(url, embedder, qqp, bank)
        row["seconds"] = round(time.perf_counter() - t1, 1)  # type: ignore[assignment]
        results["rows"][f"redisvl SemanticCache (distance_threshold {REDISVL_DEFAULT_DISTANCE})"] = row
    if not args.no_sweep:
        results["sweep"] = operating_points(
            embedder, qqp, bank, results["rows"], (default_label, plain_label)
        )
    return results


def format_table(results: dict[str, Any]) -> str:
    m = results.get("machine")
    lines = [
        f"embedder {results['embedder']}; {results['texts_embedded']} texts embedded in {results['embed_seconds']}s; "
        f"guard {results['guard']}",
    ]
    if m:
        lines.append(
            f"machine: {m['system']}, {m['nproc']} usable CPUs, load {m['load_avg_1m_at_start']} at start"
        )
    if results.get("judge_error") is not None:
        lines.append(
            "SIMULATED LLM judge: no LLM runs offline; a CallableVerifier answers from the gold label, wrong on a "
            f"seeded {results['judge_error']:.0%} of the pairs it is asked about"
        )
    lines += [
        "",
        "(a) QQP eval_4k -- NB: MiniLM-family models were trained on Quora duplicates (flatters the embedder)",
        f"{'system':70s} {'mode':9s} {'precision':>9s} {'hit(dup)':>9s} {'FH hard':>8s} {'FH rand':>8s} {'bypass':>7s}",
    ]
    for name, row in results["rows"].items():
        for mode in ("qqp_pairwise", "qqp_shared"):
            m = row[mode]
            lines.append(
                f"{name:70s} {mode[4:]:9s} {m['precision']:9.3f} {m['hit_rate_dups']:9.3f} "
                f"{m['false_hit_hard']:8.3f} {m['false_hit_random']:8.3f} {m['bypassed']:7d}"
            )
    lines += [
        "   goal: precision >= 0.90 with hit rate >= 0.50",
        "",
        "(b) BANKING77 test replay (seeded shuffle; FAQ mode: user-specific bypass off)",
        f"{'system':70s} {'hit rate':>9s} {'wrong/hits':>10s} {'hits':>6s} {'n':>6s}",
    ]
    for name, row in results["rows"].items():
        m = row["banking"]
        lines.append(
            f"{name:70s} {m['hit_rate']:9.3f} {m['wrong_share_of_hits']:10.3f} {m['hits']:6d} {m['n']:6d}"
        )
    lines.append("   goal: >= 0.35 hits with <= 0.03 of hits wrong")
    if "sweep" in results:
        lines += ["", *format_sweep(results["sweep"])]
    return "\n".join(lines)


def _fmt_point(p: dict[str, Any] | None, *fields: tuple[str, str]) -> str:
    if p is None:
        return "never"
    return ", ".join(f"{label} {p[key]:.3f}" for key, label in fields) + f" at threshold {p['threshold']:.2f}"


def format_sweep(sweep: dict[str, Any]) -> list[str]:
    names = list(sweep["systems"])
    systems = [sweep["systems"][n] for n in names]
    lines = [
        "(d) OPERATING POINTS -- " + sweep["note"],
        "    A = " + names[0] + "; B = " + names[1],
        f"    QQP eval_4k pairwise: A = {systems[0]['qqp_config']}; B = {systems[1]['qqp_config']}",
        "    BANKING77 test replay: " + sweep["banking_config"],
        f"{'':6s} | {'QQP eval_4k pairwise':^31s} | {'BANKING77 test replay':^31s}",
        f"{'thresh':>6s} | {'A prec':>7s} {'A hit':>7s} {'B prec':>7s} {'B hit':>7s} | "
        f"{'A hit':>7s} {'A wrong':>7s} {'B hit':>7s} {'B wrong':>7s}",
    ]
    for i, thr in enumerate(sweep["thresholds"]):
        qa, qb = (s["qqp_pairwise"][i] for s in systems)
        ba, bb = (s["banking"][i] for s in systems)
        mark = " <- default threshold" if abs(thr - DEFAULT_THRESHOLD) < 1e-9 else ""
        lines.append(
            f"{thr:6.2f} | {qa['precision']:7.3f} {qa['hit_rate_dups']:7.3f} {qb['precision']:7.3f} "
            f"{qb['hit_rate_dups']:7.3f} | {ba['hit_rate']:7.3f} {ba['wrong_share_of_hits']:7.3f} "
            f"{bb['hit_rate']:7.3f} {bb['wrong_share_of_hits']:7.3f}{mark}"
        )
    lines.append("    (QQP: precision, hit rate on duplicates; BANKING77: hit rate, wrong share of hits)")
    lines.append("  At equal error rate (read off the curve above; eval data, NOT used to pick any default):")
    for name, s in zip(names, systems, strict=True):
        m = s["summary"]
        lines += [
            f"  {name}:",
            f"    QQP  best precision among thresholds with hit(dup) >= {QQP_MIN_HIT:.2f}: "
            + _fmt_point(
                m["qqp_best_precision_at_hit_ge_0.50"],
                ("precision", "precision"),
                ("hit_rate_dups", "hit(dup)"),
            ),
            f"    QQP  hit(dup) where precision first reaches >= {QQP_PRECISION:.2f}: "
            + _fmt_point(
                m["qqp_hit_rate_where_precision_first_ge_0.90"],
                ("hit_rate_dups", "hit(dup)"),
                ("precision", "precision"),
            ),
            f"    BANK best hit rate among thresholds with wrong/hits <= {BANK_MAX_WRONG:.2f}: "
            + _fmt_point(
                m["banking_best_hit_rate_at_wrong_le_0.03"],
                ("hit_rate", "hit rate"),
                ("wrong_share_of_hits", "wrong/hits"),
            ),
            f"    BANK wrong/hits at the highest threshold with hit rate >= {BANK_MIN_HIT:.2f}: "
            + _fmt_point(
                m["banking_wrong_share_at_highest_threshold_with_hit_ge_0.35"],
                ("wrong_share_of_hits", "wrong/hits"),
                ("hit_rate", "hit rate"),
            ),
        ]
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--data", help="data directory (default: $FRUGAL_CHAINS_DATA or ../shared/data)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N rows of each set")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--no-redis", action="store_true", help="skip the redisvl comparison")
    p.add_argument("--seed", type=int, default=0, help="shuffle seed of the BANKING77 replay")
    p.add_argument(
        "--no-sweep", action="store_true", help="skip the operating-points threshold sweep (section d)"
    )
    p.add_argument("--no-verifier", action="store_true", help="skip the rows with a verifier (section e)")
    p.add_argument(
        "--judge-error",
        type=float,
        default=0.05,
        help="share of pairs the SIMULATED LLM judge answers wrongly (seeded by --seed)",
    )
    p.add_argument(
        "--candidate",
        action="append",
        metavar="THRESHOLD[:CUTOFF]",
        help="also measure a guarded cache at this threshold (and pair-model cutoff); repeatable",
    )
    args = p.parse_args(argv)
    if not 0.0 <= args.judge_error <= 1.0:
        p.error(f"--judge-error is a share of pairs in [0, 1], got {args.judge_error}")
    results = run(args)
    print(json.dumps(results, indent=2) if args.json else format_table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
