"""The trained answer verifier (HashEmbeddings: no model)."""

from __future__ import annotations

import asyncio
import json
import random
import threading
from pathlib import Path
from typing import Any

import pytest

from frugal_chains import ConfigurationError
from frugal_chains.routing import GateContext, QualityGate, TierAnswer, TrainedVerifier
from frugal_chains.routing.verifier import ANSWER_FEATURES, answer_features
from frugal_chains.testing import HashEmbeddings

ITEMS = ["apples", "pens", "books", "coins", "cards", "eggs"]


def problem(rng: random.Random) -> tuple[str, int, int, int, str]:
    a, b, c = rng.randint(2, 40), rng.randint(2, 40), rng.randint(2, 9)
    item = rng.choice(ITEMS)
    q = f"Sam has {a} {item} and buys {b} more. He then gives each of {c} friends 1 {item}. How many are left?"
    return q, a, b, c, item


def good_answer(rng: random.Random, a: int, b: int, c: int, item: str) -> str:
    s = a + b
    style = rng.randrange(3)
    if style == 0:
        return f"Sam has {a} + {b} = {s} {item}.\nHe gives away {c}, so {s} - {c} = {s - c}.\n#### {s - c}"
    if style == 1:
        return f"First {a} + {b} = {s}. Then {s} - {c} = {s - c}. The answer is {s - c}."
    return f"Total: {a} + {b} = {s} {item}. Left: {s} - {c} = {s - c} {item}.\n#### {s - c}"


def bad_answer(rng: random.Random, a: int, b: int, c: int, item: str) -> str:
    s = a + b
    style = rng.randrange(4)
    if style == 0:  # arithmetic slip
        t = s + 3
        return f"Sam has {a} + {b} = {t} {item}.\nHe gives away {c}, so {t} - {c} = {t - c}.\n#### {t - c}"
    if style == 1:  # hedging, a fraction
        return f"I think he has about {s / 2 + 0.5} {item} left, assuming he rounds."
    if style == 2:  # ignores the question's numbers
        return f"He has {rng.randint(50, 90)} {item}."
    return f"Sam has {a} + {b} = {s} {item}. He gives away"  # cut off


def dataset(n: int, seed: int) -> tuple[list[str], list[str], list[int]]:
    rng = random.Random(seed)
    qs, ans, ys = [], [], []
    for i in range(n):
        q, a, b, c, item = problem(rng)
        good = i % 2 == 0
        qs.append(q)
        ans.append(good_answer(rng, a, b, c, item) if good else bad_answer(rng, a, b, c, item))
        ys.append(int(good))
    return qs, ans, ys


def auc(scores: list[float], labels: list[int]) -> float:
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


@pytest.fixture(scope="module")
def fitted() -> TrainedVerifier:
    qs, ans, ys = dataset(120, seed=1)
    return TrainedVerifier.fit(qs, ans, ys, embedder=HashEmbeddings(dim=32))


def gate_ctx(question: Any, text: str, **kw: Any) -> GateContext:
    messages = [{"role": "user", "content": question}] if isinstance(question, str) else question
    return GateContext(
        messages=messages, answer=TierAnswer(text=text, **kw), tier="cheap", tier_index=0, n_tiers=2
    )


# ---------------------------------------------------------------------------------------------------- quality


def test_separates_good_from_bad_answers_on_held_out_data(fitted: TrainedVerifier) -> None:
    qs, ans, ys = dataset(80, seed=2)
    scores = fitted.score_many(qs, ans)
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert auc(scores, ys) > 0.95
    accuracy = sum((s >= 0.5) == bool(y) for s, y in zip(scores, ys, strict=True)) / len(ys)
    assert accuracy > 0.85
    assert fitted.embedding_model is not None  # enough labels: the embedding block is stacked
    assert fitted.n_train == 120


