"""IvfPartition: exact below the size threshold, high recall above it, exact similarities, consistent deletes."""

from __future__ import annotations

import time

import numpy as np
import numpy.typing as npt
import pytest

from frugal_chains.cache import CacheEntry, EmbeddedIndex
from frugal_chains.cache import embedded as embedded_mod
from frugal_chains.cache._ann import IvfPartition, train_centroids

Matrix = npt.NDArray[np.float32]


def unit(x: npt.NDArray[np.float64] | Matrix) -> Matrix:
    x = np.asarray(x, dtype=np.float32)
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def clustered(n: int, dim: int, clusters: int, spread: float, seed: int) -> Matrix:
    """Unit vectors around ``clusters`` random unit centres (gaussian noise of norm ~``spread``)."""
    rng = np.random.default_rng(seed)
    centres = unit(rng.standard_normal((clusters, dim)))
    noise = rng.standard_normal((n, dim)) * (spread / np.sqrt(dim))
    return unit(centres[rng.integers(0, clusters, n)] + noise)


def brute(vectors: dict[str, Matrix], q: Matrix, k: int, min_similarity: float) -> list[tuple[str, float]]:
    ids = list(vectors)
    sims = np.stack([vectors[i] for i in ids]) @ q
    order = np.argsort(-sims, kind="stable")[:k]
    return [(ids[j], float(sims[j])) for j in order if sims[j] >= min_similarity]


def check_invariants(part: IvfPartition) -> None:
    assert len(part.ids) == len(part.row) == len(set(part.ids))
    assert all(part.ids[r] == i for i, r in part.row.items())
    if part.approximate:
        assert sorted(part.loc) == sorted(part.ids)
        assert sum(len(m) for m in part.list_ids) == len(part.ids)
        for entry_id, (li, pos) in part.loc.items():
            assert part.list_ids[li][pos] == entry_id


# -- exact mode --------------------------------------------------------------------------------------------------
def test_below_the_threshold_it_matches_the_brute_force_partition_exactly() -> None:
    rng = np.random.default_rng(7)
    dim = 24
    ivf = IvfPartition(dim, exact_below=10_000)
    ref = embedded_mod._Partition(dim)
    x = unit(rng.standard_normal((600, dim)))
    for i in range(600):
        ivf.add(f"e{i}", x[i])
        ref.add(f"e{i}", x[i])
        if i % 7 == 3:  # interleaved deletes (swap-remove) and replacements
            ivf.remove(f"e{i - 2}")
            ref.remove(f"e{i - 2}")
        if i % 11 == 5:
            v = unit(rng.standard_normal(dim))
            ivf.add(f"e{i - 1}", v)
            ref.add(f"e{i - 1}", v)
    assert not ivf.approximate
    assert ivf.ids == ref.ids and ivf.row == ref.row
    for q in unit(rng.standard_normal((40, dim))):
        for k, min_sim in ((1, -1.0), (5, 0.0), (50, 0.2), (10_000, -1.0)):
            assert ivf.top(q, k, min_sim) == ref.top(q, k, min_sim)


def test_exact_mode_above_the_blas_cutoff_still_matches_brute_force() -> None:
    """Beyond 1,024 rows the product runs in einsum: same ids and order, similarities equal to rounding."""
    rng = np.random.default_rng(17)
    dim = 24
    ivf = IvfPartition(dim, exact_below=10_000)
    x = unit(rng.standard_normal((3000, dim)))
    vectors = {}
    for i, v in enumerate(x):
        ivf.add(f"e{i}", v)
        vectors[f"e{i}"] = v
    assert not ivf.approximate
    for q in unit(rng.standard_normal((30, dim))):
        got, want = ivf.top(q, 10, 0.1), brute(vectors, q, 10, 0.1)
        assert [i for i, _ in got] == [i for i, _ in want]
        assert [s for _, s in got] == pytest.approx([s for _, s in want], abs=1e-5)


def test_empty_and_missing() -> None:
    part = IvfPartition(4)
    assert part.top(unit(np.ones(4)), 3, 0.0) == []
    part.remove("nobody")
    assert part.ids == [] and part.nprobe == 0 and part.n_lists == 0


