"""The length gate: the answer's length in characters and/or tokens is within bounds."""

from __future__ import annotations

from frugal_chains.accounting.tokens import count_text_tokens
from frugal_chains.errors import ConfigurationError
from frugal_chains.routing.gates.common import LocalGate, tool_call_only
from frugal_chains.routing.types import GateContext, GateResult

__all__ = ["LengthGate"]


class LengthGate(LocalGate):
    """Passes when the answer's length is within bounds, in characters and/or tokens.

    Tokens are counted with :func:`frugal_chains.accounting.count_text_tokens` (the answer model's OpenAI
    encoding, ``o200k_base`` for other models). Surrounding whitespace is not counted. An answer that is only
    tool calls passes (skipped). Bounds are inclusive; give at least one.

    Args:
        min_chars: fewest characters (``LengthGate(min_chars=1)`` is the ``"nonempty"`` gate).
        max_chars: most characters.
        min_tokens: fewest tokens.
        max_tokens: most tokens.

    Raises:
        ConfigurationError: a bound is not an int >= 0, a minimum exceeds its maximum, or no bound is given
            (names the field).

    Example:
        >>> from frugal_chains.routing import GateContext, LengthGate, TierAnswer
        >>> def ctx(text):
        ...     return GateContext(messages=[], answer=TierAnswer(text=text), tier="t", tier_index=0, n_tiers=2)
        >>> gate = LengthGate(min_chars=3, max_tokens=5)
        >>> gate.check(ctx("Paris")).passed, gate.check(ctx("ok")).reason
        (True, '2 chars < min_chars=3')
    """

    def __init__(
        self,
        *,
        min_chars: int | None = None,
        max_chars: int | None = None,
        min_tokens: int | None = None,
        max_tokens: int | None = None,
    ) -> None:
        bounds = {
            "min_chars": min_chars,
            "max_chars": max_chars,
            "min_tokens": min_tokens,
            "max_tokens": max_tokens,
        }
        for field, v in bounds.items():
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
                raise ConfigurationError(f"{field} must be None or an int >= 0, got {v!r}", field=field)
        if all(v is None for v in bounds.values()):
            raise ConfigurationError(
                "LengthGate needs at least one bound: min_chars, max_chars, min_tokens or max_tokens",
                field="min_chars",
            )
        for lo, hi in (("min_chars", "max_chars"), ("min_tokens", "max_tokens")):
            a, b = bounds[lo], bounds[hi]
            if a is not None and b is not None and a > b:
                raise ConfigurationError(f"{lo}={a} exceeds {hi}={b}", field=lo)
        self.min_chars = min_chars
        self.max_chars = max_chars
        self.min_tokens = min_tokens
        self.max_tokens = max_tokens

    @property
    def name(self) -> str:
        """``"length"``."""
        return "length"

    def __repr__(self) -> str:
        args = ", ".join(
            f"{k}={getattr(self, k)}"
            for k in ("min_chars", "max_chars", "min_tokens", "max_tokens")
            if getattr(self, k) is not None
        )
        return f"LengthGate({args})"

    def check(self, ctx: GateContext) -> GateResult:
        """Measure the answer text."""
        if tool_call_only(ctx.answer):
            return GateResult(gate=self.name, passed=True, skipped=True, reason="tool-call answer")
        text = ctx.answer.text.strip()
        chars = len(text)
        if self.min_chars is not None and chars < self.min_chars:
            return GateResult(
                gate=self.name, passed=False, reason=f"{chars} chars < min_chars={self.min_chars}"
            )
        if self.max_chars is not None and chars > self.max_chars:
            return GateResult(
                gate=self.name, passed=False, reason=f"{chars} chars > max_chars={self.max_chars}"
            )
        if self.min_tokens is not None or self.max_tokens is not None:
            tokens = count_text_tokens(text, ctx.answer.model)
            if self.min_tokens is not None and tokens < self.min_tokens:
                return GateResult(
                    gate=self.name, passed=False, reason=f"{tokens} tokens < min_tokens={self.min_tokens}"
                )
            if self.max_tokens is not None and tokens > self.max_tokens:
                return GateResult(
                    gate=self.name, passed=False, reason=f"{tokens} tokens > max_tokens={self.max_tokens}"
                )
        return GateResult(gate=self.name, passed=True)
