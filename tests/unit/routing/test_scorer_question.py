"""The scorers score the question of a RAG prompt, not its template and passages."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.messages import convert_to_openai_messages
from langchain_core.prompts import ChatPromptTemplate
from llama_index.core.prompts.chat_prompts import CHAT_REFINE_PROMPT, CHAT_TEXT_QA_PROMPT
from llama_index.core.prompts.default_prompts import DEFAULT_REFINE_PROMPT, DEFAULT_TEXT_QA_PROMPT

from frugal_chains import ConfigurationError, QuestionKey
from frugal_chains.routing import CallableScorer, Cascade, HeuristicScorer, TierSpec, TrainedScorer
from frugal_chains.testing import HashEmbeddings

PASSAGES = (
    "Shipping: we ship to the US, Canada and Mexico. Orders to Canada arrive in 5-7 business days.\n\n"
    "Returns: def refund(order): return order.total  # 30 days, see the API docs for the function."
)
QUESTIONS = [
    "Do you ship to Canada?",
    "What is the capital of France?",
    "Why is the sky blue? Explain step by step.",
    "Write a Python function that parses a date and prove it is correct.",
]
RLM_RAG = ChatPromptTemplate.from_messages(
    [
        (
            "human",
            "You are an assistant for question-answering tasks. Use the following pieces of retrieved context to "
            "answer the question. If you don't know the answer, just say that you don't know. Use three sentences "
            "maximum and keep the answer concise.\nQuestion: {question} \nContext: {context} \nAnswer:",
        )
    ]
)


def _lc(messages: Any) -> list[dict[str, Any]]:
    out = convert_to_openai_messages(messages)
    return [out] if isinstance(out, dict) else list(out)


def _li(messages: Any) -> list[dict[str, Any]]:
    return [{"role": m.role.value, "content": m.content} for m in messages]


TEMPLATES = [
    pytest.param(lambda q: DEFAULT_TEXT_QA_PROMPT.format(context_str=PASSAGES, query_str=q), id="li-text-qa"),
    pytest.param(
        lambda q: _li(CHAT_TEXT_QA_PROMPT.format_messages(context_str=PASSAGES, query_str=q)), id="li-chat"
    ),
    pytest.param(
        lambda q: DEFAULT_REFINE_PROMPT.format(context_msg=PASSAGES, query_str=q, existing_answer="Yes."),
        id="li-refine",
    ),
    pytest.param(
        lambda q: _li(
            CHAT_REFINE_PROMPT.format_messages(context_msg=PASSAGES, query_str=q, existing_answer="Yes.")
        ),
        id="li-chat-refine",
    ),
    pytest.param(
        lambda q: _lc(RLM_RAG.format_messages(context=PASSAGES, question=q)), id="lc-rlm-rag-prompt"
    ),
]


@pytest.mark.parametrize("fill", TEMPLATES)
@pytest.mark.parametrize("question", QUESTIONS)
def test_heuristic_scores_templated_question_as_bare(fill: Any, question: str) -> None:
    scorer = HeuristicScorer()
    assert scorer.features(fill(question)) == scorer.features(question)
    assert scorer.score(fill(question)) == scorer.score(question)


def test_heuristic_without_recognition_scores_the_template_higher() -> None:
    """What the question key fixes: the template alone pushes an easy question to the strong tier."""
    off = HeuristicScorer(question_key=QuestionKey(known_templates=False))
    templated = DEFAULT_TEXT_QA_PROMPT.format(context_str=PASSAGES, query_str=QUESTIONS[0])
    assert off.score(templated) > 0.5 > 0.1 > HeuristicScorer().score(templated)


def test_heuristic_multi_turn_rag_keeps_history_features() -> None:
    bare = [
        {"role": "user", "content": "Write a Python function to sort a list."},
        {"role": "assistant", "content": "def f(x): return sorted(x)"},
        {"role": "user", "content": "Do you ship to Canada?"},
    ]
    templated = [
        *bare[:2],
        {
            "role": "user",
            "content": DEFAULT_TEXT_QA_PROMPT.format(
                context_str=PASSAGES, query_str="Do you ship to Canada?"
            ),
        },
    ]
    assert HeuristicScorer().features(templated) == HeuristicScorer().features(bare)


def test_own_template_key_for_the_heuristic() -> None:
    key = QuestionKey(template="Docs:\n{docs}\n\nUser: {question}")
    filled = f"Docs:\n{PASSAGES}\n\nUser: Do you ship to Canada?"
    assert HeuristicScorer(question_key=key).score(filled) == HeuristicScorer().score(
        "Do you ship to Canada?"
    )
    assert HeuristicScorer().score(filled) != HeuristicScorer().score("Do you ship to Canada?")


def _trained(**kwargs: Any) -> TrainedScorer:
    easy = [f"what is the capital of country {i}" for i in range(12)]
    hard = [f"prove the theorem about prime gaps number {i} rigorously" for i in range(12)]
    return TrainedScorer.fit(easy + hard, [0] * 12 + [1] * 12, embedder=HashEmbeddings(dim=64), **kwargs)


@pytest.mark.parametrize("fill", TEMPLATES)
def test_trained_scores_templated_question_as_bare(fill: Any) -> None:
    scorer = _trained()
    for q in ("what is the capital of country 99", "prove the theorem on prime gaps"):
        assert scorer.score(fill(q)) == pytest.approx(scorer.score(q), abs=1e-12)
        assert asyncio.run(scorer.ascore(fill(q))) == pytest.approx(scorer.score(q), abs=1e-12)
    many = scorer.score_many([fill("prove it"), "prove it"])
    assert many[0] == pytest.approx(many[1], abs=1e-12)


def test_trained_fit_on_templated_equals_fit_on_bare() -> None:
    easy = [f"what is the capital of country {i}" for i in range(12)]
    hard = [f"prove the theorem about prime gaps number {i} rigorously" for i in range(12)]
    templated = [DEFAULT_TEXT_QA_PROMPT.format(context_str=PASSAGES, query_str=q) for q in easy + hard]
    a = TrainedScorer.fit(easy + hard, [0] * 12 + [1] * 12, embedder=HashEmbeddings(dim=64), l2=1.0)
    b = TrainedScorer.fit(templated, [0] * 12 + [1] * 12, embedder=HashEmbeddings(dim=64), l2=1.0)
    assert a.score("prove it") == pytest.approx(b.score("prove it"), abs=1e-9)


def test_trained_key_survives_save_and_load(tmp_path: Any) -> None:
    key = QuestionKey(template="Docs: {docs}\nAsk: {question}")
    scorer = _trained(question_key=key)
    assert scorer.question_key is key
    path = tmp_path / "s.json"
    scorer.save(path)
    loaded = TrainedScorer.load(path, embedder=HashEmbeddings(dim=64), question_key=key)
    filled = "Docs: a b c\nAsk: prove the theorem on prime gaps"
    assert loaded.score(filled) == pytest.approx(scorer.score("prove the theorem on prime gaps"), abs=1e-12)
    assert scorer.with_question_key(None).question_key.mode == "default"


def test_cascade_hands_the_key_to_the_scorer() -> None:
    tiers = [TierSpec(name="cheap", model="a"), TierSpec(name="strong", model="b")]
    key = QuestionKey(template="Docs: {docs}\nAsk: {question}")
    cascade = Cascade(tiers, scorer=HeuristicScorer(weights={"easy": -2.0}), question_key=key)
    assert isinstance(cascade.scorer, HeuristicScorer)
    assert cascade.scorer.question_key is key and cascade.scorer.weights["easy"] == -2.0
    assert Cascade(tiers, scorer=HeuristicScorer()).scorer.question_key.mode == "default"  # type: ignore[union-attr]
    assert Cascade(tiers, question_key=key).scorer is None
    route = cascade.route([{"role": "user", "content": f"Docs: {PASSAGES}\nAsk: hi"}])
    assert route.score == HeuristicScorer(weights={"easy": -2.0}).score("hi")

    class Plain:
        name = "plain"

        def score(self, messages: Any) -> float:
            return 0.1

        async def ascore(self, messages: Any) -> float:
            return 0.1

    with pytest.raises(ConfigurationError) as err:
        Cascade(tiers, scorer=Plain(), question_key=key)
    assert err.value.field == "question_key"
    with pytest.raises(ConfigurationError) as err:
        Cascade(tiers, scorer=HeuristicScorer(), question_key="question")  # type: ignore[arg-type]
    assert err.value.field == "question_key"


def test_callable_scorer_sees_the_view_only_with_a_key() -> None:
    seen: list[Any] = []

    def fn(messages: Any) -> float:
        seen.append(messages[-1]["content"])
        return 0.2

    filled = DEFAULT_TEXT_QA_PROMPT.format(context_str=PASSAGES, query_str="Do you ship to Canada?")
    CallableScorer(fn).score(filled)
    CallableScorer(fn).with_question_key(QuestionKey()).score(filled)
    asyncio.run(CallableScorer(fn, question_key=QuestionKey()).ascore(filled))
    assert seen == [filled, "Do you ship to Canada?", "Do you ship to Canada?"]
