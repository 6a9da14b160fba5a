"""The regex gate: a pattern is (or, with ``must_match=False``, is not) found in the answer."""

from __future__ import annotations

import re

from frugal_chains.errors import ConfigurationError
from frugal_chains.routing.gates.common import LocalGate, tool_call_only
from frugal_chains.routing.types import GateContext, GateResult

__all__ = ["RegexGate"]


class RegexGate(LocalGate):
    """Passes when ``pattern`` is found in the answer text (``re.search``), or with ``must_match=False`` when it
    is not. An answer that is only tool calls is skipped (passed).

    Args:
        pattern: a regular expression (a string or a compiled pattern).
        must_match: True: the pattern must occur; False: it must not.
        flags: ``re`` flags for a string pattern (e.g. ``re.IGNORECASE``).

    Raises:
        ConfigurationError: the pattern does not compile (``field="pattern"``).

    Example:
        >>> from frugal_chains.routing import GateContext, RegexGate, TierAnswer
        >>> def ctx(text):
        ...     return GateContext(messages=[], answer=TierAnswer(text=text), tier="t", tier_index=0, n_tiers=2)
        >>> RegexGate(r"####\\s*\\d+").check(ctx("so 9 * 2 = 18\\n#### 18")).passed
        True
        >>> RegexGate(r"TODO", must_match=False).check(ctx("def f(): pass  # TODO")).passed
        False
    """

    def __init__(self, pattern: str | re.Pattern[str], *, must_match: bool = True, flags: int = 0) -> None:
        if isinstance(pattern, re.Pattern):
            if flags:
                raise ConfigurationError("flags cannot be given with a compiled pattern", field="flags")
            self.pattern: re.Pattern[str] = pattern
        elif isinstance(pattern, str):
            try:
                self.pattern = re.compile(pattern, flags)
            except re.error as e:
                raise ConfigurationError(f"pattern {pattern!r} does not compile: {e}", field="pattern") from e
        else:
            raise ConfigurationError(
                f"pattern must be a regex string or compiled pattern, got {type(pattern).__name__}",
                field="pattern",
            )
        if not isinstance(must_match, bool):
            raise ConfigurationError("must_match must be True or False", field="must_match")
        self.must_match = must_match

    @property
    def name(self) -> str:
        """``"regex"``."""
        return "regex"

    def __repr__(self) -> str:
        return f"RegexGate({self.pattern.pattern!r}, must_match={self.must_match})"

    def check(self, ctx: GateContext) -> GateResult:
        """Search the answer text."""
        if tool_call_only(ctx.answer):
            return GateResult(gate=self.name, passed=True, skipped=True, reason="tool-call answer")
        found = self.pattern.search(ctx.answer.text) is not None
        if found == self.must_match:
            return GateResult(gate=self.name, passed=True)
        what = "no match for" if self.must_match else "forbidden match for"
        return GateResult(gate=self.name, passed=False, reason=f"{what} {self.pattern.pattern!r}"[:300])
