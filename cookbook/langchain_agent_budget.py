"""Cap what one agent run, each user and the whole app may spend, in a LangChain agent.

Needs `pip install langchain` for `create_agent`. Runs offline: a fake chat model that reports usage like a
provider stands in for the real one. Swap in `ChatOpenAI(model="gpt-4o", max_tokens=500)` or
`ChatAnthropic(...)` and nothing else changes.

    python cookbook/langchain_agent_budget.py
"""

from __future__ import annotations

from langchain.agents import create_agent
from langchain_core.tools import tool

from frugal_chains import Budget, BudgetExceededError, SQLiteLedger
from frugal_chains.langchain import TokenBudgetHandler
from frugal_chains.testing import FakeUsageChatModel


@tool
def search_orders(customer: str) -> str:
    """Look up a customer's orders."""
    return f"{customer} has 3 open orders. " + "Order details... " * 50


def main() -> None:
    ledger = SQLiteLedger(
        ":memory:"
    )  # a file path keeps spend across restarts; RedisLedger shares it across hosts
    budget = TokenBudgetHandler(
        [
            Budget(max_usd=0.03, scope="task"),  # one agent run
            Budget(max_usd=1.00, scope="user", window="day"),  # each user per UTC day
            Budget(max_usd=50.0, scope="global", window="month"),  # the whole app
        ],
        ledger=ledger,
        on_alert=lambda a: print(f"ALERT {a.kind}: {a.message}"),
    )
    # A model that calls its tool forever: the budget, not the model, ends the run.
    model = FakeUsageChatModel(
        model="gpt-4o", max_tokens=500, output_tokens=300, tool_to_call="search_orders"
    )
    agent = create_agent(model, tools=[search_orders])
    try:
        agent.invoke(
            {"messages": [("user", "Why is my order late?")]},
            config={
                "callbacks": [budget],
                "metadata": {"feature": "support-agent", "user_id": "customer-17"},
                "recursion_limit": 1000,
            },
        )
    except BudgetExceededError as e:
        print(
            f"Stopped before spending more: {e.scope_key!r} spent ${e.spent:.4f}, next call up to "
            f"${e.requested:.4f}, limit ${e.limit:.2f}"
        )
    for row in ledger.summary("model"):
        print(
            f"{row.key}: {row.calls} calls, {row.input_tokens} in / {row.output_tokens} out, ${row.cost_usd:.4f}"
        )
    total = sum(row.cost_usd for row in ledger.summary("model"))  # USD of the calls whose price is known
    assert total <= 0.03, total


if __name__ == "__main__":
    main()
