"""What a call reserves for its output when the model sets no output cap (no ``max_tokens``).

The hard default reserves the model's whole output limit (16,384 tokens on gpt-4o), which a small budget cannot
hold. Two choices lower it, per budget handler (both wings) or :class:`~frugal_chains.budget.BudgetGuard`:

* ``assume_max_output={"gpt-4o": 1024, "feature:summarize": 400, "*": 2048}``: an assumed cap per feature
  (``"feature:NAME"``), per model (its name as the call gives it), or for any model (``"*"``); the most specific
  key wins (feature, then model, then ``"*"``).
* ``observed_output=ObservedOutput(percentile=99, min_samples=50)``: a high percentile of the output tokens that
  recent calls of the same model and feature used, once ``min_samples`` of them were seen (until then: the
  assumed cap, else the model's limit). Kept in memory, per process.

A call's own ``max_tokens`` always wins over both, and no cap is ever above the model's own output limit. Neither
is enforced by the provider: a call may use more than was reserved (an overshoot). It is committed in full,
recorded (``CallRecord.overshoot_tokens`` / ``overshoot_usd``, summed in ``SpendRow.overshoots``) and raised as
an ``Alert(kind="overshoot")``.
"""

from __future__ import annotations

import collections
import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from frugal_chains.errors import ConfigurationError
from frugal_chains.shared.sharing import SharedService

__all__ = ["CapSource", "ObservedOutput", "OutputCaps"]

CapSource = Literal["max_tokens", "observed", "assumed", "model_limit", "none"]
"""Where a call's reserved output came from: the call's own cap (``max_tokens``), the observed percentile, the
assumed cap, the model's whole output limit, or nothing (no budget needs one)."""

SOFT_SOURCES: tuple[CapSource, ...] = ("observed", "assumed")
"""Caps the provider does not enforce: the call may use more than was reserved."""

_NOT_AN_ANSWER = ("interrupted", "error", "usage_covers_batch", "usage_reported_on_batch_first_run")
"""``CallRecord.extra`` keys of a commit whose output is not one whole answer (cut off, partial, a batch's)."""


@dataclass
class _Series:
    values: collections.deque[int]
    estimate: int | None = None
    stale: bool = True


