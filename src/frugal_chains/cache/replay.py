"""Streams through a cache, for both adapters' wrappers: a hit replayed in a few chunks at word boundaries, a
miss relayed to the caller and stored once it finished."""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Iterator
from typing import TYPE_CHECKING, TypeAlias, TypeVar

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


StoredAnswer: TypeAlias = "tuple[str, str | None, Usage | None]"
"""What a wrapper stores for a finished answer: the encoded answer, the model and the usage that priced it."""


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
        >>> "".join(relay(cache, request, iter(["Par", "is"]), lambda seen: ("".join(seen), "m", None)))
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
        cache.update(request, found[0], model=found[1], usage=found[2])


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
        await cache.aupdate(request, found[0], model=found[1], usage=found[2])
