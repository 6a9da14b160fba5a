"""Late attachment under a warnings filter that turns warnings into errors (``filterwarnings = error``)."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from llama_index.core import Settings
from llama_index.core.callbacks import CallbackManager
from llama_index.core.llms import MockLLM

from frugal_chains.llama_index import BudgetNotAttachedWarning, TokenBudgetHandler


@pytest.fixture
def late() -> Iterator[tuple[MockLLM, TokenBudgetHandler]]:
    """An LLM built with a manager of its own, then a handler set on ``Settings.callback_manager``."""
    previous = Settings._callback_manager
    llm = MockLLM(max_tokens=8, callback_manager=CallbackManager([]))
    handler = TokenBudgetHandler()
    Settings.callback_manager = CallbackManager([handler])
    try:
        yield llm, handler
    finally:
        Settings._callback_manager = previous


def test_a_late_attachment_turned_into_an_error_is_logged_not_lost(
    late: tuple[MockLLM, TokenBudgetHandler], caplog: Any
) -> None:
    llm, handler = late
    with warnings.catch_warnings(), caplog.at_level(logging.ERROR, logger="frugal_chains.budget"):
        warnings.simplefilter("error")
        assert llm.complete("hi").text  # the call itself goes on
    assert any("Settings.callback_manager" in r.getMessage() for r in caplog.records), caplog.text
    assert not handler.ledger.records()


def test_a_late_attachment_still_warns_once_without_the_filter(
    late: tuple[MockLLM, TokenBudgetHandler],
) -> None:
    llm, _handler = late
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        llm.complete("hi")
        llm.complete("hi again")
    assert [w.category for w in caught] == [BudgetNotAttachedWarning]