def test_labels_matter(fitted: TrainedVerifier) -> None:
    """Swapping the labels must flip the ranking (the model learns from the labels, not from the text alone)."""
    qs, ans, ys = dataset(120, seed=1)
    flipped = TrainedVerifier.fit(qs, ans, [1 - y for y in ys], embedder=HashEmbeddings(dim=32))
    tq, ta, ty = dataset(60, seed=3)
    assert auc(flipped.score_many(tq, ta), ty) < 0.1


def test_score_variants_agree(fitted: TrainedVerifier) -> None:
    qs, ans, _ = dataset(10, seed=4)
    many = fitted.score_many(qs, ans)
    assert fitted.score_many(qs, ans, batch_size=3) == pytest.approx(many, abs=1e-6)
    assert [fitted.score(q, a) for q, a in zip(qs, ans, strict=True)] == pytest.approx(many, abs=1e-6)
    assert asyncio.run(fitted.ascore(qs[0], ans[0])) == pytest.approx(many[0], abs=1e-6)
    # a conversation whose only user turn is the question scores like the string
    conversation = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": qs[0]}]
    assert fitted.score(conversation, ans[0]) == pytest.approx(many[0], abs=1e-6)
    assert fitted.score(qs[0], TierAnswer(text=ans[0])) == pytest.approx(many[0], abs=1e-6)


def test_multi_turn_questions_include_earlier_turns(fitted: TrainedVerifier) -> None:
    qs, ans, _ = dataset(2, seed=5)
    conversation = [
        {"role": "user", "content": qs[1]},
        {"role": "assistant", "content": "..."},
        {"role": "user", "content": qs[0]},
    ]
    assert fitted.score(conversation, ans[0]) != pytest.approx(fitted.score(qs[0], ans[0]), abs=1e-9)


# ---------------------------------------------------------------------------------------------------- the gate


def test_gate_check_and_acheck(fitted: TrainedVerifier) -> None:
    assert isinstance(fitted, QualityGate)
    assert fitted.name == "verifier" and fitted.needs_full_answer
    q = "Sam has 12 pens and buys 30 more. He then gives each of 4 friends 1 pens. How many are left?"
    good = gate_ctx(q, "Sam has 12 + 30 = 42 pens.\nHe gives away 4, so 42 - 4 = 38.\n#### 38")
    bad = gate_ctx(q, "I think he has about 21.5 pens left, assuming he rounds.")
    r_good, r_bad = fitted.check(good), fitted.check(bad)
    assert r_good.passed and not r_bad.passed
    assert r_good.score == pytest.approx(fitted.score(q, good.answer.text))
    assert r_bad.score is not None and r_bad.score < 0.5 and "P(good)" in r_bad.reason
    a_good, a_bad = asyncio.run(fitted.acheck(good)), asyncio.run(fitted.acheck(bad))
    assert (a_good.passed, a_bad.passed) == (True, False)
    assert a_good.score == pytest.approx(r_good.score, abs=1e-6)


def test_with_threshold(fitted: TrainedVerifier) -> None:
    q = "Sam has 12 pens and buys 30 more. He then gives each of 4 friends 1 pens. How many are left?"
    c = gate_ctx(q, "Sam has 12 + 30 = 42 pens.\nHe gives away 4, so 42 - 4 = 38.\n#### 38")
    p = fitted.score(q, c.answer.text)
    strict = fitted.with_threshold(min(1.0, p + 0.01))
    assert fitted.check(c).passed and not strict.check(c).passed
    assert fitted.threshold == 0.5 and strict.embedder is fitted.embedder
    assert fitted.with_threshold(0.0).check(gate_ctx(q, "??")).passed
    with pytest.raises(ConfigurationError) as e:
        fitted.with_threshold(1.5)
    assert e.value.field == "threshold"


def test_odd_answers_do_not_raise(fitted: TrainedVerifier) -> None:
    for text, kw in [("", {}), ("", {"tool_calls": ({"name": "f", "args": {"x": 1}, "id": "1"},)}),
                     ("9" * 400, {}), ("1/0 = 5", {}), ("((((((1+2" + "=" * 50, {})]:  # fmt: skip
        r = fitted.check(gate_ctx("q?", text, **kw))
        assert r.score is not None and 0.0 <= r.score <= 1.0


