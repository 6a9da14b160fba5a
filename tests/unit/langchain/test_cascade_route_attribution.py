"""A cascade's ``routed`` record is attributed from run metadata the way the budget handler's call records are: a
chain's metadata reaches it, and a non-string id (``user_id=42``) is kept as text."""

from __future__ import annotations

from langchain_core.prompts import ChatPromptTemplate

from frugal_chains.accounting import SQLiteLedger
from frugal_chains.langchain import CascadeChatModel
from frugal_chains.testing import FakeUsageChatModel


def test_route_record_takes_the_chain_s_metadata() -> None:
    ledger = SQLiteLedger()
    router = CascadeChatModel(
        tiers=[FakeUsageChatModel(model="gpt-4o-mini"), FakeUsageChatModel(model="gpt-4o")], ledger=ledger
    )
    chain = ChatPromptTemplate.from_messages([("user", "{q}")]) | router
    chain.invoke({"q": "Where is my order?"}, config={"metadata": {"user_id": 42, "feature": "support"}})
    (route,) = [r for r in ledger.records() if r.outcome == "routed"]
    assert (route.attribution.user_id, route.attribution.feature) == ("42", "support")
