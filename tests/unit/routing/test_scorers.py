"""Pre-call scorers: the heuristic baseline, the trained embedding classifier and the callable hook."""

from __future__ import annotations

import asyncio
import json
import math
import random
import statistics
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from frugal_chains import ConfigurationError, Price
from frugal_chains.routing import (
    CallableScorer,
    Cascade,
    HeuristicScorer,
    RoutingPolicy,
    Scorer,
    TierSpec,
    TrainedScorer,
)
from frugal_chains.testing import HashEmbeddings

TIERS = [
    TierSpec(name="cheap", model="cheap-model", price=Price(input=0.1, output=0.4)),
    TierSpec(name="strong", model="strong-model", price=Price(input=5.0, output=15.0)),
]

HARD = (
    "Write a Python function that solves the system 3x + 2y = 7, x - y = 4 and prove it always terminates. "
    "1. Explain the algorithm step by step. 2. Give its time complexity. 3. Compare it with Gaussian elimination "
    "and discuss the trade-offs. The answer must be valid JSON with exactly three keys."
)


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


# ---------------------------------------------------------------------------------------------------------------
# HeuristicScorer


def test_heuristic_ranks_a_hard_multi_part_prompt_far_above_small_talk() -> None:
    s = HeuristicScorer()
    assert s.score(user("hi, thanks!")) < 0.1
    assert s.score(user(HARD)) > 0.9
    f = s.features(HARD)
    for name in ("code_ask", "math", "math_ask", "reasoning", "multi_part", "constraints"):
        assert f[name] > 0, name
    assert f["easy"] == 0


def test_heuristic_orders_typical_requests() -> None:
    s = HeuristicScorer()
    ladder = [
        "hello!",
        "What is the capital of France?",
        "Explain why the sky is blue.",
        "Here is my code:\n```python\ndef f(x):\n    return x + 1\n```\nWhy does f('a') raise TypeError?",
        HARD,
    ]
    scores = [s.score(user(t)) for t in ladder]
    assert scores == sorted(scores), scores
    # easy asks are discounted
    assert s.features("Translate 'good morning' into Spanish.")["easy"] == pytest.approx(0.9)
    assert s.features("Classify the sentiment of: 'great product'")["easy"] == pytest.approx(0.8)
    assert s.features("Who wrote Hamlet?")["easy"] == pytest.approx(0.7)
    # an essay ask is creative, a stack trace is code
    assert s.features("Write an essay on the causes of the French Revolution")["creative"] == 1.0
    trace = "Traceback (most recent call last):\n  File \"a.py\", line 3\nKeyError: 'x'\nhow do I fix it?"
    assert s.features(trace)["code"] > 0 and s.features(trace)["code_ask"] > 0


def test_heuristic_is_multi_turn_aware() -> None:
    s = HeuristicScorer()
    follow_up = "and what about n = 5?"
    alone = s.score(user(follow_up))
    convo = [
        {"role": "user", "content": "Prove that the sum of the first n odd numbers is n^2, step by step."},
        {"role": "assistant", "content": "By induction: for n = 1 ... " * 20},
        {"role": "user", "content": follow_up},
    ]
    f = s.features(convo)
    assert f["previous_hard"] > 0 and f["depth"] > 0 and f["history"] > 0
    assert s.score(convo) > alone
    # the last user turn is what is scored, not the first
    assert s.features(convo)["length"] == s.features(follow_up)["length"]
    # tool results and tool calls count
    agent = [
        {"role": "user", "content": follow_up},
        {"role": "assistant", "content": "", "tool_calls": [{"id": "1", "function": {"name": "calc"}}]},
        {"role": "tool", "content": "25", "tool_call_id": "1"},
    ]
    assert s.features(agent)["tools"] == 0.5
    assert s.score(agent) > alone


