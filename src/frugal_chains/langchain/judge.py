"""A LangChain chat model as the cache's LLM-judge verifier (type translation only: the decision and the
accounting live in :class:`frugal_chains.cache.guard.LLMJudgeVerifier`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from frugal_chains.cache.guard.llm_judge import LLMJudgeVerifier
from frugal_chains.errors import ConfigurationError

if TYPE_CHECKING:
    from frugal_chains.accounting.ledger import SpendLedger
    from frugal_chains.accounting.pricing import PriceBook
    from frugal_chains.accounting.usage import Price

__all__ = ["judge_verifier"]


def _model_name(model: Any) -> str | None:
    for attr in ("model_name", "model"):
        try:
            value = getattr(model, attr, None)
        except Exception:
            value = None
        if isinstance(value, str) and value:
            return value
    return None


def judge_verifier(
    chat_model: Any,
    *,
    prompt: str | None = None,
    ledger: SpendLedger | None = None,
    prices: PriceBook | Mapping[str, Price] | None = None,
) -> LLMJudgeVerifier:
    """An :class:`~frugal_chains.cache.guard.LLMJudgeVerifier` asking ``chat_model`` (any LangChain chat model or
    runnable with ``invoke`` / ``ainvoke``) whether two questions are duplicates.

    The judge's reply is read for its ``usage_metadata`` and ``response_metadata["model_name"]`` (else the model's
    ``model_name`` / ``model``), and each call is recorded in the ledger (the cache's, unless ``ledger`` is given)
    with ``extra["purpose"] == "cache_verifier"``. A judge call is a LangChain run of its own: when a budget handler
    sees it (inside a ``budget_scope``, or one in the judge model's ``callbacks``), that handler reserves, enforces
    and records it (with no ``purpose``), and the verifier writes no second record.

    Example:
        >>> from frugal_chains.cache import AnswerCache, CacheRequest
        >>> from frugal_chains.langchain import judge_verifier
        >>> from frugal_chains.testing import FakeUsageChatModel, HashEmbeddings
        >>> judge = FakeUsageChatModel(responses=["No."])  # in your app: ChatOpenAI(model="gpt-4o-mini")
        >>> cache = AnswerCache(embedder=HashEmbeddings(), preset="strict", verifier=judge_verifier(judge))
        >>> cache.update(CacheRequest.from_prompt("How long is the refund window?"), "30 days.")
        >>> cache.lookup(CacheRequest.from_prompt("How long is the refund window please?")) is None
        True
        >>> cache.stats.verifier_calls, cache.stats.verifier_rejections
        (1, 1)
    """
    invoke = getattr(chat_model, "invoke", None)
    ainvoke = getattr(chat_model, "ainvoke", None)
    if not callable(invoke) or not callable(ainvoke):
        raise ConfigurationError(
            f"judge_verifier takes a LangChain chat model (invoke/ainvoke), got {type(chat_model).__name__}",
            field="chat_model",
        )

    def judge(text: str) -> Any:
        return invoke(text)

    async def ajudge(text: str) -> Any:
        return await ainvoke(text)

    def unrecorded() -> bool:
        """True unless a budget handler sees the judge's run (a ``budget_scope``, or one on the model itself):
        that handler records the call, the verifier then does not."""
        from frugal_chains.langchain.budget import TokenBudgetHandler, _scope

        if _scope.get() is not None:
            return False
        own = getattr(chat_model, "callbacks", None)
        handlers = getattr(own, "handlers", own)
        return not any(isinstance(h, TokenBudgetHandler) for h in handlers or ())

    return LLMJudgeVerifier(
        judge,
        ajudge,
        prompt=prompt,
        model=_model_name(chat_model),
        ledger=ledger,
        prices=prices,
        record=unrecorded,
    )
