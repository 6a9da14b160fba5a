"""The question key (cache and router) ignores the request context block the prefix formatter puts in front of
the first user turn: the moved dates, ids and names are not what the user asked."""

from __future__ import annotations

from frugal_chains import QuestionKey
from frugal_chains.prefix import CONTEXT_HEADER, PrefixFormatter
from frugal_chains.routing import HeuristicScorer

QUESTION = "Can I get a refund for a cancelled flight?"


def _planned() -> list[dict[str, object]]:
    messages = [
        {
            "role": "system",
            "content": "You are Acme Air's support agent. Today is 2026-12-07. Request req_8f3a9c2d1e77.",
        },
        {"role": "user", "name": "example_1", "content": "Do you fly to Oslo?"},
        {"role": "assistant", "name": "example_1", "content": "Yes, daily."},
        {"role": "user", "content": QUESTION},
    ]
    plan = PrefixFormatter(model="gpt-4o").plan(messages)
    last = plan.messages[-1]["content"]
    assert isinstance(last, str) and last.startswith(CONTEXT_HEADER)  # the block is in front of the user turn
    return plan.messages


def test_the_selected_question_has_no_context_block() -> None:
    selected = QuestionKey().select(_planned())
    assert selected.question == QUESTION
    assert selected.source == "last_user_turn"


def test_the_scorer_scores_the_question_not_the_block() -> None:
    planned = _planned()
    bare = [*planned[:-1], {"role": "user", "content": QUESTION}]
    scorer = HeuristicScorer()
    assert scorer.score(planned) == scorer.score(bare)
    assert QuestionKey().view(planned)[-1]["content"] == QUESTION


def test_a_user_turn_that_only_quotes_the_header_later_is_kept_whole() -> None:
    text = f"Why does my prompt say '{CONTEXT_HEADER}'?"
    assert QuestionKey().select([{"role": "user", "content": text}]).question == text