def test_heuristic_weights_and_bias_are_the_model() -> None:
    zero = dict.fromkeys(HeuristicScorer.DEFAULT_WEIGHTS, 0.0)
    assert HeuristicScorer(weights=zero, bias=0.0).score(user(HARD)) == 0.5
    assert HeuristicScorer(weights=zero, bias=1.0).score("x") == pytest.approx(1 / (1 + math.exp(-1)))
    s = HeuristicScorer(weights={"length": 2.0})
    assert s.weights["length"] == 2.0 and s.weights["code"] == HeuristicScorer.DEFAULT_WEIGHTS["code"]
    f = s.features(HARD)
    z = s.bias + sum(s.weights[k] * v for k, v in f.items())
    assert s.score(HARD) == pytest.approx(1 / (1 + math.exp(-z)))
    assert set(f) == set(HeuristicScorer.DEFAULT_WEIGHTS)
    assert all(0.0 <= v <= 1.5 for v in f.values())


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"weights": {"lenght": 1.0}}, "weights"),
        ({"weights": {"length": float("nan")}}, "weights"),
        ({"weights": {"length": "1"}}, "weights"),
        ({"weights": [("length", 1.0)]}, "weights"),
        ({"bias": float("inf")}, "bias"),
    ],
)
def test_heuristic_rejects_bad_configuration(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigurationError) as e:
        HeuristicScorer(**kwargs)
    assert e.value.field == field
    if field == "weights" and "lenght" in str(kwargs):
        assert "length" in str(e.value)  # names the known features


def test_heuristic_inputs_sync_async_and_protocol() -> None:
    s = HeuristicScorer()
    assert isinstance(s, Scorer) and s.name == "heuristic"
    assert s.score("Why is the sky blue?") == s.score(user("Why is the sky blue?"))
    parts = [
        {"role": "user", "content": [{"type": "text", "text": "Why is the sky blue?"}, {"type": "image_url"}]}
    ]
    assert s.score(parts) == s.score("Why is the sky blue?")
    assert asyncio.run(s.ascore(user(HARD))) == s.score(user(HARD))
    assert s.score([]) < 0.2  # no user turn: nothing suggests a hard request
    with pytest.raises(ConfigurationError) as e:
        s.score(42)  # type: ignore[arg-type]
    assert e.value.field == "messages"


def test_heuristic_reads_a_huge_request_on_its_head_and_tail_only() -> None:
    s = HeuristicScorer()
    huge = user(HARD * 300)  # ~100k characters: scanned on its head and tail only
    assert s.features(huge)["length"] == 1.5
    # The middle of the text does not change the score: only a bounded head and tail are read.
    text = HARD * 300
    middle = len(text) // 2
    insert = " Thanks, hi! ok. " * 12
    assert s.score(user(insert)) != s.score(user(HARD))  # the insert does move a short request's score
    altered = text[:middle] + insert + text[middle + len(insert) :]
    assert s.score(user(altered)) == s.score(huge)


def test_heuristic_routes_in_the_engine() -> None:
    engine = Cascade(TIERS, scorer=HeuristicScorer(), policy=RoutingPolicy(thresholds=(0.5,)))
    assert engine.route(user("hi, thanks!")).start == 0
    assert engine.route(user(HARD)).start == 1


# ---------------------------------------------------------------------------------------------------------------
# TrainedScorer

EASY_WORDS = [
    "capital",
    "weather",
    "hello",
    "thanks",
    "city",
    "colour",
    "animal",
    "river",
    "holiday",
    "recipe",
    "song",
    "movie",
]
HARD_WORDS = [
    "theorem",
    "integral",
    "eigenvalue",
    "recursion",
    "complexity",
    "proof",
    "lemma",
    "topology",
    "gradient",
    "compiler",
]
MID_WORDS = ["summarise", "letter", "email", "itinerary", "translate", "paragraph", "review", "outline"]


def synthetic(words: list[str], n: int, rng: random.Random) -> list[str]:
    return [" ".join(rng.sample(words, 4)) + f" please {rng.randint(0, 10_000)}" for _ in range(n)]


@pytest.fixture(scope="module")
def two_class() -> tuple[TrainedScorer, list[str], list[str]]:
    rng = random.Random(7)
    easy, hard = synthetic(EASY_WORDS, 40, rng), synthetic(HARD_WORDS, 40, rng)
    scorer = TrainedScorer.fit(easy + hard, [0] * 40 + [1] * 40, embedder=HashEmbeddings(dim=64))
    return scorer, synthetic(EASY_WORDS, 30, rng), synthetic(HARD_WORDS, 30, rng)