# -- approximate mode --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def big() -> tuple[IvfPartition, dict[str, Matrix], Matrix]:
    """6,000 vectors in 80 overlapping clusters (dim 32) above a 2,000 threshold, and 300 queries near the data."""
    dim = 32
    x = clustered(6000, dim, clusters=80, spread=2.0, seed=1)
    part = IvfPartition(dim, exact_below=2000)
    vectors = {}
    for i, v in enumerate(x):
        part.add(f"e{i}", v)
        vectors[f"e{i}"] = v
    rng = np.random.default_rng(2)
    queries = unit(x[rng.integers(0, len(x), 300)] + rng.standard_normal((300, dim)) * (0.5 / np.sqrt(dim)))
    return part, vectors, queries


def test_above_the_threshold_it_switches_to_the_inverted_file_with_high_recall(
    big: tuple[IvfPartition, dict[str, Matrix], Matrix],
) -> None:
    part, vectors, queries = big
    assert part.approximate
    assert part.n_lists == round(np.sqrt(4000))  # last trained when 2,000 more vectors had been added
    assert 1 <= part.nprobe < part.n_lists  # it really probes a subset
    truth = [brute(vectors, q, 1, -1.0)[0][0] for q in queries]
    found = sum(part.top(q, 1, -1.0)[0][0] == t for q, t in zip(queries, truth, strict=True))
    assert found / len(queries) >= 0.95
    check_invariants(part)
    # the data is not trivial: probing a single list misses many true neighbours
    one = IvfPartition(part.dim, exact_below=2000, nprobe=1)
    for entry_id, v in vectors.items():
        one.add(entry_id, v)
    found_one = sum(one.top(q, 1, -1.0)[0][0] == t for q, t in zip(queries, truth, strict=True))
    assert found_one / len(queries) < 0.8


def test_similarities_are_exact_sorted_and_respect_min_similarity(
    big: tuple[IvfPartition, dict[str, Matrix], Matrix],
) -> None:
    part, vectors, queries = big
    seen = 0
    for q in queries[:100]:
        for k, min_sim in ((5, 0.0), (3, 0.9), (20, 0.95)):
            hits = part.top(q, k, min_sim)
            assert len(hits) <= k
            sims = [s for _, s in hits]
            assert sims == sorted(sims, reverse=True)
            assert all(s >= min_sim for s in sims)
            assert len({i for i, _ in hits}) == len(hits)
            for entry_id, s in hits:
                assert s == pytest.approx(float(vectors[entry_id] @ q), abs=1e-5)
            seen += len(hits)
    assert seen > 0
    assert part.top(queries[0], 5, 1.01) == []  # nothing can reach it


def test_removed_ids_are_never_returned_and_lists_stay_consistent() -> None:
    dim = 16
    x = clustered(3000, dim, clusters=30, spread=0.5, seed=3)
    part = IvfPartition(dim, exact_below=1500)
    for i, v in enumerate(x):
        part.add(f"e{i}", v)
    assert part.approximate
    rng = np.random.default_rng(4)
    removed = {f"e{i}" for i in rng.choice(3000, size=1200, replace=False)}
    for entry_id in removed:
        part.remove(entry_id)
        part.remove(entry_id)  # twice: a no-op
    check_invariants(part)
    assert part.approximate and len(part.ids) == 1800
    for i in rng.choice(3000, size=200, replace=False):
        hits = part.top(x[i], 10, -1.0)
        assert hits and not {h for h, _ in hits} & removed
        if f"e{i}" not in removed:
            assert hits[0] == (f"e{i}", pytest.approx(1.0, abs=1e-5))  # a stored vector finds itself


def test_replacing_a_vector_moves_the_entry() -> None:
    dim = 16
    x = clustered(1200, dim, clusters=10, spread=0.3, seed=5)
    part = IvfPartition(dim, exact_below=1000)
    for i, v in enumerate(x):
        part.add(f"e{i}", v)
    assert part.approximate
    far = unit(-x[0])
    part.add("e0", far)
    check_invariants(part)
    assert len(part.ids) == 1200
    assert part.top(far, 1, 0.0)[0][0] == "e0"
    assert "e0" not in [i for i, _ in part.top(x[0], 50, 0.99)]


def test_retrains_when_the_partition_doubles_and_when_its_content_turns_over() -> None:
    dim = 8
    x = clustered(5000, dim, clusters=20, spread=0.5, seed=6)
    part = IvfPartition(dim, exact_below=500)
    for i in range(499):
        part.add(f"e{i}", x[i])
    assert not part.approximate and part.trainings == 0
    part.add("e499", x[499])
    assert part.approximate and part.trainings == 1 and part.n_lists == round(np.sqrt(500))
    for i in range(500, 999):
        part.add(f"e{i}", x[i])
    assert part.trainings == 1
    part.add("e999", x[999])  # doubled since the last training
    assert part.trainings == 2 and part.n_lists == round(np.sqrt(1000))
    check_invariants(part)
    # LRU-style churn: the size stays at 1,000 but the content is replaced -> retrained once 1,000 are new
    for i in range(1000, 2000):
        part.remove(f"e{i - 1000}")
        part.add(f"e{i}", x[i])
    assert part.trainings == 3 and len(part.ids) == 1000
    check_invariants(part)


