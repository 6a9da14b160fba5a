"""A LlamaIndex query engine with budgets, the semantic cache and a cascade, wired by one `configure()` call.

Runs offline: two MockLLM tiers stand in for a cheap and a strong model (in your app: `OpenAI(model="gpt-4o-mini")`
and `OpenAI(model="gpt-4o")`), MockEmbedding for retrieval and HashEmbeddings for the cache (in your app: the
default embedder, `pip install "frugal-chains[embeddings]"`). Budget records, the cascade's routes and the cache's
hits go to one ledger, printed at the end.

    python cookbook/llama_index_query_configure.py
"""

from __future__ import annotations

from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.llms.mock import MockLLM

from frugal_chains import Budget, BudgetExceededError, Price, attribute
from frugal_chains.accounting import spend_report
from frugal_chains.cache import AnswerCache
from frugal_chains.llama_index import configure
from frugal_chains.routing import LengthGate
from frugal_chains.testing import HashEmbeddings


def main() -> None:
    Settings.embed_model = MockEmbedding(embed_dim=8)
    frugal = configure(
        # MockLLM(max_tokens=n) answers "text" n times: the cheap tier's short answers escalate
        tiers=[MockLLM(max_tokens=4), MockLLM(max_tokens=40)],
        tier_names=["cheap", "strong"],
        gates=[LengthGate(min_chars=40)],
        cache=AnswerCache(embedder=HashEmbeddings()),
        budgets=[Budget(max_usd=0.002, scope="user", window="day")],
        # MockLLM has no public price: say what a call costs (USD per million tokens)
        prices={"MockLLM": Price(input=1.0, output=4.0)},
        feature="docs-qa",
    )
    # Build indexes and query engines after configure(): they take Settings.llm when they are built.
    docs = [Document(text="Refunds are issued within 30 days of delivery. " * 20)]
    engine = VectorStoreIndex.from_documents(docs).as_query_engine()

    for user, questions in (("dana", 3), ("eve", 12)):
        answered = 0
        with attribute(user_id=user):
            try:
                for i in range(questions):
                    # dana asks the same question three times: answered once, then served from the cache
                    question = (
                        "How long do refunds take?" if user == "dana" else f"Question {i} about refunds?"
                    )
                    engine.query(question)
                    answered += 1
            except BudgetExceededError as e:
                print(f"{user}: stopped after {answered} answers (${e.spent:.6f} of ${e.limit} spent today)")
                continue
        print(f"{user}: {answered} answers")

    # The same tables as `frugal-chains report --ledger FILE --by user` (here the ledger is in memory).
    print()
    print(spend_report(frugal.ledger, by="user").render(title="Spend by user"))
    print(spend_report(frugal.ledger, by="tier").render(title="Spend by cascade tier"))
    stats = frugal.cache_stats
    assert stats is not None and stats.hits == 2
    assert all(row.cost_usd <= 0.002 for row in frugal.summary("user"))
    frugal.reset()  # Settings as they were


if __name__ == "__main__":
    main()
