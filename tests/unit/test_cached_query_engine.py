"""The LlamaIndex ``CachedQueryEngine``: configuration, what is stored, what is not."""

from __future__ import annotations

from typing import Any

import pytest
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.base.response.schema import Response

from frugal_chains.cache import AnswerCache
from frugal_chains.errors import ConfigurationError
from frugal_chains.llama_index import CachedQueryEngine
from frugal_chains.testing import FakeUsageLLM, HashEmbeddings


def engine(**kwargs: Any) -> Any:
    index = VectorStoreIndex.from_documents(
        [Document(text="We ship to Canada.", metadata={"page": 3})],
        embed_model=HashEmbeddings().for_llama_index(),
    )
    return index.as_query_engine(llm=FakeUsageLLM(responses=["Yes.", "(again)"]), **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"query_engine": "nope"}, "query_engine"),
        ({"cache": "nope"}, "cache"),
        ({"version": 2}, "version"),
        ({"name": 2}, "name"),
    ],
)
def test_bad_configuration_names_the_field(kwargs: dict[str, Any], field: str) -> None:
    base: dict[str, Any] = {"query_engine": engine(), "cache": AnswerCache(semantic=False)}
    with pytest.raises(ConfigurationError) as err:
        CachedQueryEngine(**{**base, **kwargs})
    assert err.value.field == field


def test_streaming_follows_the_engine() -> None:
    cache = AnswerCache(semantic=False)
    assert CachedQueryEngine(engine(streaming=True), cache).streaming is True
    assert CachedQueryEngine(engine(), cache).streaming is False
    assert CachedQueryEngine(engine(), cache, streaming=True).streaming is True


def test_a_hit_restores_nodes_and_metadata() -> None:
    cached = CachedQueryEngine(engine(), AnswerCache(semantic=False))
    miss = cached.query("Do you ship to Canada?")
    hit = cached.query("Do you ship to Canada?")
    assert isinstance(hit, Response) and str(hit) == str(miss) == "Yes."
    assert hit.source_nodes[0].node.metadata == {"page": 3}
    assert hit.source_nodes[0].node.node_id == miss.source_nodes[0].node.node_id
    assert hit.source_nodes[0].score == pytest.approx(miss.source_nodes[0].score)
    assert hit.metadata == miss.metadata


def test_engines_sharing_a_cache_are_kept_apart_by_name() -> None:
    cache = AnswerCache(semantic=False)
    CachedQueryEngine(engine(), cache, name="docs").query("Do you ship to Canada?")
    other = CachedQueryEngine(engine(), cache, name="faq").query("Do you ship to Canada?")
    assert str(other) == "Yes." and cache.stats.hits == 0


def test_prompts_are_the_engines() -> None:
    cached = CachedQueryEngine(engine(), AnswerCache(semantic=False))
    assert any("text_qa_template" in key for key in cached.get_prompts())
