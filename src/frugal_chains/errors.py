"""Errors raised by frugal-chains.

The whole tree::

    FrugalChainsError                  root: catch this to catch everything of ours
    ├── ConfigurationError             bad input at construction or call time; names the field and the fix
    ├── BudgetExceededError            a budget refused a call *before* any money was spent
    ├── LedgerUnavailableError         the spend ledger could not be reached (budgets fail closed by default)
    ├── UnknownModelPriceError (+ConfigurationError)
    │                                  no price for a model: pass ``prices={...}`` or ``unknown_model="warn"``
    ├── EmbedderIntegrityError         an embedding model or tokenizer file does not have its sha256 (a corrupt
    │                                  or altered install): reinstall the package that ships it
    ├── CascadeExhaustedError          every tier of a cascade failed (errors, or structured output that never
    │                                  parsed); ``.attempts`` holds each attempt
    └── VLLMServerError                a ``vllm serve`` server gave no answer after the retries (down, timed
                                       out, an error status or an unreadable answer); a cascade escalates past it

Errors carry their context as attributes (``BudgetExceededError.spent``, ``.limit`` ...), so callers can
decide what to do without parsing messages.

Every error derives from :class:`Exception` through :class:`FrugalChainsError` only, never from ``ValueError`` or
``TypeError``: hosts catch those around LLM calls (LlamaIndex's refine synthesizers turn them into "Empty
Response"), and an error we raise while a call runs must reach the caller. Catch :class:`ConfigurationError` or
:class:`FrugalChainsError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from frugal_chains.budget.budget import Budget

__all__ = [
    "BudgetExceededError",
    "CascadeExhaustedError",
    "ConfigurationError",
    "EmbedderIntegrityError",
    "FrugalChainsError",
    "LedgerUnavailableError",
    "UnknownModelPriceError",
    "VLLMServerError",
]


class FrugalChainsError(Exception):
    """Root of every error frugal-chains raises.

    Example:
        >>> from frugal_chains import FrugalChainsError, ConfigurationError
        >>> issubclass(ConfigurationError, FrugalChainsError)
        True
    """


class ConfigurationError(FrugalChainsError):
    """Bad input: the message names the field and how to fix it.

    Not a ``ValueError`` (so no host catches it by accident): catch ``ConfigurationError`` or
    :class:`FrugalChainsError`.

    Args:
        message: what is wrong and what to do.
        field: the name of the offending field or argument, if there is one.

    Example:
        >>> from frugal_chains import Budget, ConfigurationError
        >>> try:
        ...     Budget(max_usd=-1)
        ... except ConfigurationError as e:
        ...     print(e.field)
        max_usd
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class UnknownModelPriceError(ConfigurationError):
    """No price is known for a model; a call is never silently priced at $0.

    Example:
        >>> from frugal_chains.accounting import PriceBook
        >>> from frugal_chains.errors import UnknownModelPriceError
        >>> try:
        ...     PriceBook(use_litellm=False).price_for("my-llama")
        ... except UnknownModelPriceError as e:
        ...     print(e.model)
        my-llama
        >>> try:
        ...     PriceBook().price_for("gpt4o")
        ... except UnknownModelPriceError as e:
        ...     print(e.did_you_mean[0])
        gpt-4o
    """

    def __init__(self, model: str, *, did_you_mean: Sequence[str] = ()) -> None:
        hint = f" Did you mean {' or '.join(repr(m) for m in did_you_mean)}?" if did_you_mean else ""
        super().__init__(
            f"No price is known for model {model!r}.{hint} Pass prices={{{model!r}: Price(input=..., output=...)}} "
            "(USD per million tokens), or unknown_model='warn' to price unknown models at fallback_price "
            "with a warning.",
            field="prices",
        )
        self.model = model
        self.did_you_mean = list(did_you_mean)
        """Priced model names close to ``model`` (a likely typo), closest first; empty when none is close."""

    def __reduce__(self) -> tuple[Any, ...]:  # picklable (multiprocessing, task queues)
        return (_rebuild_unknown_model_price_error, (self.model, tuple(self.did_you_mean)))


