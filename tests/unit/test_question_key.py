"""QuestionKey: the question of a request, with each known RAG template filled by the real template objects of the
installed LlamaIndex and LangChain packages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from typing import Any

import pytest
from langchain_core.messages import convert_to_openai_messages
from langchain_core.prompts import ChatPromptTemplate, PromptTemplate
from llama_index.core import PromptTemplate as LIPromptTemplate
from llama_index.core.prompts import ChatPromptTemplate as LIChatPromptTemplate
from llama_index.core.prompts.chat_prompts import (
    CHAT_CONTENT_QA_PROMPT,
    CHAT_CONTENT_REFINE_PROMPT,
    CHAT_REFINE_PROMPT,
    CHAT_TEXT_QA_PROMPT,
    CHAT_TREE_SUMMARIZE_PROMPT,
)
from llama_index.core.prompts.default_prompt_selectors import DEFAULT_TEXT_QA_PROMPT_SEL
from llama_index.core.prompts.default_prompts import (
    DEFAULT_REFINE_PROMPT,
    DEFAULT_TEXT_QA_PROMPT,
    DEFAULT_TREE_SUMMARIZE_PROMPT,
)

from frugal_chains import ConfigurationError, QuestionKey, SelectedQuestion
from frugal_chains.shared.question import KNOWN_TEMPLATES, passages_key

Q = "Do you ship to Canada?"
PASSAGES = "Shipping: we ship to the US, Canada and Mexico.\n\nOrders to Canada arrive in 5-7 business days."

# LangChain hub "rlm/rag-prompt" (a human message) and the RAG tutorial's system-prompt layout
RLM_RAG_PROMPT = ChatPromptTemplate.from_messages(
    [
        (
            "human",
            "You are an assistant for question-answering tasks. Use the following pieces of retrieved context to "
            "answer the question. If you don't know the answer, just say that you don't know. Use three sentences "
            "maximum and keep the answer concise.\nQuestion: {question} \nContext: {context} \nAnswer:",
        )
    ]
)
SYSTEM_RAG_PROMPT = ChatPromptTemplate.from_messages(
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


def _li(messages: Any) -> list[dict[str, Any]]:
    return [{"role": m.role.value, "content": m.content} for m in messages]


def _lc(messages: Any) -> list[dict[str, Any]]:
    out = convert_to_openai_messages(messages)
    return [out] if isinstance(out, dict) else list(out)


def _check(selected: SelectedQuestion, question: str = Q) -> None:
    assert selected.question == question
    assert selected.source in ("template", "last_user_turn")
    assert len(selected.context_key) == 64
    assert selected.template and "{" in selected.template
    assert PASSAGES.split()[0] not in selected.question


@pytest.mark.parametrize(
    "messages",
    [
        pytest.param(
            lambda: DEFAULT_TEXT_QA_PROMPT.format(context_str=PASSAGES, query_str=Q), id="li-text-qa"
        ),
        pytest.param(
            lambda: DEFAULT_TREE_SUMMARIZE_PROMPT.format(context_str=PASSAGES, query_str=Q),
            id="li-tree-summarize",
        ),
        pytest.param(
            lambda: DEFAULT_REFINE_PROMPT.format(context_msg=PASSAGES, query_str=Q, existing_answer="Yes."),
            id="li-refine",
        ),
        pytest.param(
            lambda: _li(CHAT_TEXT_QA_PROMPT.format_messages(context_str=PASSAGES, query_str=Q)),
            id="li-chat-text-qa",
        ),
        pytest.param(
            lambda: _li(CHAT_TREE_SUMMARIZE_PROMPT.format_messages(context_str=PASSAGES, query_str=Q)),
            id="li-chat-tree-summarize",
        ),
        pytest.param(
            lambda: _li(
                CHAT_REFINE_PROMPT.format_messages(context_msg=PASSAGES, query_str=Q, existing_answer="Yes.")
            ),
            id="li-chat-refine",
        ),
        pytest.param(
            lambda: _li(
                DEFAULT_TEXT_QA_PROMPT_SEL.format_messages(llm=None, context_str=PASSAGES, query_str=Q)
            ),
            id="li-selector-default",
        ),
        pytest.param(
            lambda: _lc(RLM_RAG_PROMPT.format_messages(context=PASSAGES, question=Q)), id="lc-rlm-rag-prompt"
        ),
        pytest.param(
            lambda: _lc(SYSTEM_RAG_PROMPT.format_messages(context=PASSAGES, input=Q)), id="lc-system-layout"
        ),
    ],
)
def test_known_templates_give_the_question_and_hash_the_passages(messages: Any) -> None:
    selected = QuestionKey().select(messages())
    _check(selected)
    # the view a scorer sees holds the question, not the passages
    assert "Mexico" not in str(QuestionKey().view(messages()))
    assert QuestionKey().select(Q) == SelectedQuestion(question=Q)


def test_other_passages_change_only_the_context_key() -> None:
    key = QuestionKey()
    a = key.select(DEFAULT_TEXT_QA_PROMPT.format(context_str=PASSAGES, query_str=Q))
    b = key.select(DEFAULT_TEXT_QA_PROMPT.format(context_str="We ship to the EU only.", query_str=Q))
    c = key.select(
        DEFAULT_TEXT_QA_PROMPT.format(context_str=PASSAGES.replace("\n\n", "\n  \n "), query_str=Q)
    )
    assert a.question == b.question == Q and a.template == b.template
    assert a.context_key != b.context_key
    assert a.context_key == c.context_key  # whitespace does not change the hash
    assert a.context_chars == len(PASSAGES)


def test_rich_llama_index_templates_rendered() -> None:
    """CHAT_CONTENT_QA_PROMPT / CHAT_CONTENT_REFINE_PROMPT (jinja, rendered by LlamaIndex) are recognised."""
    qa = QuestionKey().select(_li(CHAT_CONTENT_QA_PROMPT.format_messages(context_str=PASSAGES, query_str=Q)))
    assert qa.question == Q and qa.source == "template"
    refine = QuestionKey().select(
        _li(
            CHAT_CONTENT_REFINE_PROMPT.format_messages(
                context_msg=PASSAGES, query_str=Q, existing_answer="Yes."
            )
        )
    )
    assert refine.question == Q and refine.source == "template" and refine.context_key


def test_known_template_texts_are_the_installed_ones() -> None:
    from llama_index.core.prompts.default_prompts import (
        DEFAULT_REFINE_PROMPT_TMPL,
        DEFAULT_TEXT_QA_PROMPT_TMPL,
        DEFAULT_TREE_SUMMARIZE_TMPL,
    )

    assert KNOWN_TEMPLATES["llama_index.text_qa"][0] == DEFAULT_TEXT_QA_PROMPT_TMPL
    assert KNOWN_TEMPLATES["llama_index.tree_summarize"][0] == DEFAULT_TREE_SUMMARIZE_TMPL
    assert KNOWN_TEMPLATES["llama_index.refine"][0] == DEFAULT_REFINE_PROMPT_TMPL
    assert KNOWN_TEMPLATES["llama_index.chat_refine"][0] == CHAT_REFINE_PROMPT.message_templates[0].content
    assert KNOWN_TEMPLATES["llama_index.text_qa"][0] == CHAT_TEXT_QA_PROMPT.message_templates[1].content


def test_system_layout_keeps_the_instructions_and_hashes_the_passages() -> None:
    msgs = _lc(SYSTEM_RAG_PROMPT.format_messages(context=PASSAGES, input=Q))
    sel = QuestionKey().selection(msgs)
    assert sel.selected.source == "last_user_turn" and sel.selected.question == Q
    assert sel.selected.template.endswith("keep the answer concise.\n\n{context}")
    view = QuestionKey().view(msgs)
    assert view[0]["content"] == sel.selected.template and view[1]["content"] == Q
    assert "Mexico" not in str(view)


def test_bare_and_unknown_prompts_are_the_last_user_turn() -> None:
    msgs = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "Context: the docs\nQuestion: what now?"},
    ]
    sel = QuestionKey().select(msgs)
    assert sel == SelectedQuestion(question="Context: the docs\nQuestion: what now?")
    assert QuestionKey().view(msgs) == msgs
    assert QuestionKey().select([{"role": "assistant", "content": "hi"}]).question == ""


def test_known_templates_off() -> None:
    filled = DEFAULT_TEXT_QA_PROMPT.format(context_str=PASSAGES, query_str=Q)
    assert QuestionKey(known_templates=False).select(filled).question == filled


def test_own_template_inverted_and_other_variables_hashed() -> None:
    key = QuestionKey(template="Product: {product}\nNotes:\n{notes}\n\nCustomer: {question}\nAgent:")
    a = key.select(
        [
            {
                "role": "user",
                "content": "Product: Kettle\nNotes:\nBoils in 2 min.\n\nCustomer: Is it loud?\nAgent:",
            }
        ]
    )
    b = key.select(
        [
            {
                "role": "user",
                "content": "Product: Toaster\nNotes:\nBoils in 2 min.\n\nCustomer: Is it loud?\nAgent:",
            }
        ]
    )
    assert a.question == b.question == "Is it loud?" and a.source == "template"
    assert a.context_key != b.context_key
    stats = key.stats
    assert (stats.selected, stats.templated, stats.fallbacks) == (2, 2, 0)


def test_own_template_no_match_falls_back_and_counts() -> None:
    key = QuestionKey(template="Docs: {docs}\nQ: {question}")
    sel = key.select([{"role": "user", "content": "just a question"}])
    assert sel == SelectedQuestion(question="just a question")
    assert key.stats.fallbacks == 1


def test_own_templates_list_with_system_context() -> None:
    key = QuestionKey(template=["Answer from these notes:\n{notes}", "Customer asks: {ask}"], variable="ask")
    msgs = [
        {"role": "system", "content": "Answer from these notes:\nShips in 5 days."},
        {"role": "user", "content": "Customer asks: When?"},
    ]
    sel = key.selection(msgs)
    assert sel.selected.question == "When?" and sel.consumed == {0: "Answer from these notes:\n{notes}"}
    other = key.select([{"role": "system", "content": "Answer from these notes:\nShips in 9 days."}, msgs[1]])
    assert other.question == "When?" and other.context_key != sel.selected.context_key


def test_repeated_variable_must_repeat() -> None:
    key = QuestionKey(template="Q: {question}\nContext: {c}\nAgain: {question}")
    assert key.select("Q: hi\nContext: x\nAgain: hi").question == "hi"
    assert key.select("Q: hi\nContext: x\nAgain: bye").source == "last_user_turn"


def test_callable_mode() -> None:
    seen: list[Any] = []

    def fn(messages: Any) -> str:
        seen.append(messages)
        return str(messages[-1]["content"]).split("||")[-1].strip()

    sel = QuestionKey(fn=fn).select([{"role": "user", "content": "ctx || Is it free?"}])
    assert sel.question == "Is it free?" and sel.source == "callable" and len(seen) == 1
    rich = QuestionKey(
        fn=lambda m: SelectedQuestion(question="q", context_key=passages_key(["doc-1", "doc-2"]))
    )
    assert rich.select("anything").context_key == passages_key(["doc-1", "doc-2"])


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"template": "Docs: {docs}"}, "template"),
        ({"template": ["Docs: {docs}", "Ask: {ask}"]}, "template"),
        ({"template": "Q: {question}", "variable": "not a name"}, "variable"),
        ({"template": "Q: {question.attr}"}, "template"),
        ({"template": "Q: {question"}, "template"),
        ({"template": []}, "template"),
        ({"template": 3}, "template"),
        ({"fn": "not callable"}, "fn"),
        ({"fn": len, "template": "{question}"}, "fn"),
        ({"known_templates": "yes"}, "known_templates"),
    ],
)
def test_bad_configuration_names_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigurationError) as err:
        QuestionKey(**kwargs)
    assert err.value.field == field


def test_callable_returning_garbage() -> None:
    with pytest.raises(ConfigurationError) as err:
        QuestionKey(fn=lambda m: 3).select("hi")  # type: ignore[arg-type,return-value]
    assert err.value.field == "fn"
    with pytest.raises(ConfigurationError) as err:
        QuestionKey().select(b"bytes")  # type: ignore[arg-type]
    assert err.value.field == "messages"


def test_langchain_adapter() -> None:
    from frugal_chains.langchain import question_key_from

    prompt = ChatPromptTemplate.from_messages(
        [
            ("system", "Answer from these notes:\n{notes}"),
            ("placeholder", "{history}"),
            ("human", "Customer: {ask}"),
        ]
    )
    key = question_key_from(prompt, variable="ask")
    msgs = _lc(prompt.format_messages(notes="Ships in 5 days.", ask="When will it ship?", history=[]))
    assert key.select(msgs).question == "When will it ship?"
    plain = PromptTemplate.from_template("Notes: {notes}\nQ: {q}")
    assert question_key_from(plain, variable="q").select(plain.format(notes="x", q="Why?")).question == "Why?"
    with pytest.raises(ConfigurationError) as err:
        question_key_from(prompt, variable="question")
    assert err.value.field == "template"
    with pytest.raises(ConfigurationError) as err:
        question_key_from(PromptTemplate.from_template("{{q}}", template_format="mustache"), variable="q")
    assert err.value.field == "prompt"
    with pytest.raises(ConfigurationError) as err:
        question_key_from("Q: {question}")  # type: ignore[arg-type]
    assert err.value.field == "prompt"


def test_llama_index_adapter() -> None:
    from frugal_chains.llama_index import question_key_from

    qa = LIPromptTemplate("Notes:\n{context_str}\nCustomer asks: {query_str}\nReply:")
    assert question_key_from(qa).select(qa.format(context_str="x", query_str="Why?")).question == "Why?"
    chat = LIChatPromptTemplate.from_messages(
        [("system", "Notes:\n{context_str}"), ("user", "Customer asks: {query_str}")]
    )
    key = question_key_from(chat)
    assert key.select(_li(chat.format_messages(context_str="x", query_str="Why?"))).question == "Why?"
    selector = question_key_from(DEFAULT_TEXT_QA_PROMPT_SEL, known_templates=False)
    assert (
        selector.select(_li(CHAT_TEXT_QA_PROMPT.format_messages(context_str="x", query_str="Why?"))).question
        == "Why?"
    )
    with pytest.raises(ConfigurationError) as err:
        question_key_from(CHAT_CONTENT_QA_PROMPT)
    assert err.value.field == "prompt"
    with pytest.raises(ConfigurationError) as err:
        question_key_from(qa, variable="question")
    assert err.value.field == "template"


def test_thread_safe_counters() -> None:
    key = QuestionKey(template="Docs: {docs}\nQ: {question}")

    def work() -> None:
        for i in range(200):
            key.select(f"Docs: d{i}\nQ: q{i}" if i % 2 else f"bare {i}")

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert key.stats.selected == 800 and key.stats.templated == 400 and key.stats.fallbacks == 400


@pytest.mark.parametrize(
    "text",
    [
        # starts like LlamaIndex's QA template, but the end was customised: no known template matches
        KNOWN_TEMPLATES["llama_index.text_qa"][0].split("{context_str}")[0]
        + " \n" * 20_000
        + "Answer in French: ",
        # a custom template's skeleton whose passages are whitespace-heavy (PDF extraction), then no match
        "Docs: " + "  \n " * 10_000 + "no question line",
    ],
)
def test_whitespace_heavy_text_that_does_not_match_is_selected_without_backtracking(text: str) -> None:
    # Inverting a template must be linear in the text: a request that starts like a template and does not finish
    # like it must not hang the lookup (the old patterns took hours here). The regex engine holds the GIL, so the
    # hang guard is a child process, not a thread; its limit is minutes, this takes milliseconds.
    code = (
        "import json, sys\n"
        "from frugal_chains import QuestionKey\n"
        "text = json.load(sys.stdin)\n"
        "got = QuestionKey(template=['Docs: {docs}\\nQ: {question}']).select(text)\n"
        "print(got.source, got.question == text)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    try:
        run = subprocess.run(
            [sys.executable, "-c", code],
            input=json.dumps(text),
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("selecting the question did not finish")
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["last_user_turn", "True"]


def test_whitespace_is_not_part_of_template_values() -> None:
    key = QuestionKey(template="Q: {question}\nDocs:{docs}\nAgain: {question}")
    got = key.select("Q:   Why?  \nDocs:\n\n  a   b \n\nAgain:Why?")
    assert got.question == "Why?" and got.source == "template"
    assert got.context_key == key.select("Q: Why?\nDocs: a b\nAgain: Why?").context_key


@pytest.mark.parametrize(
    "system",
    [
        "Use the following context to answer." + "\n\n" * 200_000,  # the phrase, then no passage at all
        "Use the following context to answer, and use the following context only. "
        * 20_000,  # never a blank line
    ],
)
def test_a_system_prompt_that_is_not_the_rag_layout_is_read_in_linear_time(system: str) -> None:
    # as above: a hang guard in a child process (the old pattern took minutes to hours here)
    code = (
        "import json, sys\n"
        "from frugal_chains import QuestionKey\n"
        "system = json.load(sys.stdin)\n"
        "got = QuestionKey().selection([{'role': 'system', 'content': system}, {'role': 'user', 'content': 'Hi?'}])\n"
        "print(got.selected.question, got.selected.context_key == '', dict(got.consumed) == {})\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    try:
        run = subprocess.run(
            [sys.executable, "-c", code],
            input=json.dumps(system),
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("selecting the question did not finish")
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["Hi?", "True", "True"]
