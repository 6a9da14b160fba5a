"""A budget refusal under LangChain: the caller gets ``BudgetExceededError`` and the ledger a ``refused`` record;
LangChain's own per-callback-error warning line is dropped for it unless the handler says ``log_refusals=True``."""

from __future__ import annotations

import asyncio
import logging

import pytest

from frugal_chains import Budget, BudgetExceededError, UnknownModelPriceError
from frugal_chains.langchain import TokenBudgetHandler
from frugal_chains.testing import FakeUsageChatModel

# where langchain_core's handle_event logs a callback's error (then re-raises it for a raise_error handler)
MANAGER_LOGGER = "langchain_core.callbacks.manager"
TINY = Budget(max_tokens=10, scope="global")


def callback_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == MANAGER_LOGGER and "callback" in r.getMessage()
    ]


def refuse(handler: TokenBudgetHandler, *, run_async: bool) -> None:
    model = FakeUsageChatModel(model="gpt-4o-mini", max_tokens=100)
    config = {"callbacks": [handler]}
    with pytest.raises(BudgetExceededError):
        if run_async:
            asyncio.run(model.ainvoke("hi", config=config))  # type: ignore[arg-type]
        else:
            model.invoke("hi", config=config)  # type: ignore[arg-type]


@pytest.mark.parametrize("run_async", [False, True], ids=["invoke", "ainvoke"])
def test_a_refusal_logs_no_line_by_default(caplog: pytest.LogCaptureFixture, run_async: bool) -> None:
    handler = TokenBudgetHandler([TINY])
    with caplog.at_level(logging.WARNING):
        refuse(handler, run_async=run_async)
        refuse(handler, run_async=run_async)
    assert callback_errors(caplog) == []
    assert [r.outcome for r in handler.ledger.records()] == ["refused", "refused"]


@pytest.mark.parametrize("run_async", [False, True], ids=["invoke", "ainvoke"])
def test_log_refusals_keeps_langchains_line(caplog: pytest.LogCaptureFixture, run_async: bool) -> None:
    TokenBudgetHandler([TINY])  # a quiet handler elsewhere does not silence this one
    handler = TokenBudgetHandler([TINY], log_refusals=True)
    with caplog.at_level(logging.WARNING):
        refuse(handler, run_async=run_async)
    (line,) = callback_errors(caplog)
    assert line.startswith("Error in TokenBudgetHandler.on_chat_model_start callback: BudgetExceededError(")


def test_other_callback_errors_are_still_logged(caplog: pytest.LogCaptureFixture) -> None:
    handler = TokenBudgetHandler([Budget(max_usd=1.0, scope="global")])
    model = FakeUsageChatModel(model="no-such-model-anywhere", max_tokens=100)
    with caplog.at_level(logging.WARNING), pytest.raises(UnknownModelPriceError):
        model.invoke("hi", config={"callbacks": [handler]})
    (line,) = callback_errors(caplog)
    assert "UnknownModelPriceError" in line


def test_the_filter_is_installed_once() -> None:
    for _ in range(3):
        TokenBudgetHandler([TINY])
    ours = [f for f in logging.getLogger(MANAGER_LOGGER).filters if type(f).__name__ == "_QuietRefusals"]
    assert len(ours) == 1
