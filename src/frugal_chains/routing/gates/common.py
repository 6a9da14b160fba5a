"""What the gates (and the trained verifier) share: argument checks and how an answer that is only tool calls is
recognised and compared."""

from __future__ import annotations

import json
import math

from frugal_chains.errors import ConfigurationError
from frugal_chains.routing.types import GateContext, GateResult, TierAnswer

__all__ = ["FullAnswerGate", "LocalGate", "check_fraction", "is_number", "tool_call_only", "tool_calls_key"]


def is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def tool_call_only(answer: TierAnswer) -> bool:
    return bool(answer.tool_calls) and not answer.text.strip()


def check_fraction(value: object, field: str, *, allow_zero: bool = False) -> float:
    """A number in (0, 1] (or [0, 1] with ``allow_zero``), else ConfigurationError naming ``field``."""
    v = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan
    if not (v >= 0.0 if allow_zero else v > 0.0) or v > 1.0:  # NaN fails both
        rng = "[0, 1]" if allow_zero else "(0, 1]"
        raise ConfigurationError(f"{field} must be a number in {rng}, got {value!r}", field=field)
    return v


def tool_calls_key(answer: TierAnswer) -> str:
    calls = [
        {"name": str(c.get("name", "")), "args": c.get("args", c.get("arguments", {}))}
        for c in answer.tool_calls
    ]
    return "tool_calls:" + json.dumps(calls, sort_keys=True, default=str)


class FullAnswerGate:
    """What every built-in gate shares: it reads the whole answer (``needs_full_answer`` is True)."""

    @property
    def needs_full_answer(self) -> bool:
        """True: the whole answer must be seen."""
        return True


class LocalGate(FullAnswerGate):
    """A gate without I/O: :meth:`acheck` is :meth:`check`."""

    def check(self, ctx: GateContext) -> GateResult:
        """The verdict on ``ctx.answer``."""
        raise NotImplementedError

    async def acheck(self, ctx: GateContext) -> GateResult:
        """Same as :meth:`check` (no I/O)."""
        return self.check(ctx)
