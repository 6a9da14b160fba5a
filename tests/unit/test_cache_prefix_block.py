"""The semantic cache behind the prefix formatter: the context block the formatter writes (date, request id, email,
the user's name moved out of the system prompt) neither splits the partition of generic questions nor lets a time-
or user-specific question, or an answer quoting a moved value, be served across other values.

Every request here is built the way the request flow builds it: the formatter rewrites the messages first, the
cache keys what it wrote."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

import pytest

from frugal_chains.cache import AnswerCache, CacheRequest, CacheScope, EmbeddedIndex
from frugal_chains.prefix import CONTEXT_HEADER, ContextValue, PrefixFormatter
from frugal_chains.shared.question import QuestionKey
from frugal_chains.testing import HashEmbeddings

SYSTEM = (
    "You are the support agent of Skyway Airlines. Follow the policy below.\n\n"
    + "\n".join(
        f"Policy {i}: checked bags are limited to 23 kg each in economy class and 32 kg in business class; a change "
        f"fee applies to basic economy fares; pets travel in the cabin only in an approved carrier."
        for i in range(1, 80)
    )
    + "\n\nToday's date is {date}. The customer is {user_name} ({email}); request {request_id}."
)
"""A long, stable policy with four dynamic values (the formatter detects the date, the email and the request id;
``user_name`` is a template variable)."""

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
"""Alice on another day (same name, email and request id)."""
BOB_LATER = {**BOB, "date": "2026-12-09", "request_id": "req_77aa88bb99cc"}

GENERIC = "What is the checked baggage allowance in economy class?"
PARAPHRASE = "What is the checked baggage allowance in economy class, please?"

MODELS = ["claude-sonnet-4-5", "gpt-4o-mini"]
"""Anthropic (the block is a content part of its own) and OpenAI (the block ends the system string)."""


def _formatter(model: str = "gpt-4o-mini") -> PrefixFormatter:
    return PrefixFormatter(model=model, templates=[SYSTEM], dynamic_variables=["user_name"])


def formatted(question: str, values: dict[str, str], *, model: str = "gpt-4o-mini") -> list[dict[str, Any]]:
    """What the formatter sends on: the system prompt filled with ``values``, then the question."""
    messages = [{"role": "system", "content": SYSTEM.format(**values)}, {"role": "user", "content": question}]
    return _formatter(model).plan(messages).messages


def request(question: str, values: dict[str, str], *, model: str = "gpt-4o-mini") -> CacheRequest:
    return CacheRequest.from_messages(formatted(question, values, model=model), llm_string=model)


def _rc() -> Any:
    """The module deciding what the block does (imported per test, so the other tests run without it)."""
    import frugal_chains.cache.request_context as rc

    return rc


def _cache() -> AnswerCache:
    return AnswerCache(embedder=HashEmbeddings())


# -- requests without a block ------------------------------------------------------------------------------------
_SYS = {"role": "system", "content": "You are an airline agent. Today is 2026-12-07."}
_OLD_KEYS: dict[str, tuple[Any, tuple[str, str]]] = {
    "system+user": (
        lambda: CacheRequest.from_messages(
            [_SYS, {"role": "user", "content": "What is the baggage allowance?"}], llm_string="m"
        ),
        (
            "06c32d4b4b720379d75341b52dd9e54ec325e1cabc37ee2ddf0494f8d0d91f98",
            "4c116a01d0efcff8517793411c44f3ed7d22bcd7880f7fd04d2194299601c836",
        ),
    ),
    "multi-turn": (
        lambda: CacheRequest.from_messages(
            [
                _SYS,
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello!"},
                {"role": "user", "content": "Do I need a visa?"},
            ],
            llm_string="m",
        ),
        (
            "9771f73151148c566457ad7d95b5b7f7b99ca8820f6dc51d021097a761038890",
            "640aecc14c10a910b4a7258e79a8f240e0759dac15008fe8afabd40fc0244e02",
        ),
    ),
    "parts, cache_control and a bare header": (
        lambda: CacheRequest.from_messages(
            [
                {
                    "role": "system",
                    "content": [
                        {"type": "text", "text": "Policy.", "cache_control": {"type": "ephemeral"}},
                        {"type": "text", "text": CONTEXT_HEADER},  # a header with no value line: no block
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Pets?"},
                        {"type": "image_url", "image_url": {"url": "data:x"}},
                    ],
                },
            ],
            llm_string="m",
        ),
        (
            "b18f18b919fc7d6d91159ddb629f2436a1be733dec7480be5feb1c3f53bc77d0",
            "cb1b791fa1b571a469b3d6c336cd528e16c9694f3f75d55a8766981d0f70376b",
        ),
    ),
    "tools": (
        lambda: CacheRequest.from_messages(
            [{"role": "user", "content": "Weather?"}],
            llm_string="m",
            tools=[{"type": "function", "function": {"name": "w"}}],
        ),
        (
            "c64daf8f1748040218e33b9606f9ef1729dbf61f61c79b26b83bb2010c730e49",
            "c2747aef3c937ec72576b74c4d699700ee5083fd789bdfdc578f0cd2ff8b8083",
        ),
    ),
    "tool result last": (
        lambda: CacheRequest.from_messages(
            [
                {"role": "user", "content": "Weather?"},
                {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [
                        {"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{}"}}
                    ],
                },
                {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
            ],
            llm_string="m",
        ),
        (
            "ec6c7ba43c6b518ab2c30958721f653a8fd30d33c41b2701a79f1b7da2355986",
            "5292bc6e2a5af33dce9ed2549ffad66235a1d87c1d67608eb36d0c57fc5254df",
        ),
    ),
    "RAG system prompt": (
        lambda: CacheRequest.from_messages(
            [
                {
                    "role": "system",
                    "content": "Use the following pieces of retrieved context to answer.\n\nWe ship worldwide.",
                },
                {"role": "user", "content": "Do you ship to Canada?"},
            ]
        ),
        (
            "ab3b33153576fa0edc9f099cef4c21e21598b66d820c4be3472ad74fc2b5c24f",
            "65cacbe1c2cba20e6961e879e2392a6cc9199d4704b808561a1d2f4b77480934",
        ),
    ),
    "scoped": (
        lambda: CacheRequest.from_messages(
            [{"role": "user", "content": "Hours?"}], scope=CacheScope(tenant_id="acme", user_id="u1")
        ),
        (
            "7e90beaf8116b849870bcafb652f31fecb150541c47de3c6bab4ed49a62c390c",
            "ce9748d392afd6972fba68065c8c205ccf808003789b4ac9adfca2de0b0c0ea3",
        ),
    ),
    "prompt": (
        lambda: CacheRequest.from_prompt("How do I return an item?", llm_string="m"),
        (
            "bf941bf4a5f321732ef48c1fc45a5392b686fcadae16c1d7189b6d8a90866a12",
            "7dcc32cb3b412dbe72caaf1685a08aaa6364a91bce4c0258e40309646bd9c155",
        ),
    ),
    "RAG prompt": (
        lambda: CacheRequest.from_prompt(
            "Context information is below.\n---------------------\nWe ship.\n---------------------\nGiven the "
            "context information and not prior knowledge, answer the query.\nQuery: Canada?\nAnswer: "
        ),
        (
            "f49c0070a3750b91326a001fce06997a7b2253d833bf3a34d4e87c7bd1569e15",
            "24cb965e573ba1716b7c62ab4b2e6d0f8a19f727e28b469450eac77ed10af7c0",
        ),
    ),
    "own template": (
        lambda: CacheRequest.from_messages(
            [{"role": "user", "content": "Docs: a\nQ: Free?"}],
            question_key=QuestionKey(template="Docs: {docs}\nQ: {q}", variable="q"),
        ),
        (
            "26fd5e5faf25897eb3052803cf274f110a62337dfe5960183523ff12f4172091",
            "efec873b68f18d4c2ad6636b6375214155fbfa41b8780459d6e1ab63ab1b6797",
        ),
    ),
}


@pytest.mark.parametrize("case", list(_OLD_KEYS))
def test_requests_without_a_block_keep_their_keys(case: str) -> None:
    """Keys written before the formatter existed (pinned from the code before it) are found again."""
    make, (partition, exact_key) = _OLD_KEYS[case]
    built = make()
    assert (built.partition, built.exact_key) == (partition, exact_key)


# -- the block is found where the formatter puts it ---------------------------------------------------------------
@pytest.mark.parametrize("model", MODELS)
def test_the_formatter_block_is_taken_out_of_the_request(model: str) -> None:
    messages = formatted(GENERIC, ALICE, model=model)
    assert CONTEXT_HEADER in str(messages[0]["content"])  # the formatter did move the values
    built = CacheRequest.from_messages(messages, llm_string=model)
    assert built.question == GENERIC
    assert {v.value: v.kind for v in built.context_values} == {
        "2026-12-07": "date",
        "Alice Moreau": "name",
        "alice@example.com": "email",
        "req_8f3a9b2c4d5e": "request_id",
    }
    for value in ALICE.values():
        assert value not in built.context  # the partition is made without the values


@pytest.mark.parametrize("model", MODELS)
def test_generic_questions_share_the_partition_across_values(model: str) -> None:
    keys = {request(GENERIC, v, model=model).exact_key for v in (ALICE, BOB, ALICE_LATER, BOB_LATER)}
    assert len(keys) == 1


@pytest.mark.parametrize("model", MODELS)
def test_a_generic_repeat_and_paraphrase_hit_across_users_dates_and_request_ids(model: str) -> None:
    cache = _cache()
    cache.update(request(GENERIC, ALICE, model=model), "Checked bags: 23 kg each in economy.")
    repeat = cache.lookup(request(GENERIC, BOB_LATER, model=model))
    assert repeat is not None and repeat.tier == "exact"
    paraphrase = cache.lookup(request(PARAPHRASE, BOB, model=model))
    assert paraphrase is not None and paraphrase.tier == "semantic"
    assert paraphrase.answer == "Checked bags: 23 kg each in economy."


# -- time- and user-specific questions ----------------------------------------------------------------------------
TIME_QUESTIONS = [
    "Is the airport lounge open today?",
    "Can a flight be rebooked tomorrow without a fee?",
    "Is the check-in desk open now?",
    "Are there any strikes this week?",
    "What is the current fee for a second checked bag?",
    "What is the deadline for online check-in?",
    "How many days are left to cancel a booking for free?",
    "Is the lounge open on Sunday?",
]
USER_QUESTIONS = [
    "What is my baggage allowance?",
    "Can I bring a cat in the cabin?",
    "Is the window seat mine?",
    "Can you send me the receipt?",
    "Which lounge can our group use?",
    "Is the account verified?",
    "What fare class are we booked in?",
]


@pytest.mark.parametrize("question", TIME_QUESTIONS)
def test_a_time_specific_question_is_never_served_across_dates(question: str) -> None:
    cache = _cache()
    cache.update(request(question, ALICE), "(Alice's answer of December 7)")
    assert cache.lookup(request(question, ALICE_LATER)) is None  # another day: the model answers
    again = cache.lookup(request(question, ALICE))
    assert again is not None and again.answer == "(Alice's answer of December 7)"  # the same day: a hit


@pytest.mark.parametrize("question", USER_QUESTIONS)
def test_a_user_specific_question_is_never_served_across_users(question: str) -> None:
    cache = _cache()
    cache.update(request(question, ALICE), "(Alice's answer)")
    assert cache.lookup(request(question, BOB)) is None
    assert cache.lookup(request(question, {**ALICE, "user_name": "Alicia Moreau"})) is None  # another name
    assert cache.lookup(request(question, {**ALICE, "email": "am@example.net"})) is None  # another email
    assert cache.lookup(request(question, {**ALICE, "request_id": "req_000111222333"})) is None  # another id
    again = cache.lookup(request(question, ALICE))
    assert again is not None and again.answer == "(Alice's answer)"


def test_a_question_is_keyed_only_on_the_values_it_depends_on() -> None:
    time_only = "Is the airport lounge open today?"
    user_only = "Can I bring a cat in the cabin?"
    assert request(time_only, ALICE).partition == request(time_only, BOB).partition  # same day, other users
    assert (
        request(user_only, ALICE).partition == request(user_only, ALICE_LATER).partition
    )  # same user, later


def test_an_earlier_user_turn_makes_the_conversation_user_specific() -> None:
    def conversation(values: dict[str, str]) -> CacheRequest:
        head = formatted("Can I change my seat?", values)
        turns = [
            *head,
            {"role": "assistant", "content": "Yes."},
            {"role": "user", "content": "Is there a fee?"},
        ]
        return CacheRequest.from_messages(turns)

    assert conversation(ALICE).partition != conversation(BOB).partition


def test_a_request_with_no_question_keeps_every_value() -> None:
    def tool_turn(values: dict[str, str]) -> CacheRequest:
        call = {"id": "c1", "type": "function", "function": {"name": "fees", "arguments": "{}"}}
        return CacheRequest.from_messages(
            [
                *formatted(GENERIC, values),
                {"role": "assistant", "content": "", "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "c1", "content": "23 kg"},
            ]
        )

    assert not tool_turn(ALICE).semantic
    assert tool_turn(ALICE).partition == tool_turn(ALICE).partition
    assert tool_turn(ALICE).partition != tool_turn(BOB).partition
    assert tool_turn(ALICE).partition != tool_turn(ALICE_LATER).partition


# -- answers quoting a moved value --------------------------------------------------------------------------------
def test_an_answer_quoting_the_user_name_is_not_served_to_another_user() -> None:
    cache = _cache()
    cache.update(request(GENERIC, ALICE), "Hi Alice, checked bags are 23 kg each in economy.")
    assert cache.lookup(request(GENERIC, BOB)) is None  # the exact tier
    assert cache.lookup(request(PARAPHRASE, BOB)) is None  # the semantic tier
    later = cache.lookup(request(PARAPHRASE, ALICE_LATER))  # Alice, another day: it quotes no date
    assert later is not None and later.answer.startswith("Hi Alice")
    # Bob's own answer replaces it; it quotes nobody, so everybody gets it again
    cache.update(request(GENERIC, BOB), "Checked bags are 23 kg each in economy.")
    assert cache.lookup(request(GENERIC, ALICE)).answer == "Checked bags are 23 kg each in economy."  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("answer", "same", "other"),
    [
        ("We will write to alice@example.com: bags are 23 kg.", ALICE_LATER, BOB),
        ("As of December 7, bags are 23 kg.", BOB, ALICE_LATER),
        ("As of 2026-12-07, bags are 23 kg.", BOB, ALICE_LATER),
        ("As of 7 Dec, bags are 23 kg.", BOB, ALICE_LATER),
        ("For request req_8f3a9b2c4d5e: bags are 23 kg.", {**ALICE, "date": "2027-01-01"}, BOB),
    ],
    ids=["email", "date in words", "iso date", "short date", "request id"],
)
def test_an_answer_quoting_a_moved_value_is_served_only_with_that_value(
    answer: str, same: dict[str, str], other: dict[str, str]
) -> None:
    cache = _cache()
    cache.update(request(GENERIC, ALICE), answer)
    assert cache.lookup(request(GENERIC, other)) is None
    assert cache.lookup(request(PARAPHRASE, other)) is None
    hit = cache.lookup(request(GENERIC, same))
    assert hit is not None and hit.answer == answer


def test_quoted_answers_async() -> None:
    async def run() -> tuple[Any, Any]:
        cache = _cache()
        await cache.aupdate(request(GENERIC, ALICE), "Hi Alice Moreau, 23 kg.")
        return await cache.alookup(request(PARAPHRASE, BOB)), await cache.alookup(request(PARAPHRASE, ALICE))

    bob, alice = asyncio.run(run())
    assert bob is None and alice is not None


def test_quotes_are_kept_by_a_file_backed_index() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cache.db"
        first = AnswerCache(index=EmbeddedIndex(path), embedder=HashEmbeddings())
        first.update(request(GENERIC, ALICE), "Hi Alice, 23 kg.")
        first.close()
        reopened = AnswerCache(index=EmbeddedIndex(path), embedder=HashEmbeddings())
        try:
            assert reopened.lookup(request(GENERIC, BOB)) is None
            assert reopened.lookup(request(GENERIC, ALICE)) is not None
        finally:
            reopened.close()


def test_answer_quotes_spellings() -> None:
    rc = _rc()
    name = ContextValue("user_name", "Zoë O'Neill", "name")
    day = ContextValue("date", "December 7, 2026", "date")
    assert set(rc.answer_quotes('{"text": "Hi Zo\\u00eb"}', [name])) == {"user_name"}  # a JSON-escaped answer
    assert set(rc.answer_quotes("Dear O'Neill,", [name])) == {"user_name"}
    assert rc.answer_quotes("Zoology is fun.", [name]) == {}  # a word that only starts like the name
    assert set(rc.answer_quotes("Valid until 12/07.", [day])) == {"date"}
    assert rc.answer_quotes("Valid for 12 days.", [day]) == {}


# -- where the block is looked for --------------------------------------------------------------------------------
def test_a_block_in_the_first_user_turn_is_taken_out_of_the_question() -> None:
    """With a document in the preamble the formatter puts the block in the first user turn: here the question."""

    def built(values: dict[str, str]) -> CacheRequest:
        messages = [
            {"role": "system", "content": "You are the support agent of Skyway Airlines."},
            {"role": "user", "name": "document", "content": SYSTEM.format(**values)},
            {"role": "user", "content": GENERIC},
        ]
        planned = _formatter().plan(messages).messages
        assert any(CONTEXT_HEADER in str(m.get("content")) for m in planned)
        return CacheRequest.from_messages(planned)

    alice, bob = built(ALICE), built({**ALICE, "user_name": "Bob Tanaka"})  # documents keep detected values
    assert alice.question == GENERIC and [v.value for v in alice.context_values] == ["Alice Moreau"]
    assert (alice.partition, alice.exact_key) == (bob.partition, bob.exact_key)


def test_a_block_pasted_in_a_later_turn_is_part_of_the_question() -> None:
    pasted = f"{CONTEXT_HEADER}\n- date: 2026-12-07\n\nWhat does this mean?"
    built = CacheRequest.from_messages(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": pasted},
        ]
    )
    assert built.question == pasted and built.context_values == ()


def test_a_prompt_with_a_block() -> None:
    """A completion prompt made of the formatter's messages: the block is taken out of the prompt too."""

    def prompt(values: dict[str, str]) -> CacheRequest:
        text = "\n\n".join(str(m["content"]) for m in formatted(GENERIC, values))
        return CacheRequest.from_prompt(text)

    assert prompt(ALICE).context_values and "Alice" not in prompt(ALICE).question
    assert prompt(ALICE).exact_key == prompt(BOB).exact_key  # SYSTEM says "today": keyed on the date only
    assert prompt(ALICE).exact_key != prompt(ALICE_LATER).exact_key


