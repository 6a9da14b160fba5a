"""A fast, deterministic fake embedder for tests: hashed words and character trigrams, no model. It is our
:class:`~frugal_chains.embeddings.Embedder`, a LangChain ``Embeddings`` and, through
:meth:`HashEmbeddings.for_llama_index`, a LlamaIndex embedding model."""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import re
import unicodedata
from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from frugal_chains._deprecation import deprecated_attributes
from frugal_chains.errors import ConfigurationError

if TYPE_CHECKING:
    import numpy as np
    from langchain_core.embeddings import Embeddings as _LangChainEmbeddings
    from numpy.typing import NDArray
else:  # at run time a virtual subclass (registered below when langchain-core is installed)
    _LangChainEmbeddings = object

__all__ = ["HashEmbeddings"]

_WORD = re.compile(r"\w+")
_WORD_WEIGHT = 1.0
_TRIGRAM_WEIGHT = 0.5
_EMPTY_FEATURE = "\x00empty"


@lru_cache(maxsize=65536)
def _slot(feature: str, dim: int) -> tuple[int, float]:
    """The index and sign a feature adds to (stable across processes and platforms)."""
    h = int.from_bytes(
        hashlib.blake2b(feature.encode("utf-8"), digest_size=8, person=b"fc-fake").digest(), "big"
    )
    return h % dim, (1.0 if (h >> 63) & 1 else -1.0)


def _features(text: str) -> list[tuple[str, float]]:
    words = _WORD.findall(unicodedata.normalize("NFKC", text).casefold())
    if not words:
        return [(_EMPTY_FEATURE, 1.0)]
    feats = [("w:" + w, _WORD_WEIGHT) for w in words]
    joined = f" {' '.join(words)} "
    feats.extend(("c:" + joined[i : i + 3], _TRIGRAM_WEIGHT) for i in range(len(joined) - 2))
    return feats


class HashEmbeddings(_LangChainEmbeddings):
    """A deterministic embedding model for tests: no model, no download, microseconds.

    One object for every side of your app: our :class:`~frugal_chains.embeddings.Embedder` (``embed``/``aembed``,
    for ``AnswerCache``, ``SemanticCache`` and the trained router), a LangChain ``Embeddings`` (``embed_documents``,
    ``embed_query`` and their async forms; registered as a virtual subclass when langchain-core is installed) and,
    with :meth:`for_llama_index`, a LlamaIndex ``BaseEmbedding`` (for ``VectorStoreIndex``).

    Each text becomes a hashed bag of its normalised words (NFKC, casefolded) and character trigrams: every
    feature adds +-weight at an index chosen by its blake2b hash, and the row is L2-normalised. Identical texts
    (up to case and spacing) get identical vectors, paraphrases that share words land close, unrelated texts far
    apart (around 0 +- 1/sqrt(dim)). It has no idea of meaning: "cheap" and "inexpensive" are unrelated to it.

    Args:
        dim: vector size (>= 8). The name is ``"fake-hash-<dim>"``.

    Example:
        >>> from frugal_chains.testing import HashEmbeddings
        >>> emb = HashEmbeddings(dim=64)
        >>> v = emb.embed(["How do I reset my password?", "how do i reset my  PASSWORD", "Best pizza in Rome"])
        >>> v.shape, emb.name
        ((3, 64), 'fake-hash-64')
        >>> bool(v[0] @ v[1] > 0.8), bool(abs(v[0] @ v[2]) < 0.5)
        (True, True)
        >>> len(emb.embed_query("hello")), len(emb.embed_documents(["a", "b"]))
        (64, 2)
    """

    def __init__(self, dim: int = 64) -> None:
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 8:
            raise ConfigurationError(f"dim must be an int >= 8, got {dim!r}.", field="dim")
        try:
            import numpy  # noqa: F401
        except ImportError as exc:  # pragma: no cover - numpy comes with the test tools
            raise ImportError('HashEmbeddings needs numpy: pip install "frugal-chains[embeddings]"') from exc
        self._dim = dim
        self.calls = 0
        """How many ``embed``/``aembed`` calls were made (handy to assert that a cache hit embedded nothing)."""

    @property
    def name(self) -> str:
        return f"fake-hash-{self._dim}"

    @property
    def dim(self) -> int:
        return self._dim

    def __repr__(self) -> str:
        return f"HashEmbeddings(dim={self._dim})"

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """Embed ``texts``: float32 array of shape ``(len(texts), dim)`` with unit rows."""
        import numpy as np

        if isinstance(texts, (str, bytes)):
            raise ConfigurationError("texts must be a sequence of strings: pass [text].", field="texts")
        self.calls += 1
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        for row, text in enumerate(texts):
            if not isinstance(text, str):
                raise ConfigurationError(
                    f"texts must contain only str, got {type(text).__name__}.", field="texts"
                )
            for feature, weight in _features(text):
                index, sign = _slot(feature, self._dim)
                out[row, index] += sign * weight
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        # Features can cancel out exactly in a tiny dim; such a row falls back to the "empty" direction.
        zero = norms[:, 0] == 0
        if zero.any():
            index, sign = _slot(_EMPTY_FEATURE, self._dim)
            out[zero, index] = sign
            norms[zero] = 1.0
        result: NDArray[np.float32] = (out / norms).astype(np.float32, copy=False)
        return result

    async def aembed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """Like :meth:`embed` (it is fast enough to run on the event loop); yields to the loop once."""
        await asyncio.sleep(0)
        return self.embed(texts)

    # -- LangChain's Embeddings interface ------------------------------------------------------------------------
    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """LangChain: one vector (a list of floats) a text."""
        rows: list[list[float]] = self.embed(texts).tolist()
        return rows

    def embed_query(self, text: str) -> list[float]:
        """LangChain: the vector of one text (the same as a document's: the fake has no query prefix)."""
        return self.embed_documents([text])[0]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        rows: list[list[float]] = (await self.aembed(texts)).tolist()
        return rows

    async def aembed_query(self, text: str) -> list[float]:
        return (await self.aembed_documents([text]))[0]

    # -- LlamaIndex ----------------------------------------------------------------------------------------------
    def for_llama_index(self) -> Any:
        """A LlamaIndex ``BaseEmbedding`` giving these vectors (``model_name`` is :attr:`name`), for
        ``VectorStoreIndex(..., embed_model=...)`` or ``Settings.embed_model``. Needs llama-index-core.

        Example:
            >>> from frugal_chains.testing import HashEmbeddings
            >>> li = HashEmbeddings(dim=32).for_llama_index()
            >>> li.model_name, len(li.get_text_embedding("hello"))
            ('fake-hash-32', 32)
        """
        from frugal_chains.testing._llama_index_embedding import llama_index_embedding

        return llama_index_embedding(self)


def _register_with_langchain() -> None:
    """Make ``isinstance(HashEmbeddings(), langchain_core.embeddings.Embeddings)`` true when LangChain is here."""
    if importlib.util.find_spec("langchain_core") is None:
        return
    from langchain_core.embeddings import Embeddings

    Embeddings.register(HashEmbeddings)


_register_with_langchain()

__getattr__ = deprecated_attributes(
    __name__, {"FakeEmbeddings": ("frugal_chains.testing.HashEmbeddings", lambda: HashEmbeddings)}
)
