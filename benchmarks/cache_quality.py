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

Nothing here was used for tuning: ``DEFAULT_THRESHOLD`` and the guard model were fitted on QQP pairs
outside eval_4k and on BANKING77 *train*.

Usage::

    python benchmarks/cache_quality.py [--data DIR] [--limit N] [--json] [--no-redis] [--seed 0]
        [--candidate THRESHOLD[:CUTOFF] ...]
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

from frugal_chains.cache import AnswerCache, CacheRequest, cache_scope  # noqa: E402
from frugal_chains.cache.guard import DEFAULT_THRESHOLD, BypassPolicy, HitGuard  # noqa: E402
from frugal_chains.cache.normalize import normalize  # noqa: E402
from frugal_chains.embeddings import MiniLMEmbedder  # noqa: E402

REDISVL_DEFAULT_DISTANCE = 0.1


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
    embedder: Any, *, guarded: bool, faq: bool, threshold: float, cutoff: float | None = None
) -> Callable[[], AnswerCache]:
    def make() -> AnswerCache:
        if guarded:
            bypass = BypassPolicy(user_specific=False).reason if faq else None
            guard = HitGuard(model_cutoff=cutoff)
            return AnswerCache(embedder=embedder, threshold=threshold, guard=guard, bypass=bypass)
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
    cache = make()
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
    configs: dict[str, dict[str, Any]] = {
        f"frugal-chains default (threshold {thr:.2f} + HitGuard)": dict(guarded=True, threshold=thr),
        f"frugal-chains threshold only ({thr:.2f})": dict(guarded=False, threshold=thr),
    }
    for cand in args.candidate or []:
        c_thr, _, c_cut = cand.partition(":")
        cut = float(c_cut) if c_cut else None
        label = f"frugal-chains candidate (threshold {float(c_thr):.2f} + HitGuard cutoff {cut})"
        configs[label] = dict(guarded=True, threshold=float(c_thr), cutoff=cut)
    results: dict[str, Any] = {
        "threshold": thr,
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
    return results


def format_table(results: dict[str, Any]) -> str:
    lines = [
        f"embedder {results['embedder']}; {results['texts_embedded']} texts embedded in {results['embed_seconds']}s; "
        f"guard {results['guard']}",
        "",
        "(a) QQP eval_4k -- NB: MiniLM-family models were trained on Quora duplicates (flatters the embedder)",
        f"{'system':66s} {'mode':9s} {'precision':>9s} {'hit(dup)':>9s} {'FH hard':>8s} {'FH rand':>8s} {'bypass':>7s}",
    ]
    for name, row in results["rows"].items():
        for mode in ("qqp_pairwise", "qqp_shared"):
            m = row[mode]
            lines.append(
                f"{name:66s} {mode[4:]:9s} {m['precision']:9.3f} {m['hit_rate_dups']:9.3f} "
                f"{m['false_hit_hard']:8.3f} {m['false_hit_random']:8.3f} {m['bypassed']:7d}"
            )
    lines += [
        "   goal: precision >= 0.90 with hit rate >= 0.50",
        "",
        "(b) BANKING77 test replay (seeded shuffle; FAQ mode: user-specific bypass off)",
        f"{'system':66s} {'hit rate':>9s} {'wrong/hits':>10s} {'hits':>6s} {'n':>6s}",
    ]
    for name, row in results["rows"].items():
        m = row["banking"]
        lines.append(
            f"{name:66s} {m['hit_rate']:9.3f} {m['wrong_share_of_hits']:10.3f} {m['hits']:6d} {m['n']:6d}"
        )
    lines.append("   goal: >= 0.35 hits with <= 0.03 of hits wrong")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--data", help="data directory (default: $FRUGAL_CHAINS_DATA or ../shared/data)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N rows of each set")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--no-redis", action="store_true", help="skip the redisvl comparison")
    p.add_argument("--seed", type=int, default=0, help="shuffle seed of the BANKING77 replay")
    p.add_argument(
        "--candidate",
        action="append",
        metavar="THRESHOLD[:CUTOFF]",
        help="also measure a guarded cache at this threshold (and pair-model cutoff); repeatable",
    )
    args = p.parse_args(argv)
    results = run(args)
    print(json.dumps(results, indent=2) if args.json else format_table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
