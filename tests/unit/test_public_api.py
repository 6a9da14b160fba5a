"""The public surface is pinned, and importing the package stays light."""

from __future__ import annotations

import subprocess
import sys

import pytest

import frugal_chains
import frugal_chains.accounting
import frugal_chains.budget
import frugal_chains.langchain

EXPECTED_ROOT = [
    "Attribution",
    "Budget",
    "BudgetExceededError",
    "BudgetGuard",
    "CallRecord",
    "ConfigurationError",
    "FrugalChainsError",
    "LedgerUnavailableError",
    "Price",
    "PriceBook",
    "RedisLedger",
    "SQLiteLedger",
    "SpendLedger",
    "UnknownModelPriceError",
    "Usage",
    "attribute",
]
EXPECTED_LANGCHAIN = [
    "CACHE_HIT_METADATA_KEY",
    "TokenBudgetCallbackHandler",
    "WRAPPER_METADATA_KEY",
    "budget_scope",
    "is_wrapper_run",
    "usage_from_message",
]
EXPECTED_BUDGET = [
    "Alert",
    "AlertHook",
    "AnomalyDetector",
    "Budget",
    "BudgetGuard",
    "CallPlan",
    "FALLBACK_KEY",
    "Reservation",
    "log_alert",
]


def test_root_exports_pinned() -> None:
    assert sorted(frugal_chains.__all__) == sorted(EXPECTED_ROOT)
    for name in EXPECTED_ROOT:
        assert getattr(frugal_chains, name) is not None


def test_issue_names_import() -> None:
    from frugal_chains import (  # noqa: F401
        Budget,
        BudgetExceededError,
        ConfigurationError,
        Price,
        RedisLedger,
        SQLiteLedger,
        Usage,
    )
    from frugal_chains.langchain import TokenBudgetCallbackHandler, budget_scope  # noqa: F401
    from frugal_chains.llama_index import TokenBudgetHandler  # noqa: F401


def test_adapter_exports_pinned() -> None:
    import frugal_chains.llama_index

    assert sorted(frugal_chains.llama_index.__all__) == ["TokenBudgetHandler", "WRAPPER_PAYLOAD_KEY"]
    assert sorted(frugal_chains.langchain.__all__) == sorted(EXPECTED_LANGCHAIN)
    assert sorted(frugal_chains.budget.__all__) == sorted(EXPECTED_BUDGET)
    for name in frugal_chains.accounting.__all__:
        assert getattr(frugal_chains.accounting, name) is not None


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="NoSuchThing"):
        frugal_chains.NoSuchThing  # type: ignore[attr-defined]  # noqa: B018


def test_import_is_light() -> None:
    code = (
        "import sys, frugal_chains; from frugal_chains import Budget, Price, Usage; "
        "heavy = [m for m in ('litellm', 'llama_index', 'redis', 'torch', 'langchain_core', 'tiktoken') "
        "if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_errors_tree() -> None:
    from frugal_chains.errors import UnknownModelPriceError

    assert issubclass(frugal_chains.ConfigurationError, ValueError)
    assert issubclass(frugal_chains.ConfigurationError, frugal_chains.FrugalChainsError)
    assert issubclass(frugal_chains.BudgetExceededError, frugal_chains.FrugalChainsError)
    assert issubclass(UnknownModelPriceError, frugal_chains.ConfigurationError)


def test_every_public_class_has_a_runnable_example() -> None:
    import inspect

    import frugal_chains.llama_index

    missing = []
    for module in (
        frugal_chains,
        frugal_chains.accounting,
        frugal_chains.budget,
        frugal_chains.langchain,
        frugal_chains.llama_index,
    ):
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isclass(obj) and ">>>" not in (obj.__doc__ or ""):
                missing.append(f"{module.__name__}.{name}")
    assert missing == []
