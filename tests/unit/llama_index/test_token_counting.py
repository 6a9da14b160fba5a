"""LlamaIndex's ``TokenCountingHandler`` counts each provider call once through ``CascadeLLM`` and ``CachedLLM``: the
wrappers' own LLM events end without a response (the handler would count, or estimate, the wrapper's answer on top
of the calls it made), the tiers' (or the wrapped LLM's) events carry theirs."""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import pytest
from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.callbacks import CallbackManager, TokenCountingHandler

from frugal_chains import SQLiteLedger
from frugal_chains.cache import AnswerCache
from frugal_chains.llama_index import CachedLLM, CascadeLLM, TokenBudgetHandler
from frugal_chains.routing import RegexGate
from frugal_chains.testing.fake_embeddings import HashEmbeddings
from tests.contract.wings import PRICES, Script, _li_fake_class, cheap, strong

CALLS = (
    "chat",
    "achat",
    "stream_chat",
    "astream_chat",
    "complete",
    "acomplete",
    "stream_complete",
    "astream_complete",
)
QUESTION = "What is 6 x 7?"


def counter() -> TokenCountingHandler:
    return TokenCountingHandler(tokenizer=lambda text: text.split())  # no tokenizer download


def fake(script: Script, manager: CallbackManager) -> Any:
    return _li_fake_class()(script=script, tally=collections.Counter(), callback_manager=manager)


def call(llm: Any, how: str) -> Any:
    """One call; a stream consumed to its end (its last response returned)."""
    arg: Any = [ChatMessage(role="user", content=QUESTION)] if "chat" in how else QUESTION
    method = getattr(llm, how)
    if how.startswith("a"):

        async def run() -> Any:
            out = await method(arg)
            if how.startswith("astream"):
                return [r async for r in out][-1]
            return out

        return asyncio.run(run())
    out = method(arg)
    return list(out)[-1] if how.startswith("stream") else out


def counted(tc: TokenCountingHandler) -> tuple[int, int, int]:
    return (tc.prompt_llm_token_count, tc.completion_llm_token_count, len(tc.llm_token_counts))


def direct(*scripts: Script, how: str) -> tuple[int, int, int]:
    """What the handler counts for the same calls made on the LLMs themselves."""
    tc = counter()
    manager = CallbackManager([tc])
    for script in scripts:
        call(fake(script, manager), how)
    return counted(tc)


@pytest.mark.parametrize("how", CALLS)
def test_a_cascade_that_escalates_is_counted_once_per_tier_call(how: str) -> None:
    c, s = cheap("I am not sure ."), strong("It is 42 .")
    tc = counter()
    ledger = SQLiteLedger()
    manager = CallbackManager([tc, TokenBudgetHandler([], ledger=ledger, prices=PRICES)])
    llm = CascadeLLM(
        tiers=[fake(c, manager), fake(s, manager)], gates=[RegexGate(r"\d")], callback_manager=manager
    )
    response = call(llm, how)
    assert response.additional_kwargs["frugal"]["cascade"]["escalations"] == 1
    assert counted(tc) == direct(c, s, how=how) == (30, 13, 2)
    assert response.raw["usage"]["input_tokens"] == 30  # the caller still reads the cascade's total
    assert [r.model for r in ledger.records() if r.outcome == "ok"] == ["cheap-1", "strong-1"]
    assert len({r.attribution.task_id for r in ledger.records() if r.outcome == "ok"}) == 1  # one task


@pytest.mark.parametrize("how", CALLS)
def test_a_cache_miss_is_counted_once_and_a_hit_not_at_all(how: str) -> None:
    script = cheap("Paris is the capital of France .")
    tc = counter()
    manager = CallbackManager([tc])
    llm = CachedLLM(llm=fake(script, manager), cache=AnswerCache(embedder=HashEmbeddings()))
    call(llm, how)
    assert counted(tc) == direct(script, how=how) == (10, 5, 1)
    tc.reset_counts()
    hit = call(llm, how)
    assert hit.additional_kwargs["frugal"]["cache"]["status"] == "hit"
    assert counted(tc) == (0, 0, 0)


@pytest.mark.parametrize("shared", [True, False], ids=["its-manager", "default"])
@pytest.mark.parametrize("how", ["chat", "achat", "stream_chat", "astream_chat", "complete", "acomplete"])
def test_a_structured_cascade_is_counted_once_per_tier_call(how: str, shared: bool) -> None:
    """``CascadeLLM.as_structured_llm`` (given the callback manager, or sharing the cascade's by default):
    LlamaIndex's ``StructuredLLM`` would add an LLM event with the parsed answer on top of the tier call that made
    it."""
    from llama_index.core.prompts import ChatPromptTemplate
    from pydantic import BaseModel

    class Answer(BaseModel):
        answer: int

    script = cheap('{"answer": 42}')
    tc = counter()
    manager = CallbackManager([tc])
    cascade = CascadeLLM(tiers=[fake(script, manager), fake(strong(), manager)], callback_manager=manager)
    structured = cascade.as_structured_llm(Answer, **({"callback_manager": manager} if shared else {}))
    assert structured.callback_manager is manager
    response = call(structured, how)
    assert (
        Answer.model_validate_json(response.text if "complete" in how else response.message.content).answer
        == 42
    )

    alone = counter()
    prompt = ChatPromptTemplate(message_templates=[ChatMessage(role="user", content=QUESTION)])
    fake(script, CallbackManager([alone])).structured_predict(Answer, prompt)
    assert counted(tc) == counted(alone)
    assert counted(tc)[2] == 1
