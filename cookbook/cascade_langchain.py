"""A cascading router in a LangChain app: a tool-calling agent, structured output and streaming, with budgets.

Needs `pip install langchain` for `create_agent`. Recorded answers of a cheap and a strong model (ReplayChatModel)
stand in for real providers; swap in ChatOpenAI(model="gpt-4o-mini") and ChatOpenAI(model="gpt-4o") for production.

python cookbook/cascade_langchain.py
"""

from __future__ import annotations

from langchain.agents import create_agent
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.tools import tool
from pydantic import BaseModel

from frugal_chains import Budget, SQLiteLedger
from frugal_chains.langchain import CascadeChatModel, TokenBudgetHandler
from frugal_chains.routing import HeuristicScorer, RefusalGate, escalation_rates
from frugal_chains.testing import ReplayChatModel
from frugal_chains.testing.replay import ReplayEntry, replay_key


@tool
def order_status(order_id: str) -> str:
    """Look up the status of an order."""
    return STATUS


class Ticket(BaseModel):
    """A support ticket extracted from an email."""

    customer: str
    order_id: str
    urgent: bool


ASK_STATUS = "Where is my order A-1001?"
EMAIL = "From Dana: my order B-77 has not arrived and I need it for a wedding tomorrow!"
POLICY = "Can I return a gift without the receipt?"
LEGAL = (
    "Are we liable under EU consumer law when a parcel is lost by the carrier after delivery was attempted?"
)

STATUS = "Order A-1001: shipped yesterday, arriving Friday."
# The cheap model calls the tool for the status question and then answers from its result, returns a ticket
# that misses a field for the email, answers the policy question and is unsure about the legal one. The
# "conversation" key tells the agent's two steps apart (the second one carries the tool's result).
call = {"name": "order_status", "args": {"order_id": "A-1001"}, "id": "call_1"}
after_tool = [
    {"role": "user", "content": ASK_STATUS},
    {"role": "assistant", "content": ""},
    {"role": "tool", "content": STATUS},
]
cheap = ReplayChatModel(
    model="gpt-4o-mini",
    key="conversation",
    table={
        replay_key(ASK_STATUS, "conversation"): ReplayEntry(tool_calls=[call]),
        replay_key(after_tool, "conversation"): "Your order A-1001 shipped yesterday and arrives on Friday.",
        replay_key(EMAIL, "conversation"): ReplayEntry(
            tool_calls=[{"name": "Ticket", "args": {"customer": "Dana", "order_id": "B-77"}, "id": "t1"}]
        ),
        replay_key(POLICY, "conversation"): "Yes: within 30 days we refund a gift as store credit.",
        replay_key(LEGAL, "conversation"): "I'm not sure about the legal details, sorry.",
    },
)
strong = ReplayChatModel(
    model="gpt-4o",
    table={
        EMAIL: ReplayEntry(
            tool_calls=[
                {
                    "name": "Ticket",
                    "args": {"customer": "Dana", "order_id": "B-77", "urgent": True},
                    "id": "t2",
                }
            ]
        ),
        LEGAL: "Under the EU Consumer Rights Directive the risk passes on delivery: the seller is liable until "
        "the parcel is in the customer's hands.",
    },
)

ledger = SQLiteLedger(":memory:")
budget = TokenBudgetHandler([Budget(max_usd=1.00, scope="task")], ledger=ledger)
router = CascadeChatModel(
    tiers=[cheap, strong],
    tier_names=["mini", "4o"],
    scorer=HeuristicScorer(),
    gates=[RefusalGate()],
    ledger=ledger,
)
config = {"callbacks": [budget], "metadata": {"feature": "support"}}

if __name__ == "__main__":
    # 1. An agent with tools: bind_tools binds on every tier; each step is routed.
    agent = create_agent(model=router, tools=[order_status])
    out = agent.invoke({"messages": [HumanMessage(ASK_STATUS)]}, config=config)
    steps = [m for m in out["messages"] if isinstance(m, AIMessage)]
    print("agent:", out["messages"][-1].content)
    print("  steps answered by:", [m.response_metadata["frugal"]["cascade"]["tier"] for m in steps])

    # 2. Structured output: the cheap tier's ticket misses a field, so it escalates.
    ticket = router.with_structured_output(Ticket).invoke(EMAIL, config=config)
    print("ticket:", ticket)

    # 3. Streaming: the cheap tier's answer is buffered, checked, then streamed.
    for question in (POLICY, LEGAL):
        text = "".join(str(chunk.content) for chunk in router.stream(question, config=config))
        print(f"stream: {question[:40]!r} -> {text[:70]!r}")

    print("spend by tier (each provider call counted once by the budget handler):")
    for row in ledger.summary("tier"):
        print(f"  {row.key:>6}: {row.calls} calls, ${row.cost_usd:.6f}")
    for tier, stats in escalation_rates(ledger.records()).items():
        print(f"  {tier:>6}: {stats.attempts} answers, escalation rate {stats.escalation_rate:.0%}")