def test_trained_scorer_separates_held_out_clusters(
    two_class: tuple[TrainedScorer, list[str], list[str]],
) -> None:
    scorer, easy, hard = two_class
    assert isinstance(scorer, Scorer) and scorer.name == "trained" and scorer.n_tiers == 2
    e = scorer.score_many(easy)
    h = scorer.score_many(hard)
    assert all(0.0 <= v <= 1.0 for v in e + h)
    accuracy = (sum(v < 0.5 for v in e) + sum(v >= 0.5 for v in h)) / (len(e) + len(h))
    assert accuracy >= 0.95
    assert statistics.mean(h) - statistics.mean(e) > 0.5
    assert scorer.meta["n"] == 80 and scorer.meta["label_counts"] == [40, 40]


def test_trained_scorer_score_score_many_and_ascore_agree(
    two_class: tuple[TrainedScorer, list[str], list[str]],
) -> None:
    scorer, easy, hard = two_class
    texts = easy[:3] + hard[:3]
    many = scorer.score_many(texts, batch_size=2)
    for t, m in zip(texts, many, strict=True):
        assert scorer.score(t) == pytest.approx(m, abs=1e-12)
        assert asyncio.run(scorer.ascore(user(t))) == pytest.approx(m, abs=1e-12)
    assert scorer.score_many([]) == []


def test_score_many_embeds_in_batches_of_distinct_texts() -> None:
    emb = HashEmbeddings(dim=32)
    scorer = TrainedScorer.fit(["hi", "hello", "prove it", "derive it"], [0, 0, 1, 1], embedder=emb)
    emb.calls = 0
    scores = scorer.score_many(["a", "b", "c", "a", "d", "e"], batch_size=2)  # 5 distinct texts
    assert emb.calls == 3
    assert scores[0] == scores[3]


def test_ascore_uses_the_async_embedding_path() -> None:
    class AsyncOnly(HashEmbeddings):
        def __init__(self) -> None:
            super().__init__(dim=32)
            self.async_calls = 0

        async def aembed(self, texts: Sequence[str]) -> Any:
            self.async_calls += 1
            return await super().aembed(texts)

    emb = AsyncOnly()
    scorer = TrainedScorer.fit(["hi", "hello", "prove it", "derive it"], [0, 0, 1, 1], embedder=emb)
    before = emb.calls
    value = asyncio.run(scorer.ascore("prove it"))
    assert emb.async_calls == 1 and emb.calls == before + 1  # aembed (which calls embed once)
    assert value == pytest.approx(scorer.score("prove it"))


def test_three_tiers_ordinal_model() -> None:
    rng = random.Random(3)
    groups = [synthetic(EASY_WORDS, 30, rng), synthetic(MID_WORDS, 30, rng), synthetic(HARD_WORDS, 30, rng)]
    convs = [c for g in groups for c in g]
    labels = [k for k in range(3) for _ in range(30)]
    scorer = TrainedScorer.fit(convs, labels, embedder=HashEmbeddings(dim=64))
    assert scorer.n_tiers == 3 and len(scorer.boundaries) == 2
    held = [synthetic(w, 15, rng) for w in (EASY_WORDS, MID_WORDS, HARD_WORDS)]
    means = [statistics.mean(scorer.score_many(g)) for g in held]
    assert means[0] < 0.3 < means[1] < 0.7 < means[2]
    b = scorer.boundary_scores(held[1][0])
    assert len(b) == 2 and b[0] > 0.5 > b[1]  # above the first boundary, below the second
    assert scorer.score(held[1][0]) == pytest.approx(sum(b) / 2)
    # It drives a three-tier policy: each group starts on its own tier.
    engine = Cascade(
        [TIERS[0], TierSpec(name="mid", model="mid-model", price=Price(input=1, output=2)), TIERS[1]],
        scorer=scorer,
        policy=RoutingPolicy(thresholds=(0.3, 0.7)),
    )
    starts = [statistics.mode(engine.route(user(t)).start for t in g) for g in held]
    assert starts == [0, 1, 2]


