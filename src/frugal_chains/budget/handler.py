"""What both adapters' budget handlers share: the :class:`~frugal_chains.budget.BudgetGuard` they drive."""

from __future__ import annotations

from frugal_chains._deprecation import warn_renamed
from frugal_chains.accounting.ledger import SpendLedger
from frugal_chains.budget.budget import Budget
from frugal_chains.budget.guard import BudgetGuard
from frugal_chains.shared.sharing import SharedService

__all__ = ["GuardDriven"]


class GuardDriven(SharedService):
    """Base of the framework budget handlers: :attr:`core` is the guard that makes every decision; the handler
    only turns host callbacks into ``plan``/``reserve``/``commit``/``release`` calls.

    Example:
        >>> from frugal_chains import Budget
        >>> from frugal_chains.budget.handler import GuardDriven
        >>> from frugal_chains.budget.guard import BudgetGuard
        >>> class MyHandler(GuardDriven):
        ...     def __init__(self) -> None:
        ...         self.core = BudgetGuard([Budget(max_tokens=100)])
        >>> MyHandler().budgets[0].max_tokens
        100
    """

    core: BudgetGuard
    """The framework-free guard this handler drives."""

    @property
    def guard(self) -> BudgetGuard:
        """Deprecated: use :attr:`core` (the same :class:`~frugal_chains.budget.BudgetGuard`)."""
        warn_renamed(f"{type(self).__name__}.guard", f"{type(self).__name__}.core")
        return self.core

    @property
    def ledger(self) -> SpendLedger:
        """Where spend is recorded (the guard's ledger)."""
        return self.core.ledger

    @property
    def budgets(self) -> tuple[Budget, ...]:
        """The limits enforced."""
        return self.core.budgets

    def __repr__(self) -> str:
        return f"{type(self).__name__}(budgets={list(self.budgets)!r}, ledger={self.ledger!r})"