def test_thread_safe_scoring(fitted: TrainedVerifier) -> None:
    qs, ans, _ = dataset(8, seed=6)
    expected = fitted.score_many(qs, ans)
    results: list[list[float]] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            results.append(fitted.score_many(qs, ans))
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert all(r == pytest.approx(expected, abs=1e-9) for r in results)


# ---------------------------------------------------------------------------------------------------- persistence


def test_save_load_round_trip(fitted: TrainedVerifier, tmp_path: Path) -> None:
    path = tmp_path / "verifier.json"
    fitted.with_threshold(0.42).save(path)
    data = json.loads(path.read_text())
    assert data["embedder"] == {"name": "fake-hash-32", "dim": 32}
    assert data["threshold"] == 0.42 and data["n_train"] == 120
    assert data["feature_names"][: len(ANSWER_FEATURES)] == list(ANSWER_FEATURES)
    assert path.stat().st_size < 50_000
    loaded = TrainedVerifier.load(path, embedder=HashEmbeddings(dim=32))
    assert loaded.threshold == 0.42
    qs, ans, _ = dataset(10, seed=7)
    assert loaded.score_many(qs, ans) == pytest.approx(fitted.score_many(qs, ans), abs=1e-5)
    again = TrainedVerifier.from_json(loaded.to_json(), embedder=HashEmbeddings(dim=32))
    assert again.to_dict() == loaded.to_dict()


def test_load_with_another_embedder_fails(fitted: TrainedVerifier) -> None:
    text = fitted.to_json()
    for other in [HashEmbeddings(dim=64), None]:  # None: the default embedder, another vector space
        with pytest.raises(ConfigurationError) as e:
            TrainedVerifier.from_json(text, embedder=other)
        assert e.value.field == "embedder"
        assert "fake-hash-32" in str(e.value)


def test_a_langchain_embeddings_object_is_accepted() -> None:
    class LCEmbeddings:  # duck-typed LangChain Embeddings over the fake
        model = "lc-fake"

        def __init__(self) -> None:
            self.fake = HashEmbeddings(dim=16)

        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return self.fake.embed(texts).tolist()

    qs, ans, ys = dataset(40, seed=8)
    v = TrainedVerifier.fit(qs, ans, ys, embedder=LCEmbeddings())
    assert v.embedder_name == "lc-fake" and v.embedder_dim == 16
    assert TrainedVerifier.from_json(v.to_json(), embedder=LCEmbeddings()).score(
        qs[0], ans[0]
    ) == pytest.approx(v.score(qs[0], ans[0]), abs=1e-5)


@pytest.mark.parametrize(
    "text",
    ["not json", "[]", json.dumps({"format": "something else"}),
     json.dumps({"format": "frugal_chains.TrainedVerifier", "version": 99, "features": "qa-v1"}),
     json.dumps({"format": "frugal_chains.TrainedVerifier", "version": 1, "features": "qa-v1"})],
)  # fmt: skip
def test_from_json_rejects_other_documents(text: str) -> None:
    with pytest.raises(ConfigurationError) as e:
        TrainedVerifier.from_json(text, embedder=HashEmbeddings(dim=32))
    assert e.value.field == "model"


