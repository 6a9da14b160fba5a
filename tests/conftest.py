"""Shared fixtures: a real Redis 8 server started from PyPI wheels (see ``tests/redis_server.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.redis_server import RedisServer


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One Redis 8 server (RediSearch + RedisJSON loaded) on a free loopback port for the whole session.

    Tests may ``stop()`` and ``start()`` it (same port) to simulate an outage; ``redis_url`` restarts it if a
    test left it stopped."""
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The server's URL, with an empty database (FLUSHALL before the test)."""
    import redis

    if not redis_server.running:
        redis_server.start()
    client = redis.Redis.from_url(redis_server.url)
    try:
        client.flushall()
    finally:
        client.close()
    return redis_server.url
