"""A budget handler built from one :class:`~frugal_chains.Budget` (not a list) guards every call, in both wings and
every call mode; LangChain's deprecated name ``TokenBudgetCallbackHandler`` is the same class and takes it too."""

from __future__ import annotations

import collections
import warnings

import pytest

from frugal_chains import Budget, SQLiteLedger
from frugal_chains.errors import BudgetExceededError
from tests.contract.test_cascade_contract import ok
from tests.contract.wings import PRICES, LangChainWing, LlamaIndexWing, Script, Target, Wing, cheap

ROOMY = Budget(max_usd=1.0, scope="global")
TINY = Budget(max_usd=1e-9, scope="global")


def guarded(wing: Wing, script: Script, budget: Budget) -> Target:
    """A bare model whose handler was built from ``budget`` alone: LangChain's deprecated name, LlamaIndex's
    ``TokenBudgetHandler``."""
    ledger, tally = SQLiteLedger(), collections.Counter[str]()
    if isinstance(wing, LangChainWing):
        with pytest.warns(DeprecationWarning, match="TokenBudgetHandler"):
            from frugal_chains.langchain import TokenBudgetCallbackHandler
        from frugal_chains.langchain import TokenBudgetHandler

        assert TokenBudgetCallbackHandler is TokenBudgetHandler
        handler = TokenBudgetCallbackHandler(budget, ledger=ledger, prices=PRICES)
        return Target(wing, wing._fake(script, tally), handler, ledger, tally)
    assert isinstance(wing, LlamaIndexWing)
    from llama_index.core.callbacks import CallbackManager

    from frugal_chains.llama_index import TokenBudgetHandler as LlamaIndexHandler

    handler = LlamaIndexHandler(budget, ledger=ledger, prices=PRICES)
    model = wing._fake(script, tally, CallbackManager([handler]))
    return Target(wing, model, handler, ledger, tally, api=wing.api)


def test_a_handler_of_one_budget_commits_each_call(wing: Wing, mode: str) -> None:
    c = cheap("It is 42 .")
    target = guarded(wing, c, ROOMY)
    assert list(target.handler.budgets) == [ROOMY]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # using the handler warns no more: only the old name's import did
        obs = target.ask(mode)
    assert obs.error is None and obs.text == "It is 42 ."
    assert obs.records == ok(c, None)
    counter = target.handler.core.spent(ROOMY)
    assert counter.reserved_nano == 0
    assert counter.committed_nano == pytest.approx(obs.records[0][5] * 1e9, abs=1)


def test_a_handler_of_one_budget_refuses_before_any_spend(wing: Wing, mode: str) -> None:
    target = guarded(wing, cheap(), TINY)
    obs = target.ask(mode)
    assert isinstance(obs.error, BudgetExceededError) and obs.error.budget is TINY
    assert obs.calls == {}  # the provider was never reached
    assert obs.records == []
