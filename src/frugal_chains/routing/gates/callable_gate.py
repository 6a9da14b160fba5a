"""The callable gate: your function ``ctx -> bool | float | GateResult`` (sync or async) decides."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

from frugal_chains.errors import ConfigurationError
from frugal_chains.routing.gates.common import FullAnswerGate, check_fraction, is_number
from frugal_chains.routing.types import GateContext, GateResult
from frugal_chains.shared.bridge import callable_name, is_async_callable, loop_running, resolve_sync

__all__ = ["CallableGate"]


class CallableGate(FullAnswerGate):
    """A gate from your function ``fn(ctx) -> bool | float | GateResult`` (sync or ``async def``).

    ``True``/``False`` pass or fail; a number is a score that passes when ``>= threshold``; a
    :class:`~frugal_chains.routing.types.GateResult` is returned as is. Anything else fails with a reason.
    ``acheck`` awaits an async function (a sync one is called directly: keep it fast). ``check`` on an async
    function runs it with ``asyncio.run`` when no event loop is running, and raises
    :class:`~frugal_chains.errors.ConfigurationError` (use the async path: ``ainvoke`` / ``acheck``) when one is:
    the request stops there (it is not counted as a failed gate).

    Args:
        fn: the check; it receives the :class:`~frugal_chains.routing.types.GateContext`.
        name: the gate's name in results and metadata (default: the function's name).
        threshold: in [0, 1], for numeric results (default 0.5).

    Raises:
        ConfigurationError: ``fn`` not callable, a bad name or threshold (names the field).

    Example:
        >>> from frugal_chains.routing import CallableGate, GateContext, TierAnswer
        >>> def cites_source(ctx):
        ...     return "http" in ctx.answer.text
        >>> gate = CallableGate(cites_source)
        >>> ctx = GateContext(messages=[], answer=TierAnswer(text="See https://example.org"), tier="t",
        ...                   tier_index=0, n_tiers=2)
        >>> gate.name, gate.check(ctx).passed
        ('cites_source', True)
        >>> CallableGate(lambda ctx: 0.3, name="confidence").check(ctx).passed
        False
    """

    def __init__(
        self, fn: Callable[[GateContext], Any], *, name: str | None = None, threshold: float = 0.5
    ) -> None:
        if not callable(fn):
            raise ConfigurationError(f"fn must be callable, got {type(fn).__name__}", field="fn")
        if name is None:
            name = callable_name(fn)
        if not isinstance(name, str) or not name.strip():
            raise ConfigurationError("name must be a non-empty string", field="name")
        self.fn = fn
        self._name = name
        self.threshold = check_fraction(threshold, "threshold", allow_zero=True)

    @property
    def name(self) -> str:
        """The gate's name."""
        return self._name

    def __repr__(self) -> str:
        return f"CallableGate({self._name!r}, threshold={self.threshold})"

    def _result(self, value: Any) -> GateResult:
        if isinstance(value, GateResult):
            return value
        if isinstance(value, bool):
            return GateResult(gate=self._name, passed=value)
        if is_number(value) and not math.isnan(float(value)):
            score = float(value)
            return GateResult(
                gate=self._name,
                passed=score >= self.threshold,
                score=score,
                reason="" if score >= self.threshold else f"score {score:.3g} < {self.threshold}",
            )
        return GateResult(
            gate=self._name,
            passed=False,
            reason=f"the function returned {type(value).__name__}, not a bool, a score or a GateResult",
        )

    def check(self, ctx: GateContext) -> GateResult:
        """Call the function (an async one only when no event loop is running)."""
        if is_async_callable(self.fn) and loop_running():
            raise ConfigurationError(
                f"gate {self._name!r} is an async function and an event loop is running: use the async path "
                "(ainvoke / astream / acheck), or pass a sync function",
                field="gates",
            )
        return self._result(resolve_sync(self.fn(ctx), f"gate {self._name!r}", "gates"))

    async def acheck(self, ctx: GateContext) -> GateResult:
        """Call the function, awaiting it when it is async."""
        value = self.fn(ctx)
        if inspect.isawaitable(value):
            value = await value
        return self._result(value)
