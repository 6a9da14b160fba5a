"""Budget limits: tokens and/or USD, per task, feature, user, tenant or globally, over a window."""

from __future__ import annotations

import calendar
import math
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from frugal_chains.accounting.ledger import Claim
from frugal_chains.accounting.usage import Attribution, usd_to_nano
from frugal_chains.errors import ConfigurationError

__all__ = ["FALLBACK_KEY", "SCOPES", "WINDOW_PERIODS", "Budget", "Scope", "WindowPeriod"]

Scope = Literal["task", "feature", "user", "tenant", "global"]
WindowPeriod = Literal["hour", "day", "week", "month"]
SCOPES: tuple[str, ...] = ("task", "feature", "user", "tenant", "global")
WINDOW_PERIODS: tuple[str, ...] = ("hour", "day", "week", "month")
FALLBACK_KEY = "_unattributed"
"""The key of calls that carry no key for a budget's scope (no ``user_id`` for a ``"user"`` budget, ...).
All such calls share it: one budget for everything unattributed, which errs on the side of stopping."""

ROLLING_SLICES = 60
_TASK_TTL_S = 7 * 86400


@dataclass(frozen=True, kw_only=True)
class Budget:
    """A hard (or warning) limit on spend, applied per key of its scope.

    Each user has their own limit under ``scope="user"``, each feature under ``"feature"``, each task (one root
    run: an agent invocation and everything under it) under ``"task"``, and there is one key, ``"*"``, under
    ``"global"``. A call without a key for the scope counts under :data:`FALLBACK_KEY`.

    Windows: ``None`` (all time; for a task, its whole run), a calendar period in UTC (``"hour"``, ``"day"``,
    ``"week"`` from Monday, ``"month"``), or a rolling ``timedelta``. A rolling window is tracked in 60 slices:
    spend leaves it up to one slice late (never early), so the limit is never exceeded by the approximation.

    Token limits count input plus output tokens (cached input included).

    Example:
        >>> from datetime import timedelta
        >>> from frugal_chains import Budget
        >>> Budget(max_usd=5.0, scope="user", window="day").describe()
        "Budget(max_usd=5.0, scope='user', window='day')"
        >>> Budget(max_tokens=100_000, window=timedelta(hours=1), scope="global").window_id
        'rolling3600s'
    """

    max_usd: float | None = None
    """Limit in USD per scope key and window (``None``: no USD limit)."""
    max_tokens: int | None = None
    """Limit in tokens (input + output) per scope key and window (``None``: no token limit)."""
    scope: Scope = "task"
    """Who the limit is per: ``"task"`` (default), ``"feature"``, ``"user"``, ``"tenant"`` or ``"global"``."""
    window: WindowPeriod | timedelta | None = None
    """``None`` (all time), ``"hour"``/``"day"``/``"week"``/``"month"`` (UTC calendar), or a rolling timedelta."""
    on_exceed: Literal["raise", "warn"] = "raise"
    """``"raise"``: refuse the call with ``BudgetExceededError`` before it is made. ``"warn"``: let it through,
    log a warning and call the alert hook."""
    alert_at: tuple[float, ...] = (0.5, 0.8, 1.0)
    """Fractions of the limit at which the alert hook is called (committed spend crossing them)."""
    name: str | None = None
    """Optional label for messages and alerts. Budgets with the same scope and window share counters."""

    def __post_init__(self) -> None:
        if self.max_usd is None and self.max_tokens is None:
            raise ConfigurationError(
                "Budget needs max_usd or max_tokens (or both); an empty budget limits nothing.",
                field="max_usd",
            )
        if self.max_usd is not None and (
            isinstance(self.max_usd, bool)
            or not isinstance(self.max_usd, (int, float))
            or not math.isfinite(self.max_usd)
            or self.max_usd < 0
        ):
            raise ConfigurationError(
                f"Budget.max_usd must be a non-negative number of USD, got {self.max_usd!r}.", field="max_usd"
            )
        if self.max_tokens is not None and (
            isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int) or self.max_tokens < 0
        ):
            raise ConfigurationError(
                f"Budget.max_tokens must be a non-negative int, got {self.max_tokens!r}.", field="max_tokens"
            )
        if self.scope not in SCOPES:
            raise ConfigurationError(
                f"Budget.scope must be one of {', '.join(SCOPES)}; got {self.scope!r}.", field="scope"
            )
        if isinstance(self.window, timedelta):
            if self.window.total_seconds() < 1:
                raise ConfigurationError(
                    f"Budget.window must be at least one second, got {self.window!r}.", field="window"
                )
        elif self.window is not None and self.window not in WINDOW_PERIODS:
            raise ConfigurationError(
                f"Budget.window must be None, a timedelta or one of {', '.join(WINDOW_PERIODS)}; "
                f"got {self.window!r}.",
                field="window",
            )
        if self.on_exceed not in ("raise", "warn"):
            raise ConfigurationError(
                f"Budget.on_exceed must be 'raise' or 'warn', got {self.on_exceed!r}.", field="on_exceed"
            )
        alerts = tuple(self.alert_at)
        if any(isinstance(a, bool) or not isinstance(a, (int, float)) or not 0 < a <= 10 for a in alerts):
            raise ConfigurationError(
                f"Budget.alert_at must hold fractions of the limit in (0, 10], got {self.alert_at!r}.",
                field="alert_at",
            )
        object.__setattr__(self, "alert_at", tuple(sorted(float(a) for a in alerts)))

    # -- identity and text ---------------------------------------------------------------------------------
    @property
    def window_id(self) -> str:
        if self.window is None:
            return "all"
        if isinstance(self.window, timedelta):
            return f"rolling{int(self.window.total_seconds())}s"
        return self.window

    def describe(self) -> str:
        parts = []
        if self.name:
            parts.append(f"name={self.name!r}")
        if self.max_usd is not None:
            parts.append(f"max_usd={self.max_usd}")
        if self.max_tokens is not None:
            parts.append(f"max_tokens={self.max_tokens}")
        parts.append(f"scope={self.scope!r}")
        if self.window is not None:
            parts.append(
                f"window={self.window!r}"
                if not isinstance(self.window, timedelta)
                else f"window=timedelta(seconds={int(self.window.total_seconds())})"
            )
        return f"Budget({', '.join(parts)})"

    def key_for(self, attribution: Attribution) -> str:
        """This call's key in the budget's scope (:data:`FALLBACK_KEY` when it has none)."""
        return attribution.key_for(self.scope) or FALLBACK_KEY

    def counter_name(self, key: str) -> str:
        return f"{self.scope}|{self.window_id}|{key}"

    # -- time buckets --------------------------------------------------------------------------------------
    def buckets(self, t: float) -> tuple[int, int]:
        """``(bucket written at time t, oldest bucket still inside the window)``."""
        w = self.window
        if w is None:
            return 0, 0
        if isinstance(w, timedelta):
            size = self.slice_s
            return int(t // size), int((t - w.total_seconds()) // size)
        if w == "hour":
            b = int(t // 3600)
        elif w == "day":
            b = int(t // 86400)
        elif w == "week":
            b = int((t // 86400 + 3) // 7)  # 1970-01-01 was a Thursday; weeks start on Monday
        else:
            g = time.gmtime(t)
            b = g.tm_year * 12 + g.tm_mon - 1
        return b, b

    @property
    def slice_s(self) -> float:
        """Length of one rolling-window slice in seconds (rolling windows only)."""
        if not isinstance(self.window, timedelta):
            raise ConfigurationError("slice_s applies to rolling windows only.", field="window")
        return max(1.0, self.window.total_seconds() / ROLLING_SLICES)

    def window_end(self, t: float) -> float | None:
        """When the current window ends (rolling: when the current slice leaves it), ``None`` for all time."""
        w = self.window
        if w is None:
            return None
        if isinstance(w, timedelta):
            b, _ = self.buckets(t)
            return (b + 1) * self.slice_s + w.total_seconds()
        if w == "hour":
            return (t // 3600 + 1) * 3600
        if w == "day":
            return (t // 86400 + 1) * 86400
        if w == "week":
            b, _ = self.buckets(t)
            return ((b + 1) * 7 - 3) * 86400
        g = time.gmtime(t)
        year, month = (g.tm_year + 1, 1) if g.tm_mon == 12 else (g.tm_year, g.tm_mon + 1)
        return float(calendar.timegm((year, month, 1, 0, 0, 0)))

    def ttl_s(self, t: float) -> int | None:
        """How long a backend must keep this budget's current bucket."""
        end = self.window_end(t)
        if end is None:
            return _TASK_TTL_S if self.scope == "task" else None
        return int(end - t) + 3600

    def claim(self, attribution: Attribution, t: float) -> Claim:
        bucket, min_bucket = self.buckets(t)
        return Claim(
            counter=self.counter_name(self.key_for(attribution)),
            bucket=bucket,
            min_bucket=min_bucket,
            limit_nano=usd_to_nano(self.max_usd) if self.max_usd is not None else None,
            limit_tokens=self.max_tokens,
            enforce=self.on_exceed == "raise",
            ttl_s=self.ttl_s(t),
        )