def test_unused_top_tier_gets_a_constant_boundary() -> None:
    scorer = TrainedScorer.fit(
        ["hi", "hey", "prove it", "derive it"], [0, 0, 1, 1], n_tiers=3, embedder=HashEmbeddings()
    )
    top = scorer.boundaries[1]
    assert all(w == 0.0 for w in top.weights)
    assert scorer.boundary_scores("anything")[1] == pytest.approx(0.5 / 5)  # (0 + 0.5) / (4 + 1)
    assert scorer.meta["label_counts"] == [2, 2, 0]


def test_trained_scorer_uses_earlier_turns() -> None:
    """The last turn is identical in both classes; only the earlier turns tell them apart."""
    rng = random.Random(11)

    def convo(words: list[str]) -> list[dict[str, Any]]:
        return [
            {"role": "user", "content": synthetic(words, 1, rng)[0]},
            {"role": "assistant", "content": "Sure."},
            {"role": "user", "content": "and the next one?"},
        ]

    easy = [convo(EASY_WORDS) for _ in range(30)]
    hard = [convo(HARD_WORDS) for _ in range(30)]
    scorer = TrainedScorer.fit(easy + hard, [0] * 30 + [1] * 30, embedder=HashEmbeddings(dim=64))
    e = scorer.score_many([convo(EASY_WORDS) for _ in range(10)])
    h = scorer.score_many([convo(HARD_WORDS) for _ in range(10)])
    assert max(e) < 0.5 < min(h)


def test_sample_weight_can_silence_mislabelled_examples() -> None:
    rng = random.Random(5)
    easy, hard = synthetic(EASY_WORDS, 30, rng), synthetic(HARD_WORDS, 30, rng)
    noise_easy, noise_hard = synthetic(EASY_WORDS, 30, rng), synthetic(HARD_WORDS, 30, rng)
    convs = easy + hard + noise_easy + noise_hard
    labels = [0] * 30 + [1] * 30 + [1] * 30 + [0] * 30  # the second half is labelled backwards
    test_easy, test_hard = synthetic(EASY_WORDS, 20, rng), synthetic(HARD_WORDS, 20, rng)
    emb = HashEmbeddings(dim=64)

    def gap(s: TrainedScorer) -> float:
        return statistics.mean(s.score_many(test_hard)) - statistics.mean(s.score_many(test_easy))

    unweighted = TrainedScorer.fit(convs, labels, embedder=emb)
    weighted = TrainedScorer.fit(convs, labels, embedder=emb, sample_weight=[1.0] * 60 + [0.0] * 60)
    assert abs(gap(unweighted)) < 0.2 < gap(weighted)


def test_save_load_round_trip_gives_identical_scores(
    tmp_path: Path, two_class: tuple[TrainedScorer, list[str], list[str]]
) -> None:
    scorer, easy, hard = two_class
    path = tmp_path / "scorer.json"
    scorer.save(path)
    doc = json.loads(path.read_text())
    assert doc["embedder"] == {"name": "fake-hash-64", "dim": 64} and doc["n_tiers"] == 2
    assert len(doc["boundaries"]) == 1 and len(doc["boundaries"][0]["weights"]) == 2 * 64 + 2
    loaded = TrainedScorer.load(path, embedder=HashEmbeddings(dim=64))
    texts = easy + hard + ["", "hi"]
    assert loaded.score_many(texts) == scorer.score_many(texts)
    assert TrainedScorer.from_json(scorer.to_json(), embedder=HashEmbeddings(dim=64)).score(
        easy[0]
    ) == scorer.score(easy[0])
    assert loaded.meta == scorer.meta


def test_loading_with_another_embedder_is_refused(
    two_class: tuple[TrainedScorer, list[str], list[str]],
) -> None:
    scorer, _, _ = two_class
    text = scorer.to_json()

    class Renamed(HashEmbeddings):
        @property
        def name(self) -> str:
            return "other-model"

    class WrongDim(HashEmbeddings):
        @property
        def name(self) -> str:
            return "fake-hash-64"

    for emb in (HashEmbeddings(dim=32), Renamed(dim=64), WrongDim(dim=32)):
        with pytest.raises(ConfigurationError) as e:
            TrainedScorer.from_json(text, embedder=emb)
        assert e.value.field == "embedder"
        assert "fake-hash-64" in str(e.value)