def _rebuild_unknown_model_price_error(model: str, did_you_mean: Sequence[str]) -> UnknownModelPriceError:
    return UnknownModelPriceError(model, did_you_mean=did_you_mean)


class BudgetExceededError(FrugalChainsError):
    """A call was refused because it could push a budget past its limit. Nothing was spent on it.

    Attributes:
        budget: the :class:`~frugal_chains.Budget` that refused the call.
        scope_key: the key within the budget's scope (a user id, a feature, a task id, ``"*"`` for global).
        spent: what the scope key had spent (committed and reserved) in the current window, in ``unit``.
        requested: the worst-case cost of the refused call, in ``unit``.
        limit: the budget's limit, in ``unit``.
        unit: ``"usd"`` or ``"tokens"``.
        advice: what to do, when the refusal has a more specific fix than raising the limit (a call that
            reserved its model's whole output limit because it sets no ``max_tokens``).

    Example:
        >>> from frugal_chains import Budget, BudgetExceededError
        >>> err = BudgetExceededError(Budget(max_usd=1.0), scope_key="*", spent=0.99, requested=0.02,
        ...                           limit=1.0, unit="usd")
        >>> err.limit, err.scope_key
        (1.0, '*')
    """

    def __init__(
        self,
        budget: Budget,
        *,
        scope_key: str,
        spent: float,
        requested: float,
        limit: float,
        unit: str,
        model: str | None = None,
        advice: str | None = None,
    ) -> None:
        self.budget = budget
        self.scope_key = scope_key
        self.spent = spent
        self.requested = requested
        self.limit = limit
        self.unit = unit
        self.model = model
        self.advice = advice
        if unit == "usd":
            amounts = f"spent ${spent:.6f} + this call up to ${requested:.6f} > limit ${limit:.6f}"
        else:
            amounts = (
                f"spent {spent:,.0f} + this call up to {requested:,.0f} tokens > limit {limit:,.0f} tokens"
            )
        on = f" on {model!r}" if model else ""
        super().__init__(
            f"{budget.describe()} for {budget.scope} {scope_key!r} refused a call{on}: {amounts}. "
            "Nothing was spent on it. " + (advice or _advice(budget))
        )

    def __reduce__(self) -> tuple[Any, ...]:  # keep the error picklable across processes
        return (
            _rebuild_budget_error,
            (
                self.budget,
                self.scope_key,
                self.spent,
                self.requested,
                self.limit,
                self.unit,
                self.model,
                self.advice,
            ),
        )


def _advice(budget: Budget) -> str:
    fix = "Raise the limit or lower the model's max_tokens"
    if budget.window is None:
        return fix + "."
    return f"{fix}, or wait for the window ({budget.window_id}) to roll."


def _rebuild_budget_error(
    budget: Budget,
    scope_key: str,
    spent: float,
    requested: float,
    limit: float,
    unit: str,
    model: str | None,
    advice: str | None = None,
) -> BudgetExceededError:
    return BudgetExceededError(
        budget,
        scope_key=scope_key,
        spent=spent,
        requested=requested,
        limit=limit,
        unit=unit,
        model=model,
        advice=advice,
    )


class LedgerUnavailableError(FrugalChainsError):
    """The spend ledger could not be reached while a budget needed it.

    Budgets fail closed by default: the call is refused before any money is spent. Pass
    ``on_ledger_error="open"`` to the handler to let calls through instead; their spend is queued in memory
    and written when the ledger is back (nothing is lost or counted twice).

    Example:
        >>> from frugal_chains.errors import LedgerUnavailableError
        >>> str(LedgerUnavailableError("redis://127.0.0.1:1 refused the connection"))
        'redis://127.0.0.1:1 refused the connection'
    """


