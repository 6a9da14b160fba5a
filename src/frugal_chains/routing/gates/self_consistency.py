"""The self-consistency gate: most of ``n`` answers sampled from the same tier agree on the final answer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from frugal_chains.errors import ConfigurationError
from frugal_chains.routing.gates.common import FullAnswerGate, check_fraction, tool_call_only, tool_calls_key
from frugal_chains.routing.gates.extract import default_extract
from frugal_chains.routing.types import GateContext, GateResult, TierAnswer

__all__ = ["SelfConsistencyGate"]


class SelfConsistencyGate(FullAnswerGate):
    """Passes when the tier gives the same final answer most of the time: ``n - 1`` more answers are sampled
    from the same tier (``ctx.sample`` / ``ctx.asample``, supplied by the adapter; their cost is added to the
    attempt), and ``agreement`` = the share of all ``n`` answers whose extracted final answer equals the
    original's. ``score`` = agreement.

    The default extractor (:func:`default_extract`) takes, from a text with numbers, the number after ``####`` /
    "the answer is" / "final answer", else the last number (``1,000`` = ``1000``, ``3.0`` = ``3``); from other
    texts, the casefolded text without punctuation. Answers that are only tool calls compare their calls (names
    and arguments). Without a sampler the gate is skipped (passed) with a reason. Samples need a temperature
    above 0 to disagree at all.

    Args:
        n: answers in all (the original + ``n - 1`` samples), 2..20.
        min_agreement: in (0, 1], compared with the agreement rounded to two decimals: with ``n=3`` and
            ``0.67``, 2 of 3 answers must agree (2/3 = 0.666... counts as 0.67).
        extract: ``text -> str | None`` to compare by instead of the default (``None`` never agrees).

    Raises:
        ConfigurationError: ``n``, ``min_agreement`` or ``extract`` invalid (names the field).

    Example:
        >>> from frugal_chains.routing import GateContext, SelfConsistencyGate, TierAnswer
        >>> samples = [TierAnswer(text="... so the answer is 18."), TierAnswer(text="#### 20")]
        >>> ctx = GateContext(messages=[], answer=TierAnswer(text="9 * 2 = 18\\n#### 18"), tier="t",
        ...                   tier_index=0, n_tiers=2, sample=lambda k: samples[:k])
        >>> r = SelfConsistencyGate(n=3, min_agreement=0.67).check(ctx)
        >>> r.passed, round(r.score, 2)
        (True, 0.67)
    """

    def __init__(
        self,
        *,
        n: int = 3,
        min_agreement: float = 0.67,
        extract: Callable[[str], str | None] | None = None,
    ) -> None:
        if not isinstance(n, int) or isinstance(n, bool) or not 2 <= n <= 20:
            raise ConfigurationError(f"n must be an int in 2..20, got {n!r}", field="n")
        self.n = n
        self.min_agreement = check_fraction(min_agreement, "min_agreement")
        if extract is not None and not callable(extract):
            raise ConfigurationError("extract must be a callable text -> str, or None", field="extract")
        self.extract = extract

    @property
    def name(self) -> str:
        """``"self_consistency"``."""
        return "self_consistency"

    def __repr__(self) -> str:
        return f"SelfConsistencyGate(n={self.n}, min_agreement={self.min_agreement})"

    def _key(self, answer: TierAnswer) -> str | None:
        if self.extract is None:
            if tool_call_only(answer):
                return tool_calls_key(answer)
            key = default_extract(answer.text)
            return key or None
        value = self.extract(answer.text)
        return None if value is None else str(value)

    def _verdict(self, original: TierAnswer, samples: Sequence[TierAnswer]) -> GateResult:
        samples = [TierAnswer(text=s) if isinstance(s, str) else s for s in samples]
        samples = [s for s in samples if isinstance(s, TierAnswer)]
        if not samples:
            return GateResult(
                gate=self.name, passed=True, skipped=True, reason="the sampler returned no answers"
            )
        target = self._key(original)
        if target is None:
            return GateResult(gate=self.name, passed=False, score=0.0, reason="no final answer to compare")
        agree = 1 + sum(1 for s in samples if self._key(s) == target)
        total = 1 + len(samples)
        agreement = agree / total
        reason = f"{agree}/{total} answers agree on {target[:60]!r}"
        # Compared to two decimals, so min_agreement=0.67 means "two thirds" (2/3 = 0.666... passes).
        passed = round(agreement, 2) >= self.min_agreement
        return GateResult(gate=self.name, passed=passed, score=agreement, reason=reason)

    def check(self, ctx: GateContext) -> GateResult:
        """Sample ``n - 1`` more answers with ``ctx.sample`` and compare."""
        if ctx.sample is None:
            return GateResult(
                gate=self.name,
                passed=True,
                skipped=True,
                reason="no sampler: the adapter cannot sample this tier",
            )
        return self._verdict(ctx.answer, list(ctx.sample(self.n - 1)))

    async def acheck(self, ctx: GateContext) -> GateResult:
        """Sample with ``ctx.asample`` (``ctx.sample`` in a worker thread when only that is given)."""
        if ctx.asample is not None:
            samples = list(await ctx.asample(self.n - 1))
        elif ctx.sample is not None:
            samples = list(await asyncio.to_thread(ctx.sample, self.n - 1))
        else:
            return GateResult(
                gate=self.name,
                passed=True,
                skipped=True,
                reason="no sampler: the adapter cannot sample this tier",
            )
        return self._verdict(ctx.answer, samples)
