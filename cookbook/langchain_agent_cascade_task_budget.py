"""A LangChain agent (`create_agent`) on a cascading router, with a budget for each agent run.

Each step of the agent goes to the cheap tier first; an answer the quality gates reject escalates to the strong
tier. A task budget caps one agent run, escalations included. Without `max_tokens`, a provider model's output is
unbounded, so each call would reserve the model's whole output limit (16,384 tokens on gpt-4o: $0.16) and a $0.05
task budget would refuse the first call; `assume_max_output` reserves a cap you choose instead (every answer that
goes past it is recorded as an overshoot and alerted).

Needs `pip install langchain` for `create_agent`. Runs offline: scripted fakes report usage the way providers do
(in your app: `ChatOpenAI(model="gpt-4o-mini")` and `ChatOpenAI(model="gpt-4o")`).

    python cookbook/langchain_agent_cascade_task_budget.py
"""

from __future__ import annotations

from langchain.agents import create_agent
from langchain_core.tools import tool

from frugal_chains import Budget, BudgetExceededError, SQLiteLedger
from frugal_chains.accounting import spend_report
from frugal_chains.langchain import CascadeChatModel, TokenBudgetHandler
from frugal_chains.routing import HeuristicScorer, RefusalGate
from frugal_chains.testing import FakeToolCallingChatModel


@tool
def order_status(order_id: str) -> str:
    """Look up the status of an order."""
    return f"Order {order_id}: shipped on Monday by DHL, tracking DH-{order_id}; the carrier reports a delay."


def main() -> None:
    ledger = SQLiteLedger(
        ":memory:"
    )  # a file keeps spend across restarts; RedisLedger shares it across hosts
    budget = TokenBudgetHandler(
        [Budget(max_usd=0.05, scope="task")],  # one agent run, escalations included
        ledger=ledger,
        assume_max_output={"*": 800},  # the models set no max_tokens: reserve 800 output tokens a call
    )
    # The cheap model calls the tool, then is unsure: the refusal gate escalates that step to the strong model.
    cheap = FakeToolCallingChatModel(
        model="gpt-4o-mini",
        max_tokens=None,  # like ChatOpenAI's default: no output cap
        output_tokens=150,
        turns=[
            {"name": "order_status", "args": {"order_id": "A-1001"}},
            "I'm not sure what the delay means.",
        ],
    )
    strong = FakeToolCallingChatModel(
        model="gpt-4o",
        max_tokens=None,
        output_tokens=300,
        turns=["Your order A-1001 shipped on Monday; DHL reports a delay, tracking number DH-A-1001."],
    )
    router = CascadeChatModel(
        tiers=[cheap, strong],
        tier_names=["mini", "4o"],
        scorer=HeuristicScorer(),
        gates=[RefusalGate()],
        ledger=ledger,
    )
    agent = create_agent(router, tools=[order_status])
    question = {"messages": [("user", "Where is my order A-1001?")]}

    # Without a cap, the first call would reserve gpt-4o-mini's whole output limit: the error says what to do.
    uncapped = TokenBudgetHandler([Budget(max_usd=0.001, scope="task")], ledger=SQLiteLedger(":memory:"))
    try:
        agent.invoke(question, config={"callbacks": [uncapped]})
    except BudgetExceededError as e:
        print("without an output cap:", str(e).split(". ", 1)[1])

    for run in range(1, 3):
        try:
            out = agent.invoke(
                question,
                config={"callbacks": [budget], "metadata": {"feature": "support-agent", "user_id": "u17"}},
            )
            print(f"run {run}: {out['messages'][-1].content}")
        except BudgetExceededError as e:
            print(f"run {run}: stopped by its budget before spending more (${e.spent:.4f} of ${e.limit:.2f})")

    print()
    print(
        spend_report(ledger, by="tier").render(title="Spend by cascade tier")
    )  # as `frugal-chains report` does
    records = ledger.records()
    assert sum(r.cost_usd or 0.0 for r in records) <= 2 * 0.05  # two runs, each within its task budget


if __name__ == "__main__":
    main()
