"""An LLM judge as the cache's verifier: asks a model whether two questions are duplicates, and writes what each
of its calls cost to a ledger (a record of its own, ``extra["purpose"] == "cache_verifier"``)."""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from frugal_chains.errors import ConfigurationError
from frugal_chains.shared.bridge import is_async_callable, loop_running, resolve_sync

if TYPE_CHECKING:
    from frugal_chains.accounting.ledger import SpendLedger
    from frugal_chains.accounting.pricing import PriceBook
    from frugal_chains.accounting.usage import CallRecord, Price, Usage

__all__ = ["DEFAULT_DUPLICATE_PROMPT", "VERIFIER_PURPOSE", "JudgeVerdict", "LLMJudgeVerifier"]

log = logging.getLogger("frugal_chains.cache")

VERIFIER_PURPOSE = "cache_verifier"
"""``extra["purpose"]`` of the ledger records of a cache verifier's own calls."""

DEFAULT_DUPLICATE_PROMPT = (
    "You decide whether a cached answer may be reused. Two questions are duplicates only if one correct answer "
    "answers both exactly: the same subject, audience, quantities, dates, direction and conditions. A question "
    "about children is not a duplicate of the same question about adults; ascending is not descending.\n\n"
    "Question A: {query}\n"
    "Question B: {cached}\n\n"
    "Are A and B duplicates? Reply with one word: yes or no."
)
"""The judge prompt; placeholders ``{query}`` (the incoming question) and ``{cached}`` (the cached one), filled by
plain replacement (other braces are left alone)."""

_WORD = re.compile(r"\b(yes|no)\b", re.IGNORECASE)


@dataclass(frozen=True)
class JudgeVerdict:
    """One answer of the judge, read.

    Example:
        >>> from frugal_chains.cache.guard import LLMJudgeVerifier
        >>> LLMJudgeVerifier(lambda prompt: "Yes.").judge_pair("Hi?", "Hello?").duplicate
        True
    """

    duplicate: bool
    """True only on a clear yes (a reply with neither yes nor no is a no)."""
    text: str
    """The judge's reply."""
    usage: Usage | None
    """The tokens it reported (``None``: none reported)."""
    model: str | None
    """The judge's model name, when known."""


def parse_yes_no(text: str) -> bool:
    """True when the first ``yes`` / ``no`` word in ``text`` is ``yes``.

    Example:
        >>> from frugal_chains.cache.guard.llm_judge import parse_yes_no
        >>> parse_yes_no("Yes, same question."), parse_yes_no("No."), parse_yes_no("Not sure")
        (True, False, False)
    """
    m = _WORD.search(text)
    return m is not None and m.group(1).lower() == "yes"


