"""Budgets for every LangChain call inside a block, e.g. one web request, without passing callbacks.

python cookbook/budget_scope_per_request.py
"""

from __future__ import annotations

from frugal_chains import Budget, BudgetExceededError, Price, attribute
from frugal_chains.langchain import budget_scope
from frugal_chains.testing import FakeUsageChatModel

# A self-hosted model has no public price: say what it costs you (USD per million tokens).
PRICES = {"my-llama-70b": Price(input=0.6, output=0.6, max_output_tokens=4096)}


def handle_request(user_id: str, question: str) -> str:
    model = FakeUsageChatModel(model="my-llama-70b", provider="vllm", max_tokens=400, output_tokens=350)
    # one request = one task, capped at 2,000 tokens; attribution for every call inside
    with budget_scope([Budget(max_tokens=2_000, scope="task")], prices=PRICES, one_task=True) as scope:
        with attribute(feature="qa", user_id=user_id):
            answers = []
            try:
                for step in range(10):  # a multi-step chain that would go on too long
                    answers.append(str(model.invoke(f"step {step}: {question}").content))
            except BudgetExceededError as e:
                answers.append(
                    f"[stopped: {e.unit} budget, {e.spent:.0f} + {e.requested:.0f} > {e.limit:.0f}]"
                )
        calls = sum(r.outcome == "ok" for r in scope.ledger.records())  # refused calls are recorded too
    return f"{calls} calls; last: {answers[-1]}"


if __name__ == "__main__":
    print(handle_request("u1", "Summarise the report"))
