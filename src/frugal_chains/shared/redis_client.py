"""Redis client helpers shared by the Redis spend ledger and the Redis cache index.

* :func:`no_retry_options`: client keyword arguments with a socket timeout and no retries, so a call fails fast
  while Redis is down (the ledger then raises ``LedgerUnavailableError``, the cache misses).
* :func:`close_async_client`: close an async client bound to an event loop from outside that loop.

The redis package is imported inside the functions, never at import time.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

__all__ = ["close_async_client", "no_retry_options"]


def no_retry_options(timeout_s: float, *, asynchronous: bool) -> dict[str, Any]:
    """``socket_timeout``, ``socket_connect_timeout`` and a no-retry ``retry`` for ``Redis.from_url``
    (the ``redis.asyncio`` retry class when ``asynchronous``)."""
    from redis.backoff import NoBackoff

    if asynchronous:
        from redis.asyncio.retry import Retry as AsyncRetry

        retry: Any = AsyncRetry(NoBackoff(), 0)
    else:
        from redis.retry import Retry

        retry = Retry(NoBackoff(), 0)
    return {
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        "retry": retry,
    }


_PENDING_CLOSES: set[asyncio.Task[None]] = set()


def close_async_client(aclient: Any, loop: asyncio.AbstractEventLoop) -> None:
    """Close an async client bound to ``loop`` from outside it (best effort)."""
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if loop.is_running():
        if running is loop:  # called synchronously from inside the loop: schedule it
            task = loop.create_task(aclient.aclose())
            _PENDING_CLOSES.add(task)
            task.add_done_callback(_PENDING_CLOSES.discard)
        else:  # the loop runs in another thread
            asyncio.run_coroutine_threadsafe(aclient.aclose(), loop)
    elif running is None:
        loop.run_until_complete(aclient.aclose())
    else:  # another loop runs in this thread: drive the idle loop from a helper thread
        closer = threading.Thread(target=loop.run_until_complete, args=(aclient.aclose(),), daemon=True)
        closer.start()
        closer.join(timeout=5)