class LLMJudgeVerifier:
    """A :class:`~frugal_chains.cache.guard.Verifier` that asks an LLM whether the incoming question and the cached
    one are duplicates, and records the cost of every call it makes.

    ``judge`` is a function ``prompt -> reply`` (sync or ``async def``); the reply is a string or a provider
    response: a LangChain message (``content``, ``usage_metadata``, ``response_metadata["model_name"]``) or a
    LlamaIndex completion (``text``, ``raw["usage"]``). ``frugal_chains.langchain.judge_verifier(chat_model)`` and
    ``frugal_chains.llama_index.judge_verifier(llm)`` build one from a chat model or an LLM. The reply is read as
    the shared LLM-judge gate reads it; the verdict is yes only on a clear "yes".

    Each call writes one :class:`~frugal_chains.accounting.CallRecord` to ``ledger`` (its model, tokens and USD,
    ``extra={"purpose": "cache_verifier", "duplicate": ...}``), attributed like the request it verifies. Without a
    ledger of its own, an :class:`~frugal_chains.cache.AnswerCache` gives it the cache's ``ledger`` and
    ``prices``. A judge that raises propagates to the cache, which counts an error and misses (fails open).

    Args:
        judge: ``prompt -> reply``, sync or async.
        ajudge: optional async version for :meth:`averify`; without it an ``async def`` judge is awaited and a
            sync one runs in a worker thread.
        prompt: a template with ``{query}`` and ``{cached}`` (default :data:`DEFAULT_DUPLICATE_PROMPT`).
        model: the judge's model name for pricing, when its replies do not name it.
        ledger: where the records go (default: the cache's ledger).
        prices: a ``PriceBook`` or ``{model: Price}`` (default: the cache's, else LiteLLM's map). A model with no
            price is recorded with ``cost_usd=None`` (unknown, not $0).
        record: whether to write the record (a function is asked at each call): the wings' ``judge_verifier`` say
            no while a budget handler sees the judge's call, since that handler records it already.

    Example:
        >>> from frugal_chains.accounting import Price, SQLiteLedger
        >>> from frugal_chains.cache import AnswerCache, CacheRequest
        >>> from frugal_chains.cache.guard import LLMJudgeVerifier
        >>> from frugal_chains.testing import HashEmbeddings
        >>> judge = LLMJudgeVerifier(
        ...     lambda prompt: "yes" if "refund" in prompt else "no",  # in your app: judge_verifier(ChatOpenAI(...))
        ...     model="judge-mini", prices={"judge-mini": Price(input=0.1, output=0.4)})
        >>> ledger = SQLiteLedger(":memory:")
        >>> cache = AnswerCache(embedder=HashEmbeddings(), verifier=judge, preset="strict", ledger=ledger)
        >>> cache.update(CacheRequest.from_prompt("How long is the refund window?"), "30 days.")
        >>> cache.lookup(CacheRequest.from_prompt("How long is the refund window please?")).answer
        '30 days.'
        >>> [r.extra["purpose"] for r in ledger.records() if r.outcome == "ok"]
        ['cache_verifier']
    """

    def __init__(
        self,
        judge: Callable[[str], Any],
        ajudge: Callable[[str], Awaitable[Any]] | None = None,
        *,
        prompt: str | None = None,
        model: str | None = None,
        ledger: SpendLedger | None = None,
        prices: PriceBook | Mapping[str, Price] | None = None,
        record: bool | Callable[[], bool] = True,
    ) -> None:
        if not callable(judge):
            raise ConfigurationError(
                "judge must be a function prompt -> reply (a string or a provider response); for a chat model use "
                "frugal_chains.langchain.judge_verifier(model) or frugal_chains.llama_index.judge_verifier(llm)",
                field="judge",
            )
        if ajudge is not None and not callable(ajudge):
            raise ConfigurationError(
                "ajudge must be an async function prompt -> reply, or None", field="ajudge"
            )
        if prompt is None:
            prompt = DEFAULT_DUPLICATE_PROMPT
        if not isinstance(prompt, str) or "{query}" not in prompt or "{cached}" not in prompt:
            raise ConfigurationError(
                "prompt must be a string with {query} and {cached} placeholders", field="prompt"
            )
        if model is not None and (not isinstance(model, str) or not model):
            raise ConfigurationError(f"model must be a model name or None, got {model!r}", field="model")
        if ledger is not None and not (hasattr(ledger, "add_record") and hasattr(ledger, "aadd_record")):
            raise ConfigurationError(
                "ledger must be a SpendLedger (SQLiteLedger, RedisLedger)", field="ledger"
            )
        if prices is not None and not hasattr(prices, "lookup"):
            if not isinstance(prices, Mapping):
                raise ConfigurationError(
                    "prices must be a PriceBook or a {model: Price} mapping", field="prices"
                )
            from frugal_chains.accounting.pricing import PriceBook

            prices = PriceBook(prices, unknown_model="warn")
        if not isinstance(record, bool) and not callable(record):
            raise ConfigurationError("record must be True, False or a function () -> bool", field="record")
        self.judge = judge
        self.ajudge = ajudge
        self.record = record
        self.prompt = prompt
        self.model = model
        self.ledger = ledger
        self.prices: PriceBook | None = prices  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"LLMJudgeVerifier(model={self.model!r}, ledger={'on' if self.ledger is not None else 'off'})"

    def for_cache(self, *, ledger: SpendLedger | None, prices: PriceBook | None) -> LLMJudgeVerifier:
        """This verifier with the cache's ledger and prices where it has none of its own (a copy; ``self`` is not
        changed). :class:`~frugal_chains.cache.AnswerCache` calls it."""
        if (self.ledger is not None or ledger is None) and (self.prices is not None or prices is None):
            return self
        twin = LLMJudgeVerifier(
            self.judge, self.ajudge, prompt=self.prompt, model=self.model, record=self.record
        )
        twin.ledger = self.ledger if self.ledger is not None else ledger
        twin.prices = self.prices if self.prices is not None else prices
        return twin

    def render(self, query: str, cached: str) -> str:
        """The prompt sent to the judge."""
        from frugal_chains.routing.gates.judge import fill_prompt

        return fill_prompt(
            self.prompt, {"query": query, "cached": cached}
        )  # one pass: the questions stay as written

    def _read(self, reply: Any) -> JudgeVerdict:
        from frugal_chains.routing.gates.judge import read_judge_reply

        text, usage, model = read_judge_reply(reply, model=self.model)
        return JudgeVerdict(duplicate=parse_yes_no(text), text=text, usage=usage, model=model)

    def judge_pair(self, query: str, cached: str) -> JudgeVerdict:
        """Ask the judge (sync), without recording anything."""
        judge = self.judge
        if is_async_callable(judge) and loop_running():
            raise ConfigurationError(
                "the judge is an async function and an event loop is running: use the async path (alookup)",
                field="judge",
            )
        return self._read(resolve_sync(judge(self.render(query, cached)), "the judge", "judge"))

    async def ajudge_pair(self, query: str, cached: str) -> JudgeVerdict:
        """Ask the judge (async), without recording anything."""
        prompt = self.render(query, cached)
        if self.ajudge is not None:
            reply = await self.ajudge(prompt)
        elif is_async_callable(self.judge):
            reply = await self.judge(prompt)
        else:
            reply = await asyncio.to_thread(self.judge, prompt)
            if inspect.isawaitable(reply):
                reply = await reply
        return self._read(reply)

    # -- the Verifier protocol ---------------------------------------------------------------------------------
    def verify(self, query: str, cached: str, similarity: float) -> bool:
        """Ask the judge and record the call; True on a yes."""
        started = time.time()
        clock = time.perf_counter()
        verdict = self.judge_pair(query, cached)
        record = self._record(query, cached, verdict, similarity, started, time.perf_counter() - clock)
        if record is not None and self.ledger is not None:
            try:
                self.ledger.add_record(record)
            except Exception as e:
                log.warning("frugal-chains cache: could not record the verifier's call in the ledger: %s", e)
        return verdict.duplicate

    async def averify(self, query: str, cached: str, similarity: float) -> bool:
        """Async :meth:`verify`."""
        started = time.time()
        clock = time.perf_counter()
        verdict = await self.ajudge_pair(query, cached)
        record = self._record(query, cached, verdict, similarity, started, time.perf_counter() - clock)
        if record is not None and self.ledger is not None:
            try:
                await self.ledger.aadd_record(record)
            except Exception as e:
                log.warning("frugal-chains cache: could not record the verifier's call in the ledger: %s", e)
        return verdict.duplicate

    # -- accounting --------------------------------------------------------------------------------------------
    def _record(
        self,
        query: str,
        cached: str,
        verdict: JudgeVerdict,
        similarity: float,
        started: float,
        latency: float,
    ) -> CallRecord | None:
        """The ledger record of one judge call: its tokens (estimated when the reply reports none), their USD
        (``None`` for an unpriced model) and ``extra["purpose"] == "cache_verifier"``."""
        if self.ledger is None or not (self.record if isinstance(self.record, bool) else self.record()):
            return None
        from frugal_chains.accounting.context import current_attribution
        from frugal_chains.accounting.tokens import count_text_tokens
        from frugal_chains.accounting.usage import CallRecord, Usage

        model = verdict.model or "unknown"
        usage = verdict.usage
        estimated = usage is None
        if usage is None:
            usage = Usage(
                input_tokens=count_text_tokens(self.render(query, cached), verdict.model),
                output_tokens=count_text_tokens(verdict.text, verdict.model),
            )
        cost: float | None = None
        if verdict.model:
            prices = self.prices
            if prices is None:
                from frugal_chains.accounting.pricing import PriceBook

                prices = self.prices = PriceBook(unknown_model="warn")
            price, _known = prices.lookup(verdict.model, required=False)
            cost = None if price is None else price.cost(usage)
        return CallRecord(
            model=model,
            usage=usage,
            cost_usd=cost,
            ts=started,
            latency_s=latency,
            attribution=current_attribution(),
            price_known=cost is not None,
            usage_estimated=estimated,
            reserved_usd=None if cost is None else 0.0,
            overshoot_usd=None if cost is None else 0.0,
            extra={
                "purpose": VERIFIER_PURPOSE,
                "duplicate": verdict.duplicate,
                "similarity": round(similarity, 4),
            },
        )