def test_bad_saved_files(tmp_path: Path, two_class: tuple[TrainedScorer, list[str], list[str]]) -> None:
    scorer, _, _ = two_class
    emb = HashEmbeddings(dim=64)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    cases: list[tuple[Any, str]] = [
        (lambda: TrainedScorer.load(bad, embedder=emb), "path"),
        (lambda: TrainedScorer.load(tmp_path / "missing.json", embedder=emb), "path"),
        (lambda: TrainedScorer.from_json("[1, 2]", embedder=emb), "json"),
        (lambda: TrainedScorer.from_json('{"kind": "something else"}', embedder=emb), "json"),
    ]
    doc = json.loads(scorer.to_json())
    doc["boundaries"] = doc["boundaries"] * 2  # 2 boundaries for 2 tiers
    cases.append((lambda: TrainedScorer.from_json(json.dumps(doc), embedder=emb), "json"))
    for fn, field in cases:
        with pytest.raises(ConfigurationError) as e:
            fn()
        assert e.value.field == field


@pytest.mark.parametrize(
    ("conversations", "labels", "kwargs", "field"),
    [
        (["a", "b", "c"], [0, 1], {}, "labels"),
        (["a", "b"], [0, 2], {"n_tiers": 2}, "labels"),
        (["a", "b"], [0, -1], {}, "labels"),
        (["a", "b", "c"], [1, 1, 1], {}, "labels"),
        (["a", "b"], [0, True], {}, "labels"),
        (["a", "b"], [0, 1.0], {}, "labels"),
        (["a", "b"], [0, 1], {"n_tiers": 1}, "n_tiers"),
        (["a", "b"], [0, 1], {"l2": 0.0}, "l2"),
        (["a", "b"], [0, 1], {"l2": "best"}, "l2"),
        (["a", "b"], [0, 1], {"batch_size": 0}, "batch_size"),
        (["a", "b"], [0, 1], {"sample_weight": [1.0]}, "sample_weight"),
        (["a", "b"], [0, 1], {"sample_weight": [1.0, -1.0]}, "sample_weight"),
        (["a", 3], [0, 1], {}, "conversations"),
        (["a", [3]], [0, 1], {}, "conversations"),
        ("ab", [0, 1], {}, "conversations"),
        ([], [], {}, "conversations"),
    ],
)
def test_fit_rejects_bad_input(conversations: Any, labels: Any, kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigurationError) as e:
        TrainedScorer.fit(conversations, labels, embedder=HashEmbeddings(), **kwargs)
    assert e.value.field == field


def test_trained_scorer_is_thread_safe(two_class: tuple[TrainedScorer, list[str], list[str]]) -> None:
    scorer, easy, hard = two_class
    texts = easy + hard
    expected = [scorer.score(t) for t in texts]
    results: dict[int, list[float]] = {}

    def work(k: int) -> None:
        results[k] = [scorer.score(t) for t in texts]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r == expected for r in results.values())


def test_trained_scorer_routes_in_the_engine(two_class: tuple[TrainedScorer, list[str], list[str]]) -> None:
    scorer, easy, hard = two_class
    engine = Cascade(TIERS, scorer=scorer)
    assert engine.route(user(easy[0])).start == 0
    assert engine.route(user(hard[0])).start == 1
    assert asyncio.run(engine.aroute(user(hard[1]))).start == 1


def test_constructor_checks_the_models() -> None:
    scorer = TrainedScorer.fit(
        ["hi", "hey", "prove it", "derive it"], [0, 0, 1, 1], embedder=HashEmbeddings(dim=16)
    )
    with pytest.raises(ConfigurationError) as e:
        TrainedScorer(
            scorer.boundaries, embedder=HashEmbeddings(dim=32), embedder_name="fake-hash-32", embedder_dim=32
        )
    assert e.value.field == "boundaries"
    with pytest.raises(ConfigurationError) as e:
        TrainedScorer([], embedder=HashEmbeddings(dim=16), embedder_name="fake-hash-16", embedder_dim=16)
    assert e.value.field == "boundaries"
    same = TrainedScorer(
        scorer.boundaries, embedder=HashEmbeddings(dim=16), embedder_name="fake-hash-16", embedder_dim=16
    )
    assert same.score("hey") == scorer.score("hey")
    assert np.isfinite(same.score(""))


