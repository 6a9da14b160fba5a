"""Streams through a cache, for both adapters' wrappers: a hit replayed in a few chunks at word boundaries, a
miss relayed to the caller and stored once it finished; what a wrapper stores for an answer
(:class:`StoredAnswer`, priced by the cascade that gave it when one did)."""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from frugal_chains.cache.core import UNKNOWN_USD, _Unknown
from frugal_chains.metadata import CASCADE, entry
from frugal_chains.shared.streams import aclose_stream, close_stream

if TYPE_CHECKING:
    from frugal_chains.accounting.usage import Usage
    from frugal_chains.cache.core import AnswerCache
    from frugal_chains.cache.keys import CacheRequest

__all__ = ["REPLAY_CHUNKS", "StoredAnswer", "arelay", "relay", "replay_pieces"]

C = TypeVar("C")

REPLAY_CHUNKS = 4
"""A cached answer is replayed in about this many chunks."""


def replay_pieces(text: str, n: int = REPLAY_CHUNKS) -> list[str]:
    """``text`` split at word boundaries into at most ``n`` pieces that concatenate back to it.

    Example:
        >>> replay_pieces("Paris is the capital of France.")
        ['Paris is ', 'the capital ', 'of France.']
        >>> replay_pieces("")
        ['']
    """
    words = [w for w in re.split(r"(?<=\s)(?=\S)", text) if w]
    if len(words) <= 1:
        return [text]
    size = -(-len(words) // n)
    return ["".join(words[i : i + size]) for i in range(0, len(words), size)]


@dataclass(frozen=True)
class StoredAnswer:
    """What a wrapper stores for a finished answer: the encoded answer and what prices each hit of it (the model
    and usage of the call, or what it cost when that is known; see :meth:`AnswerCache.update
    <frugal_chains.cache.AnswerCache.update>`).

    Example:
        >>> from frugal_chains.accounting.usage import Usage
        >>> meta = {"frugal": {"cascade": {"model": "gpt-4o", "cost_usd": 0.0042, "attempts": [
        ...     {"tier": "cheap", "outcome": "escalated", "cost_usd": 0.0002, "usage": {"input_tokens": 9}},
        ...     {"tier": "strong", "outcome": "accepted", "cost_usd": 0.004, "usage": {"input_tokens": 9}}]}}}
        >>> used = Usage(input_tokens=18)
        >>> stored = StoredAnswer.of("42", model="cascade(gpt-4o-mini,gpt-4o)", usage=used, metadata=meta)
        >>> stored.model, stored.cost_usd
        ('gpt-4o', 0.0042)
        >>> StoredAnswer.of("42", model="gpt-4o", usage=None, metadata={}).cost_usd is None  # priced by the model
        True
    """

    answer: str
    model: str | None
    usage: Usage | None
    cost_usd: float | Literal[_Unknown.USD] | None = None
    """None: priced from ``model`` and ``usage``; ``UNKNOWN_USD``: a hit saves an unknown amount."""

    @classmethod
    def of(
        cls, answer: str, *, model: str | None, usage: Usage | None, metadata: Mapping[str, Any] | None
    ) -> StoredAnswer:
        """The answer as stored. An answer a cascade gave (its ``frugal["cascade"]`` entry in ``metadata``) is
        stored under the model of the tier that answered, at what the cascade paid for it: every attempt, gates and
        judges included (``model`` and ``usage`` are the cascade's, its name and the usage of all its calls, and
        would misprice it). The cascade's cost is unknown when a tier has no price; when a tier reported no usage
        (the cascade counted $0 for it) it is known only if that tier's call is the answer itself, priced from the
        answer as any other model's is."""
        info = entry(metadata, CASCADE)
        if info is None or "cost_usd" not in info:
            return cls(answer, model, usage)
        answering = info.get("model")
        if isinstance(answering, str) and answering:
            model = answering
        cost = info["cost_usd"]
        if cost is None:
            return cls(answer, model, usage, UNKNOWN_USD)
        if isinstance(cost, bool) or not isinstance(cost, (int, float)):
            return cls(answer, model, usage)
        attempts = [a for a in info.get("attempts") or () if isinstance(a, Mapping)]
        uncounted = [a for a in attempts if _uncounted(a)]
        if not uncounted:
            return cls(answer, model, usage, float(cost))
        if len(attempts) == 1:
            return cls(answer, model, usage)  # the answer's own call: priced from its (estimated) usage
        return cls(answer, model, usage, UNKNOWN_USD)

    def store(self, cache: AnswerCache, request: CacheRequest) -> None:
        """``cache.update`` with this answer."""
        cache.update(request, self.answer, model=self.model, usage=self.usage, cost_usd=self.cost_usd)

    async def astore(self, cache: AnswerCache, request: CacheRequest) -> None:
        """Async :meth:`store`."""
        await cache.aupdate(request, self.answer, model=self.model, usage=self.usage, cost_usd=self.cost_usd)


def _uncounted(attempt: Mapping[str, Any]) -> bool:
    """A cascade attempt whose call reported no usage (so the cascade counted it as $0); a provider error is no
    call to pay for."""
    return (
        attempt.get("usage") is None and attempt.get("error") is None and attempt.get("cost_usd") in (0, None)
    )


def relay(
    cache: AnswerCache,
    request: CacheRequest | None,
    chunks: Iterator[C],
    stored: Callable[[list[C]], StoredAnswer | None],
) -> Generator[C, None, None]:
    """A missed answer's stream passed through to the caller; the whole answer (``stored(chunks)``, ``None`` for
    nothing to store) is stored only when the stream finished normally: never after an error or an early exit
    (the inner stream is closed either way). ``request=None``: a call that is not cached, passed through.

    Example:
        >>> from frugal_chains.cache import AnswerCache, CacheRequest
        >>> from frugal_chains.testing.fake_embeddings import HashEmbeddings
        >>> cache = AnswerCache(embedder=HashEmbeddings())
        >>> request = CacheRequest.from_prompt("Capital of France?", llm_string="m")
        >>> "".join(relay(cache, request, iter(["Par", "is"]), lambda seen: StoredAnswer("".join(seen), "m", None)))
        'Paris'
        >>> cache.lookup(request).answer
        'Paris'
    """
    seen: list[C] = []
    try:
        for chunk in chunks:
            seen.append(chunk)
            yield chunk
    finally:
        close_stream(chunks)
    found = stored(seen) if request is not None and seen else None
    if request is not None and found is not None:
        found.store(cache, request)


async def arelay(
    cache: AnswerCache,
    request: CacheRequest | None,
    chunks: AsyncIterator[C],
    stored: Callable[[list[C]], StoredAnswer | None],
) -> AsyncGenerator[C, None]:
    """Async :func:`relay`."""
    seen: list[C] = []
    try:
        async for chunk in chunks:
            seen.append(chunk)
            yield chunk
    finally:
        await aclose_stream(chunks)
    found = stored(seen) if request is not None and seen else None
    if request is not None and found is not None:
        await found.astore(cache, request)
