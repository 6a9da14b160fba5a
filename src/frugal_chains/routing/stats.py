"""Escalation statistics per tier, with an alert hook when a tier escalates too often (an injected object)."""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from frugal_chains.accounting.usage import CallRecord
from frugal_chains.errors import ConfigurationError
from frugal_chains.shared.sharing import SharedService

__all__ = ["DEFAULT_ALERT_THRESHOLD", "EscalationAlert", "RouterStats", "TierStats", "escalation_rates"]

log = logging.getLogger("frugal_chains.routing")

DEFAULT_ALERT_THRESHOLD = 0.30
"""A tier that escalates more than 30% of the requests it answers first is worth a look."""


@dataclass(frozen=True, kw_only=True)
class TierStats:
    """Counts for one tier: answers it gave (``attempts``), how many escalated, errored or were accepted.

    Example:
        >>> from frugal_chains.routing import TierStats
        >>> TierStats(tier="cheap", attempts=10, escalations=3, errors=1, accepted=6).escalation_rate
        0.4
    """

    tier: str
    attempts: int = 0
    escalations: int = 0
    errors: int = 0
    accepted: int = 0
    exhausted: int = 0
    """Answers of the strongest tier that failed (structured output that did not parse): the cascade raised."""
    started: int = 0
    """Requests the scorer sent straight to this tier."""

    @property
    def escalation_rate(self) -> float:
        """(Escalations + errors) / attempts: the share of this tier's answers that went up a tier."""
        return (self.escalations + self.errors) / self.attempts if self.attempts else 0.0


@dataclass(frozen=True, kw_only=True)
class EscalationAlert:
    """Passed to ``on_alert`` when a tier's escalation rate goes past the threshold (once per crossing).

    Example:
        >>> from frugal_chains.routing import EscalationAlert
        >>> EscalationAlert(tier="cheap", rate=0.4, threshold=0.3, window=50).rate > 0.3
        True
    """

    tier: str
    rate: float
    threshold: float
    window: int
    """How many recent attempts of that tier the rate covers."""


