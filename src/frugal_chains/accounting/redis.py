"""The shared ledger: Redis, for many processes and hosts.

Every state change is one Lua script, so it is atomic on the server whatever the number of workers:

* ``reserve`` gives back a few expired reservations, sums each claim's buckets ``min_bucket..bucket``, checks the
  limits and, only if every enforced claim fits, adds the reservation to each distinct (counter, bucket);
* ``commit`` replaces a reservation with the actual amounts and stores the call record;
* ``release`` gives a reservation back; ``add_record`` stores a record once.

The semantics are those of :class:`~frugal_chains.accounting.SQLiteLedger` (see
:mod:`frugal_chains.accounting.ledger`): reservations are idempotent by id, a commit for an unknown or expired
reservation adds the actual spend without subtracting anything.

Keys (``P`` is ``prefix``, default ``"frugal:"``)::

    P{fc}:c:<counter>:<bucket>   hash cn ct rn rt (committed nano-USD, committed tokens, reserved ...)
                                 expires after the claim's ttl_s (never shortened), kept forever without one
    P{fc}:r:<reservation id>     hash state nano tokens writes expires_at created; kept 7 days once finished
    P{fc}:reserved               zset of reserved ids scored by expires_at (what the sweep reads)
    P{fc}:rec:<YYYY-MM-DD>       list of call records (JSON) of one UTC day; kept record_retention_days
    P{fc}:recid:<record id>      marker that makes add_record idempotent
    P{fc}:days                   zset of the days that hold records

Limits of this design, on purpose:

* Every key carries the hash tag ``{fc}``, so the scripts work on Redis Cluster, and the whole ledger lives on
  **one shard** (one ledger's traffic is small; use several prefixes to spread several ledgers).
* Amounts are integers summed in Lua doubles: exact up to 2**53, i.e. about **$9 million** in nano-USD per
  counter window (and 9e15 tokens). Larger values are refused with ``ConfigurationError``.
* ``records()`` and ``summary()`` read whole UTC days in the range and filter in Python: fine for reports over
  days or weeks of an application's calls, not an analytics store (export records for that).
* redis-py's automatic retries are off: a script whose reply was lost must not run twice. A failed operation
  raises :class:`~frugal_chains.errors.LedgerUnavailableError`; the budget guard fails closed (or open) and
  queues commits, which are idempotent.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import urllib.parse
from collections.abc import Sequence
from typing import Any, Literal

from frugal_chains.accounting.ledger import (
    Claim,
    CommitResult,
    Counter,
    GroupBy,
    ReserveResult,
    SpendRow,
    distinct_writes,
    now,
    summarize,
)
from frugal_chains.accounting.usage import CallRecord
from frugal_chains.errors import ConfigurationError, LedgerUnavailableError
from frugal_chains.shared.redis_client import close_async_client, no_retry_options
from frugal_chains.shared.sharing import SharedService

__all__ = ["RedisLedger"]

MAX_AMOUNT = 2**53 - 1
"""The largest amount (nano-USD or tokens) a counter can hold exactly (Lua numbers are doubles)."""
MAX_BUCKET_SPAN = 10_000
"""The most buckets one claim or :meth:`RedisLedger.counter` may sum (a rolling budget uses 61)."""
_MAX_BUCKET = 10**14
_KEEP_FINISHED_RESERVATIONS_S = 7 * 86400
_SWEEP_BATCH = 50
_DAY_S = 86400

# -- Lua ------------------------------------------------------------------------------------------------------
# ARGV[1] is always the key base "<prefix>{fc}:"; KEYS[1] is the reserved-ids zset (it routes the call on a
# cluster; every other key shares its hash tag). Amounts travel as decimal strings and are added with HINCRBY,
# so writes are exact; only the sums compared with limits go through Lua numbers.
_LUA_LIB = r"""
local base = ARGV[1]
local function bkey(counter, bucket) return base .. 'c:' .. counter .. ':' .. bucket end
local function neg(s)
  if s == '0' then return '0' end
  if string.sub(s, 1, 1) == '-' then return string.sub(s, 2) end
  return '-' .. s