def test_shrinking_below_half_the_threshold_goes_back_to_exact_search() -> None:
    dim = 8
    x = clustered(1000, dim, clusters=10, spread=0.5, seed=8)
    part = IvfPartition(dim, exact_below=800)
    for i, v in enumerate(x):
        part.add(f"e{i}", v)
    assert part.approximate
    for i in range(601):
        part.remove(f"e{i}")
    assert not part.approximate and len(part.ids) == 399
    check_invariants(part)
    vectors = {f"e{i}": x[i] for i in range(601, 1000)}
    for q in x[:20]:
        assert [i for i, _ in part.top(q, 5, -1.0)] == [i for i, _ in brute(vectors, q, 5, -1.0)]


def test_training_is_deterministic() -> None:
    dim = 16
    x = clustered(1500, dim, clusters=12, spread=0.6, seed=9)
    a, b = IvfPartition(dim, exact_below=1000), IvfPartition(dim, exact_below=1000)
    for i, v in enumerate(x):
        a.add(f"e{i}", v)
        b.add(f"e{i}", v)
    assert a.centroids is not None and b.centroids is not None
    np.testing.assert_array_equal(a.centroids, b.centroids)
    for q in x[:30]:
        assert a.top(q, 5, 0.0) == b.top(q, 5, 0.0)


def test_nprobe_override_probes_every_list_when_large() -> None:
    dim = 16
    x = clustered(1200, dim, clusters=12, spread=1.0, seed=10)
    part = IvfPartition(dim, exact_below=1000, nprobe=10_000)
    vectors = {}
    for i, v in enumerate(x):
        part.add(f"e{i}", v)
        vectors[f"e{i}"] = v
    assert part.nprobe == part.n_lists
    rng = np.random.default_rng(11)
    for q in unit(rng.standard_normal((20, dim))):  # probing every list is exact
        assert [i for i, _ in part.top(q, 5, -1.0)] == [i for i, _ in brute(vectors, q, 5, -1.0)]


def test_train_centroids_covers_every_cluster_and_fills_empty_ones() -> None:
    dim = 16
    x = clustered(2000, dim, clusters=8, spread=0.2, seed=12)
    c = train_centroids(x, 8, iterations=10, seed=0)
    assert c.shape == (8, dim)
    np.testing.assert_allclose(np.linalg.norm(c, axis=1), 1.0, atol=1e-5)
    # duplicate rows: more centroids than distinct points, none left as a NaN
    dup = np.repeat(x[:3], 50, axis=0)
    c2 = train_centroids(dup, 10, seed=0)
    assert np.all(np.isfinite(c2))


# -- inside the embedded index -----------------------------------------------------------------------------------
def test_works_as_the_embedded_index_partition(monkeypatch: pytest.MonkeyPatch) -> None:
    """Swapped into EmbeddedIndex (as the lead will do), with a small threshold so the IVF path runs."""
    monkeypatch.setattr(embedded_mod, "_Partition", lambda dim: IvfPartition(dim, exact_below=300))
    dim = 16
    x = clustered(700, dim, clusters=10, spread=0.5, seed=13)
    index = EmbeddedIndex()
    for i, v in enumerate(x):
        index.add(
            CacheEntry(
                partition="p", exact_key=f"k{i}", question=f"q{i}", normalized=f"q{i}", answer="a", vector=v
            )
        )
    part = index._parts["p"]
    assert isinstance(part, IvfPartition) and part.approximate
    now = time.time()
    hits = index.search("p", x[5], k=3, min_similarity=0.9, now=now)
    assert hits[0].entry.exact_key == "k5" and hits[0].similarity == pytest.approx(1.0, abs=1e-5)
    assert all(h.similarity >= 0.9 for h in hits)
    index.delete([hits[0].entry.id])
    assert all(h.entry.exact_key != "k5" for h in index.search("p", x[5], k=10, min_similarity=0.0, now=now))
    check_invariants(part)
    index.close()