# ---------------------------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("args", "kwargs", "field"),
    [
        ((["a", "b"], ["x"], [1, 0]), {}, "answers"),
        ((["a", "b"], ["x", "y"], [1]), {}, "labels"),
        ((["a", "b"], ["x", "y"], [1, 1]), {}, "labels"),
        ((["a", "b"], ["x", "y"], [0, 0]), {}, "labels"),
        ((["a", "b"], ["x", "y"], [1, 2]), {}, "labels"),
        ((["a", "b"], ["x", "y"], ["1", "0"]), {}, "labels"),
        (([], [], []), {}, "questions"),
        (("ab", ["x", "y"], [1, 0]), {}, "questions"),
        (([1, 2], ["x", "y"], [1, 0]), {}, "questions"),
        ((["a", "b"], ["x", 3], [1, 0]), {}, "answers"),
        ((["a", "b"], ["x", "y"], [1, 0]), {"threshold": 1.5}, "threshold"),
        ((["a", "b"], ["x", "y"], [1, 0]), {"threshold": -0.1}, "threshold"),
        ((["a", "b"], ["x", "y"], [1, 0]), {"l2": -1}, "l2"),
        ((["a", "b"], ["x", "y"], [1, 0]), {"embedding_l2": float("inf")}, "embedding_l2"),
        ((["a", "b"], ["x", "y"], [1, 0]), {"batch_size": 0}, "batch_size"),
        ((["a", "b"], ["x", "y"], [1, 0]), {"embedder": object()}, "embedder"),
    ],
)
def test_fit_validation(args: tuple[Any, ...], kwargs: dict[str, Any], field: str) -> None:
    kwargs.setdefault("embedder", HashEmbeddings(dim=16))
    with pytest.raises(ConfigurationError) as e:
        TrainedVerifier.fit(*args, **kwargs)
    assert e.value.field == field


def test_score_many_validation(fitted: TrainedVerifier) -> None:
    with pytest.raises(ConfigurationError) as e:
        fitted.score_many(["a", "b"], ["x"])
    assert e.value.field == "answers"
    with pytest.raises(ConfigurationError) as e:
        fitted.score_many(["a"], ["x"], batch_size=0)
    assert e.value.field == "batch_size"


def test_tiny_training_sets_work_without_stacking() -> None:
    v = TrainedVerifier.fit(
        ["2+2?", "3+3?", "4+4?"], ["4", "I'm not sure", "8"], [1, 0, 1], embedder=HashEmbeddings()
    )
    assert v.embedding_model is None  # one negative: no out-of-fold embedding score possible
    assert 0.0 <= v.score("5+5?", "10") <= 1.0
    assert TrainedVerifier.from_json(v.to_json(), embedder=HashEmbeddings()).embedding_model is None


# ---------------------------------------------------------------------------------------------------- features


def feats(question: str, answer: str) -> dict[str, float]:
    return dict(zip(ANSWER_FEATURES, answer_features(question, answer), strict=True))


def test_answer_features() -> None:
    q = "Tom has 3 apples and buys 4 more. How many apples?"
    right = feats(q, "3 + 4 = 7\n#### 7")
    wrong = feats(q, "3 + 4 = 8\n#### 8")
    assert (right["any_wrong_equation"], wrong["any_wrong_equation"]) == (0.0, 1.0)
    assert wrong["wrong_equation_share"] == 1.0
    assert right["has_final_marker"] == 1.0 and right["final_is_a_result"] == 1.0
    assert right["question_numbers_used"] == 1.0
    assert feats(q, "The answer is 7.")["question_numbers_used"] == 0.0
    assert feats(q, "3 + 4 = 7, so the answer is 9.")["final_differs_from_last_result"] == 1.0
    assert feats(q, "It is 3.5 apples.")["final_not_integer"] == 1.0
    assert feats(q, "Tom has 3 + 4 = 7 apples and then he")["looks_truncated"] == 1.0
    assert feats(q, "Tom has 7 apples.")["looks_truncated"] == 0.0
    assert feats(q, "I think it is maybe 7, assuming no loss.")["log_hedges"] > 0.0
    assert feats(q, "a\na\na\nb")["repeated_line_share"] == 0.5
    assert feats(q, "2/3 = 0.67")["any_wrong_equation"] == 0.0  # rounding is not an error
    assert feats(q, "1,000 + 500 = 1,500")["any_wrong_equation"] == 0.0
    assert feats(q, "3 x 4 = 12")["any_wrong_equation"] == 0.0
    assert feats(q, "no numbers here")["has_number"] == 0.0
    assert len(answer_features("", "")) == len(ANSWER_FEATURES)
