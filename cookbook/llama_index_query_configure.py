"""A LlamaIndex query engine with budgets, the semantic cache and a cascade, wired by one `configure()` call.

Runs offline: two `FakeUsageLLM` tiers report usage the way LlamaIndex's OpenAI integration does and stand in for
a cheap and a strong model (in your app: `OpenAI(model="gpt-4o-mini")` and `OpenAI(model="gpt-4o")`), MockEmbedding
for retrieval and HashEmbeddings for the cache (in your app: the default embedder,
`pip install "frugal-chains[embeddings]"`). Budget records, the cascade's routes and the cache's
hits go to one ledger, printed at the end.

    python cookbook/llama_index_query_configure.py
"""

from __future__ import annotations

from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.embeddings import MockEmbedding

from frugal_chains import Budget, BudgetExceededError, attribute
from frugal_chains.accounting import spend_report
from frugal_chains.cache import AnswerCache
from frugal_chains.llama_index import configure
from frugal_chains.routing import LengthGate
from frugal_chains.testing import FakeUsageLLM, HashEmbeddings


def main() -> None:
    Settings.embed_model = MockEmbedding(embed_dim=8)
    frugal = configure(
        # The cheap tier answers in a few words: the length gate sends those answers up to the strong tier.
        tiers=[
            FakeUsageLLM(model="gpt-4o-mini", responses="30 days.", output_tokens=4),
            FakeUsageLLM(
                model="gpt-4o", responses="Refunds are issued within 30 days of delivery.", output_tokens=12
            ),
        ],
        tier_names=["cheap", "strong"],
        gates=[LengthGate(min_chars=40)],
        cache=AnswerCache(embedder=HashEmbeddings()),
        budgets=[Budget(max_usd=0.01, scope="user", window="day")],  # priced from LiteLLM's map
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
    assert all(row.cost_usd <= 0.01 for row in frugal.summary("user"))  # nobody went past their budget
    frugal.reset()  # Settings as they were


if __name__ == "__main__":
    main()