class ObservedOutput(SharedService):
    """Reserve a call's output at a high percentile of what recent calls of the same model and feature used.

    Each answered call with no output cap of its own (and usage reported by the provider) adds its output tokens
    (per answer, when it asked for several) to the series of its ``(model, feature)``. Once a series holds
    ``min_samples`` calls, a call of that model and feature with no ``max_tokens`` reserves the series'
    ``percentile`` (nearest rank: a value some call really used), never more than the model's output limit;
    until then it reserves the assumed cap (``assume_max_output``) or the model's whole limit.

    Memory is bounded: the last ``window`` calls per series, the ``max_series`` series used most recently. The
    estimate lives in this object, per process (share one object between handlers to share it); it is not
    written to the ledger. Thread-safe. Copies are the object itself; it cannot be pickled.

    Args:
        percentile: the percentile reserved, in (0, 100] (default 99).
        min_samples: calls a series needs before its estimate applies (default 50).
        window: the most recent calls kept per series (default 500; at least ``min_samples``).
        max_series: the most ``(model, feature)`` series kept (default 1,000; the least recently used goes).

    Example:
        >>> from frugal_chains.budget import ObservedOutput
        >>> observed = ObservedOutput(percentile=90, min_samples=10)
        >>> for n in range(1, 10):
        ...     observed.observe("gpt-4o", "faq", n * 10)
        >>> observed.estimate("gpt-4o", "faq") is None  # 9 calls: not enough yet
        True
        >>> observed.observe("gpt-4o", "faq", 100)
        >>> observed.estimate("gpt-4o", "faq"), observed.samples("gpt-4o", "faq")
        (90, 10)
    """

    def __init__(
        self,
        *,
        percentile: float = 99.0,
        min_samples: int = 50,
        window: int = 500,
        max_series: int = 1000,
    ) -> None:
        if (
            isinstance(percentile, bool)
            or not isinstance(percentile, (int, float))
            or not 0 < percentile <= 100
        ):
            raise ConfigurationError(
                f"ObservedOutput.percentile must be a number in (0, 100], e.g. 99; got {percentile!r}.",
                field="percentile",
            )
        for name, value, least in (("min_samples", min_samples, 1), ("max_series", max_series, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ConfigurationError(
                    f"ObservedOutput.{name} must be an int >= {least}; got {value!r}.", field=name
                )
        if isinstance(window, bool) or not isinstance(window, int) or window < min_samples:
            raise ConfigurationError(
                f"ObservedOutput.window must be an int >= min_samples ({min_samples}); got {window!r}.",
                field="window",
            )
        self.percentile = float(percentile)
        self.min_samples = min_samples
        self.window = window
        self.max_series = max_series
        self._series: collections.OrderedDict[tuple[str, str | None], _Series] = collections.OrderedDict()
        self._lock = threading.Lock()

    def observe(self, model: str, feature: str | None, output_tokens: int) -> None:
        """Add one answer's output tokens to the ``(model, feature)`` series."""
        key = (model, feature)
        with self._lock:
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = _Series(collections.deque(maxlen=self.window))
                while len(self._series) > self.max_series:
                    self._series.popitem(last=False)
            else:
                self._series.move_to_end(key)
            series.values.append(max(0, int(output_tokens)))
            series.stale = True

    def estimate(self, model: str, feature: str | None) -> int | None:
        """The series' percentile of output tokens per answer; ``None`` before ``min_samples`` calls."""
        with self._lock:
            series = self._series.get((model, feature))
            if series is None or len(series.values) < self.min_samples:
                return None
            if series.stale:
                ordered = sorted(series.values)
                rank = max(1, math.ceil(self.percentile / 100 * len(ordered)))
                series.estimate, series.stale = ordered[rank - 1], False
            return series.estimate

    def samples(self, model: str, feature: str | None) -> int:
        """How many calls the ``(model, feature)`` series holds (at most ``window``)."""
        with self._lock:
            series = self._series.get((model, feature))
            return 0 if series is None else len(series.values)

    def snapshot(self) -> dict[tuple[str, str | None], tuple[int, int | None]]:
        """``{(model, feature): (samples, estimate or None)}`` for every series kept."""
        with self._lock:
            keys = list(self._series)
        return {key: (self.samples(*key), self.estimate(*key)) for key in keys}

    def __repr__(self) -> str:
        return (
            f"ObservedOutput(percentile={self.percentile:g}, min_samples={self.min_samples}, "
            f"window={self.window}, max_series={self.max_series})"
        )


def _assumed(value: Mapping[str, int] | None) -> dict[str, int]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigurationError(
            "assume_max_output must be a mapping of output caps, e.g. "
            f"{{'gpt-4o': 1024, 'feature:summarize': 400, '*': 2048}}; got {type(value).__name__}.",
            field="assume_max_output",
        )
    caps: dict[str, int] = {}
    for key, cap in value.items():
        if not isinstance(key, str) or not key.strip() or key.strip() == "feature:":
            raise ConfigurationError(
                f"assume_max_output keys are a model name, 'feature:NAME' or '*'; got {key!r}.",
                field="assume_max_output",
            )
        if isinstance(cap, bool) or not isinstance(cap, int) or cap <= 0:
            raise ConfigurationError(
                f"assume_max_output[{key!r}] must be a positive int (output tokens); got {cap!r}.",
                field="assume_max_output",
            )
        caps[key] = cap
    return caps


class OutputCaps:
    """The guard's choice of a call's output reservation when the call sets no cap (see the module docs).

    Args:
        assume_max_output: assumed caps by ``"feature:NAME"``, model name or ``"*"``.
        observed_output: an :class:`ObservedOutput`, ``True`` for one with its defaults, ``None``/``False``: off.

    Example:
        >>> from frugal_chains.budget.output_caps import OutputCaps
        >>> caps = OutputCaps({"gpt-4o": 1024, "feature:summarize": 400})
        >>> caps.cap_for("gpt-4o", None, 16_384), caps.cap_for("gpt-4o", "summarize", 16_384)
        ((1024, 'assumed'), (400, 'assumed'))
        >>> caps.cap_for("gpt-4o-mini", None, 16_384)
        (16384, 'model_limit')
    """

    def __init__(
        self,
        assume_max_output: Mapping[str, int] | None = None,
        observed_output: ObservedOutput | bool | None = None,
    ) -> None:
        self.assumed = _assumed(assume_max_output)
        if observed_output is True:
            observed_output = ObservedOutput()
        if observed_output is False:
            observed_output = None
        if observed_output is not None and not isinstance(observed_output, ObservedOutput):
            raise ConfigurationError(
                "observed_output must be an ObservedOutput(percentile=..., min_samples=...), True for the "
                f"defaults, or None; got {type(observed_output).__name__}.",
                field="observed_output",
            )
        self.observed: ObservedOutput | None = observed_output

    def assumed_for(self, model: str, feature: str | None) -> int | None:
        """The assumed cap: ``"feature:NAME"``, else the model's name, else ``"*"``; ``None`` if none applies."""
        if feature is not None and f"feature:{feature}" in self.assumed:
            return self.assumed[f"feature:{feature}"]
        return self.assumed.get(model, self.assumed.get("*"))

    def cap_for(self, model: str, feature: str | None, limit: int | None) -> tuple[int | None, CapSource]:
        """The output to reserve for one answer of a call with no cap of its own, and where it came from.
        ``limit``: the model's own output limit (``None``: unknown)."""
        observed = self.observed.estimate(model, feature) if self.observed is not None else None
        if observed is not None:
            return (max(1, observed) if limit is None else max(1, min(observed, limit))), "observed"
        assumed = self.assumed_for(model, feature)
        if assumed is not None:
            return (assumed if limit is None else min(assumed, limit)), "assumed"
        if limit is not None:
            return limit, "model_limit"
        return None, "none"

    def observe(
        self,
        *,
        model: str,
        feature: str | None,
        source: CapSource,
        output_tokens: int,
        choices: int,
        usage_estimated: bool,
        extra: Mapping[str, object],
    ) -> None:
        """Feed one committed call to the observed series: only whole answers the provider reported, of calls
        that set no cap of their own (a call capped by its ``max_tokens`` says little about uncapped ones)."""
        if self.observed is None or source == "max_tokens" or usage_estimated:
            return
        if any(k in extra for k in _NOT_AN_ANSWER):
            return
        self.observed.observe(model, feature, math.ceil(output_tokens / max(1, choices)))

    def advice(self, model: str, feature: str | None, limit: int) -> str:
        """What a refusal says when the call reserved the model's whole output limit for want of a cap."""
        waiting = ""
        if self.observed is not None:
            have = self.observed.samples(model, feature)
            waiting = (
                f" (observed_output is on: {have} of the {self.observed.min_samples} calls it needs for "
                f"{model!r}{f' feature {feature!r}' if feature else ''} seen so far)"
            )
        return (
            f"The call sets no output cap, so it reserved the whole output limit of {model!r} ({limit:,} tokens). "
            f"Set max_tokens on the model, or give the budget handler assume_max_output={{{model!r}: 1024}} "
            "(an assumed cap per model or 'feature:NAME') or observed_output=ObservedOutput() (a high "
            f"percentile of recent calls' output){waiting}; or raise the limit. See 'When the model sets no "
            "output cap' in docs/budgets.md."
        )
