"""Alerts: thresholds of a budget crossed, a warn-only budget exceeded, a day of unusual spend, a call that used
more than it reserved.

Alerts call a user hook (``on_alert=``); they never replace the hard stop, and an exception raised by the
hook is logged, never propagated into the LLM call.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from frugal_chains.accounting.ledger import SpendLedger
from frugal_chains.accounting.usage import CallRecord, nano_to_usd
from frugal_chains.budget.budget import Budget
from frugal_chains.errors import ConfigurationError, FrugalChainsError

__all__ = ["Alert", "AlertHook", "AnomalyDetector", "DAILY_COUNTER", "log_alert"]

log = logging.getLogger("frugal_chains.budget")

DAILY_COUNTER = "global|day|*"
"""The counter of all spend per UTC day, kept by every guard (the anomaly detector reads it)."""


@dataclass(frozen=True, kw_only=True)
class Alert:
    """Something a person may want to know about spend.

    Example:
        >>> from frugal_chains.budget import Alert
        >>> Alert(kind="anomaly", message="today $12.00 > 2.0 x trailing 7-day average $3.00").kind
        'anomaly'
    """

    kind: Literal["threshold", "exceeded", "anomaly", "overshoot"]
    message: str
    budget: Budget | None = None
    scope_key: str | None = None
    threshold: float | None = None
    """The fraction of the limit crossed (``kind="threshold"``)."""
    spent: float | None = None
    """What was spent (``kind="overshoot"``: what the call used, in ``unit``)."""
    limit: float | None = None
    """The limit (``kind="overshoot"``: what the call reserved, in ``unit``)."""
    unit: Literal["usd", "tokens"] | None = None
    record: CallRecord | None = None
    """The call's record (``kind="overshoot"``: a call that used more than it reserved)."""


AlertHook = Callable[[Alert], None]


def log_alert(alert: Alert) -> None:
    """The default hook: a warning on the ``frugal_chains.budget`` logger."""
    log.warning("frugal-chains alert (%s): %s", alert.kind, alert.message)


def call_hook(hook: AlertHook | None, alert: Alert) -> None:
    try:
        (hook or log_alert)(alert)
    except Exception:  # an alert must never break the call
        log.exception("frugal-chains: the on_alert hook raised; the alert was %s", alert.message)


class AnomalyDetector:
    """Alerts once per UTC day when the day's committed spend passes ``factor`` times the average of the
    ``history_days`` days before it.

    There is no baseline (and no alert) until spend was recorded on at least ``min_history_days`` of those
    days. The check reads the ledger's daily counter and runs at most once every ``check_every_s`` seconds
    per detector.

    Args:
        factor: how many times the trailing average counts as an anomaly (default 2.0).
        history_days: days in the trailing average (default 7).
        min_history_days: days with spend needed before alerting (default 3).
        check_every_s: seconds between checks (default 60).

    Example:
        >>> from frugal_chains.budget import AnomalyDetector
        >>> AnomalyDetector(factor=3.0).factor
        3.0
    """

    def __init__(
        self,
        *,
        factor: float = 2.0,
        history_days: int = 7,
        min_history_days: int = 3,
        check_every_s: float = 60.0,
    ) -> None:
        if not factor > 1:
            raise ConfigurationError(f"AnomalyDetector.factor must be > 1, got {factor!r}.", field="factor")
        if not 1 <= history_days <= 366:
            raise ConfigurationError("AnomalyDetector.history_days must be 1..366.", field="history_days")
        if not 1 <= min_history_days <= history_days:
            raise ConfigurationError(
                "AnomalyDetector.min_history_days must be between 1 and history_days.",
                field="min_history_days",
            )
        self.factor = float(factor)
        self.history_days = history_days
        self.min_history_days = min_history_days
        self.check_every_s = check_every_s
        self._lock = threading.Lock()
        self._last_check = float("-inf")
        self._alerted_day: int | None = None

    def due(self, t: float) -> bool:
        with self._lock:
            if t - self._last_check < self.check_every_s:
                return False
            self._last_check = t
            return True

    def check(self, ledger: SpendLedger, t: float | None = None) -> Alert | None:
        """Compare today with the trailing days; an :class:`Alert` the first time today is anomalous."""
        t = time.time() if t is None else t
        today = int(t // 86400)
        try:
            days = [
                ledger.counter(DAILY_COUNTER, d, d).committed_nano
                for d in range(today - self.history_days, today + 1)
            ]
        except FrugalChainsError:
            return None
        history, spent_today = days[:-1], days[-1]
        if sum(1 for d in history if d > 0) < self.min_history_days:
            return None
        average = sum(history) / len(history)
        if spent_today <= self.factor * average:
            return None
        with self._lock:
            if self._alerted_day == today:
                return None
            self._alerted_day = today
        return Alert(
            kind="anomaly",
            message=(
                f"spend today ${nano_to_usd(spent_today):.4f} is over {self.factor:g}x the trailing "
                f"{self.history_days}-day average ${nano_to_usd(int(average)):.4f}"
            ),
            spent=nano_to_usd(spent_today),
            limit=nano_to_usd(int(self.factor * average)),
            unit="usd",
        )