# ---------------------------------------------------------------------------------------------------------------
# CallableScorer


def test_callable_scorer_sync() -> None:
    def long_is_hard(messages: Any) -> float:
        return min(1.0, len(messages[-1]["content"]) / 100)

    s = CallableScorer(long_is_hard)
    assert isinstance(s, Scorer) and s.name == "long_is_hard"
    assert s.score("x" * 50) == 0.5
    assert asyncio.run(s.ascore(user("x" * 200))) == 1.0
    assert CallableScorer(lambda m: True).score("a") == 1.0
    assert CallableScorer(lambda m: np.float32(0.25)).score("a") == 0.25
    assert CallableScorer(lambda m: 0.5).name == "callable"
    seen: list[Any] = []
    CallableScorer(lambda m: seen.append(m) or 0.0).score("hello")
    assert seen == [({"role": "user", "content": "hello"},)]


@pytest.mark.parametrize("bad", [1.5, -0.1, float("nan"), "0.5", None])
def test_callable_scorer_rejects_bad_results(bad: Any) -> None:
    s = CallableScorer(lambda m: bad, name="my-scorer")
    with pytest.raises(ConfigurationError, match="my-scorer") as e:
        s.score("a")
    assert e.value.field == "scorer"
    with pytest.raises(ConfigurationError, match="my-scorer"):
        asyncio.run(s.ascore("a"))


def test_callable_scorer_async_function() -> None:
    async def remote(messages: Any) -> float:
        await asyncio.sleep(0)
        return 0.8

    s = CallableScorer(remote)
    assert asyncio.run(s.ascore("a")) == 0.8
    assert s.score("a") == 0.8  # no loop running here: run to completion


async def test_callable_scorer_async_function_inside_a_loop_needs_ascore() -> None:
    async def remote(messages: Any) -> float:
        return 0.8

    s = CallableScorer(remote, name="remote")
    with pytest.raises(ConfigurationError, match="ascore") as e:
        s.score("a")
    assert e.value.field == "scorer"
    assert await s.ascore("a") == 0.8
    # a plain callable returning a coroutine: refused too, and the coroutine is closed (no "never awaited")
    wrapped = CallableScorer(lambda m: remote(m), name="wrapped")
    with pytest.raises(ConfigurationError, match="ascore"):
        wrapped.score("a")
    assert await wrapped.ascore("a") == 0.8


def test_callable_scorer_rejects_non_callables() -> None:
    with pytest.raises(ConfigurationError) as e:
        CallableScorer(0.5)  # type: ignore[arg-type]
    assert e.value.field == "fn"
    with pytest.raises(ConfigurationError) as e:
        CallableScorer(lambda m: 0.5, name="")
    assert e.value.field == "name"


# -- l2="auto": the penalty picked by cross-validation on the training data alone