end
local function touch_ttl(k, ttl)
  if ttl ~= '' then
    local n = tonumber(ttl)
    if redis.call('TTL', k) < n then redis.call('EXPIRE', k, n) end
  end
end
-- writes: list of {counter, bucket, ttl} (strings)
-- kind: 'c' (committed: fields cn, ct) or 'r' (reserved: fields rn, rt)
local function add(kind, writes, nano, tokens)
  for _, w in ipairs(writes) do
    local k = bkey(w[1], w[2])
    redis.call('HINCRBY', k, kind .. 'n', nano)
    redis.call('HINCRBY', k, kind .. 't', tokens)
    touch_ttl(k, w[3])
  end
end
local function give_back(writes, nano, tokens)
  for _, w in ipairs(writes) do
    local k = bkey(w[1], w[2])
    if redis.call('EXISTS', k) == 1 then  -- an expired bucket is not brought back as a negative one
      redis.call('HINCRBY', k, 'rn', neg(nano))
      redis.call('HINCRBY', k, 'rt', neg(tokens))
    end
  end
end
local function sum(counter, lo, hi)
  local cn, ct, rn, rt = 0, 0, 0, 0
  for b = tonumber(lo), tonumber(hi) do
    local v = redis.call('HMGET', bkey(counter, string.format('%d', b)), 'cn', 'ct', 'rn', 'rt')
    cn = cn + (tonumber(v[1]) or 0)
    ct = ct + (tonumber(v[2]) or 0)
    rn = rn + (tonumber(v[3]) or 0)
    rt = rt + (tonumber(v[4]) or 0)
  end
  return cn, ct, rn, rt
end
-- claims: list of {counter, bucket, min_bucket, ...}; returns a flat list of 4 integers per claim
local function sums(claims)
  local out = {}
  for _, c in ipairs(claims) do
    local cn, ct, rn, rt = sum(c[1], c[3], c[2])
    table.insert(out, cn); table.insert(out, ct); table.insert(out, rn); table.insert(out, rt)
  end
  return out
end
local function store_record(t, keep, rid, day, score, data)
  if redis.call('SET', base .. 'recid:' .. rid, '1', 'NX', 'EX', keep) then
    local lk = base .. 'rec:' .. day
    redis.call('RPUSH', lk, data)
    redis.call('EXPIRE', lk, keep)
    local dk = base .. 'days'
    redis.call('ZADD', dk, score, day)
    redis.call('EXPIRE', dk, keep)
    -- forget days whose list has expired
    local old = redis.call('ZRANGEBYSCORE', dk, '-inf', '(' .. (tonumber(t) - keep), 'LIMIT', 0, 5)
    for _, d in ipairs(old) do
      if redis.call('EXISTS', base .. 'rec:' .. d) == 0 then redis.call('ZREM', dk, d) end
    end
  end
end
"""

# ARGV: base, id, nano, tokens, expires_at, now, keep_s, reservation_ttl_s, claims_json, writes_json, sweep_n
# claims_json: [[counter, bucket, min_bucket, limit_nano|'', limit_tokens|'', enforce 0/1], ...]
# Returns {code, denied index (0-based) or -1, unit (1 usd, 2 tokens, 0 none), {exceeded...}, {sums...}}
# code: 0 reserved, 1 denied, 2 duplicate id (as in SQLite, checked once the claims fit); nothing of this
# reservation is written unless the code is 0 (the sweep of other, expired reservations stays done).
_RESERVE = (
    _LUA_LIB
    + r"""
local zkey = KEYS[1]
local rid, nano, tokens, expires_at, t = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local keep, rttl = ARGV[7], ARGV[8]
local claims = cjson.decode(ARGV[9])
local rkey = base .. 'r:' .. rid
local expired = redis.call('ZRANGEBYSCORE', zkey, '-inf', '(' .. t, 'LIMIT', 0, tonumber(ARGV[11]))
for _, id in ipairs(expired) do
  local k = base .. 'r:' .. id
  local r = redis.call('HMGET', k, 'state', 'nano', 'tokens', 'writes')
  if r[1] == 'reserved' then
    give_back(cjson.decode(r[4]), r[2], r[3])
    redis.call('HSET', k, 'state', 'expired')
    redis.call('EXPIRE', k, keep)
  end
  redis.call('ZREM', zkey, id)
