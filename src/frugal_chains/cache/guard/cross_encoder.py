"""The shipped duplicate-question verifier: :class:`CrossEncoderVerifier` (a MiniLM cross-encoder, int8 ONNX on
onnxruntime) and :func:`default_verifier`, the process-wide instance."""

from __future__ import annotations

import asyncio
import math
import os
import threading
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from frugal_chains.embeddings.integrity import read_verified_tokenizer, verify_file_once
from frugal_chains.embeddings.models import EMBEDDINGS_EXTRA
from frugal_chains.embeddings.protocol import require_modules
from frugal_chains.errors import ConfigurationError
from frugal_chains.shared.lru import LRU

__all__ = [
    "DEFAULT_VERIFIER_CUTOFF",
    "VERIFIER_PREFILTER",
    "VERIFIER_MODEL_RESOURCE",
    "VERIFIER_MODEL_SHA256",
    "CrossEncoderVerifier",
    "default_verifier",
]

#: The model file inside the package: all-MiniLM-L6-v2 fine-tuned as a duplicate-question cross-encoder
#: (``scripts/train_verifier.py``), exported to ONNX and quantised to int8 (``scripts/export_verifier.py``).
VERIFIER_MODEL_RESOURCE = "_data/verifier_minilm_int8.onnx"
VERIFIER_MODEL_SHA256 = "e3f06fe6b5f9576ae2be44fcce98a51e6d621a340c1febeeb740f78f7e2506df"
#: Pairs are truncated to this many tokens (the training length), ``[CLS] query [SEP] cached [SEP]``.
VERIFIER_MAX_LENGTH = 64
#: The default cutoff on :meth:`CrossEncoderVerifier.score`, chosen on the validation fold (never on the
#: evaluation sets): the lowest cutoff at which candidates above a cosine of 0.70 that pass the hit guard reach a
#: precision of 0.90 on held-out QQP pairs and at most 3% wrong hits on a held-out BANKING77 replay. It is strict:
#: on that validation only 4% of the duplicate pairs pass (the model's scores rarely exceed 0.93).
DEFAULT_VERIFIER_CUTOFF = 0.93
#: The cosine similarity from which semantic candidates were sent to the verifier when the cutoff was chosen (the
#: cache's pre-filter): ``AnswerCache(threshold=VERIFIER_PREFILTER, verifier=CrossEncoderVerifier())``.
VERIFIER_PREFILTER = 0.70

_FIX = 'Reinstall frugal-chains: pip install --force-reinstall "frugal-chains[embeddings]".'


def _packaged_model() -> Path:
    path = Path(str(resources.files("frugal_chains").joinpath(VERIFIER_MODEL_RESOURCE)))
    if not path.is_file():
        raise ConfigurationError(
            f"the verifier model {VERIFIER_MODEL_RESOURCE} is missing from the installed frugal_chains package. "
            + _FIX,
            field="model_path",
        )
    return path


