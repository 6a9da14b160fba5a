"""Budgets: hard token and USD limits enforced before money is spent (framework-free core).

Example:
    >>> from frugal_chains.budget import Budget
    >>> Budget(max_tokens=10_000, scope="feature").max_tokens
    10000
"""

from __future__ import annotations

from frugal_chains.budget.alerts import Alert, AlertHook, AnomalyDetector, log_alert
from frugal_chains.budget.budget import FALLBACK_KEY, Budget
from frugal_chains.budget.guard import BudgetGuard, CallPlan, GuardOptions, Reservation
from frugal_chains.budget.output_caps import ObservedOutput

__all__ = [
    "FALLBACK_KEY",
    "Alert",
    "AlertHook",
    "AnomalyDetector",
    "Budget",
    "BudgetGuard",
    "CallPlan",
    "GuardOptions",
    "ObservedOutput",
    "Reservation",
    "log_alert",
]