end
local before = sums(claims)
local n, tk = tonumber(nano), tonumber(tokens)
local exceeded = {}
for i, c in ipairs(claims) do
  local j = (i - 1) * 4
  local unit = 0
  if c[4] ~= '' and before[j + 1] + before[j + 3] + n > tonumber(c[4]) then
    unit = 1
  elseif c[5] ~= '' and before[j + 2] + before[j + 4] + tk > tonumber(c[5]) then
    unit = 2
  end
  if unit ~= 0 then
    if c[6] == 1 then return {1, i - 1, unit, {}, before} end
    table.insert(exceeded, i - 1)
  end
end
if redis.call('EXISTS', rkey) == 1 then return {2, -1, 0, {}, before} end
add('r', cjson.decode(ARGV[10]), nano, tokens)
redis.call('HSET', rkey, 'state', 'reserved', 'nano', nano, 'tokens', tokens, 'writes', ARGV[10],
  'expires_at', expires_at, 'created', t)
redis.call('EXPIRE', rkey, rttl)
redis.call('ZADD', zkey, expires_at, rid)
return {0, -1, 0, exceeded, before}
"""
)

# ARGV: base, id, nano, tokens, now, keep_s, claims_json, writes_json, record_json|'', record_id, day,
#       day_score, record_keep_s
# Returns {applied 0/1, {sums...}}
_COMMIT = (
    _LUA_LIB
    + r"""
local zkey = KEYS[1]
local rid, nano, tokens, t, keep = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local rkey = base .. 'r:' .. rid
local r = redis.call('HMGET', rkey, 'state', 'nano', 'tokens', 'writes')
local state = r[1]
if state == 'committed' or state == 'released' then return {0, {}} end
local writes
if state then
  writes = cjson.decode(r[4])
  if state == 'reserved' then give_back(writes, r[2], r[3]) end
  redis.call('HSET', rkey, 'state', 'committed')
else
  writes = cjson.decode(ARGV[8])
  redis.call('HSET', rkey, 'state', 'committed', 'nano', '0', 'tokens', '0', 'writes', ARGV[8],
    'expires_at', t, 'created', t)
end
redis.call('EXPIRE', rkey, keep)
redis.call('ZREM', zkey, rid)
add('c', writes, nano, tokens)
if ARGV[9] ~= '' then store_record(t, ARGV[13], ARGV[10], ARGV[11], ARGV[12], ARGV[9]) end
return {1, sums(cjson.decode(ARGV[7]))}
"""
)

# ARGV: base, id, keep_s. Returns 1 when a reservation was given back.
_RELEASE = (
    _LUA_LIB
    + r"""
local rkey = base .. 'r:' .. ARGV[2]
local r = redis.call('HMGET', rkey, 'state', 'nano', 'tokens', 'writes')
if r[1] ~= 'reserved' then return 0 end
give_back(cjson.decode(r[4]), r[2], r[3])
redis.call('HSET', rkey, 'state', 'released')
redis.call('EXPIRE', rkey, ARGV[3])
redis.call('ZREM', KEYS[1], ARGV[2])
return 1
"""
)

# ARGV: base, now, record_keep_s, record_id, day, day_score, record_json
_ADD_RECORD = (
    _LUA_LIB
    + r"""
store_record(ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7])
return 1
"""
)

# ARGV: base, counter, min_bucket, max_bucket. Returns {cn, ct, rn, rt}.
_COUNTER = (
    _LUA_LIB
    + r"""