def _check_int(value: object, field: str, low: int, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ConfigurationError(f"{field} must be an int >= {low}{what}, got {value!r}.", field=field)
    return value


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


class CrossEncoderVerifier:
    """A :class:`~frugal_chains.cache.guard.Verifier` that reads both questions together: a duplicate-question
    cross-encoder shipped inside the package, run offline on onnxruntime (no torch).

    The model is all-MiniLM-L6-v2 fine-tuned on Quora Question Pairs and BANKING77 training pairs to predict
    whether two questions have the same answer, exported to ONNX and quantised to int8 (23 MB, sha256-checked on
    first load, like the default embedder). :meth:`score` gives that probability; :meth:`verify` says
    ``score >= cutoff``. The cosine ``similarity`` the cache passes is not used: the cache has already applied
    its threshold and guard. About 3 ms per candidate on two cores; the scores of the last ``cache_size`` pairs
    are kept. Thread-safe; :meth:`averify` runs the model in a worker thread.

    Turn it on with ``AnswerCache(verifier=CrossEncoderVerifier())`` (see ``docs/cache.md``, "Verifier").

    Args:
        cutoff: the probability a pair needs to pass (0-1, higher is stricter); default
            :data:`DEFAULT_VERIFIER_CUTOFF`, chosen on held-out validation pairs for a precision of 0.90.
        threads: onnxruntime intra-op threads (small: the verifier runs next to the application).
        cache_size: how many pair scores to keep (exact text match, in the given order); 0 disables it.
        model_path: another copy of the shipped model file (it must have the same sha256).

    Raises:
        ImportError: onnxruntime, tokenizers or numpy is missing (``pip install "frugal-chains[embeddings]"``).
        ConfigurationError: a bad argument (the field is named).
        EmbedderIntegrityError: on first use, when the model or tokenizer file is not the shipped one.

    Example:
        >>> from frugal_chains.cache.guard import CrossEncoderVerifier
        >>> v = CrossEncoderVerifier()
        >>> v.verify("What are the benefits of meditation?", "What are the advantages of meditation?", 0.9)
        True
        >>> v.verify("Who is the CEO of Apple?", "Who is the CEO of Google?", 0.93)
        False
        >>> v.score("How do I cancel my subscription?", "How do I upgrade my subscription?") < 0.1
        True
    """

    def __init__(
        self,
        *,
        cutoff: float = DEFAULT_VERIFIER_CUTOFF,
        threads: int = 1,
        cache_size: int = 4096,
        model_path: str | os.PathLike[str] | None = None,
    ) -> None:
        if isinstance(cutoff, bool) or not isinstance(cutoff, (int, float)) or not 0.0 <= cutoff <= 1.0:
            raise ConfigurationError(
                f"cutoff is a probability in [0, 1] (higher is stricter), got {cutoff!r}.", field="cutoff"
            )
        _check_int(threads, "threads", 1, "")
        _check_int(cache_size, "cache_size", 0, " (0 disables the cache)")
        if model_path is not None:
            model_path = Path(model_path)
            if not model_path.is_file():
                raise ConfigurationError(f"model_path {str(model_path)!r} is not a file.", field="model_path")
        require_modules(["numpy", "onnxruntime", "tokenizers"], "CrossEncoderVerifier", EMBEDDINGS_EXTRA)
        self.cutoff = float(cutoff)
        self.threads = threads
        self._model_path: Path | None = model_path
        self._cache = LRU[tuple[str, str], float](cache_size)
        self._load_lock = threading.Lock()
        self._tok_lock = threading.Lock()
        self._session: Any = None
        self._tokenizer: Any = None

    def __repr__(self) -> str:
        return (
            f"CrossEncoderVerifier(cutoff={self.cutoff}, threads={self.threads}, "
            f"cache_size={self._cache.maxsize})"
        )

    @property
    def cache_size(self) -> int:
        """The score LRU's capacity (0 = no cache)."""
        return self._cache.maxsize

    def clear_cache(self) -> None:
        """Forget the cached pair scores."""
        self._cache.clear()

    # -- loading

    def _ensure_loaded(self) -> None:
        if self._session is not None:
            return
        with self._load_lock:
            if self._session is not None:
                return
            import onnxruntime as ort
            from tokenizers import Tokenizer

            path = self._model_path if self._model_path is not None else _packaged_model()
            verify_file_once(path, VERIFIER_MODEL_SHA256, _FIX)
            tokenizer = Tokenizer.from_str(read_verified_tokenizer().decode("utf-8"))
            tokenizer.no_padding()
            tokenizer.enable_truncation(max_length=VERIFIER_MAX_LENGTH)
            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            options.log_severity_level = 3
            options.inter_op_num_threads = 1
            options.intra_op_num_threads = self.threads
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.add_session_config_entry("session.inter_op.allow_spinning", "0")
            session = ort.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"]
            )
            self._tokenizer = tokenizer
            self._session = session

    # -- scoring

    def _logits(self, pairs: list[tuple[str, str]]) -> list[float]:
        """The model's logits for distinct pairs (no cache), in order, one model call per pair: the int8 model
        quantises its activations per call, so a pair scored in a padded batch would get a slightly different
        score (up to about 0.1 in logit) depending on its batch-mates."""
        import numpy as np

        self._ensure_loaded()
        with self._tok_lock:
            encodings = self._tokenizer.encode_batch(pairs)
        out: list[float] = []
        for e in encodings:
            ids = np.asarray([e.ids], dtype=np.int64)
            feeds = {
                "input_ids": ids,
                "attention_mask": np.ones_like(ids),
                "token_type_ids": np.asarray([e.type_ids], dtype=np.int64),
            }
            out.append(float(self._session.run(["logits"], feeds)[0][0, 0]))
        return out

    def score_many(self, pairs: Iterable[tuple[str, str]]) -> list[float]:
        """The probability that each ``(query, cached)`` pair has the same answer, in order (repeated pairs and
        cached scores are not run again)."""
        items = _check_pairs(pairs)
        out: list[float | None] = [self._cache.get(p) for p in items]
        todo = list(dict.fromkeys(p for p, s in zip(items, out, strict=True) if s is None))
        if todo:
            fresh = {p: _sigmoid(x) for p, x in zip(todo, self._logits(todo), strict=True)}
            for p, s in fresh.items():
                self._cache.put(p, s)
            out = [fresh[p] if s is None else s for p, s in zip(items, out, strict=True)]
        return [float(s) for s in out if s is not None]

    def score(self, query: str, cached: str) -> float:
        """The probability (0-1) that ``query`` and ``cached`` have the same answer."""
        return self.score_many([(query, cached)])[0]

    async def ascore(self, query: str, cached: str) -> float:
        """Like :meth:`score`; the model runs in a worker thread (a cached score is returned without one)."""
        _check_pairs([(query, cached)])
        hit = self._cache.get((query, cached))
        if hit is not None:
            return hit
        return await asyncio.to_thread(self.score, query, cached)

    def verify(self, query: str, cached: str, similarity: float) -> bool:
        """``score(query, cached) >= cutoff`` (``similarity`` is not used)."""
        return self.score(query, cached) >= self.cutoff

    async def averify(self, query: str, cached: str, similarity: float) -> bool:
        """Like :meth:`verify`; the model runs in a worker thread."""
        return await self.ascore(query, cached) >= self.cutoff


def _check_pairs(pairs: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    if isinstance(pairs, (str, bytes)):
        raise ConfigurationError(
            "pairs must be a sequence of (query, cached) tuples, not a string.", field="pairs"
        )
    out: list[tuple[str, str]] = []
    for p in pairs:
        if not (isinstance(p, Sequence) and len(p) == 2 and isinstance(p[0], str) and isinstance(p[1], str)):
            raise ConfigurationError(
                f"each pair must be a (query, cached) tuple of two str, got {p!r}.", field="pairs"
            )
        out.append((p[0], p[1]))
    return out


_default: CrossEncoderVerifier | None = None
_default_lock = threading.Lock()


def default_verifier() -> CrossEncoderVerifier:
    """The process-wide :class:`CrossEncoderVerifier` (default cutoff), created on first call; share it between
    caches so the model loads once.

    Example:
        >>> from frugal_chains.cache.guard import default_verifier
        >>> default_verifier() is default_verifier()
        True
    """
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = CrossEncoderVerifier()
    return _default