class RouterStats(SharedService):
    """Thread-safe counters per tier over all requests, plus a rolling window that drives the alert.

    Args:
        alert_threshold: an escalation rate above this (in [0, 1]) calls ``on_alert`` (default 0.30).
        window: how many recent attempts per tier the alert looks at.
        min_samples: no alert before a tier has this many attempts in the window.
        on_alert: called with an :class:`EscalationAlert` once when a tier crosses the threshold (again only
            after it went back below). Default: a warning on the ``frugal_chains.routing`` logger.

    Example:
        >>> from frugal_chains.routing import RouterStats
        >>> alerts = []
        >>> stats = RouterStats(min_samples=4, on_alert=alerts.append)
        >>> for escalated in (True, False, True, True):
        ...     stats.record_attempt("cheap", "escalated" if escalated else "accepted")
        >>> stats.tier("cheap").escalation_rate, alerts[0].tier
        (0.75, 'cheap')
    """

    def __init__(
        self,
        *,
        alert_threshold: float = DEFAULT_ALERT_THRESHOLD,
        window: int = 200,
        min_samples: int = 20,
        on_alert: Callable[[EscalationAlert], Any] | None = None,
    ) -> None:
        if isinstance(alert_threshold, bool) or not isinstance(alert_threshold, (int, float)):
            raise ConfigurationError("alert_threshold must be a number in [0, 1]", field="alert_threshold")
        if not 0.0 <= alert_threshold <= 1.0:
            raise ConfigurationError(
                f"alert_threshold must be in [0, 1], got {alert_threshold!r}", field="alert_threshold"
            )
        for name, v in (("window", window), ("min_samples", min_samples)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigurationError(f"{name} must be an int >= 1, got {v!r}", field=name)
        if on_alert is not None and not callable(on_alert):
            raise ConfigurationError(
                "on_alert must be a callable taking an EscalationAlert", field="on_alert"
            )
        self.alert_threshold = float(alert_threshold)
        self.window = window
        self.min_samples = min_samples
        self.on_alert = on_alert
        self._lock = threading.Lock()
        self._totals: dict[str, dict[str, int]] = {}
        self._recent: dict[str, deque[bool]] = {}
        self._alerting: set[str] = set()

    def record_start(self, tier: str) -> None:
        """Count a request the scorer sent straight to ``tier``."""
        with self._lock:
            self._totals.setdefault(tier, _zero())["started"] += 1

    def record_attempt(self, tier: str, outcome: str) -> None:
        """Count one attempt of ``tier`` (``accepted``, ``escalated``, ``error`` or ``exhausted``)."""
        went_up = outcome in ("escalated", "error")
        alert: EscalationAlert | None = None
        with self._lock:
            totals = self._totals.setdefault(tier, _zero())
            totals["attempts"] += 1
            if outcome == "escalated":
                totals["escalations"] += 1
            elif outcome == "error":
                totals["errors"] += 1
            elif outcome == "exhausted":
                totals["exhausted"] += 1
            else:
                totals["accepted"] += 1
            recent = self._recent.setdefault(tier, deque(maxlen=self.window))
            recent.append(went_up)
            if len(recent) >= self.min_samples:
                rate = sum(recent) / len(recent)
                if rate > self.alert_threshold and tier not in self._alerting:
                    self._alerting.add(tier)
                    alert = EscalationAlert(
                        tier=tier, rate=rate, threshold=self.alert_threshold, window=len(recent)
                    )
                elif rate <= self.alert_threshold:
                    self._alerting.discard(tier)
        if alert is not None:
            self._alert(alert)

    def record(self, attempts: Sequence[Any], *, start_tier: str | None = None) -> None:
        """Count a finished request: its starting tier and each :class:`~frugal_chains.routing.Attempt`."""
        if start_tier is not None:
            self.record_start(start_tier)
        for a in attempts:
            self.record_attempt(a.tier, a.outcome)

    def _alert(self, alert: EscalationAlert) -> None:
        if self.on_alert is None:
            log.warning(
                "frugal-chains: tier %r escalated %.0f%% of its last %d answers (alert threshold %.0f%%): its "
                "quality gates or the scorer's thresholds may need a look (see docs/routing.md).",
                alert.tier,
                100 * alert.rate,
                alert.window,
                100 * alert.threshold,
            )
            return
        try:
            self.on_alert(alert)
        except Exception:  # an alert hook must never break a request
            log.exception("frugal-chains: the on_alert hook raised")

    def tier(self, name: str) -> TierStats:
        """The counts of one tier (zeros when it was never tried)."""
        with self._lock:
            t = dict(self._totals.get(name, _zero()))
        return TierStats(tier=name, **t)

    def snapshot(self) -> dict[str, TierStats]:
        """Counts of every tier seen so far."""
        with self._lock:
            names = list(self._totals)
        return {n: self.tier(n) for n in names}

    def __repr__(self) -> str:
        """Each tier's counts, so ``print(stats)`` shows them."""
        return f"RouterStats({list(self.snapshot().values())!r})"

    def reset(self) -> None:
        """Forget every count."""
        with self._lock:
            self._totals.clear()
            self._recent.clear()
            self._alerting.clear()


def _zero() -> dict[str, int]:
    return {"attempts": 0, "escalations": 0, "errors": 0, "accepted": 0, "exhausted": 0, "started": 0}


def escalation_rates(records: Sequence[CallRecord]) -> dict[str, TierStats]:
    """Per-tier counts from the ``routed`` records a cascade wrote to a ledger (any process, any time range).

    Example:
        >>> from frugal_chains.accounting import CallRecord, Usage
        >>> from frugal_chains.routing import escalation_rates
        >>> r = CallRecord(model="gpt-4o", usage=Usage(), cost_usd=0.0, outcome="routed", tier="strong",
        ...                extra={"start_tier": "cheap", "attempts": [
        ...                    {"tier": "cheap", "outcome": "escalated"}, {"tier": "strong", "outcome": "accepted"}]})
        >>> escalation_rates([r])["cheap"].escalation_rate
        1.0
    """
    stats = RouterStats(min_samples=10**9)
    for r in records:
        if r.outcome != "routed":
            continue
        extra: Mapping[str, Any] = r.extra or {}
        start = extra.get("start_tier")
        if isinstance(start, str):
            stats.record_start(start)
        for a in extra.get("attempts") or ():
            if isinstance(a, Mapping) and isinstance(a.get("tier"), str):
                stats.record_attempt(a["tier"], str(a.get("outcome", "accepted")))
    return stats.snapshot()
