"""The :class:`Embedder` protocol (what the semantic cache needs from an embedding model) and the helpers every
embedder shares: input checks, L2 normalisation of rows, and the check for optional packages."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from frugal_chains.embeddings.models import EMBEDDINGS_EXTRA
from frugal_chains.errors import ConfigurationError

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

__all__ = ["Embedder", "check_texts", "l2_normalise", "missing_modules", "require_modules"]


@runtime_checkable
class Embedder(Protocol):
    """What the semantic cache needs from an embedding model.

    ``name`` identifies the vector space (vectors of different names are never compared), ``dim`` is the
    vector size, and ``embed``/``aembed`` return a float32 array of shape ``(len(texts), dim)`` whose rows have
    unit L2 norm, so ``a @ b`` is the cosine similarity. Use :func:`as_embedder` to adapt a LangChain or
    LlamaIndex embedding model.

    Example:
        >>> from frugal_chains.embeddings import Embedder
        >>> from frugal_chains.testing.fake_embeddings import HashEmbeddings
        >>> isinstance(HashEmbeddings(), Embedder)
        True
    """

    @property
    def name(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]: ...

    async def aembed(self, texts: Sequence[str]) -> NDArray[np.float32]: ...


def missing_modules(modules: Sequence[str]) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


def require_modules(modules: Sequence[str], what: str, extra: str = EMBEDDINGS_EXTRA) -> None:
    missing = missing_modules(modules)
    if missing:
        raise ImportError(f"{what} needs {', '.join(missing)}, which is not installed: {extra}")


def check_texts(texts: Sequence[str]) -> list[str]:
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


def l2_normalise(rows: NDArray[Any]) -> NDArray[np.float32]:
    import numpy as np

    arr = np.asarray(rows, dtype=np.float32)
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    out: NDArray[np.float32] = (arr / np.maximum(norms, np.float32(1e-12))).astype(np.float32, copy=False)
    return out