def _noisy(n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = (x[:, 0] + 0.7 * rng.normal(size=n) > 0).astype(float)  # one informative feature, d - 1 noise
    return x, y


def test_choose_l2_penalises_small_noisy_data_more_than_large_data() -> None:
    from frugal_chains.shared.logistic import L2_GRID, choose_l2

    x_small, y_small = _noisy(60, 120, seed=1)
    x_large, y_large = _noisy(2400, 20, seed=2)
    small, large = choose_l2(x_small, y_small), choose_l2(x_large, y_large)
    # 60 examples with 120 features need a far stronger penalty than 2,400 with 20
    assert small >= 30 * large
    assert small in L2_GRID and large in L2_GRID
    assert choose_l2(x_small, y_small) == small  # deterministic


def test_choose_l2_ignores_the_units_of_sample_weight_and_keeps_the_sampled_choice() -> None:
    from frugal_chains.shared.logistic import L2_GRID, choose_l2

    x, y = _noisy(900, 10, seed=3)
    plain = choose_l2(x, y)
    for c in (1e-4, 1.0, 1e4):  # the same weight on every example: the same model
        assert math.isclose(choose_l2(x, y, sample_weight=np.full(900, c)), c * plain)
    assert choose_l2(x, y, max_rows=300) in L2_GRID  # chosen on a sample, used as it is


def test_choose_l2_keeps_enough_of_a_rare_class_in_its_sample() -> None:
    from frugal_chains.shared.logistic import choose_l2

    rng = np.random.default_rng(6)
    x = rng.normal(size=(10_000, 5))
    y = np.zeros(10_000)
    y[:15] = 1.0  # 15 positives in 10,000: a sample of 3,000 keeps at least 6 of them
    x[:15, 0] += 6.0
    # a two-value grid: "too few positives to tell" would return its middle value, 100; with the positives kept,
    # cross-validation sees the signal and picks the small penalty
    assert choose_l2(x, y, grid=(0.5, 100.0)) == 0.5


def test_choose_l2_beats_a_fixed_small_penalty_on_held_out_data() -> None:
    from frugal_chains.shared.logistic import choose_l2, fit_logistic

    x, y = _noisy(1080, 150, seed=4)
    x_tr, y_tr, x_te, y_te = x[:80], y[:80], x[80:], y[80:]

    def loss(l2: float) -> float:
        p = np.clip(fit_logistic(x_tr, y_tr, l2=l2).predict(x_te), 1e-6, 1 - 1e-6)
        return float(-(y_te * np.log(p) + (1 - y_te) * np.log(1 - p)).mean())

    assert loss(choose_l2(x_tr, y_tr)) < loss(1.0)


def test_choose_l2_with_too_few_examples_of_a_class_returns_the_middle_of_the_grid() -> None:
    from frugal_chains.shared.logistic import L2_GRID, choose_l2

    x, _ = _noisy(40, 5, seed=5)
    y = np.zeros(40)
    y[:3] = 1.0
    assert choose_l2(x, y) == sorted(L2_GRID)[len(L2_GRID) // 2]


def test_trained_scorer_defaults_to_auto_l2_and_records_it() -> None:
    emb = HashEmbeddings(dim=32)
    easy = [f"what is the capital of country {i}" for i in range(30)]
    hard = [f"prove the theorem about prime gaps number {i} rigorously" for i in range(30)]
    auto = TrainedScorer.fit(easy + hard, [0] * 30 + [1] * 30, embedder=emb)
    assert auto.meta["l2_auto"] is True
    assert isinstance(auto.meta["l2"], float) and auto.meta["l2"] > 0
    weighted = TrainedScorer.fit(easy + hard, [0] * 30 + [1] * 30, embedder=emb, sample_weight=[1e-4] * 60)
    assert weighted.score("prove the theorem on prime gaps") == pytest.approx(
        auto.score("prove the theorem on prime gaps"), abs=1e-6
    )  # weights in dollars: the same model as unweighted
    fixed = TrainedScorer.fit(easy + hard, [0] * 30 + [1] * 30, embedder=emb, l2=2.5)
    assert fixed.meta["l2_auto"] is False and fixed.meta["l2"] == 2.5
    again = TrainedScorer.from_json(auto.to_json(), embedder=emb)
    assert again.meta["l2"] == auto.meta["l2"]
    assert (
        auto.score("what is the capital of country 99") < 0.5 < auto.score("prove the theorem on prime gaps")
    )


def test_auto_l2_of_an_ordinal_scorer_has_one_entry_per_boundary() -> None:
    emb = HashEmbeddings(dim=16)
    texts = [f"question number {i} about topic {i % 5}" for i in range(30)]
    three = TrainedScorer.fit(
        texts, [1] * 15 + [2] * 15, embedder=emb, n_tiers=3
    )  # nobody needed only tier 0
    assert three.meta["l2"][0] is None and isinstance(three.meta["l2"][1], float)
    four = TrainedScorer.fit(texts, [0] * 10 + [1] * 10 + [2] * 10, embedder=emb, n_tiers=4)
    assert len(four.meta["l2"]) == 3 and four.meta["l2"][2] is None
    assert TrainedScorer.from_json(four.to_json(), embedder=emb).meta["l2"] == four.meta["l2"]
