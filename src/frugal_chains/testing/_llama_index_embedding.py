""":class:`~frugal_chains.testing.HashEmbeddings` as a LlamaIndex ``BaseEmbedding`` (imported on first use)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llama_index.core.base.embeddings.base import BaseEmbedding
from pydantic import Field

if TYPE_CHECKING:
    from frugal_chains.testing.fake_embeddings import HashEmbeddings

__all__ = ["llama_index_embedding"]


class _HashEmbedding(BaseEmbedding):
    """LlamaIndex's view of a :class:`HashEmbeddings`."""

    embedder: Any = Field(exclude=True)

    @classmethod
    def class_name(cls) -> str:
        return "HashEmbedding"

    def _get_query_embedding(self, query: str) -> list[float]:
        vector: list[float] = self.embedder.embed_query(query)
        return vector

    async def _aget_query_embedding(self, query: str) -> list[float]:
        vector: list[float] = await self.embedder.aembed_query(query)
        return vector

    def _get_text_embedding(self, text: str) -> list[float]:
        vector: list[float] = self.embedder.embed_query(text)
        return vector

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        rows: list[list[float]] = self.embedder.embed_documents(texts)
        return rows


def llama_index_embedding(embedder: HashEmbeddings) -> BaseEmbedding:
    return _HashEmbedding(embedder=embedder, model_name=embedder.name)
