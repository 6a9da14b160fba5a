"""Model-level caching of RAG prompts: the question is compared by meaning, the retrieved context exactly.

The prompts are filled by the installed LlamaIndex / LangChain template objects, as the apps fill them."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
import pytest
from langchain_core.messages import convert_to_openai_messages
from langchain_core.prompts import ChatPromptTemplate
from llama_index.core.prompts.chat_prompts import CHAT_TEXT_QA_PROMPT
from llama_index.core.prompts.default_prompts import DEFAULT_TEXT_QA_PROMPT

from frugal_chains import ConfigurationError, QuestionKey
from frugal_chains.cache import AnswerCache, CacheRequest, CacheScope
from frugal_chains.testing import HashEmbeddings

PASSAGES = (
    "Shipping: we ship to the US, Canada and Mexico. Orders to Canada arrive in 5-7 business days.\n\n"
    "Returns are free within 30 days."
)
OTHER_PASSAGES = "Shipping: we ship within the EU only. Orders arrive in 2-3 business days."
STORED = "How long does shipping to Canada take?"
LOOKALIKE = "Do you ship to Canada?"  # another question: must not get the stored answer
PARAPHRASE = "How long does shipping to Canada take, please?"

SYSTEM_RAG = ChatPromptTemplate.from_messages(
    [
        (
            "system",
            "You are an assistant for question-answering tasks. Use the following pieces of retrieved context to "
            "answer the question. If you don't know the answer, say that you don't know. Use three sentences "
            "maximum and keep the answer concise.\n\n{context}",
        ),
        ("human", "{input}"),
    ]
)


def _text_qa(question: str, passages: str = PASSAGES) -> CacheRequest:
    """LlamaIndex's default QA template on a completion LLM (``complete(prompt)``)."""
    return CacheRequest.from_prompt(DEFAULT_TEXT_QA_PROMPT.format(context_str=passages, query_str=question))


def _chat_qa(question: str, passages: str = PASSAGES) -> CacheRequest:
    """LlamaIndex's chat QA template (system + user message)."""
    msgs = [
        {"role": m.role.value, "content": m.content}
        for m in CHAT_TEXT_QA_PROMPT.format_messages(context_str=passages, query_str=question)
    ]
    return CacheRequest.from_messages(msgs, llm_string="m")


def _system_layout(question: str, passages: str = PASSAGES) -> CacheRequest:
    """LangChain's RAG layout: the passages in the system prompt, the question in the user turn."""
    msgs = convert_to_openai_messages(SYSTEM_RAG.format_messages(context=passages, input=question))
    return CacheRequest.from_messages(msgs if isinstance(msgs, list) else [msgs], llm_string="m")


LAYOUTS = [
    pytest.param(_text_qa, id="llama_index-text-qa-complete"),
    pytest.param(_chat_qa, id="llama_index-chat-text-qa"),
    pytest.param(_system_layout, id="langchain-system-context"),
]


def _cosine(a: str, b: str) -> float:
    v = np.asarray(HashEmbeddings().embed([a, b]), np.float64)
    return float(v[0] @ v[1] / np.linalg.norm(v[0]) / np.linalg.norm(v[1]))


@pytest.mark.parametrize("build", LAYOUTS)
def test_request_question_is_the_question(build: Any) -> None:
    request = build(STORED)
    assert request.question == STORED and request.semantic
    assert "Mexico" not in request.question


@pytest.mark.parametrize("build", [LAYOUTS[0], LAYOUTS[1]])
def test_lookalike_question_in_the_qa_template_is_not_a_hit(build: Any) -> None:
    """The two templated prompts are near-identical text; the two questions are not."""
    cache = AnswerCache(embedder=HashEmbeddings())
    cache.update(build(STORED), "5-7 business days.")
    assert cache.lookup(build(LOOKALIKE)) is None


