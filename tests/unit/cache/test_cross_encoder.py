"""The shipped cross-encoder verifier: integrity, agreement with the export, behaviour on known pairs, threads,
async, and its use inside AnswerCache."""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from frugal_chains.cache import AnswerCache, CacheRequest
from frugal_chains.cache.guard import CrossEncoderVerifier, Verifier, default_verifier
from frugal_chains.cache.guard.cross_encoder import (
    DEFAULT_VERIFIER_CUTOFF,
    VERIFIER_MODEL_SHA256,
    _packaged_model,
)
from frugal_chains.embeddings import EmbedderIntegrityError
from frugal_chains.embeddings.integrity import sha256_file
from frugal_chains.errors import ConfigurationError
from frugal_chains.testing import HashEmbeddings

EXPECTED = json.loads((Path(__file__).parent / "verifier_expected_logits.json").read_text(encoding="utf-8"))


def _logit(p: float) -> float:
    return math.log(p) - math.log1p(-p)


@pytest.fixture(scope="module")
def verifier() -> CrossEncoderVerifier:
    return CrossEncoderVerifier(cache_size=0)


def test_packaged_model_has_the_pinned_sha256() -> None:
    assert sha256_file(_packaged_model()) == VERIFIER_MODEL_SHA256


def test_a_tampered_model_copy_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "verifier.onnx"
    shutil.copyfile(_packaged_model(), bad)
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    v = CrossEncoderVerifier(model_path=bad)
    with pytest.raises(EmbedderIntegrityError, match="Reinstall frugal-chains") as info:
        v.score("How do I reset my password?", "I forgot my password")
    assert info.value.path == str(bad)
    assert info.value.expected == VERIFIER_MODEL_SHA256
    # an identical copy loads
    good = tmp_path / "copy.onnx"
    shutil.copyfile(_packaged_model(), good)
    assert 0.0 <= CrossEncoderVerifier(model_path=good).score("a", "b") <= 1.0


def test_logits_agree_with_those_recorded_at_export(verifier: CrossEncoderVerifier) -> None:
    assert len(EXPECTED) >= 20
    for row in EXPECTED:
        got = _logit(verifier.score(row["query"], row["cached"]))
        assert got == pytest.approx(row["logit"], abs=1e-3), row["query"]
    batched = verifier.score_many([(r["query"], r["cached"]) for r in EXPECTED])
    for row, p in zip(EXPECTED, batched, strict=True):
        assert _logit(p) == pytest.approx(row["logit"], abs=1e-3), row["query"]


DUPLICATES = [
    ("What are the benefits of meditation?", "What are the advantages of meditation?"),
    ("How can I cancel my subscription?", "How do I cancel my subscription?"),
    ("How can I reset my password?", "How do I reset my password?"),
]
NON_DUPLICATES = [
    ("How do I reset my password?", "What is the capital of France?"),
    ("Why is the sky blue?", "How many calories are in a banana?"),
    ("How do I cancel my subscription?", "What is the best laptop for programming?"),
]


def test_obvious_duplicates_score_high_and_unrelated_questions_low(verifier: CrossEncoderVerifier) -> None:
    # the model's probabilities top out near 0.93 (the default cutoff): duplicates score high, and only the
    # closest paraphrases pass the default cutoff
    for q, c in DUPLICATES:
        assert verifier.score(q, c) > 0.85, (q, c)
    assert verifier.verify(*DUPLICATES[0], 0.9)
    assert CrossEncoderVerifier(cutoff=0.85).verify(*DUPLICATES[1], 0.9)
    for q, c in NON_DUPLICATES:
        assert verifier.score(q, c) < 0.1, (q, c)
        assert not verifier.verify(q, c, 0.9)


# What the model does on the hit guard's adversarial look-alikes, recorded (not tuned to). None passes the
# default cutoff, but only the entity swap scores low: enable/disable 2FA scores about 0.90, adults/children about
# 0.75, ascending/descending about 0.60. The guard's rules, which run before the verifier, must catch those.
ADVERSARIAL = [
    ("How do I enable 2FA?", "How do I disable 2FA?", 0.85),
    (
        "What is the maximum daily dose of paracetamol for adults?",
        "What is the maximum daily dose of paracetamol for children?",
        0.7,
    ),
    ("How do I sort a list in ascending order?", "How do I sort a list in descending order?", 0.5),
    ("Who is the CEO of Apple?", "Who is the CEO of Google?", 0.0),
]


