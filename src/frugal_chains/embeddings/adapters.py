"""Framework adapters: :func:`as_embedder` turns a LangChain ``Embeddings`` or a LlamaIndex embedding model into
an :class:`~frugal_chains.embeddings.Embedder` (neither framework is imported)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from frugal_chains.embeddings.protocol import Embedder, check_texts, l2_normalise, require_modules
from frugal_chains.errors import ConfigurationError

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

__all__ = ["as_embedder"]

_PROTOCOL_MEMBERS = ("name", "dim", "embed", "aembed")
# (batch method, its async twin, framework), tried in this order: LangChain Embeddings, LlamaIndex embeddings.
_FRAMEWORK_METHODS = (
    ("embed_documents", "aembed_documents", "langchain"),
    ("get_text_embedding_batch", "aget_text_embedding_batch", "llama_index"),
)


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
        require_modules(["numpy"], "as_embedder")
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
        return l2_normalise(arr)

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        items = check_texts(texts)
        if not items:
            import numpy as np

            return np.empty((0, self.dim), dtype=np.float32)
        return self._finish(self._sync(items), len(items))

    async def aembed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        import numpy as np

        items = check_texts(texts)
        if not items:
            if self._dim is None:
                await self.aembed([self._PROBE])
            return np.empty((0, self.dim), dtype=np.float32)
        if self._async is None:
            raw = await asyncio.to_thread(self._sync, items)
        else:
            raw = await self._async(items)
        return self._finish(raw, len(items))


def _builtin(model: str, name: str | None) -> Embedder:
    """The built-in model called ``model`` (the default one is the process-wide :func:`default_embedder`)."""
    from frugal_chains.embeddings.minilm import MiniLMEmbedder, default_embedder
    from frugal_chains.embeddings.models import DEFAULT_MODEL, MODELS

    if model not in MODELS:
        raise ConfigurationError(
            f"embedder {model!r} is not a built-in model ({', '.join(sorted(MODELS))}): pass one of those names, "
            "a frugal_chains Embedder (name, dim, embed, aembed), a LangChain Embeddings (embed_documents) or a "
            "LlamaIndex embedding (get_text_embedding_batch), or leave it unset for the default model.",
            field="embedder",
        )
    if name is not None and name != model:
        raise ConfigurationError(
            "name= cannot rename a built-in model (its name identifies its vectors).", field="name"
        )
    return default_embedder() if model == DEFAULT_MODEL else MiniLMEmbedder(model=model)


def as_embedder(obj: object, *, name: str | None = None) -> Embedder:
    """Turn an embedding model into an :class:`Embedder`.

    Accepts an :class:`Embedder` (returned as is), the name of a built-in model (``"all-MiniLM-L6-v2-int8"``, the
    default, or ``"paraphrase-MiniLM-L3-v2"``: a :class:`~frugal_chains.embeddings.MiniLMEmbedder`), a LangChain
    ``Embeddings`` (anything with ``embed_documents``; ``aembed_documents`` is used for ``aembed`` when present) or
    a LlamaIndex embedding (anything with ``get_text_embedding_batch``; ``aget_text_embedding_batch`` for
    ``aembed``). Neither framework is imported. Rows come back float32 and L2-normalised; ``dim`` is learnt from
    the first call. Both questions being compared go through the same document-embedding call, so query/document
    prefixes do not matter.

    Args:
        obj: the embedding model.
        name: the vector-space name; default: the object's ``model`` or ``model_name`` attribute, else its class
            name. Give a distinct name when two configurations of one model produce different vectors
            (e.g. reduced ``dimensions``).

    Raises:
        ConfigurationError: ``obj`` is none of the above, or a name that is not a built-in model
            (``field="embedder"``).
        ImportError: a built-in model whose packages are not installed (the message gives the ``pip install``).

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
    if isinstance(obj, str):
        return _builtin(obj, name)
    for sync_attr, async_attr, framework in _FRAMEWORK_METHODS:
        sync = getattr(obj, sync_attr, None)
        if callable(sync):
            async_ = getattr(obj, async_attr, None)
            return _AdaptedEmbedder(
                obj,
                name=name or _model_name(obj),
                sync=sync,
                async_=async_ if callable(async_) else None,
                framework=framework,
            )
    raise ConfigurationError(
        f"Cannot use {type(obj).__name__} as an embedder: pass a frugal_chains Embedder (name, dim, embed, aembed), "
        "a LangChain Embeddings (embed_documents) or a LlamaIndex embedding (get_text_embedding_batch), or leave "
        "it unset for the default model.",
        field="embedder",
    )
