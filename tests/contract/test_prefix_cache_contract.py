"""The prefix formatter in front of the semantic cache, through both wings, in the order of the request flow: the
formatter rewrites the request (the date, the request id, the email and the user's name move into one context
block), then the cached model looks it up.

* A generic question, asked again or in other words by another user on another day with another request id, hits.
* A time-specific question is never served across dates; a user-specific one never across users.
* An answer that quotes the user's name is never served to another user.

The formatter writes chat messages, so the scenarios run on the chat wings (LangChain, LlamaIndex ``chat``), in
every call mode, for an Anthropic-shaped request (the block is a content part of its own) and an OpenAI-shaped
one (the block ends the system string)."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
from typing import Any

import pytest

from frugal_chains import SQLiteLedger
from frugal_chains.cache import AnswerCache
from frugal_chains.metadata import cache_status
from frugal_chains.prefix import CONTEXT_HEADER, PrefixFormatter
from frugal_chains.testing import HashEmbeddings
from tests.contract.wings import (
    PRICES,
    WINGS,
    LangChainWing,
    LlamaIndexWing,
    Observation,
    Script,
    Target,
    Wing,
    _astream_into,
    _li_delta,
    _stream_into,
    cheap,
    strong,
)

SYSTEM = (
    "You are the support agent of Skyway Airlines. Follow the policy below.\n\n"
    + "\n".join(
        f"Policy {i}: checked bags are limited to 23 kg each in economy class and 32 kg in business class; a change "
        f"fee applies to basic economy fares; pets travel in the cabin only in an approved carrier."
        for i in range(1, 80)
    )
    + "\n\nToday's date is {date}. The customer is {user_name} ({email}); request {request_id}."
)
ALICE = {
    "date": "2026-12-07",
    "user_name": "Alice Moreau",
    "email": "alice@example.com",
    "request_id": "req_8f3a9b2c4d5e",
}
BOB = {
    "date": "2026-12-07",
    "user_name": "Bob Tanaka",
    "email": "bob@example.org",
    "request_id": "req_1c2d3e4f5a6b",
}
ALICE_LATER = {**ALICE, "date": "2026-12-09"}
BOB_LATER = {
    "date": "2026-12-09",
    "user_name": "Bob Tanaka",
    "email": "bob@example.org",
    "request_id": "req_77aa88bb99cc",
}

GENERIC = "What is the checked baggage allowance in economy class?"
PARAPHRASE = "What is the checked baggage allowance in economy class, please?"

CHAT_WINGS = [w for w in WINGS if w.api == "chat"]


@pytest.fixture(params=CHAT_WINGS, ids=[w.name for w in CHAT_WINGS])
def chat_wing(request: pytest.FixtureRequest) -> Wing:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture(params=["claude-sonnet-4-5", "gpt-4o-mini"])
def provider_model(request: pytest.FixtureRequest) -> str:
    """The model the formatter formats for (its provider's message shape)."""
    return request.param  # type: ignore[no-any-return]


def formatted(question: str, values: dict[str, str], model: str) -> list[dict[str, Any]]:
    """Step one of the flow: the formatter's request (OpenAI-format dicts)."""
    formatter = PrefixFormatter(model=model, templates=[SYSTEM], dynamic_variables=["user_name"])
    messages = [{"role": "system", "content": SYSTEM.format(**values)}, {"role": "user", "content": question}]
    planned = formatter.plan(messages).messages
    assert values["user_name"] not in str(planned[0]["content"]).split(CONTEXT_HEADER)[0]  # moved out
    return planned


def _langchain(messages: list[dict[str, Any]]) -> list[Any]:
    from langchain_core.messages import convert_to_messages

    return list(convert_to_messages(messages))


def _llama_index(messages: list[dict[str, Any]]) -> list[Any]:
    from llama_index.core.base.llms.types import ChatMessage, TextBlock

    out = []
    for m in messages:
        content = m["content"]
        if isinstance(content, str):
            out.append(ChatMessage(role=m["role"], content=content))
        else:
            out.append(ChatMessage(role=m["role"], blocks=[TextBlock(text=p["text"]) for p in content]))
    return out


def ask(target: Target, mode: str, messages: list[dict[str, Any]]) -> Observation:
    """Step two: the formatter's request through the wing's cached model, in ``mode``."""
    obs = Observation()
    if isinstance(target.wing, LangChainWing):
        target.wing.call(target, mode, _langchain(messages), obs, None, None)  # type: ignore[arg-type]
    else:
        assert isinstance(target.wing, LlamaIndexWing)
        llm, chat = target.model, _llama_index(messages)
        if mode == "invoke":
            target.wing._whole(obs, llm.chat(chat))
        elif mode == "ainvoke":
            target.wing._whole(obs, asyncio.run(llm.achat(chat)))
        elif mode == "stream":
            target.wing._streamed(obs, _stream_into(obs, llm.stream_chat(chat), _li_delta, None, None))
        else:

            async def run() -> list[Any]:
                return await _astream_into(obs, await llm.astream_chat(chat), _li_delta, None, None)

            target.wing._streamed(obs, asyncio.run(run()))
    obs.calls = dict(target.tally)
    return obs


def _hit(obs: Observation) -> bool:
    return cache_status({"frugal": obs.frugal}) == "hit"


def test_a_generic_question_hits_across_users_dates_and_request_ids(
    chat_wing: Wing, mode: str, provider_model: str
) -> None:
    cache = AnswerCache(embedder=HashEmbeddings())
    target = chat_wing.cached(cheap("Checked bags are 23 kg each in economy.", "(paid again)"), cache)
    first = ask(target, mode, formatted(GENERIC, ALICE, provider_model))
    assert first.text == "Checked bags are 23 kg each in economy." and not _hit(first)
    repeat = ask(target, mode, formatted(GENERIC, BOB_LATER, provider_model))
    paraphrase = ask(target, mode, formatted(PARAPHRASE, BOB, provider_model))
    for obs in (repeat, paraphrase):
        assert obs.text == "Checked bags are 23 kg each in economy." and _hit(obs)
    assert paraphrase.calls == {"cheap-1": 1}
    assert (cache.stats.hits_exact, cache.stats.hits_semantic) == (1, 1)


@pytest.mark.parametrize(
    "question", ["Is the airport lounge open today?", "How many days are left to cancel a booking for free?"]
)
def test_a_time_specific_question_is_never_served_across_dates(
    chat_wing: Wing, mode: str, provider_model: str, question: str
) -> None:
    cache = AnswerCache(embedder=HashEmbeddings())
    target = chat_wing.cached(cheap("(answer of December 7)", "(answer of December 9)"), cache)
    assert ask(target, mode, formatted(question, ALICE, provider_model)).text == "(answer of December 7)"
    later = ask(target, mode, formatted(question, ALICE_LATER, provider_model))
    assert later.text == "(answer of December 9)" and not _hit(later)
    same_day = ask(target, mode, formatted(question, BOB, provider_model))  # another user, the same day
    assert same_day.text == "(answer of December 7)" and _hit(same_day)
    assert same_day.calls == {"cheap-1": 2}


@pytest.mark.parametrize("question", ["What is my baggage allowance?", "Can I bring a cat in the cabin?"])
def test_a_user_specific_question_is_never_served_across_users(
    chat_wing: Wing, mode: str, provider_model: str, question: str
) -> None:
    cache = AnswerCache(embedder=HashEmbeddings())
    target = chat_wing.cached(cheap("(Alice's answer)", "(Bob's answer)"), cache)
    assert ask(target, mode, formatted(question, ALICE, provider_model)).text == "(Alice's answer)"
    bob = ask(target, mode, formatted(question, BOB, provider_model))
    assert bob.text == "(Bob's answer)" and not _hit(bob)
    alice = ask(target, mode, formatted(question, ALICE_LATER, provider_model))  # Alice again, another day
    assert alice.text == "(Alice's answer)" and _hit(alice)
    assert alice.calls == {"cheap-1": 2}


def test_an_answer_quoting_the_user_name_is_never_served_to_another_user(
    chat_wing: Wing, mode: str, provider_model: str
) -> None:
    cache = AnswerCache(embedder=HashEmbeddings())
    target = chat_wing.cached(
        cheap("Hi Alice, checked bags are 23 kg each.", "Checked bags are 23 kg each."), cache
    )
    assert ask(target, mode, formatted(GENERIC, ALICE, provider_model)).text.startswith("Hi Alice")  # type: ignore[union-attr]
    alice = ask(target, mode, formatted(PARAPHRASE, ALICE_LATER, provider_model))
    assert alice.text == "Hi Alice, checked bags are 23 kg each." and _hit(alice)
    for question in (PARAPHRASE, GENERIC):
        bob = ask(target, mode, formatted(question, BOB, provider_model))
        assert "Alice" not in (bob.text or "")
    assert bob.calls == {"cheap-1": 2}  # Bob paid once; his generic answer then served his repeat


# -- the wrapped order: with_prefix_caching(cached model) -----------------------------------------------------
def _wrapped(target: Target, model: str) -> Target:
    """The wing's cached model inside the wing's ``with_prefix_caching``: the formatter formats every call, then
    the cache looks the formatted request up."""
    options: dict[str, Any] = {"model": model, "templates": [SYSTEM], "dynamic_variables": ["user_name"]}
    if isinstance(target.wing, LangChainWing):
        from frugal_chains.langchain import with_prefix_caching as lc_wrap

        return dataclasses.replace(target, model=lc_wrap(target.model, **options))
    from frugal_chains.llama_index import with_prefix_caching as li_wrap

    return dataclasses.replace(target, model=li_wrap(target.model, **options))


def raw(question: str, values: dict[str, str]) -> list[dict[str, Any]]:
    """The request as the app writes it: the values inside the system prompt."""
    return [{"role": "system", "content": SYSTEM.format(**values)}, {"role": "user", "content": question}]


def test_wrapped_generic_questions_hit_and_specific_ones_stay_with_their_values(
    chat_wing: Wing, mode: str, provider_model: str
) -> None:
    cache = AnswerCache(embedder=HashEmbeddings())
    script = cheap(
        "Hi Alice, checked bags are 23 kg each.",  # quotes the name
        "Checked bags are 23 kg each.",  # Bob's own answer
        "(lounge: December 7)",
        "(lounge: December 9)",
    )
    target = _wrapped(chat_wing.cached(script, cache), provider_model)
    assert ask(target, mode, raw(GENERIC, ALICE)).text == "Hi Alice, checked bags are 23 kg each."
    alice = ask(target, mode, raw(PARAPHRASE, ALICE_LATER))  # Alice, another day and request id: a hit
    assert alice.text == "Hi Alice, checked bags are 23 kg each." and alice.calls == {"cheap-1": 1}
    bob = ask(target, mode, raw(GENERIC, BOB))  # never Alice's greeting: Bob pays once
    assert bob.text == "Checked bags are 23 kg each." and bob.calls == {"cheap-1": 2}
    bob_later = ask(target, mode, raw(PARAPHRASE, BOB_LATER))  # the generic answer: served across values
    assert bob_later.text == "Checked bags are 23 kg each." and bob_later.calls == {"cheap-1": 2}
    lounge = "Is the airport lounge open today?"
    assert ask(target, mode, raw(lounge, ALICE)).text == "(lounge: December 7)"
    assert ask(target, mode, raw(lounge, BOB)).text == "(lounge: December 7)"  # same day, another user: a hit
    later = ask(target, mode, raw(lounge, ALICE_LATER))  # another day: the model answers
    assert later.text == "(lounge: December 9)" and later.calls == {"cheap-1": 4}
    assert (cache.stats.hits, cache.stats.misses) == (3, 4)


# -- in a cascade: each tier formatted for its provider, then cached -------------------------------------------
def _cascade_of_cached_tiers(wing: Wing, cache: AnswerCache, tiers: list[tuple[Script, str]]) -> Target:
    """A cascade whose tiers are ``with_prefix_caching(cached fake, model=...)``: each tier formats the request for
    its own provider, then looks it up in the shared cache."""
    ledger, tally = SQLiteLedger(), collections.Counter[str]()

    def options(model: str) -> dict[str, Any]:
        return {"model": model, "templates": [SYSTEM], "dynamic_variables": ["user_name"]}

    if isinstance(wing, LangChainWing):
        from frugal_chains.langchain import CachedChatModel, CascadeChatModel
        from frugal_chains.langchain import with_prefix_caching as lc_wrap

        built = [
            lc_wrap(CachedChatModel(model=wing._fake(s, tally), cache=cache), **options(m)) for s, m in tiers
        ]
        model = CascadeChatModel(tiers=built, ledger=ledger, prices=PRICES)
        return Target(wing, model, wing._handler((), ledger), ledger, tally)
    assert isinstance(wing, LlamaIndexWing)
    from frugal_chains.llama_index import CachedLLM, CascadeLLM
    from frugal_chains.llama_index import with_prefix_caching as li_wrap

    handler, manager = wing._manager((), ledger)
    built_li = [
        li_wrap(
            CachedLLM(llm=wing._fake(s, tally, manager), cache=cache, callback_manager=manager), **options(m)
        )
        for s, m in tiers
    ]
    model = CascadeLLM(tiers=built_li, ledger=ledger, prices=PRICES, callback_manager=manager)
    return Target(wing, model, handler, ledger, tally)


def test_in_a_cascade_each_tier_formats_then_caches(chat_wing: Wing, mode: str) -> None:
    """The first tier (OpenAI-formatted) is down, so the second (Anthropic-formatted) answers: its cache entry is
    served to another user on another day, and its answer quoting Alice is never served to Bob."""
    cache = AnswerCache(embedder=HashEmbeddings())
    down = cheap(error=lambda: ConnectionError("provider down"))
    up = strong(
        "Checked bags are 23 kg each.", "Hi Alice, the lounge opens at 6:00.", "The lounge opens at 6:00."
    )
    target = _cascade_of_cached_tiers(chat_wing, cache, [(down, "gpt-4o-mini"), (up, "claude-sonnet-4-5")])
    assert ask(target, mode, raw(GENERIC, ALICE)).text == "Checked bags are 23 kg each."
    bob = ask(target, mode, raw(PARAPHRASE, BOB_LATER))
    assert bob.text == "Checked bags are 23 kg each." and bob.calls == {"cheap-1": 2, "strong-1": 1}
    hours = "When does the airport lounge open in the morning?"
    assert ask(target, mode, raw(hours, ALICE)).text == "Hi Alice, the lounge opens at 6:00."
    other = ask(target, mode, raw(hours, BOB))
    assert other.text == "The lounge opens at 6:00." and other.calls == {"cheap-1": 4, "strong-1": 3}
