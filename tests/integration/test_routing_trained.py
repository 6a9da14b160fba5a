"""The trained scorer on the real default embedder (offline MiniLM int8): it learns easy vs hard from a few
dozen labelled requests, round-trips through JSON, refuses another embedder and decides in a few milliseconds."""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path

import pytest

from frugal_chains import ConfigurationError
from frugal_chains.embeddings import default_embedder
from frugal_chains.routing import LabelledOutcome, TrainedScorer, calibrate
from frugal_chains.testing import HashEmbeddings

EASY_TEMPLATES = [
    "What is the capital of {}?",
    "Hi! Can you tell me what time zone {} is in?",
    "Thanks a lot, that was helpful. What language do they speak in {}?",
    "What currency is used in {}?",
]
HARD_TEMPLATES = [
    "Prove rigorously that the {} problem has no polynomial-time algorithm unless P = NP, with all lemmas.",
    "Design a distributed, fault-tolerant {} service; analyse consistency trade-offs and derive its latency bound.",
    "Write an optimised Python implementation of {} and prove its asymptotic complexity step by step.",
    "Derive the closed form of the integral that arises in {} and justify every step of the proof.",
]
TRAIN_SUBJECTS_EASY = [
    "France",
    "Japan",
    "Brazil",
    "Kenya",
    "Canada",
    "Norway",
    "Chile",
    "Egypt",
    "India",
    "Peru",
]
TEST_SUBJECTS_EASY = ["Italy", "Mexico", "Vietnam", "Ghana", "Portugal"]
TRAIN_SUBJECTS_HARD = [
    "graph colouring",
    "rate limiting",
    "matrix multiplication",
    "consensus",
    "shortest paths",
    "bin packing",
    "Bayesian inference",
    "stream joins",
    "string matching",
    "load balancing",
]
TEST_SUBJECTS_HARD = ["subset sum", "leader election", "fast Fourier transform", "cache eviction", "max flow"]


def prompts(templates: list[str], subjects: list[str]) -> list[str]:
    return [t.format(s) for t in templates for s in subjects]


@pytest.fixture(scope="module")
def scorer() -> TrainedScorer:
    easy = prompts(EASY_TEMPLATES, TRAIN_SUBJECTS_EASY)
    hard = prompts(HARD_TEMPLATES, TRAIN_SUBJECTS_HARD)
    return TrainedScorer.fit(easy + hard, [0] * len(easy) + [1] * len(hard))  # the default embedder


def test_learns_easy_versus_hard_on_held_out_requests(scorer: TrainedScorer) -> None:
    assert scorer.embedder is default_embedder()
    assert scorer.embedder_name == default_embedder().name and scorer.embedder_dim == 384
    easy = scorer.score_many(prompts(EASY_TEMPLATES, TEST_SUBJECTS_EASY))
    hard = scorer.score_many(prompts(HARD_TEMPLATES, TEST_SUBJECTS_HARD))
    accuracy = (sum(v < 0.5 for v in easy) + sum(v >= 0.5 for v in hard)) / (len(easy) + len(hard))
    assert accuracy >= 0.9
    assert statistics.mean(hard) - statistics.mean(easy) > 0.5
    # unseen phrasings, far from the templates
    assert scorer.score("hello there, how are you today?") < scorer.score(
        "Formally verify a lock-free queue and prove linearizability."
    )


def test_async_path_and_multi_turn(scorer: TrainedScorer) -> None:
    text = "Prove that the travelling salesman decision problem is NP-complete."
    assert asyncio.run(scorer.ascore(text)) == pytest.approx(scorer.score(text), abs=1e-6)
    convo = [
        {"role": "user", "content": "What is the capital of Spain?"},
        {"role": "assistant", "content": "Madrid."},
        {"role": "user", "content": "And of Austria?"},
    ]
    assert scorer.score(convo) < 0.5


def test_round_trip_and_embedder_check(tmp_path: Path, scorer: TrainedScorer) -> None:
    path = tmp_path / "scorer.json"
    scorer.save(path)
    assert path.stat().st_size < 100_000
    loaded = TrainedScorer.load(path)  # default embedder again
    texts = prompts(EASY_TEMPLATES[:1], TEST_SUBJECTS_EASY) + prompts(HARD_TEMPLATES[:1], TEST_SUBJECTS_HARD)
    assert loaded.score_many(texts) == scorer.score_many(texts)
    with pytest.raises(ConfigurationError) as e:
        TrainedScorer.load(path, embedder=HashEmbeddings(dim=384))
    assert e.value.field == "embedder"


def test_decision_latency_including_the_embedding(scorer: TrainedScorer) -> None:
    # distinct texts, so every call embeds (the embedder's LRU cache would otherwise answer)
    texts = [f"Explain how to implement a B-tree deletion, case {i}, with an example." for i in range(30)]
    scorer.score("warm up")
    times = []
    for t in texts:
        start = time.perf_counter()
        scorer.score(t)
        times.append(time.perf_counter() - start)
    # The goal is < 10 ms on an idle CPU (measured in docs/benchmarks.md); this guards against regressions on a
    # shared test machine.
    assert statistics.median(times) < 0.05


def test_calibrate_on_the_trained_scores(scorer: TrainedScorer) -> None:
    easy = prompts(EASY_TEMPLATES, TEST_SUBJECTS_EASY)
    hard = prompts(HARD_TEMPLATES, TEST_SUBJECTS_HARD)
    outcomes = [LabelledOutcome(messages=t, quality=(1.0, 1.0), cost_usd=(0.01, 0.2)) for t in easy]
    outcomes += [LabelledOutcome(messages=t, quality=(0.0, 1.0), cost_usd=(0.01, 0.2)) for t in hard]
    cal = calibrate(outcomes, scorer=scorer, target_quality=0.95)
    assert cal.met and cal.quality_share >= 0.95
    assert cal.strong_share <= 0.6  # about the 50% that truly need the strong tier