local cn, ct, rn, rt = sum(ARGV[2], ARGV[3], ARGV[4])
return {cn, ct, rn, rt}
"""
)

_SCRIPTS = {
    "reserve": _RESERVE,
    "commit": _COMMIT,
    "release": _RELEASE,
    "add_record": _ADD_RECORD,
    "counter": _COUNTER,
}


def _import_redis() -> Any:
    try:
        import redis
        import redis.asyncio
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise ImportError('RedisLedger needs the redis client: pip install "frugal-chains[redis]"') from e
    return redis


def _redact(url: str) -> str:
    """The url without its password."""
    try:
        parts = urllib.parse.urlsplit(url)
        if parts.password is None:
            return url
        user = parts.username or ""
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port is not None else "")
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return "<unparseable url>"


def _int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or abs(value) > MAX_AMOUNT:
        raise ConfigurationError(
            f"RedisLedger: {name} must be an int of at most 2**53 - 1 in size (nano-USD: about $9 million), "
            f"got {value!r}.",
            field=name,
        )
    return value


def _bucket(name: str, value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int) or abs(value) >= _MAX_BUCKET:
        raise ConfigurationError(f"RedisLedger: {name} must be an int below 1e14, got {value!r}.", field=name)
    return str(value)


def _span(lo: int, hi: int) -> None:
    if hi - lo + 1 > MAX_BUCKET_SPAN:
        raise ConfigurationError(
            f"RedisLedger sums at most {MAX_BUCKET_SPAN} buckets at once; got {lo}..{hi}. "
            "Use a coarser window (a rolling budget uses 61 buckets).",
            field="min_bucket",
        )


def _describe(client: Any) -> str:
    """A url-like name for a client passed in (for messages; never its password)."""
    try:
        kw = client.connection_pool.connection_kwargs
        return f"redis://{kw.get('host', 'localhost')}:{kw.get('port', 6379)}/{kw.get('db', 0)}"
    except AttributeError:
        return f"<{type(client).__name__}>"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisLedger(SharedService):
    """Spend ledger in Redis, shared by processes and hosts; every change is one atomic Lua script.

    Works with Redis 7 or 8, Redis Stack and managed Redis (standalone or Cluster; see the module docs for the
    key layout and its limits). Sync methods use ``redis-py``; async methods use ``redis.asyncio`` with the
    same scripts (one async client per event loop; ``await ledger.aclose()`` before your loop ends).

    Args:
        url: a ``redis://``, ``rediss://`` or ``unix://`` URL (``redis://:password@host:6379/0``).
        prefix: the start of every key; several ledgers can share a database with different prefixes.
            It must not contain ``{`` or ``}`` (the ledger adds the hash tag ``{fc}`` itself).
        client: an existing ``redis.Redis`` (or ``RedisCluster``) to use instead of ``url`` for the sync
            methods. Without ``async_client``, async methods then run the sync calls in a worker thread.
        async_client: an existing ``redis.asyncio.Redis`` for the async methods.
        socket_timeout_s: connect and read timeout of the clients the ledger creates.
        record_retention_days: how long a day of call records is kept after its last write.
        check: ping the server now and raise if it cannot be reached (else the first operation tells).

    Raises:
        ConfigurationError: (``field="url"``) when the url is malformed or, with ``check=True``, the server
            cannot be reached; (``field="prefix"``, ``"record_retention_days"``) for bad arguments.
        ImportError: when ``redis`` is not installed (``pip install "frugal-chains[redis]"``).

    Operations raise :class:`~frugal_chains.errors.LedgerUnavailableError` when Redis cannot be reached or
    fails, so a :class:`~frugal_chains.budget.BudgetGuard` fails closed (or open, if asked).

    Example:
        >>> from frugal_chains import RedisLedger
        >>> from frugal_chains.accounting import Claim
        >>> ledger = RedisLedger("redis://localhost:6379/0")  # doctest: +SKIP
        >>> claim = Claim(counter="global|all|*", bucket=0, min_bucket=0, limit_nano=1_000)
        >>> ledger.reserve("r1", [claim], nano=600, tokens=10, expires_at=9e9).ok  # doctest: +SKIP
        True
        >>> ledger.reserve("r2", [claim], nano=600, tokens=10, expires_at=9e9).ok  # doctest: +SKIP
        False
        >>> ledger.commit("r1", [claim], nano=400, tokens=8).applied  # doctest: +SKIP
        True
        >>> ledger.counter("global|all|*", 0, 0).committed_nano  # doctest: +SKIP
        400
        >>> ledger.close()  # doctest: +SKIP
    """

    def __init__(
        self,
        url: str = "redis://localhost:6379/0",
        *,
        prefix: str = "frugal:",
        client: Any = None,
        async_client: Any = None,
        socket_timeout_s: float = 2.0,
        record_retention_days: int = 400,
        check: bool = True,
    ) -> None:
        redis = _import_redis()
        self._redis = redis
        if not isinstance(prefix, str) or "{" in prefix or "}" in prefix:
            raise ConfigurationError(
                f"RedisLedger prefix must be a string without '{{' or '}}' (the ledger adds the hash tag "
                f"itself), got {prefix!r}.",
                field="prefix",
            )
        if (
            isinstance(record_retention_days, bool)
            or not isinstance(record_retention_days, int)
            or record_retention_days <= 0
        ):
            raise ConfigurationError(
                f"RedisLedger record_retention_days must be a positive int, got {record_retention_days!r}.",
                field="record_retention_days",
            )
        if not isinstance(url, str):
            raise ConfigurationError(f"RedisLedger url must be a string, got {url!r}.", field="url")
        if (
            isinstance(socket_timeout_s, bool)
            or not isinstance(socket_timeout_s, (int, float))
            or not socket_timeout_s > 0
        ):
            raise ConfigurationError(
                f"RedisLedger socket_timeout_s must be a positive number of seconds, got {socket_timeout_s!r}.",
                field="socket_timeout_s",
            )
        self.url = url if client is None else _describe(client)
        self.prefix = prefix
        self.base = f"{prefix}{{fc}}:"
        self.record_retention_s = record_retention_days * _DAY_S
        self.socket_timeout_s = socket_timeout_s
        self._zkey = self.base + "reserved"
        self._lock = threading.Lock()
        self._closed = False
        self._owns_client = client is None
        self._async_user = async_client
        self._ascripts: dict[str, Any] = {}
        # clients the ledger made for the async methods: one per event loop (a client is bound to its loop)
        self._aclients: dict[asyncio.AbstractEventLoop, tuple[Any, dict[str, Any]]] = {}
        if client is None:
            try:
                client = redis.Redis.from_url(
                    url, decode_responses=True, **no_retry_options(self.socket_timeout_s, asynchronous=False)
                )
            except (ValueError, TypeError) as e:
                raise ConfigurationError(
                    f"RedisLedger url {_redact(url)!r} is not a Redis URL ({e}). "
                    "Use redis://[:password@]host:6379/0, rediss://... (TLS) or unix:///path/to/redis.sock.",
                    field="url",
                ) from e
        self._client = client
        self._scripts = {name: client.register_script(src) for name, src in _SCRIPTS.items()}
        if async_client is not None:
            self._ascripts = {name: async_client.register_script(src) for name, src in _SCRIPTS.items()}
        if check:
            try:
                client.ping()
            except redis.RedisError as e:
                self.close()
                where = _redact(self.url) if self._owns_client else f"{self.url} (the client given)"
                reason = str(e).rstrip(".")
                raise ConfigurationError(
                    f"RedisLedger cannot reach Redis at {where}: {reason}. Start a Redis 7+ server there (or "
                    "Redis Stack, or a managed Redis), pass the right url (redis://[:password@]host:port/db), "
                    "or pass check=False to connect on first use.",
                    field="url" if self._owns_client else "client",
                ) from e

    def __repr__(self) -> str:
        return f"RedisLedger({_redact(self.url)!r}, prefix={self.prefix!r})"

    # -- plumbing -----------------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise LedgerUnavailableError(f"{self!r} is closed.")

    def _unavailable(self, e: Exception) -> LedgerUnavailableError:
        return LedgerUnavailableError(f"{self!r} failed: {type(e).__name__}: {e}")

    def _run(self, name: str, args: Sequence[Any]) -> Any:
        self._check_open()
        try:
            return self._scripts[name](keys=[self._zkey], args=[self.base, *args])
        except self._redis.RedisError as e:
            raise self._unavailable(e) from e

    async def _arun(self, name: str, args: Sequence[Any]) -> Any:
        self._check_open()
        scripts = self._async_scripts()
        if scripts is None:  # only a sync client was given: run it in a worker thread
            return await asyncio.to_thread(self._run, name, args)
        try:
            return await scripts[name](keys=[self._zkey], args=[self.base, *args])
        except self._redis.RedisError as e:
            raise self._unavailable(e) from e

    def _async_scripts(self) -> dict[str, Any] | None:
        if self._async_user is not None:
            return self._ascripts
        if not self._owns_client:
            return None
        loop = asyncio.get_running_loop()
        with self._lock:
            found = self._aclients.get(loop)
            if found is not None:
                return found[1]
            # forget the clients of loops that have closed (await aclose() before a loop ends, or their
            # connections are left to the garbage collector)
            for old in [lp for lp in self._aclients if lp.is_closed()]:
                del self._aclients[old]
            try:
                aclient = self._redis.asyncio.Redis.from_url(
                    self.url,
                    decode_responses=True,
                    **no_retry_options(self.socket_timeout_s, asynchronous=True),
                )
            except (ValueError, TypeError) as e:
                raise ConfigurationError(f"RedisLedger url is not a Redis URL: {e}", field="url") from e
            scripts = {name: aclient.register_script(src) for name, src in _SCRIPTS.items()}
            self._aclients[loop] = (aclient, scripts)
            return scripts

    @staticmethod
    def _claims_json(claims: Sequence[Claim]) -> str:
        rows = []
        for c in claims:
            if not isinstance(c, Claim):
                raise ConfigurationError(
                    f"claims must hold Claim objects, got {type(c).__name__}.", field="claims"
                )
            _span(c.min_bucket, c.bucket)
            rows.append(
                [
                    c.counter,
                    _bucket("bucket", c.bucket),
                    _bucket("min_bucket", c.min_bucket),
                    "" if c.limit_nano is None else str(_int("limit_nano", c.limit_nano)),
                    "" if c.limit_tokens is None else str(_int("limit_tokens", c.limit_tokens)),
                    1 if c.enforce else 0,
                ]
            )
        return json.dumps(rows, ensure_ascii=False)

    @staticmethod
    def _writes_json(claims: Sequence[Claim]) -> str:
        ttl: dict[tuple[str, int], int | None] = {}
        for c in claims:
            key = (c.counter, c.bucket)
            old = ttl.get(key)
            new = None if c.ttl_s is None else max(1, math.ceil(c.ttl_s))
            ttl[key] = new if old is None else (old if new is None else max(old, new))
        rows = []
        for counter, bucket in distinct_writes(claims):
            t = ttl[(counter, bucket)]
            rows.append([counter, str(bucket), "" if t is None else str(t)])
        return json.dumps(rows, ensure_ascii=False)

    @staticmethod
    def _counters(flat: Sequence[Any]) -> tuple[Counter, ...]:
        v = [int(x) for x in flat]
        return tuple(
            Counter(
                committed_nano=v[i],
                committed_tokens=v[i + 1],
                reserved_nano=v[i + 2],
                reserved_tokens=v[i + 3],
            )
            for i in range(0, len(v), 4)
        )

    def _record_args(self, record: CallRecord) -> list[Any]:
        if not isinstance(record, CallRecord):
            raise ConfigurationError(
                f"record must be a CallRecord, got {type(record).__name__}.", field="record"
            )
        day_score = int(record.ts // _DAY_S) * _DAY_S
        return [record.id, record.day, day_score, json.dumps(record.to_dict(), default=str)]

    # -- reserve --------------------------------------------------------------------------------------------
    def _reserve_args(
        self, reservation_id: str, claims: Sequence[Claim], nano: int, tokens: int, expires_at: float
    ) -> list[Any]:
        if not isinstance(reservation_id, str) or not reservation_id:
            raise ConfigurationError("reservation_id must be a non-empty string.", field="reservation_id")
        if (
            isinstance(expires_at, bool)
            or not isinstance(expires_at, (int, float))
            or not math.isfinite(expires_at)
        ):
            raise ConfigurationError(
                f"expires_at must be a unix time, got {expires_at!r}.", field="expires_at"
            )
        t = now()
        keep = _KEEP_FINISHED_RESERVATIONS_S
        return [
            reservation_id,
            str(_int("nano", nano)),
            str(_int("tokens", tokens)),
            repr(float(expires_at)),
            repr(float(t)),
            keep,
            math.ceil(max(0.0, expires_at - t)) + keep,
            self._claims_json(claims),
            self._writes_json(claims),
            _SWEEP_BATCH,
        ]

    def _reserve_result(self, reservation_id: str, reply: Sequence[Any]) -> ReserveResult:
        code, denied, unit, exceeded, flat = reply
        if int(code) == 2:
            raise ConfigurationError(
                f"Reservation id {reservation_id!r} was used before; ids must be unique.",
                field="reservation_id",
            )
        before = self._counters(flat)
        if int(code) == 1:
            denied_unit: Literal["usd", "tokens"] = "usd" if int(unit) == 1 else "tokens"
            return ReserveResult(ok=False, before=before, denied=int(denied), denied_unit=denied_unit)
        return ReserveResult(ok=True, before=before, exceeded=tuple(int(i) for i in exceeded))

    def reserve(
        self, reservation_id: str, claims: Sequence[Claim], *, nano: int, tokens: int, expires_at: float
    ) -> ReserveResult:
        """Check every claim and reserve ``nano`` / ``tokens`` in all of them, atomically (see
        :class:`~frugal_chains.accounting.SpendLedger`). A few expired reservations are given back first.

        Raises:
            ConfigurationError: the id was used before, or an amount is out of range.
            LedgerUnavailableError: Redis could not be reached.
        """
        args = self._reserve_args(reservation_id, claims, nano, tokens, expires_at)
        return self._reserve_result(reservation_id, self._run("reserve", args))

    async def areserve(
        self, reservation_id: str, claims: Sequence[Claim], *, nano: int, tokens: int, expires_at: float
    ) -> ReserveResult:
        """Async :meth:`reserve`."""
        args = self._reserve_args(reservation_id, claims, nano, tokens, expires_at)
        return self._reserve_result(reservation_id, await self._arun("reserve", args))

    # -- commit ---------------------------------------------------------------------------------------------
    def _commit_args(
        self, reservation_id: str, claims: Sequence[Claim], nano: int, tokens: int, record: CallRecord | None
    ) -> list[Any]:
        if not isinstance(reservation_id, str) or not reservation_id:
            raise ConfigurationError("reservation_id must be a non-empty string.", field="reservation_id")
        rec = self._record_args(record) if record is not None else ["", "", 0, ""]
        return [
            reservation_id,
            str(_int("nano", nano)),
            str(_int("tokens", tokens)),
            repr(float(now())),
            _KEEP_FINISHED_RESERVATIONS_S,
            self._claims_json(claims),
            self._writes_json(claims),
            rec[3],
            rec[0],
            rec[1],
            rec[2],
            self.record_retention_s,
        ]

    def _commit_result(self, reply: Sequence[Any]) -> CommitResult:
        applied, flat = reply
        if not int(applied):
            return CommitResult(applied=False)
        return CommitResult(applied=True, after=self._counters(flat))

    def commit(
        self,
        reservation_id: str,
        claims: Sequence[Claim],
        *,
        nano: int,
        tokens: int,
        record: CallRecord | None = None,
    ) -> CommitResult:
        """Replace the reservation with the actual amounts and store ``record``, atomically.

        A repeated commit (or one after a release) changes nothing and returns ``applied=False``; a commit of
        an unknown or expired reservation adds the amounts to the claims' buckets without subtracting.
        """
        args = self._commit_args(reservation_id, claims, nano, tokens, record)
        return self._commit_result(self._run("commit", args))

    async def acommit(
        self,
        reservation_id: str,
        claims: Sequence[Claim],
        *,
        nano: int,
        tokens: int,
        record: CallRecord | None = None,
    ) -> CommitResult:
        """Async :meth:`commit`."""
        args = self._commit_args(reservation_id, claims, nano, tokens, record)
        return self._commit_result(await self._arun("commit", args))

    # -- release and records --------------------------------------------------------------------------------
    def release(self, reservation_id: str) -> bool:
        """Give a reservation back; True only if it was still reserved."""
        return bool(int(self._run("release", [reservation_id, _KEEP_FINISHED_RESERVATIONS_S])))

    async def arelease(self, reservation_id: str) -> bool:
        """Async :meth:`release`."""
        return bool(int(await self._arun("release", [reservation_id, _KEEP_FINISHED_RESERVATIONS_S])))

    def _add_record_args(self, record: CallRecord) -> list[Any]:
        rid, day, score, data = self._record_args(record)
        return [repr(float(now())), self.record_retention_s, rid, day, score, data]

    def add_record(self, record: CallRecord) -> None:
        """Store a call record (once per ``record.id``)."""
        self._run("add_record", self._add_record_args(record))

    async def aadd_record(self, record: CallRecord) -> None:
        """Async :meth:`add_record`."""
        await self._arun("add_record", self._add_record_args(record))

    # -- queries --------------------------------------------------------------------------------------------
    def counter(self, counter: str, min_bucket: int, max_bucket: int) -> Counter:
        """The sums of a counter's buckets ``min_bucket..max_bucket``."""
        lo, hi = _bucket("min_bucket", min_bucket), _bucket("max_bucket", max_bucket)
        _span(min_bucket, max_bucket)
        return self._counters(self._run("counter", [counter, lo, hi]))[0]

    def records(
        self,
        *,
        since: float | None = None,
        until: float | None = None,
        feature: str | None = None,
        user_id: str | None = None,
        tenant_id: str | None = None,
        model: str | None = None,
        task_id: str | None = None,
        limit: int | None = None,
    ) -> list[CallRecord]:
        """Call records with ``since <= ts < until`` matching every given field, oldest first.

        Reads every UTC day of the range from Redis and filters in Python (see the module docs)."""
        self._check_open()
        lo = "-inf" if since is None else str(int(since // _DAY_S) * _DAY_S)
        hi = "+inf" if until is None else f"({float(until)!r}"
        try:
            days = [_text(d) for d in self._client.zrangebyscore(self.base + "days", lo, hi)]
            pipe = self._client.pipeline(transaction=False)
            for day in days:
                pipe.lrange(self.base + "rec:" + day, 0, -1)
            lists = pipe.execute() if days else []
        except self._redis.RedisError as e:
            raise self._unavailable(e) from e
        wanted = {
            "feature": feature,
            "user_id": user_id,
            "tenant_id": tenant_id,
            "model": model,
            "task_id": task_id,
        }
        wanted = {k: v for k, v in wanted.items() if v is not None}
        out: list[CallRecord] = []
        for items in lists:
            for raw in items:
                d = json.loads(raw)
                ts = float(d["ts"])
                if since is not None and ts < since:
                    continue
                if until is not None and ts >= until:
                    continue
                if any(d.get(k) != v for k, v in wanted.items()):
                    continue
                out.append(CallRecord.from_dict(d))
        out.sort(key=lambda r: (r.ts, r.id))
        return out[: int(limit)] if limit is not None else out

    def summary(
        self, by: GroupBy = "feature", *, since: float | None = None, until: float | None = None
    ) -> list[SpendRow]:
        """Spend grouped ``by`` a field, most expensive first (reads like :meth:`records`)."""
        return summarize(self.records(since=since, until=until), by)

    # -- lifecycle ------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Close the clients the ledger created (clients passed in are left to their owner).

        The async client is closed too when its event loop is not running; from inside a running loop,
        prefer ``await ledger.aclose()``."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            aclients, self._aclients = self._aclients, {}
        if self._owns_client:
            self._client.close()
        for loop, (aclient, _) in aclients.items():
            if not loop.is_closed():
                close_async_client(aclient, loop)

    async def aclose(self) -> None:
        """Close every client the ledger created: the running loop's async client is awaited."""
        loop = asyncio.get_running_loop()
        with self._lock:
            mine = self._aclients.pop(loop, None)
        if mine is not None:
            await mine[0].aclose()
        self.close()

    def __enter__(self) -> RedisLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> RedisLedger:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