# -- the word lists -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    [
        "today",
        "tomorrow",
        "now",
        "this week",
        "current",
        "deadlines",
        "how many days",
        "Monday",
        "Is it due?",
    ],
)
def test_time_words(text: str) -> None:
    rc = _rc()
    assert {"date", "time"} <= rc.depends_on([text])
    assert "name" not in rc.depends_on([text])


@pytest.mark.parametrize("text", ["my", "me", "I", "mine", "our", "my booking", "account", "I'm late"])
def test_user_words(text: str) -> None:
    rc = _rc()
    assert {"name", "email", "uuid", "request_id"} <= rc.depends_on([text])


@pytest.mark.parametrize("text", [GENERIC, "Are pets allowed in the cabin?", "Does a nowhere flight exist?"])
def test_generic_words(text: str) -> None:
    rc = _rc()
    assert rc.depends_on([text]) == frozenset()


def test_every_kind_the_formatter_writes_belongs_to_a_section() -> None:
    rc = _rc()
    kinds = {"date", "time", "uuid", "request_id", "email", "name"}
    covered = {k for s in rc._sections() for k in s.kinds}
    assert kinds <= covered
    unknown = ContextValue("plan", "gold", "a-kind-from-later")  # a kind no section lists: keyed by both
    assert rc.context_partition([unknown], rc.depends_on(["today"]))["values"] == [["plan", "gold"]]
    assert rc.context_partition([unknown], rc.depends_on(["I"]))["values"] == [["plan", "gold"]]


def test_a_malformed_word_list_says_where() -> None:
    rc = _rc()
    with pytest.raises(ValueError, match="line 1"):
        rc._parse("today, now\n")
    with pytest.raises(ValueError, match="line 2"):
        rc._parse("# comment\n[time]\ntoday\n")
