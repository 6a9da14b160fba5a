"""The verify band and the strict preset: which semantic candidates a verifier is asked about, which it may add
below the threshold or remove above it, which skip it; what strict refuses; the verifier counters."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from frugal_chains import ConfigurationError
from frugal_chains.cache import AnswerCache, CacheRequest, CacheStats, CallableVerifier
from frugal_chains.cache.core import VERIFY_ALL
from frugal_chains.cache.guard import DEFAULT_THRESHOLD
from frugal_chains.testing import HashEmbeddings

STORED = "How do I reset the password?"
ASKED = "How can I reset the password?"


def q(text: str) -> CacheRequest:
    return CacheRequest.from_prompt(text)


def similarity(stored: str = STORED, asked: str = ASKED) -> float:
    """The cosine similarity the cache sees for the pair (the fake embedder is deterministic)."""
    probe = AnswerCache(embedder=HashEmbeddings(), guard=False, threshold=0.01, bypass=False)
    probe.update(q(stored), "x")
    hit = probe.lookup(q(asked))
    assert hit is not None and hit.tier == "semantic"
    return hit.similarity


class Recorder:
    """A verifier that says ``answer`` and records each question it was asked, sync and async apart."""

    def __init__(self, answer: bool) -> None:
        self.answer = answer
        self.sync: list[float] = []
        self.asynced: list[float] = []

    def verify(self, query: str, cached: str, similarity: float) -> bool:
        self.sync.append(similarity)
        return self.answer

    async def averify(self, query: str, cached: str, similarity: float) -> bool:
        await asyncio.sleep(0)
        self.asynced.append(similarity)
        return self.answer

    def calls(self, is_async: bool) -> list[float]:
        return self.asynced if is_async else self.sync


def lookup(cache: AnswerCache, text: str, is_async: bool) -> Any:
    return asyncio.run(cache.alookup(q(text))) if is_async else cache.lookup(q(text))


ASYNC = pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])


def test_default_band_with_a_verifier_reaches_below_the_threshold_and_verifies_every_hit() -> None:
    cache = AnswerCache(embedder=HashEmbeddings(), threshold=0.8, verifier=Recorder(True))
    assert cache.verify_band == pytest.approx((0.7, VERIFY_ALL))
    assert AnswerCache(embedder=HashEmbeddings()).verify_band is None
    strict = AnswerCache(embedder=HashEmbeddings(), verifier=Recorder(True), preset="strict")
    assert strict.verify_band == (DEFAULT_THRESHOLD, VERIFY_ALL)


@ASYNC
@pytest.mark.parametrize("says", [True, False])
def test_a_candidate_below_the_threshold_is_served_only_on_the_verifiers_yes(
    is_async: bool, says: bool
) -> None:
    s = similarity()
    verifier = Recorder(says)
    cache = AnswerCache(embedder=HashEmbeddings(), guard=False, threshold=s + 0.05, verifier=verifier)
    cache.update(q(STORED), "Settings > Security")
    hit = lookup(cache, ASKED, is_async)
    assert verifier.calls(is_async) == [pytest.approx(s)]
    stats = cache.stats
    assert stats.verifier_calls == 1
    if says:
        assert hit is not None and hit.tier == "semantic" and hit.similarity < cache.threshold
        assert (stats.hits_semantic, stats.verifier_added, stats.verifier_rejections) == (1, 1, 0)
    else:
        assert hit is None
        assert (stats.misses, stats.verifier_added, stats.verifier_rejections) == (1, 0, 1)
        assert stats.guard_rejections == 0  # below the threshold: not a guard rejection


def test_without_a_verifier_a_candidate_below_the_threshold_never_hits() -> None:
    s = similarity()
    cache = AnswerCache(embedder=HashEmbeddings(), guard=False, threshold=s + 0.05)
    cache.update(q(STORED), "Settings > Security")
    assert cache.lookup(q(ASKED)) is None


@ASYNC
def test_a_candidate_above_the_threshold_is_removed_by_the_verifiers_no(is_async: bool) -> None:
    s = similarity()
    verifier = Recorder(False)
    cache = AnswerCache(embedder=HashEmbeddings(), guard=False, threshold=s - 0.05, verifier=verifier)
    cache.update(q(STORED), "Settings > Security")
    assert lookup(cache, ASKED, is_async) is None
    stats = cache.stats
    assert len(verifier.calls(is_async)) == 1
    assert (stats.verifier_calls, stats.verifier_rejections, stats.guard_rejections) == (1, 1, 1)


@ASYNC
def test_a_candidate_at_or_above_the_bands_top_skips_the_verifier(is_async: bool) -> None:
    s = similarity()
    verifier = Recorder(False)  # it would say no: it is never asked
    cache = AnswerCache(
        embedder=HashEmbeddings(),
        guard=False,
        threshold=s - 0.05,
        verifier=verifier,
        verify_band=(s - 0.1, s),
    )
    cache.update(q(STORED), "Settings > Security")
    hit = lookup(cache, ASKED, is_async)
    assert hit is not None and hit.tier == "semantic"
    assert verifier.sync == [] and verifier.asynced == []
    assert cache.stats.verifier_calls == 0


def test_a_candidate_below_the_bands_bottom_is_never_served() -> None:
    s = similarity()
    verifier = Recorder(True)
    cache = AnswerCache(
        embedder=HashEmbeddings(),
        guard=False,
        threshold=s - 0.05,
        verifier=verifier,
        verify_band=(s + 0.01, 1.01),
    )
    cache.update(q(STORED), "Settings > Security")
    assert cache.lookup(q(ASKED)) is None
    assert verifier.sync == []


@ASYNC
def test_exact_hits_are_never_verified(is_async: bool) -> None:
    verifier = Recorder(False)
    cache = AnswerCache(embedder=HashEmbeddings(), verifier=verifier, preset="strict")
    cache.update(q(STORED), "Settings > Security")
    hit = lookup(cache, "  how do i RESET the password ", is_async)
    assert hit is not None and hit.tier == "exact"
    assert cache.stats.verifier_calls == 0


@ASYNC
def test_a_failing_verifier_is_a_miss_and_an_error(is_async: bool) -> None:
    def boom(query: str, cached: str, similarity: float) -> bool:
        raise RuntimeError("judge down")

    async def aboom(query: str, cached: str, similarity: float) -> bool:
        raise RuntimeError("judge down")

    cache = AnswerCache(embedder=HashEmbeddings(), threshold=0.5, verifier=CallableVerifier(boom, aboom))
    cache.update(q(STORED), "Settings > Security")
    assert lookup(cache, ASKED, is_async) is None
    stats = cache.stats
    assert (stats.errors, stats.misses, stats.verifier_calls, stats.verifier_rejections) == (1, 1, 1, 0)


@pytest.mark.parametrize(
    "band",
    [
        (0.5,),
        (0.9, 0.8),
        (-0.1, 0.5),
        (0.5, 1.2),
        ("a", 1.0),
        (True, 1.0),
        "0.5,0.9",
        0.5,
        (0.5, float("nan")),
    ],
)
def test_a_bad_verify_band_names_the_field(band: Any) -> None:
    with pytest.raises(ConfigurationError) as e:
        AnswerCache(embedder=HashEmbeddings(), verifier=Recorder(True), verify_band=band)
    assert e.value.field == "verify_band"


def test_a_verify_band_needs_a_verifier() -> None:
    with pytest.raises(ConfigurationError, match="verifier=") as e:
        AnswerCache(embedder=HashEmbeddings(), verify_band=(0.7, 1.01))
    assert e.value.field == "verify_band"


# -- strict -------------------------------------------------------------------------------------------------------
def test_strict_without_a_verifier_uses_the_shipped_cross_encoder() -> None:
    from frugal_chains.cache.guard import CrossEncoderVerifier, default_verifier

    cache = AnswerCache(embedder=HashEmbeddings(), preset="strict")
    assert isinstance(cache.verifier, CrossEncoderVerifier)
    assert cache.verifier is default_verifier()  # one model per process


def test_strict_without_the_embeddings_extra_asks_for_a_verifier(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a)
    )
    with pytest.raises(ConfigurationError, match=r"onnxruntime.*verifier=.*semantic=False") as e:
        AnswerCache(embedder=HashEmbeddings(), preset="strict")
    assert e.value.field == "verifier"


def test_strict_with_exact_hits_only_needs_no_verifier() -> None:
    cache = AnswerCache(semantic=False, preset="strict")
    cache.update(q(STORED), "Settings > Security")
    hit = cache.lookup(q("how do i reset the password"))
    assert hit is not None and hit.tier == "exact"
    assert cache.lookup(q(ASKED)) is None


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"guard": False}, "guard"),
        ({"bypass": False}, "bypass"),
        ({"verify_band": (0.7, 0.95)}, "verify_band"),
    ],
)
def test_strict_refuses_what_would_loosen_it(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigurationError) as e:
        AnswerCache(embedder=HashEmbeddings(), preset="strict", verifier=Recorder(True), **kwargs)
    assert e.value.field == field


def test_an_unknown_preset_names_the_field() -> None:
    with pytest.raises(ConfigurationError) as e:
        AnswerCache(embedder=HashEmbeddings(), preset="lenient")  # type: ignore[arg-type]
    assert e.value.field == "preset"


@ASYNC
@pytest.mark.parametrize("says", [True, False])
def test_strict_serves_a_semantic_hit_only_with_the_verifiers_yes(is_async: bool, says: bool) -> None:
    stored, asked = "How long is the refund window?", "How long is the refund window please?"
    verifier = Recorder(says)
    cache = AnswerCache(embedder=HashEmbeddings(), preset="strict", verifier=verifier)
    cache.update(q(stored), "30 days.")
    hit = lookup(cache, asked, is_async)
    assert len(verifier.calls(is_async)) == 1
    assert verifier.calls(is_async)[0] >= cache.threshold  # a hit the guard alone would have served
    assert (hit is not None and hit.tier == "semantic") is says


ADVERSARIAL = [
    (
        "What is the maximum daily dose of paracetamol for adults?",
        "What is the maximum daily dose of paracetamol for children?",
    ),
    ("How do I sort a list ascending in Python?", "How do I sort a list descending in Python?"),
    ("What taxes does the buyer pay on a house sale?", "What taxes does the seller pay on a house sale?"),
    ("Which is the largest planet?", "Which is the smallest planet?"),
    ("Is the free tier limited to three projects?", "Is the paid tier limited to three projects?"),
    ("Can I return items bought online?", "Can I return items bought in store?"),
]


@ASYNC
def test_adversarial_pairs_never_hit_under_strict_with_a_verifier_that_says_no(is_async: bool) -> None:
    verifier = Recorder(False)
    # a low threshold so that every pair reaches the verifier unless the guard stops it first
    cache = AnswerCache(embedder=HashEmbeddings(), preset="strict", verifier=verifier, threshold=0.3)
    for stored, _ in ADVERSARIAL:
        cache.update(q(stored), f"answer to: {stored}")
    for _, asked in ADVERSARIAL:
        assert lookup(cache, asked, is_async) is None, asked
    assert cache.stats.hits == 0
    # every pair the guard alone serves (the default cache, same threshold) was stopped by the verifier
    guard_only = AnswerCache(embedder=HashEmbeddings(), threshold=0.3)
    for stored, _ in ADVERSARIAL:
        guard_only.update(q(stored), f"answer to: {stored}")
    served = sum(guard_only.lookup(q(asked)) is not None for _, asked in ADVERSARIAL)
    assert cache.stats.verifier_calls >= served


# -- the counters ---------------------------------------------------------------------------------------------------
def test_stats_round_trip_and_an_older_dict_reads_with_zero_verifier_counters() -> None:
    stats = CacheStats(hits_semantic=2, misses=1, verifier_calls=3, verifier_rejections=1, verifier_added=1)
    data = stats.to_dict()
    assert (data["verifier_calls"], data["verifier_rejections"], data["verifier_added"]) == (3, 1, 1)
    assert CacheStats.from_dict(data) == stats
    old = {k: v for k, v in data.items() if not k.startswith("verifier_")}
    assert CacheStats.from_dict(old) == CacheStats(hits_semantic=2, misses=1)
