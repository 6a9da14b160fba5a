"""The log-probability gate: the model was confident enough in its answer's tokens."""

from __future__ import annotations

import math
from typing import Literal

from frugal_chains.errors import ConfigurationError
from frugal_chains.routing.gates.common import LocalGate, check_fraction, is_number
from frugal_chains.routing.types import GateContext, GateResult

__all__ = ["LogprobGate"]


class LogprobGate(LocalGate):
    """Passes when the model was confident: ``exp(mean token logprob) >= min_mean_prob`` (the geometric mean of
    the token probabilities), and, with ``min_token_prob``, no token below it. ``score`` is that mean probability.

    Needs a provider that returns log-probabilities (``ChatOpenAI(logprobs=True)``); the adapter puts them in
    ``TierAnswer.logprobs`` (natural logs, one per output token).

    Args:
        min_mean_prob: in (0, 1].
        min_token_prob: ``None`` or in (0, 1]: every token's probability must reach it.
        on_missing: ``"pass"`` (default: skipped, counted as passed) or ``"fail"`` when there are no logprobs.

    Raises:
        ConfigurationError: a value out of range (names the field).

    Example:
        >>> import math
        >>> from frugal_chains.routing import GateContext, LogprobGate, TierAnswer
        >>> def ctx(probs):
        ...     a = TierAnswer(text="x", logprobs=None if probs is None else tuple(math.log(p) for p in probs))
        ...     return GateContext(messages=[], answer=a, tier="t", tier_index=0, n_tiers=2)
        >>> gate = LogprobGate(min_mean_prob=0.7)
        >>> r = gate.check(ctx([0.9, 0.8, 0.95]))
        >>> r.passed, round(r.score, 3)
        (True, 0.881)
        >>> gate.check(ctx([0.9, 0.2])).passed
        False
        >>> gate.check(ctx(None)).skipped
        True
    """

    def __init__(
        self,
        *,
        min_mean_prob: float = 0.7,
        min_token_prob: float | None = None,
        on_missing: Literal["pass", "fail"] = "pass",
    ) -> None:
        self.min_mean_prob = check_fraction(min_mean_prob, "min_mean_prob")
        self.min_token_prob = (
            None if min_token_prob is None else check_fraction(min_token_prob, "min_token_prob")
        )
        if on_missing not in ("pass", "fail"):
            raise ConfigurationError(
                f'on_missing must be "pass" or "fail", got {on_missing!r}', field="on_missing"
            )
        self.on_missing: Literal["pass", "fail"] = on_missing

    @property
    def name(self) -> str:
        """``"logprob"``."""
        return "logprob"

    def __repr__(self) -> str:
        return (
            f"LogprobGate(min_mean_prob={self.min_mean_prob}, min_token_prob={self.min_token_prob}, "
            f"on_missing={self.on_missing!r})"
        )

    def check(self, ctx: GateContext) -> GateResult:
        """Compare the answer's token probabilities with the bounds."""
        raw = ctx.answer.logprobs
        values = [min(0.0, float(v)) for v in raw or () if is_number(v) and not math.isnan(float(v))]
        if not values:
            reason = "no logprobs returned"
            if self.on_missing == "pass":
                return GateResult(gate=self.name, passed=True, skipped=True, reason=reason)
            return GateResult(gate=self.name, passed=False, reason=reason)
        mean_prob = math.exp(sum(values) / len(values))
        if mean_prob < self.min_mean_prob:
            return GateResult(
                gate=self.name,
                passed=False,
                score=mean_prob,
                reason=f"mean token probability {mean_prob:.3f} < {self.min_mean_prob}",
            )
        if self.min_token_prob is not None:
            lowest = math.exp(min(values))
            if lowest < self.min_token_prob:
                return GateResult(
                    gate=self.name,
                    passed=False,
                    score=mean_prob,
                    reason=f"a token has probability {lowest:.3f} < {self.min_token_prob}",
                )
        return GateResult(gate=self.name, passed=True, score=mean_prob)