@pytest.mark.parametrize("build", LAYOUTS)
def test_same_question_same_passages_hits_exactly(build: Any) -> None:
    cache = AnswerCache(embedder=HashEmbeddings())
    cache.update(build(STORED), "5-7 business days.")
    hit = cache.lookup(build(STORED))
    assert hit is not None and hit.tier == "exact" and hit.answer == "5-7 business days."
    # whitespace in the passages does not change the key
    respaced = cache.lookup(build(STORED, PASSAGES.replace("\n\n", "\n \n").replace(". ", ".  ")))
    assert respaced is not None and respaced.tier == "exact"


@pytest.mark.parametrize("build", LAYOUTS)
def test_paraphrase_same_passages_compares_the_questions(build: Any) -> None:
    cache = AnswerCache(embedder=HashEmbeddings())
    cache.update(build(STORED), "5-7 business days.")
    hit = cache.lookup(build(PARAPHRASE))
    assert hit is not None and hit.tier == "semantic"
    assert hit.similarity == pytest.approx(_cosine(STORED, PARAPHRASE), abs=1e-5)


@pytest.mark.parametrize("build", LAYOUTS)
def test_other_passages_are_another_partition(build: Any) -> None:
    cache = AnswerCache(embedder=HashEmbeddings())
    cache.update(build(STORED), "5-7 business days.")
    assert build(STORED).partition != build(STORED, OTHER_PASSAGES).partition
    assert cache.lookup(build(STORED, OTHER_PASSAGES)) is None


def test_layouts_do_not_share_partitions() -> None:
    assert (
        len({_text_qa(STORED).partition, _chat_qa(STORED).partition, _system_layout(STORED).partition}) == 3
    )


def test_bare_question_request_is_unchanged() -> None:
    """The partition of a bare question is the one every earlier version wrote (persisted caches stay valid)."""
    msgs = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": STORED}]
    request = CacheRequest.from_messages(msgs, llm_string="m", scope=CacheScope())
    context = json.dumps(
        {"earlier": [msgs[0]], "last": {"name": None, "parts": []}, "tools": []},
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
        default=str,
    )
    partition = hashlib.sha256(
        json.dumps(
            [context, "m", CacheScope().key()],
            sort_keys=True,
            ensure_ascii=False,
            separators=(",", ":"),
            default=str,
        ).encode()
    ).hexdigest()
    assert request.question == STORED and request.partition == partition
    plain = CacheRequest.from_prompt(STORED, scope=CacheScope())
    assert plain.question == STORED and plain.context == ""


def test_question_key_option_on_the_cache_and_the_request() -> None:
    key = QuestionKey(template="Notes: {notes}\nCustomer: {question}")
    cache = AnswerCache(embedder=HashEmbeddings(), question_key=key)
    assert cache.question_key is key
    assert AnswerCache(embedder=HashEmbeddings()).question_key.mode == "default"
    request = CacheRequest.from_prompt("Notes: ships in 5 days\nCustomer: When?", question_key=key)
    assert request.question == "When?"
    off = CacheRequest.from_prompt(
        DEFAULT_TEXT_QA_PROMPT.format(context_str="x", query_str="y"),
        question_key=QuestionKey(known_templates=False),
    )
    assert off.question.startswith("Context information")
    with pytest.raises(ConfigurationError) as err:
        AnswerCache(embedder=HashEmbeddings(), question_key="question")  # type: ignore[arg-type]
    assert err.value.field == "question_key"
    with pytest.raises(ConfigurationError) as err:
        CacheRequest.from_messages([{"role": "user", "content": "hi"}], question_key=3)  # type: ignore[arg-type]
    assert err.value.field == "question_key"


def test_callable_key_and_a_tool_turn() -> None:
    key = QuestionKey(fn=lambda msgs: str(msgs[-1]["content"]).rsplit("Q:", 1)[-1].strip())
    a = CacheRequest.from_messages([{"role": "user", "content": "docs A Q: Is it free?"}], question_key=key)
    assert a.question == "Is it free?"
    # a conversation ending on a tool result has no question: exact tier, as before
    tool = CacheRequest.from_messages(
        [{"role": "user", "content": "weather?"}, {"role": "tool", "content": "sunny", "tool_call_id": "1"}],
        question_key=key,
    )
    assert not tool.semantic
