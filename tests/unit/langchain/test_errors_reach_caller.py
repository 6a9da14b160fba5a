"""Every error frugal-chains raises while a call runs reaches the caller of LangChain's other host paths: batch,
an LCEL chain (``prompt | model | StrOutputParser()``), ``with_retry``, and a ``langchain.agents.create_agent`` loop
(the model node, and a tool that makes its own model call: langgraph's ``ToolNode`` only turns argument errors into
messages by default). invoke/ainvoke/stream/astream are in ``tests/contract/test_errors_contract.py``.

The handler is attached the way docs/budgets.md says: ``config={"callbacks": [handler]}``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import BaseMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.tools import tool
from pydantic import Field

from frugal_chains import (
    Budget,
    BudgetExceededError,
    ConfigurationError,
    FrugalChainsError,
    Price,
    UnknownModelPriceError,
)
from frugal_chains.cache import AnswerCache
from frugal_chains.langchain import CascadeChatModel, TokenBudgetHandler, with_cache
from frugal_chains.testing import FakeToolCallingChatModel, HashEmbeddings

QUESTION = "What is the capital of France?"
PRICES = {"acme-1": Price(input=1.0, output=2.0), "acme-strong": Price(input=10.0, output=30.0)}
ROOMY = Budget(max_usd=1.0, scope="global")
TINY = Budget(max_usd=1e-9, scope="global")


class Provider(FakeToolCallingChatModel):
    """A paid provider that records each call that reaches it."""

    reached: list[str] = Field(default_factory=list, exclude=True)

    def _answer(self, messages: list[BaseMessage], **kwargs: Any) -> Any:
        self.reached.append(self.model)
        return super()._answer(messages, **kwargs)


class NoVectors:
    """A LangChain embedding model that returns no vectors (a broken deployment): found at call time."""

    model = "broken-embeddings"

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return []


@dataclass(frozen=True)
class Case:
    error: type[FrugalChainsError]
    field: str | None
    model: str = "acme-1"
    max_tokens: int | None = 256
    budget: Budget = ROOMY
    embedder: Callable[[], Any] = HashEmbeddings


CASES = {
    "unpriced": Case(UnknownModelPriceError, "prices", model="acme-unpriced"),
    "refused": Case(BudgetExceededError, None, budget=TINY),
    "uncapped": Case(ConfigurationError, "max_tokens", max_tokens=None),
    "embedder": Case(ConfigurationError, "embedder", embedder=NoVectors),
}
COMBOS = [(c, w) for c in CASES for w in ("plain", "cascade", "cached") if c != "embedder" or w == "cached"]


@dataclass
class Built:
    model: Any
    handler: TokenBudgetHandler
    providers: list[Provider]
    case: Case

    @property
    def config(self) -> dict[str, Any]:
        return {"callbacks": [self.handler]}

    def check(self, error: BaseException) -> None:
        case = self.case
        assert isinstance(error, case.error), repr(error)
        assert not isinstance(error, (ValueError, TypeError))
        assert getattr(error, "field", None) == case.field
        assert [p.reached for p in self.providers] == [[] for _ in self.providers]  # no provider was reached
        # nothing spent: the only records are those of refused calls
        outcomes = {r.outcome for r in self.handler.ledger.records()}
        assert outcomes == ({"refused"} if isinstance(error, BudgetExceededError) else set())
        counter = self.handler.core.spent(case.budget)
        assert (counter.committed_nano, counter.reserved_nano) == (0, 0)


def build(case_id: str, wrapper: str) -> Built:
    case = CASES[case_id]
    first = Provider(model=case.model, max_tokens=case.max_tokens)
    providers = [first]
    model: Any = first
    if wrapper == "cascade":
        providers.append(Provider(model="acme-strong"))
        model = CascadeChatModel(tiers=providers)
    elif wrapper == "cached":
        model = with_cache(first, AnswerCache(embedder=case.embedder()))
    return Built(model, TokenBudgetHandler([case.budget], prices=PRICES), providers, case)


def chain(model: Any) -> Any:
    return ChatPromptTemplate.from_messages([("user", "{q}")]) | model | StrOutputParser()


def run_batch(b: Built) -> Any:
    return b.model.batch([QUESTION, QUESTION], config=b.config)


def run_batch_returning_exceptions(b: Built) -> Any:
    (result,) = b.model.batch([QUESTION], config=b.config, return_exceptions=True)
    raise result  # the error came back as the item's result


def run_abatch(b: Built) -> Any:
    return asyncio.run(b.model.abatch([QUESTION, QUESTION], config=b.config))


def run_chain_invoke(b: Built) -> Any:
    return chain(b.model).invoke({"q": QUESTION}, config=b.config)


def run_chain_ainvoke(b: Built) -> Any:
    return asyncio.run(chain(b.model).ainvoke({"q": QUESTION}, config=b.config))


def run_chain_stream(b: Built) -> Any:
    shown = list(chain(b.model).stream({"q": QUESTION}, config=b.config))
    raise AssertionError(f"the stream ended normally after {shown!r}")


def run_chain_astream(b: Built) -> Any:
    async def run() -> list[str]:
        return [t async for t in chain(b.model).astream({"q": QUESTION}, config=b.config)]

    shown = asyncio.run(run())
    raise AssertionError(f"the stream ended normally after {shown!r}")


def run_chain_batch(b: Built) -> Any:
    return chain(b.model).batch([{"q": QUESTION}, {"q": QUESTION}], config=b.config)


def run_with_retry(b: Built) -> Any:
    """``with_retry`` retries every ``Exception`` by default: each attempt is refused again before any spend, and
    the last error reaches the caller."""
    return b.model.with_retry(stop_after_attempt=2, wait_exponential_jitter=False).invoke(
        QUESTION, config=b.config
    )


@tool
def lookup(query: str) -> str:
    """Look a fact up in the knowledge base."""
    return "Paris is the capital of France."


def run_agent_invoke(b: Built) -> Any:
    agent = create_agent(b.model, tools=[lookup])
    return agent.invoke({"messages": [("user", QUESTION)]}, config=b.config)


def run_agent_ainvoke(b: Built) -> Any:
    agent = create_agent(b.model, tools=[lookup])
    return asyncio.run(agent.ainvoke({"messages": [("user", QUESTION)]}, config=b.config))


def run_agent_stream(b: Built) -> Any:
    agent = create_agent(b.model, tools=[lookup])
    updates = list(agent.stream({"messages": [("user", QUESTION)]}, config=b.config, stream_mode="updates"))
    raise AssertionError(f"the agent ended normally after {updates!r}")


PATHS: dict[str, Callable[[Built], Any]] = {
    "batch": run_batch,
    "batch-return_exceptions": run_batch_returning_exceptions,
    "abatch": run_abatch,
    "chain-invoke": run_chain_invoke,
    "chain-ainvoke": run_chain_ainvoke,
    "chain-stream": run_chain_stream,
    "chain-astream": run_chain_astream,
    "chain-batch": run_chain_batch,
    "with_retry": run_with_retry,
    "agent-invoke": run_agent_invoke,
    "agent-ainvoke": run_agent_ainvoke,
    "agent-stream": run_agent_stream,
}


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize(("case", "wrapper"), COMBOS)
def test_the_error_reaches_the_caller(case: str, wrapper: str, path: str) -> None:
    built = build(case, wrapper)
    with pytest.raises(FrugalChainsError) as e:
        PATHS[path](built)
    built.check(e.value)


@pytest.mark.parametrize("case", ["unpriced", "uncapped"])
def test_an_error_in_a_tools_own_model_call_stops_the_agent(case: str) -> None:
    """A tool that asks its own (misconfigured) model: langgraph's ToolNode hands only argument errors back to
    the agent's model by default; ours leave the agent loop."""
    spec = CASES[case]
    inner = Provider(model=spec.model, max_tokens=spec.max_tokens)
    outer = Provider(model="acme-1", tool_to_call="ask_expert")

    @tool
    def ask_expert(query: str) -> str:
        """Ask the expert model."""
        return str(inner.invoke(query).content)

    handler = TokenBudgetHandler([ROOMY], prices=PRICES)
    agent = create_agent(outer, tools=[ask_expert])
    with pytest.raises(spec.error) as e:
        agent.invoke({"messages": [("user", QUESTION)]}, config={"callbacks": [handler]})
    assert not isinstance(e.value, (ValueError, TypeError)) and e.value.field == spec.field
    assert (
        outer.reached == ["acme-1"] and inner.reached == []
    )  # the agent's first turn, then the refused call
    assert [r.model for r in handler.ledger.records()] == ["acme-1"]
