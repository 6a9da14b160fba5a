"""HashEmbeddings: our Embedder, a LangChain Embeddings (in a vector store), a LlamaIndex embedding; the old name
FakeEmbeddings still works and warns."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import InMemoryVectorStore

from frugal_chains.cache import AnswerCache, CacheRequest
from frugal_chains.embeddings import Embedder, as_embedder
from frugal_chains.testing import HashEmbeddings


def test_is_our_embedder_and_a_langchain_embeddings() -> None:
    emb = HashEmbeddings(dim=32)
    assert isinstance(emb, Embedder) and as_embedder(emb) is emb
    assert isinstance(emb, Embeddings)
    docs = emb.embed_documents(["reset my password", "pizza in Rome"])
    assert np.allclose(docs[0], emb.embed(["reset my password"])[0]) and len(docs[1]) == 32
    assert emb.embed_query("reset my password") == docs[0]
    assert asyncio.run(emb.aembed_documents(["pizza in Rome"]))[0] == docs[1]
    assert asyncio.run(emb.aembed_query("pizza in Rome")) == docs[1]


def test_in_a_langchain_vector_store_and_an_answer_cache() -> None:
    emb = HashEmbeddings()
    store = InMemoryVectorStore(embedding=emb)
    store.add_documents([Document("How do I reset my password?"), Document("Best pizza in Rome")])
    assert store.similarity_search("reset password", k=1)[0].page_content == "How do I reset my password?"
    cache = AnswerCache(embedder=emb)
    cache.update(CacheRequest.from_prompt("What is the capital of France?"), "Paris")
    hit = cache.lookup(CacheRequest.from_prompt("what is the capital of france"))
    assert hit is not None and hit.answer == "Paris"


def test_llama_index_embedding() -> None:
    from llama_index.core.base.embeddings.base import BaseEmbedding

    emb = HashEmbeddings(dim=16)
    li = emb.for_llama_index()
    assert isinstance(li, BaseEmbedding) and li.model_name == "fake-hash-16"
    assert np.allclose(li.get_query_embedding("hello"), emb.embed_query("hello"))
    assert li.get_text_embedding_batch(["a", "b"]) == emb.embed_documents(["a", "b"])
    assert np.allclose(asyncio.run(li.aget_query_embedding("hello")), emb.embed_query("hello"))


def test_old_name_warns_and_is_the_same_class() -> None:
    import frugal_chains.testing
    import frugal_chains.testing.fake_embeddings

    for module in (frugal_chains.testing, frugal_chains.testing.fake_embeddings):
        with pytest.warns(DeprecationWarning, match="HashEmbeddings"):
            old = module.FakeEmbeddings
        assert old is HashEmbeddings
    with pytest.warns(DeprecationWarning, match="FakeEmbeddings is deprecated"):
        from frugal_chains.testing import FakeEmbeddings  # noqa: F401
