"""AnswerCache over RedisIndex when Redis hangs (accepts connections, never answers) and when a question holds
a lone surrogate: a hung server costs one socket timeout per back-off window, not one per call, and the same
objects work again once it answers; a surrogate is input, never an outage."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from frugal_chains.cache import AnswerCache, CacheRequest
from frugal_chains.cache.redis_index import RedisIndex
from frugal_chains.testing.fake_embeddings import HashEmbeddings
from tests.redis_server import RedisServer

pytestmark = pytest.mark.redis

QUESTION = "How do I reset a password?"
PARAPHRASE = "How can I reset a password?"


def q(text: str) -> CacheRequest:
    return CacheRequest.from_prompt(text)


def warnings_in(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


class HangingProxy:
    """A TCP listener in front of a Redis: while :attr:`hang` is set, it accepts connections and reads what they
    send but never answers (a hung server); otherwise it forwards them to Redis. Counts the connections."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.hang = True
        self.hang_on: bytes | None = None
        """While set, a forwarded connection whose client sends this command (``b"FT.SEARCH"``) gets no answer to
        it nor to anything after it (a server whose vector search hangs while plain reads and writes work)."""
        self.hung_commands = 0
        self.hung_connections = 0
        self.forwarded_connections = 0
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._server.getsockname()[1])
        self._open: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            self._open.append(conn)
            if self.hang:
                self.hung_connections += 1
                threading.Thread(target=self._swallow, args=(conn,), daemon=True).start()
            else:
                self.forwarded_connections += 1
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
                self._open.append(upstream)
                threading.Thread(target=self._pump, args=(conn, upstream, self), daemon=True).start()
                threading.Thread(target=self._pump, args=(upstream, conn), daemon=True).start()

    @staticmethod
    def _swallow(conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while conn.recv(65536):
                pass

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, client_of: HangingProxy | None = None) -> None:
        try:
            while data := src.recv(65536):
                if client_of is not None and client_of.hang_on is not None and client_of.hang_on in data:
                    client_of.hung_commands += 1
                    HangingProxy._swallow(src)
                    return
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._closed = True
        self._server.close()
        for s in self._open:
            with contextlib.suppress(OSError):
                s.close()


@pytest.fixture
def proxy(redis_url: str, redis_server: RedisServer) -> Iterator[HangingProxy]:
    p = HangingProxy(redis_server.port)
    try:
        yield p
    finally:
        p.close()


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def hung_cache(proxy: HangingProxy) -> tuple[AnswerCache, RedisIndex, _Clock]:
    index = RedisIndex(proxy.url, socket_timeout=0.3)
    cache = AnswerCache(index=index, embedder=HashEmbeddings(), threshold=0.5)
    clock = _Clock()
    # the back-offs' time source (index, semantic path): no test waits for a window to pass
    cache._index_outage.backoff.clock = cache._semantic_outage.backoff.clock = clock
    return cache, index, clock


def test_a_hung_redis_costs_one_timeout_then_recovers(
    proxy: HangingProxy, caplog: pytest.LogCaptureFixture
) -> None:
    cache, index, clock = hung_cache(proxy)
    try:
        with caplog.at_level(logging.WARNING, logger="frugal_chains"):
            for _ in range(10):
                assert cache.lookup(q(QUESTION)) is None
                cache.update(q(QUESTION), "Settings > Security")
            assert proxy.hung_connections == 1  # one socket timeout for 20 calls
            clock.now += 1.01  # the window is over: one call probes the hung server again
            for _ in range(5):
                assert cache.lookup(q(QUESTION)) is None
            assert proxy.hung_connections == 2
            proxy.hang = False  # Redis answers again
            clock.now += 2.01  # (the window doubled after the failed probe)
            cache.update(q(QUESTION), "Settings > Security")
            hit = cache.lookup(q(QUESTION))
        assert hit is not None and hit.answer == "Settings > Security"
        assert proxy.forwarded_connections >= 1 and proxy.hung_connections == 2
        logged = warnings_in(caplog)
        assert len(logged) == 2, logged
        assert "TimeoutError" in logged[0] and "answers again" in logged[1]
        assert cache.stats.updates == 1 and cache.stats.hits == 1
    finally:
        index.close()


