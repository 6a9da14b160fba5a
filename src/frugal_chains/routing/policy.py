"""From a scorer's score to a starting tier: thresholds, optionally weighed by what the stronger tier costs."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from frugal_chains.accounting.usage import Price
from frugal_chains.errors import ConfigurationError

__all__ = ["RoutingPolicy", "TierSpec", "default_thresholds", "tier_names"]


def default_thresholds(n_tiers: int) -> tuple[float, ...]:
    """0.5 for two tiers; 0.5, 0.75, 0.875 ... for more.

    Example:
        >>> default_thresholds(3)
        (0.5, 0.75)
    """
    return tuple(1 - 0.5**i for i in range(1, n_tiers))


@dataclass(frozen=True, kw_only=True)
class TierSpec:
    """A tier as the engine knows it: a name, the model it calls and (optionally) its price.

    Example:
        >>> from frugal_chains.routing import TierSpec
        >>> TierSpec(name="cheap", model="gpt-4o-mini").name
        'cheap'
    """

    name: str
    """Shown in ``response_metadata["frugal"]["tier"]``, ledger records and statistics."""
    model: str
    """The model name (priced with the price book unless :attr:`price` is set)."""
    price: Price | None = None
    """USD per million tokens; ``None`` looks the model up in the price book."""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigurationError("a tier needs a non-empty name", field="tier_names")


@dataclass(frozen=True, kw_only=True)
class RoutingPolicy:
    """Where a request starts: the cheapest tier ``i`` such that ``score < thresholds[i]``.

    With ``n`` tiers there are ``n - 1`` thresholds in [0, 1], non-decreasing. A score of 0.7 with
    thresholds ``(0.5,)`` starts on the strong tier; ``thresholds=None`` starts every request on the cheapest
    tier (a pure cascade: the gates decide).

    ``cost_aware=True`` weighs the expected gain per dollar: the score is multiplied by
    ``extra cost of a reference request / extra cost of this request`` (the price gap to the next tier, for
    ``prompt_tokens + expected_output_tokens``), so a long prompt needs a higher score to go up.

    Example:
        >>> from frugal_chains.routing import RoutingPolicy
        >>> RoutingPolicy(thresholds=(0.5,)).start_tier(0.7, n_tiers=2)
        1
        >>> RoutingPolicy(thresholds=(0.5,)).start_tier(0.3, n_tiers=2)
        0
    """

    thresholds: tuple[float, ...] | None = None
    cost_aware: bool = False
    reference_tokens: int = 1000
    """Prompt tokens of the reference request ``cost_aware`` compares against."""
    expected_output_tokens: int = 256
    """Output tokens assumed when pricing a request before the call."""

    def __post_init__(self) -> None:
        if self.thresholds is not None:
            ts = tuple(self.thresholds)
            for t in ts:
                if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0.0 <= float(t) <= 1.0:
                    raise ConfigurationError(
                        f"thresholds must be numbers in [0, 1], got {t!r}", field="thresholds"
                    )
            if any(a > b for a, b in itertools.pairwise(ts)):
                raise ConfigurationError(
                    f"thresholds must not decrease (tier i+1 needs a higher score than tier i), got {ts}",
                    field="thresholds",
                )
            object.__setattr__(self, "thresholds", tuple(float(t) for t in ts))
        for name in ("reference_tokens", "expected_output_tokens"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ConfigurationError(f"{name} must be an int >= 0, got {v!r}", field=name)

    def check_tiers(self, n_tiers: int) -> None:
        """Raise ConfigurationError when the thresholds do not fit ``n_tiers`` tiers."""
        if self.thresholds is not None and len(self.thresholds) != n_tiers - 1:
            raise ConfigurationError(
                f"{n_tiers} tiers need {n_tiers - 1} threshold(s), got {len(self.thresholds)}",
                field="thresholds",
            )

    def effective_score(
        self,
        score: float,
        *,
        tier: int = 0,
        prompt_tokens: int = 0,
        prices: Sequence[Price] | None = None,
    ) -> float:
        """``score`` weighed by the price gap between ``tier`` and ``tier + 1`` (when ``cost_aware``)."""
        if not self.cost_aware or not prices or tier + 1 >= len(prices):
            return score
        lo, hi = prices[tier], prices[tier + 1]

        def gap(tokens: int) -> float:
            return (hi.input - lo.input) * tokens + (hi.output - lo.output) * self.expected_output_tokens

        this, ref = gap(prompt_tokens), gap(self.reference_tokens)
        if this <= 0 or ref <= 0 or not math.isfinite(this):
            return score
        return min(1.0, score * ref / this)

    def start_tier(
        self,
        score: float | None,
        *,
        n_tiers: int,
        prompt_tokens: int = 0,
        prices: Sequence[Price] | None = None,
    ) -> int:
        """The index of the tier a request with ``score`` starts on."""
        if score is None or self.thresholds is None:
            return 0
        if math.isnan(score):
            return 0
        start = 0
        for i, t in enumerate(self.thresholds[: n_tiers - 1]):
            s = self.effective_score(score, tier=i, prompt_tokens=prompt_tokens, prices=prices)
            if s >= t:
                start = i + 1
            else:
                break
        return start


def tier_names(given: object, models: Sequence[str]) -> list[str]:
    """The tiers' names: ``given`` (one non-empty string per tier) or the models' names made unique (``m``,
    ``m#2``). Both adapters use it.

    Example:
        >>> tier_names(None, ["gpt-4o-mini", "gpt-4o-mini", "gpt-4o"])
        ['gpt-4o-mini', 'gpt-4o-mini#2', 'gpt-4o']
    """
    if given is None:
        seen: dict[str, int] = {}
        out: list[str] = []
        for name in models:
            seen[name] = seen.get(name, 0) + 1
            out.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
        return out
    if (
        not isinstance(given, Sequence)
        or isinstance(given, str)
        or len(given) != len(models)
        or not all(isinstance(n, str) and n for n in given)
    ):
        raise ConfigurationError(
            f"tier_names must be {len(models)} non-empty strings, one per tier, got {given!r}",
            field="tier_names",
        )
    return list(given)