class EmbedderIntegrityError(FrugalChainsError):
    """A model or tokenizer file does not have the sha256 it must have (a corrupt or altered install).

    Example:
        >>> from frugal_chains.embeddings import EmbedderIntegrityError
        >>> err = EmbedderIntegrityError("/x/model.onnx", expected="ab", actual="cd")
        >>> err.path, err.expected
        ('/x/model.onnx', 'ab')
    """

    def __init__(self, path: str, *, expected: str, actual: str, fix: str = "") -> None:
        self.path = path
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"{path} has sha256 {actual}, expected {expected}: the file is corrupt or not the one frugal-chains "
            f"was built for. {fix or 'Reinstall the package that ships it.'}"
        )


class CascadeExhaustedError(FrugalChainsError):
    """Every tier of a cascade failed: each raised a provider error, or (with structured output) none gave an
    answer that parsed. ``attempts`` lists each :class:`~frugal_chains.routing.Attempt` with its error or gates.

    The strongest tier's answer is not gated by quality gates (there is nothing to escalate to): only provider
    errors and unparseable structured output exhaust a cascade.

    Example:
        >>> from frugal_chains.errors import CascadeExhaustedError
        >>> from frugal_chains.routing import Attempt
        >>> e = CascadeExhaustedError([Attempt(tier="cheap", tier_index=0, model="m", outcome="error",
        ...                                    error=TimeoutError("slow"))])
        >>> e.attempts[0].tier, "TimeoutError" in str(e)
        ('cheap', True)
    """

    def __init__(self, attempts: Any, message: str | None = None) -> None:
        self.attempts = tuple(attempts)
        if message is None:
            parts = []
            for a in self.attempts:
                why = (
                    f"{type(a.error).__name__}: {a.error}"
                    if a.error is not None
                    else ", ".join(
                        f"{g.gate} failed" + (f" ({g.reason})" if g.reason else "")
                        for g in a.gates
                        if not g.passed
                    )
                )
                parts.append(f"{a.tier} ({a.model}): {why or a.outcome}")
            message = "every tier of the cascade failed: " + "; ".join(parts)
        super().__init__(message)
        last = next((a.error for a in reversed(self.attempts) if a.error is not None), None)
        if last is not None:
            self.__cause__ = last

    def __reduce__(self) -> tuple[Any, ...]:  # picklable (multiprocessing, task queues)
        return (type(self), (self.attempts, str(self)))


class VLLMServerError(FrugalChainsError):
    """A ``vllm serve`` server could not give an answer after the configured retries: it is down, timed out,
    answered with an error status, or sent something that is not an OpenAI-compatible answer.

    ``status_code`` is the server's HTTP status, or 503 when it could not be reached and 502 when its answer could
    not be read, so a cascade escalates past it (:func:`~frugal_chains.routing.default_escalates`); a 4xx other
    than 408 and 429 is the request's fault and is not retried.

    Example:
        >>> from frugal_chains.errors import VLLMServerError
        >>> e = VLLMServerError("no answer", url="http://127.0.0.1:8000/v1/chat/completions", status_code=503,
        ...                     attempts=3)
        >>> e.status_code, e.attempts
        (503, 3)
        >>> from frugal_chains.routing import default_escalates
        >>> default_escalates(e)
        True
    """

    def __init__(self, message: str, *, url: str, status_code: int, attempts: int = 1) -> None:
        super().__init__(message)
        self.url = url
        self.status_code = status_code
        self.attempts = attempts

    def __reduce__(self) -> tuple[Any, ...]:  # picklable, keyword attributes included
        return (_rebuild_vllm_server_error, (str(self), self.url, self.status_code, self.attempts))


def _rebuild_vllm_server_error(message: str, url: str, status_code: int, attempts: int) -> VLLMServerError:
    return VLLMServerError(message, url=url, status_code=status_code, attempts=attempts)