async def test_a_hung_redis_async(proxy: HangingProxy) -> None:
    cache, index, clock = hung_cache(proxy)
    try:
        for _ in range(10):
            assert await cache.alookup(q(QUESTION)) is None
            await cache.aupdate(q(QUESTION), "Settings > Security")
        assert proxy.hung_connections == 1
        proxy.hang = False
        clock.now += 1.01
        await cache.aupdate(q(QUESTION), "Settings > Security")
        hit = await cache.alookup(q(QUESTION))
        assert hit is not None and hit.answer == "Settings > Security"
    finally:
        await index.aclose()


class _Utf8Embeddings:
    """Sends its texts out as UTF-8, like a remote embedding API."""

    model = "utf8-fake"

    def __init__(self) -> None:
        self._fake = HashEmbeddings()

    def embed_documents(self, texts: Any) -> list[list[float]]:
        return [
            [float(x) for x in row] for row in self._fake.embed([t.encode("utf-8").decode() for t in texts])
        ]


async def test_a_lone_surrogate_through_redis(redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    index = RedisIndex(redis_url)
    cache = AnswerCache(index=index, embedder=_Utf8Embeddings(), threshold=0.5, guard=False)
    question = "How do I reset a password \ud800?"
    try:
        with caplog.at_level(logging.WARNING, logger="frugal_chains"):
            cache.update(q(question), "Settings \udc00")
            hit = cache.lookup(q(question))
            semantic = cache.lookup(q("How do I reset a password \ud800 please?"))
            await cache.aupdate(q("Where is the \udfff key?"), "Top left")
            ahit = await cache.alookup(q("Where is the \udfff key?"))
        assert hit is not None and (hit.answer, hit.entry.question) == ("Settings \udc00", question)
        assert semantic is not None and semantic.tier == "semantic"
        assert ahit is not None and ahit.answer == "Top left"
        assert cache.stats.errors == 0 and warnings_in(caplog) == []
    finally:
        await index.aclose()


def test_a_redis_whose_vector_search_hangs_keeps_serving_exact_hits(
    proxy: HangingProxy, caplog: pytest.LogCaptureFixture
) -> None:
    proxy.hang = False
    cache, index, clock = hung_cache(proxy)
    try:
        cache.update(q(QUESTION), "Settings > Security")
        proxy.hang_on = b"FT.SEARCH"  # plain gets and writes still work
        with caplog.at_level(logging.WARNING, logger="frugal_chains"):
            for i in range(10):
                hit = cache.lookup(q(QUESTION))
                assert hit is not None and hit.tier == "exact"
                assert cache.lookup(q(PARAPHRASE)) is None
                cache.update(q(f"How do I reset password number {i}?"), f"Settings > {i}")
            assert proxy.hung_commands == 1  # one socket timeout, then the semantic tier is skipped
            clock.now += 1.01  # the window closes: an update's write must not end the outage, a search probes
            cache.update(q("How do I change an email address?"), "Settings > Email")
            assert cache.lookup(q(PARAPHRASE)) is None
            assert proxy.hung_commands == 2
            proxy.hang_on = None  # the search answers again
            clock.now += 2.01
            semantic = cache.lookup(q(PARAPHRASE))
        assert semantic is not None and semantic.tier == "semantic"
        assert cache.stats.updates == 12
        email = cache.lookup(q("How do I change an email address?"))
        assert email is not None and email.entry.vector is None  # stored during the outage: exact tier only
        logged = warnings_in(caplog)
        assert len(logged) == 2, logged
        assert "semantic" in logged[0] and "Timeout" in logged[0] and "answers again" in logged[1]
    finally:
        index.close()