@pytest.mark.parametrize(("query", "cached", "above"), ADVERSARIAL)
def test_adversarial_pairs(verifier: CrossEncoderVerifier, query: str, cached: str, above: float) -> None:
    score = verifier.score(query, cached)
    assert not verifier.verify(query, cached, 0.93), score
    assert above <= score < DEFAULT_VERIFIER_CUTOFF


def test_concurrent_scores_equal_sequential_ones() -> None:
    v = CrossEncoderVerifier(cache_size=0, threads=1)
    pairs = [(r["query"], r["cached"]) for r in EXPECTED] * 3
    expected = [v.score(q, c) for q, c in pairs]
    fresh = CrossEncoderVerifier(cache_size=0, threads=2)  # first use races on the lazy load too
    barrier = threading.Barrier(8)

    def one(i: int) -> float:
        if i < 8:
            barrier.wait()
        return fresh.score(*pairs[i])

    with ThreadPoolExecutor(max_workers=8) as pool:
        got = list(pool.map(one, range(len(pairs))))
    assert got == pytest.approx(expected, abs=1e-5)


async def test_averify_runs_the_model_in_a_worker_thread() -> None:
    v = CrossEncoderVerifier(cache_size=16)
    loop_thread = threading.get_ident()
    threads: list[int] = []
    real = v.score

    def spy(query: str, cached: str) -> float:
        threads.append(threading.get_ident())
        return real(query, cached)

    v.score = spy  # type: ignore[method-assign]
    pairs = [DUPLICATES[0], ("How do I enable 2FA?", "How do I disable 2FA?")]
    got = await asyncio.gather(*(v.averify(q, c, 0.9) for q, c in pairs))
    assert got == [True, False]
    assert threads and loop_thread not in threads
    assert await v.ascore(*pairs[0]) == pytest.approx(real(*pairs[0]))
    assert isinstance(v, Verifier)


def test_scores_are_cached_by_pair() -> None:
    v = CrossEncoderVerifier(cache_size=4)
    calls: list[int] = []
    real = v._logits

    def counting(pairs: list[tuple[str, str]]) -> list[float]:
        calls.append(len(pairs))
        return real(pairs)

    v._logits = counting  # type: ignore[method-assign]
    first = v.score_many([DUPLICATES[0], DUPLICATES[0], DUPLICATES[1]])
    assert calls == [2]
    assert first[0] == first[1]
    assert v.score(*DUPLICATES[1]) == first[2]
    assert calls == [2]
    v.clear_cache()
    v.score(*DUPLICATES[1])
    assert calls == [2, 1]


def test_bad_arguments_name_the_field() -> None:
    for kwargs, field in (
        ({"cutoff": 1.5}, "cutoff"),
        ({"cutoff": True}, "cutoff"),
        ({"threads": 0}, "threads"),
        ({"cache_size": -1}, "cache_size"),
        ({"model_path": "/nonexistent/verifier.onnx"}, "model_path"),
    ):
        with pytest.raises(ConfigurationError) as info:
            CrossEncoderVerifier(**kwargs)  # type: ignore[arg-type]
        assert info.value.field == field
    v = CrossEncoderVerifier()
    for bad in (["not a pair"], "a string", [(None, "x")]):
        with pytest.raises(ConfigurationError, match="pair") as info:
            v.score_many(bad)  # type: ignore[arg-type]
        assert info.value.field == "pairs"


def test_default_verifier_is_shared_with_the_default_cutoff() -> None:
    assert default_verifier() is default_verifier()
    assert default_verifier().cutoff == DEFAULT_VERIFIER_CUTOFF


def test_answer_cache_serves_only_what_the_verifier_accepts() -> None:
    # guard off and a low threshold: the verifier alone decides between the two candidates
    cache = AnswerCache(embedder=HashEmbeddings(), guard=False, threshold=0.05, verifier=default_verifier())
    cache.update(CacheRequest.from_prompt("How do I enable 2FA?"), "Settings > Security > Enable.")
    assert cache.lookup(CacheRequest.from_prompt("How do I disable 2FA?")) is None
    cache.update(CacheRequest.from_prompt("What are the advantages of meditation?"), "Calm, focus.")
    hit = cache.lookup(CacheRequest.from_prompt("What are the benefits of meditation?"))
    assert hit is not None and hit.answer == "Calm, focus."
