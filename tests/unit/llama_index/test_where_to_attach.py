"""Where a budget handler must be attached in LlamaIndex (docs/llama_index.md, "Attach the handler where the host
will keep it"): a query engine replaces the LLM's own callback manager with its own, so a handler put only on the
LLM is not called inside the engine, while one on ``Settings.callback_manager`` (or the engine's) is; one set on
``Settings`` after the engine was built is not called either (and a warning says so), unless ``configure()`` added
it to the manager the engine holds. Pins the host behaviour the docs describe."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.callbacks import CallbackManager
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.llms import MockLLM

from frugal_chains import Budget, BudgetExceededError
from frugal_chains.llama_index import BudgetNotAttachedWarning, TokenBudgetHandler, configure


@pytest.fixture(autouse=True)
def settings() -> Iterator[Any]:
    saved = {f.name: getattr(Settings, f.name) for f in dataclasses.fields(Settings)}
    Settings.embed_model = MockEmbedding(embed_dim=8)
    yield Settings
    for name, value in saved.items():
        setattr(Settings, name, value)


def refusing() -> TokenBudgetHandler:
    return TokenBudgetHandler([Budget(max_tokens=10, scope="global")])  # refuses any call


def index() -> VectorStoreIndex:
    return VectorStoreIndex.from_documents([Document(text="The answer is 42.")])


def test_a_handler_on_the_llm_only_is_replaced_by_the_query_engine() -> None:
    handler = refusing()
    llm = MockLLM(max_tokens=32, callback_manager=CallbackManager([handler]))
    with pytest.raises(BudgetExceededError):
        llm.complete("hi")  # called directly, the LLM's own manager is used
    index().as_query_engine(llm=llm).query("What is the answer?")  # inside an engine it is not
    assert handler not in llm.callback_manager.handlers


@pytest.mark.parametrize("where", ["settings", "synthesizer"])
def test_a_handler_on_settings_or_on_the_synthesizer_applies_inside_the_engine(where: str) -> None:
    manager = CallbackManager([refusing()])
    if where == "settings":
        Settings.callback_manager = manager
        engine = index().as_query_engine(llm=MockLLM(max_tokens=32))
    else:
        from llama_index.core import get_response_synthesizer
        from llama_index.core.query_engine import RetrieverQueryEngine

        synthesizer = get_response_synthesizer(llm=MockLLM(max_tokens=32), callback_manager=manager)
        engine = RetrieverQueryEngine(index().as_retriever(), response_synthesizer=synthesizer)
    with pytest.raises(BudgetExceededError):
        engine.query("What is the answer?")


def test_from_args_callback_manager_does_not_reach_the_synthesizer() -> None:
    """What the docs warn about: ``RetrieverQueryEngine.from_args(..., callback_manager=...)`` leaves the
    synthesizer (and so the LLM) on ``Settings.callback_manager``."""
    from llama_index.core.query_engine import RetrieverQueryEngine

    handler = refusing()
    engine = RetrieverQueryEngine.from_args(
        index().as_retriever(), llm=MockLLM(max_tokens=32), callback_manager=CallbackManager([handler])
    )
    engine.query("What is the answer?")  # not refused: the handler never saw the call
    assert handler.ledger.records() == []


def test_a_handler_set_on_settings_after_the_engine_was_built_is_not_called_and_warns() -> None:
    """The engine keeps the manager it was built with: replacing ``Settings.callback_manager`` afterwards does
    not reach it. The call is not refused, and a ``BudgetNotAttachedWarning`` says so."""
    engine = index().as_query_engine(llm=MockLLM(max_tokens=32))
    handler = refusing()
    Settings.callback_manager = CallbackManager([handler])
    with pytest.warns(BudgetNotAttachedWarning):
        engine.query("What is the answer?")  # not refused
    assert handler.ledger.records() == []


def test_configure_after_the_engine_was_built_reaches_it() -> None:
    """``configure()`` adds its handler to the manager the engine already holds."""
    engine = index().as_query_engine(llm=MockLLM(max_tokens=32))
    with configure(budgets=[Budget(max_tokens=10, scope="global")]), pytest.raises(BudgetExceededError):
        engine.query("What is the answer?")
    engine.query("What is the answer?")  # reset: the handler is gone again
