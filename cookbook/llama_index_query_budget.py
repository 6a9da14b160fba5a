"""Per-user daily budgets for a LlamaIndex query engine driven through `Settings`.

Runs offline with LlamaIndex's MockLLM and MockEmbedding; with a real LLM (`Settings.llm = OpenAI(...)`)
nothing else changes.

    python cookbook/llama_index_query_budget.py
"""

from __future__ import annotations

from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.callbacks import CallbackManager
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.llms.mock import MockLLM

from frugal_chains import Budget, BudgetExceededError, Price, SQLiteLedger, attribute
from frugal_chains.llama_index import TokenBudgetHandler


def main() -> None:
    ledger = SQLiteLedger(":memory:")
    handler = TokenBudgetHandler(
        [
            Budget(max_usd=0.01, scope="user", window="day"),
            Budget(max_usd=10.0, scope="global", window="month"),
        ],
        ledger=ledger,
        # MockLLM has no public price: say what a call costs (USD per million tokens)
        prices={"MockLLM": Price(input=1.0, output=4.0)},
    )
    Settings.llm = MockLLM(max_tokens=128)
    Settings.embed_model = MockEmbedding(embed_dim=8)
    Settings.callback_manager = CallbackManager([handler])

    docs = [Document(text="Refunds are issued within 30 days of delivery. " * 20)]
    engine = VectorStoreIndex.from_documents(docs).as_query_engine()

    for user, questions in (("dana", 2), ("eve", 50)):
        answered = 0
        with attribute(feature="docs-qa", user_id=user):
            try:
                for i in range(questions):
                    engine.query(f"Question {i}: how long do refunds take?")
                    answered += 1
            except BudgetExceededError as e:
                print(
                    f"{user}: stopped after {answered} answers ({e.scope_key!r}: ${e.spent:.6f} spent, "
                    f"next call up to ${e.requested:.6f}, limit ${e.limit})"
                )
                continue
        print(f"{user}: {answered} answers")
    for row in ledger.summary("user"):
        print(f"{row.key}: {row.calls} LLM calls, ${row.cost_usd:.6f}")
    assert all(row.cost_usd <= 0.01 for row in ledger.summary("user"))


if __name__ == "__main__":
    main()
