"""A LlamaIndex LLM as the cache's LLM-judge verifier (type translation only: the decision and the accounting live
in :class:`frugal_chains.cache.guard.LLMJudgeVerifier`)."""

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


def _model_name(llm: Any) -> str | None:
    try:
        name = llm.metadata.model_name
    except Exception:
        name = None
    return name if isinstance(name, str) and name and name != "unknown" else None


def judge_verifier(
    llm: Any,
    *,
    prompt: str | None = None,
    ledger: SpendLedger | None = None,
    prices: PriceBook | Mapping[str, Price] | None = None,
) -> LLMJudgeVerifier:
    """An :class:`~frugal_chains.cache.guard.LLMJudgeVerifier` asking ``llm`` (a LlamaIndex LLM: ``complete`` /
    ``acomplete``) whether two questions are duplicates.

    The completion is read for ``raw["usage"]`` and ``raw["model"]`` (else ``llm.metadata.model_name``), and each
    call is recorded in the ledger (the cache's, unless ``ledger`` is given) with
    ``extra["purpose"] == "cache_verifier"``, unless the LLM's ``callback_manager`` has a ``TokenBudgetHandler``:
    that handler then reserves, enforces and records the call (with no ``purpose``), once.

    Example:
        >>> from frugal_chains.cache import AnswerCache, CacheRequest
        >>> from frugal_chains.llama_index import judge_verifier
        >>> from frugal_chains.testing import FakeUsageLLM, HashEmbeddings
        >>> judge = FakeUsageLLM(responses="No.")  # in your app: OpenAI(model="gpt-4o-mini")
        >>> cache = AnswerCache(embedder=HashEmbeddings(), preset="strict", verifier=judge_verifier(judge))
        >>> cache.update(CacheRequest.from_prompt("How long is the refund window?"), "30 days.")
        >>> cache.lookup(CacheRequest.from_prompt("How long is the refund window please?")) is None
        True
        >>> cache.stats.verifier_calls, cache.stats.verifier_rejections
        (1, 1)
    """
    complete = getattr(llm, "complete", None)
    acomplete = getattr(llm, "acomplete", None)
    if not callable(complete) or not callable(acomplete):
        raise ConfigurationError(
            f"judge_verifier takes a LlamaIndex LLM (complete/acomplete), got {type(llm).__name__}",
            field="llm",
        )

    def judge(text: str) -> Any:
        return complete(text)

    async def ajudge(text: str) -> Any:
        return await acomplete(text)

    def unrecorded() -> bool:
        """True unless the LLM's callback manager has a budget handler: that handler records the call."""
        from frugal_chains.llama_index.budget import TokenBudgetHandler

        manager = getattr(llm, "callback_manager", None)
        return not any(isinstance(h, TokenBudgetHandler) for h in getattr(manager, "handlers", None) or ())

    return LLMJudgeVerifier(
        judge, ajudge, prompt=prompt, model=_model_name(llm), ledger=ledger, prices=prices, record=unrecorded
    )
