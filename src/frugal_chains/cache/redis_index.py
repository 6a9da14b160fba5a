"""The Redis vector index: cache entries shared by every process and host that reaches one Redis.

Built on `redisvl <https://docs.redisvl.com>`_ (``pip install "frugal-chains[redis]"``); needs Redis 8, Redis
Stack or a managed Redis with the search module. Keys (``N`` is ``name``, default ``"frugal_cache"``)::

    N:e:<sha256(partition, exact_key)[:40]>   hash: one entry (indexed by the search index N)
        partition  TAG   sha256(partition)[:32]  -- hashes, so any character is safe in a query
        exact_key  TAG   sha256(exact_key)[:32]
        tags       TAG   sha256(tag)[:32] of every tag, comma-separated
        vector     VECTOR HNSW, cosine, float32 (absent for entries stored without a semantic tier)
        data       the entry as JSON (CacheEntry.to_json(); not indexed)
        eid        the entry id;  expires_at  unix seconds (informational; not indexed)
    N:id:<entry id>   string: the key of the entry with that id (for touch and delete by id)
    N:lru             zset: entry keys scored by a use counter (add and touch bump it)
    N:exp             zset: entry keys with a TTL, scored by expires_at
    N:clock           the use counter

* **Exact lookups** are one ``HGETALL`` (no search); adding the same (partition, exact key) replaces the
  entry.
* **Writes** (add, touch, delete, eviction) are Lua scripts: atomic, whatever the number of writers.
* **TTL** is native: the entry and its id key get ``PEXPIREAT expires_at``; reads check ``expires_at`` too.
* **Size bound**: ``add(..., max_entries=N)`` drops the lowest-scored keys of ``N:lru`` beyond N. Keys that
  expired are first removed from the zsets (found through ``N:exp``), so they never count, nor get "evicted".
  The counter is a server-side ``INCR``: no clock skew between hosts, no ties.
* **Search** is a KNN query pre-filtered on the partition tag; similarity = 1 - cosine distance.
* **The search index** is created on the first write (at once when ``dim`` is given). Created before any
  vector is known, it has no vector field: ``FT.ALTER`` adds it with the first vector. Lost (Redis restarted
  empty), it is created again when a search notices.
* **Invalidation** queries the tag 500 entries at a time, deleting each page before asking for the next.
* A row that does not decode (corrupted) is skipped, deleted and logged, never served.

Limits: the keys of one index live on one Redis (standalone or one shard); redis-py's retries are off and the
socket timeout is short, so an outage fails fast and :class:`~frugal_chains.cache.AnswerCache` misses (fails
open).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import re
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from frugal_chains.cache.index import CacheEntry, Hit
from frugal_chains.errors import ConfigurationError
from frugal_chains.shared.redis_client import close_async_client, no_retry_options
from frugal_chains.shared.sharing import SharedService

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Vector = npt.NDArray[np.float32]
else:
    Vector = Any

__all__ = ["RedisIndex"]

_EF_RUNTIME = 100
"""HNSW search width: the candidate list a vector query explores."""

log = logging.getLogger("frugal_chains.cache")

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
_PAGE = 500
"""Entries deleted per round of :meth:`RedisIndex.invalidate` and keys per ``SCAN`` step of ``clear``."""
_MAX_EXPIRE_MS = 253_402_300_799_000  # 9999-12-31: later expiries are kept forever
_PURGE = 1000

# -- Lua -----------------------------------------------------------------------------------------------------
# Every script gets the lru zset as KEYS[1] and the exp zset as KEYS[2]; ARGV[1] is the id-key prefix "N:id:".
_LUA_LIB = r"""
local lru, exp, idp = KEYS[1], KEYS[2], ARGV[1]
-- forget keys whose TTL has passed (Redis already dropped them)
local function purge(limit)
  local t = redis.call('TIME')
  local now = string.format('%.6f', tonumber(t[1]) + tonumber(t[2]) / 1000000)
  local old = redis.call('ZRANGEBYSCORE', exp, '-inf', now, 'LIMIT', 0, limit)
  for _, k in ipairs(old) do
    if redis.call('EXISTS', k) == 0 then
      redis.call('ZREM', lru, k)
      redis.call('ZREM', exp, k)
    end
  end
end
-- delete one entry key and what points at it; 1 if the entry existed
local function drop(k)
  local id = redis.call('HGET', k, 'eid')
  if id then
    local p = idp .. id
    if redis.call('GET', p) == k then redis.call('DEL', p) end
  end
  redis.call('ZREM', lru, k)
  redis.call('ZREM', exp, k)
  return redis.call('DEL', k)
end
"""

# KEYS: lru, exp, entry key, id key, clock
# ARGV: idp, eid, expires_ms|'', expires_s|'', max_entries|'', field, value, ...
# Returns the number of entries evicted.
_ADD = (
    _LUA_LIB
    + r"""
local k, p = KEYS[3], KEYS[4]
local old = redis.call('HGET', k, 'eid')
if old and old ~= ARGV[2] then
  local op = idp .. old
  if redis.call('GET', op) == k then redis.call('DEL', op) end
end
redis.call('DEL', k)
redis.call('HSET', k, unpack(ARGV, 6))
if ARGV[3] ~= '' then
  redis.call('PEXPIREAT', k, ARGV[3])
  redis.call('SET', p, k, 'PXAT', ARGV[3])
  redis.call('ZADD', exp, ARGV[4], k)
else
  redis.call('SET', p, k)
  redis.call('ZREM', exp, k)
end
redis.call('ZADD', lru, redis.call('INCR', KEYS[5]), k)
local evicted = 0
if ARGV[5] ~= '' then
  local maxn = tonumber(ARGV[5])
  if redis.call('ZCARD', lru) > maxn then
    purge(PURGE_LIMIT)
    local over = redis.call('ZCARD', lru) - maxn
    while over > 0 do
      for _, v in ipairs(redis.call('ZRANGE', lru, 0, over - 1)) do evicted = evicted + drop(v) end
      over = redis.call('ZCARD', lru) - maxn
    end
  end
end
return evicted
""".replace("PURGE_LIMIT", str(_PURGE))
)

# KEYS: lru, exp, id key, clock; ARGV: idp, eid. Returns 1 when the entry exists.
_TOUCH = (
    _LUA_LIB
    + r"""
local k = redis.call('GET', KEYS[3])
if not k or redis.call('HGET', k, 'eid') ~= ARGV[2] then return 0 end
redis.call('ZADD', lru, redis.call('INCR', KEYS[4]), k)
return 1
"""
)

# KEYS: lru, exp; ARGV: idp, id, ... Returns how many entries were deleted.
_DELETE_IDS = (
    _LUA_LIB
    + r"""
local n = 0
for i = 2, #ARGV do
  local p = idp .. ARGV[i]
  local k = redis.call('GET', p)
  if k and redis.call('HGET', k, 'eid') == ARGV[i] then n = n + drop(k) end
  redis.call('DEL', p)
end
return n
"""
)

# KEYS: lru, exp; ARGV: idp, tag digest|'', key, ... Deletes the keys (only those still carrying the tag, when
# one is given: an entry re-added without it since the search stays). Returns how many were deleted.
_DELETE_KEYS = (
    _LUA_LIB
    + r"""
local n = 0
for i = 3, #ARGV do
  local k = ARGV[i]
  local keep = false
  if ARGV[2] ~= '' then
    local tags = redis.call('HGET', k, 'tags')
    keep = not tags or not string.find(',' .. tags .. ',', ',' .. ARGV[2] .. ',', 1, true)
  end
  if not keep then n = n + drop(k) end
end
return n
"""
)

# KEYS: lru, exp; ARGV: idp. Returns the number of live entries.
_COUNT = (
    _LUA_LIB
    + r"""
purge(PURGE_LIMIT)
return redis.call('ZCARD', lru)
""".replace("PURGE_LIMIT", str(_PURGE * 10))
)

_SCRIPTS = {
    "add": _ADD,
    "touch": _TOUCH,
    "delete_ids": _DELETE_IDS,
    "delete_keys": _DELETE_KEYS,
    "count": _COUNT,
}

_MISSING_INDEX = ("unknown index name", "no such index", "index not found", "search_index_not_found")
_ALREADY = ("already exists", "duplicate")
_RETURN = ["eid", "data", "vector"]


def _import() -> tuple[Any, Any]:
    try:
        import redis
        import redis.asyncio
        import redisvl.index
        import redisvl.query
        import redisvl.query.filter
        import redisvl.schema
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise ImportError('RedisIndex needs redis and redisvl: pip install "frugal-chains[redis]"') from e
    return redis, redisvl


def _digest(text: str, n: int = 32) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:n]


def _text(value: Any) -> str:
    return value.decode("utf-8", "surrogatepass") if isinstance(value, bytes) else str(value)


def _cause(e: BaseException) -> str:
    cause = e.__cause__ if e.__cause__ is not None else e
    return str(cause).lower()


def _missing_index(e: BaseException) -> bool:
    return any(f in _cause(e) for f in _MISSING_INDEX)


def _already(e: BaseException) -> bool:
    return any(f in _cause(e) for f in _ALREADY)


def _pairs(attr: Any) -> dict[str, Any]:
    """One FT.INFO attribute (a flat key/value list in RESP2, a map in RESP3) as a dict with str keys."""
    if isinstance(attr, dict):
        items = list(attr.items())
    else:
        seq = list(attr)
        items = list(zip(seq[::2], seq[1::2], strict=False))
    return {_text(k).lower(): (_text(v) if isinstance(v, bytes) else v) for k, v in items}


def _mismatch(name: str, held: int, got: int) -> ConfigurationError:
    return ConfigurationError(
        f"the Redis index {name!r} holds {held}-dimension vectors but the embedder gives {got}: use one embedder "
        "per index, or pass another RedisIndex(name=...) when you change the embedding "
        "model",
        field="embedder",
    )


class _AState:
    """What one event loop uses: an async client (bound to that loop), its scripts and a lock."""

    def __init__(self, client: Any, owned: bool) -> None:
        self.client = client
        self.owned = owned
        self.scripts = {name: client.register_script(src) for name, src in _SCRIPTS.items()}
        self.lock = asyncio.Lock()


class RedisIndex(SharedService):
    """A :class:`~frugal_chains.cache.VectorIndex` in Redis: one cache shared by many processes and hosts.

    Args:
        url: ``redis://[:password@]host:6379/0``, ``rediss://`` (TLS) or ``unix://``; a Redis with the search
            module (Redis 8, Redis Stack, most managed Redis).
        name: the search index name and the start of every key; several caches can share a database.
        dim: the vector size; learnt from the first vector (or from the existing index) when omitted. Given,
            the search index is created (if missing) at once.
        socket_timeout: connect and read timeout of the clients this index creates, in seconds. Keep it short:
            while Redis is down, each lookup waits this long at most before missing.
        client: an existing ``redis.Redis`` (with ``decode_responses=False`` and the default protocol) instead
            of ``url``; left open by :meth:`close`. Without ``async_client``, async methods run it in a worker
            thread.
        async_client: an existing ``redis.asyncio.Redis`` for the async methods (same rules).

    Raises:
        ConfigurationError: bad arguments; an existing index of another vector size (``field="embedder"``) or
            another schema (``field="name"``).
        ImportError: ``redis``/``redisvl`` are missing (``pip install "frugal-chains[redis]"``).

    Example:
        >>> from frugal_chains.cache import RedisIndex, VectorIndex
        >>> index = RedisIndex("redis://localhost:6379/0", name="support_bot")  # connects on first use
        >>> isinstance(index, VectorIndex), index.dim
        (True, None)
        >>> index.close()
        >>> from frugal_chains.cache import AnswerCache
        >>> cache = AnswerCache(index=RedisIndex("redis://localhost:6379/0"))  # doctest: +SKIP
    """

    def __init__(
        self,
        url: str = "redis://localhost:6379",
        *,
        name: str = "frugal_cache",
        dim: int | None = None,
        socket_timeout: float = 1.0,
        client: Any = None,
        async_client: Any = None,
    ) -> None:
        redis, _ = _import()
        self._redis = redis
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigurationError(
                f"RedisIndex name must be 1-100 letters, digits, '_', '-' or '.', got {name!r}", field="name"
            )
        if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0):
            raise ConfigurationError(f"dim must be a positive int, got {dim!r}", field="dim")
        if (
            isinstance(socket_timeout, bool)
            or not isinstance(socket_timeout, (int, float))
            or not socket_timeout > 0
        ):
            raise ConfigurationError(
                f"socket_timeout must be a positive number of seconds, got {socket_timeout!r}",
                field="socket_timeout",
            )
        if not isinstance(url, str):
            raise ConfigurationError(f"url must be a string, got {type(url).__name__}", field="url")
        for arg, value in (("client", client), ("async_client", async_client)):
            if value is not None and _decodes(value):
                raise ConfigurationError(
                    f"the {arg} given decodes responses; RedisIndex stores binary vectors: create it with "
                    "decode_responses=False",
                    field=arg,
                )
            if value is not None and _resp3(value):
                raise ConfigurationError(
                    f"the {arg} given was created with protocol=3, whose search replies redisvl cannot read: "
                    "leave protocol at its default (or 2)",
                    field=arg,
                )
        self.url = url
        self.name = name
        self.dim: int | None = dim
        self.socket_timeout = float(socket_timeout)
        self._prefix = f"{name}:e:"
        self._idp = f"{name}:id:"
        self._lru = f"{name}:lru"
        self._exp = f"{name}:exp"
        self._clock = f"{name}:clock"
        self._lock = threading.RLock()
        self._closed = False
        self._has_index = False
        self._has_vector = False
        self._schemas: dict[int | None, Any] = {}
        self._owns_client = client is None
        if client is None:
            try:
                client = redis.Redis.from_url(url, **self._client_kwargs(asynchronous=False))
            except (ValueError, TypeError) as e:
                raise ConfigurationError(
                    f"url is not a Redis URL ({e}); use redis://[:password@]host:6379/0, rediss://... or "
                    "unix:///path/to/redis.sock",
                    field="url",
                ) from e
        self._client = client
        self._scripts = {n: client.register_script(src) for n, src in _SCRIPTS.items()}
        self._async_user = async_client
        self._astates: dict[asyncio.AbstractEventLoop, _AState] = {}
        self._user_astate: _AState | None = None
        if dim is not None:
            try:
                self._ensure(None, create=True)
            except ConfigurationError:
                self.close()
                raise
            except Exception as e:  # Redis down: created on first use instead
                log.debug("frugal-chains cache: could not create the Redis index %s yet: %s", name, e)

    def _client_kwargs(self, *, asynchronous: bool) -> dict[str, Any]:
        # No retries: a cache must fail fast while Redis is down (AnswerCache then misses).
        return no_retry_options(self.socket_timeout, asynchronous=asynchronous)

    def __repr__(self) -> str:
        return f"RedisIndex(name={self.name!r}, dim={self.dim})"

    # -- keys and rows ---------------------------------------------------------------------------------------
    def _key(self, partition: str, exact_key: str) -> str:
        return self._prefix + _digest(json.dumps([partition, exact_key], ensure_ascii=False), 40)

    def _schema(self, dim: int | None) -> Any:
        schema = self._schemas.get(dim)
        if schema is None:
            from redisvl.schema import IndexSchema

            fields: list[dict[str, Any]] = [
                {"name": "partition", "type": "tag"},
                {"name": "exact_key", "type": "tag"},
                {"name": "tags", "type": "tag", "attrs": {"separator": ","}},
            ]
            if dim is not None:
                fields.append(
                    {
                        "name": "vector",
                        "type": "vector",
                        "attrs": {
                            "dims": dim,
                            "algorithm": "hnsw",
                            "distance_metric": "cosine",
                            "datatype": "float32",
                        },
                    }
                )
            schema = IndexSchema.from_dict(
                {
                    "index": {"name": self.name, "prefix": self._prefix, "storage_type": "hash"},
                    "fields": fields,
                }
            )
            self._schemas[dim] = schema
        return schema

    def _vector(self, vector: Vector, what: str) -> Vector:
        import numpy as np

        v = np.ascontiguousarray(vector, dtype=np.float32).reshape(-1)
        if v.shape[0] == 0 or not np.all(np.isfinite(v)):
            raise ValueError(f"the {what} must be a non-empty vector of finite numbers")
        if self.dim is not None and v.shape[0] != self.dim:
            raise _mismatch(self.name, self.dim, int(v.shape[0]))
        return v

    def _check_add(self, entry: CacheEntry, max_entries: int | None) -> int | None:
        """Validate an add; the entry's vector size (None without a vector)."""
        if not isinstance(entry, CacheEntry):
            raise ConfigurationError(f"add() takes a CacheEntry, got {type(entry).__name__}", field="entry")
        if max_entries is not None and (
            isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1
        ):
            raise ConfigurationError(
                f"max_entries must be a positive int or None, got {max_entries!r}", field="max_entries"
            )
        return None if entry.vector is None else int(self._vector(entry.vector, "entry vector").shape[0])

    def _add_args(self, entry: CacheEntry, max_entries: int | None) -> tuple[list[str], list[Any]]:
        key = self._key(entry.partition, entry.exact_key)
        fields: list[Any] = [
            "partition",
            _digest(entry.partition),
            "exact_key",
            _digest(entry.exact_key),
            "eid",
            entry.id.encode("utf-8", "surrogatepass"),
            "data",
            entry.to_json().encode("utf-8", "surrogatepass"),
        ]
        if entry.tags:
            fields += ["tags", ",".join(dict.fromkeys(_digest(t) for t in entry.tags))]
        if entry.vector is not None:
            fields += ["vector", self._vector(entry.vector, "entry vector").tobytes()]
        expires = entry.expires_at
        ms = s = ""
        if expires is not None and math.isfinite(expires) and expires * 1000 < _MAX_EXPIRE_MS:
            ms = str(max(1, int(expires * 1000)))
            s = repr(float(expires))
            fields += ["expires_at", s]
        keys = [self._lru, self._exp, key, self._idp + entry.id, self._clock]
        args = [self._idp, entry.id, ms, s, "" if max_entries is None else str(max_entries), *fields]
        return keys, args

    def _parse(self, key: str, data: Any, eid: Any, vector: Any) -> CacheEntry:
        """A stored row as an entry; ValueError/KeyError/TypeError when it is corrupted."""
        import numpy as np

        if data is None:
            raise ValueError("the row has no data")
        vec = None
        if vector is not None:
            if not isinstance(vector, bytes) or len(vector) % 4 or not vector:
                raise ValueError("the vector is not float32 bytes")
            vec = np.frombuffer(vector, dtype=np.float32).copy()
            if (self.dim is not None and vec.shape[0] != self.dim) or not np.all(np.isfinite(vec)):
                raise ValueError(f"the vector has {vec.shape[0]} dimensions, expected {self.dim}")
        entry = CacheEntry.from_json(_text(data), vec)
        if eid is not None and _text(eid) != entry.id:
            raise ValueError("the entry id and the eid field disagree")
        if self._key(entry.partition, entry.exact_key) != key:
            raise ValueError("the entry does not belong at this key")
        return entry

    def _corrupt(self, key: str, e: BaseException) -> None:
        log.warning(
            "frugal-chains cache: skipping corrupted entry %s in Redis index %s: %s", key, self.name, e
        )

    def _exact_row(
        self, key: str, raw: dict[Any, Any], partition: str, exact_key: str, now: float
    ) -> CacheEntry | None:
        """The entry of an HGETALL reply; raises on corruption."""
        row = {_text(k): v for k, v in raw.items()}
        entry = self._parse(key, row.get("data"), row.get("eid"), row.get("vector"))
        if entry.partition != partition or entry.exact_key != exact_key:
            raise ValueError("the entry does not belong at this key")
        return None if entry.expired(now) else entry

    def _search_rows(
        self, rows: Sequence[dict[str, Any]], partition: str, min_similarity: float, now: float
    ) -> tuple[list[Hit], list[str]]:
        hits: list[Hit] = []
        bad: list[str] = []
        for row in rows:
            key = _text(row.get("id", ""))
            try:
                entry = self._parse(key, row.get("data"), row.get("eid"), row.get("vector"))
                if entry.partition != partition:
                    raise ValueError("the entry belongs to another partition")
                similarity = 1.0 - float(row["vector_distance"])
            except (ValueError, KeyError, TypeError) as e:
                self._corrupt(key, e)
                bad.append(key)
                continue
            if entry.expired(now):
                continue
            similarity = min(1.0, max(-1.0, similarity))
            if similarity >= min_similarity:
                hits.append(Hit(entry, similarity))
        hits.sort(key=lambda h: -h.similarity)
        return hits, bad

    def _vector_query(self, partition: str, q: Vector, k: int) -> Any:
        from redisvl.query import VectorQuery
        from redisvl.query.filter import Tag

        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigurationError(f"k must be a positive int, got {k!r}", field="k")
        query = VectorQuery(
            vector=q.tobytes(),
            vector_field_name="vector",
            filter_expression=Tag("partition") == _digest(partition),
            num_results=k,
            dtype="float32",
            return_score=False,
            # HNSW's default candidate list (10) misses the true nearest neighbour too often (recall@1 0.88 at
            # 100k vectors in benchmarks/cache_latency.py); a wider one costs little next to the round trip.
            ef_runtime=max(_EF_RUNTIME, k),
        )
        query.return_fields(*_RETURN, "vector_distance", skip_decode=["eid", "data", "vector"])
        return query

    def _tag_query(self, tag: str) -> Any:
        from redisvl.query import FilterQuery
        from redisvl.query.filter import Tag

        if not isinstance(tag, str) or not tag:
            raise ConfigurationError("invalidate(tag=...) needs a non-empty tag string", field="tag")
        query = FilterQuery(filter_expression=Tag("tags") == _digest(tag), num_results=_PAGE)
        query.no_content()
        return query

    # -- the search index's life -----------------------------------------------------------------------------
    def _step(
        self, info: dict[str, Any] | None, want: int | None, create: bool
    ) -> tuple[str, int | None] | None:
        """Given FT.INFO (None: no index), learn or check the vector size; the next step to take, if any."""
        with self._lock:
            if want is not None and self.dim is not None and want != self.dim:
                raise _mismatch(self.name, self.dim, want)
            if info is None:
                self._has_index = self._has_vector = False
                return ("create", self.dim if self.dim is not None else want) if create else None
            attrs = {
                str(a.get("attribute", a.get("identifier"))): a
                for a in map(_pairs, info.get("attributes") or [])
            }
            if not {"partition", "tags"} <= attrs.keys():
                raise ConfigurationError(
                    f"a Redis search index named {self.name!r} exists but is not a frugal-chains cache index: "
                    "pass another RedisIndex(name=...)",
                    field="name",
                )
            self._has_index = True
            vec = attrs.get("vector")
            if vec is not None:
                held = int(vec.get("dim") or vec.get("dims") or 0)
                metric = str(vec.get("distance_metric", "COSINE")).upper()
                if metric != "COSINE":
                    raise ConfigurationError(
                        f"the Redis index {self.name!r} uses {metric} distance, not cosine: pass another name",
                        field="name",
                    )
                if self.dim is None:
                    self.dim = held
                if held != self.dim:
                    raise _mismatch(self.name, held, self.dim)
                if want is not None and want != held:
                    raise _mismatch(self.name, held, want)
                self._has_vector = True
                return None
            target = want if want is not None else self.dim
            return ("alter", target) if create and target is not None else None

    def _ready(self, want: int | None, create: bool) -> bool | None:
        """The answer without a round trip, when the state known suffices."""
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")
        if want is not None and self.dim is not None and want != self.dim:
            raise _mismatch(self.name, self.dim, want)
        if self._has_vector:
            return True
        if self._has_index and (want is None and (self.dim is None or not create)):
            return False
        return None

    def _alter_args(self, dim: int) -> list[Any]:
        return ["FT.ALTER", self.name, "SCHEMA", "ADD", "vector", "VECTOR", "HNSW", "6", "TYPE", "FLOAT32", "DIM",
                str(dim), "DISTANCE_METRIC", "COSINE"]  # fmt: skip

    def _ensure(self, want: int | None, *, create: bool) -> bool:
        """Make sure the search index exists (holding ``want``-size vectors); True when it holds vectors."""
        from redisvl.exceptions import RedisSearchError
        from redisvl.index import SearchIndex

        known = self._ready(want, create)
        if known is not None:
            return known
        with self._lock:
            for _ in range(4):
                try:
                    info = SearchIndex(
                        self._schema(None), redis_client=self._client, owns_client=False
                    ).info()
                except RedisSearchError as e:
                    if not _missing_index(e):
                        raise
                    info = None
                step = self._step(info, want, create)
                if step is None:
                    return self._has_vector
                try:
                    if step[0] == "create":
                        SearchIndex(
                            self._schema(step[1]), redis_client=self._client, owns_client=False
                        ).create()
                    else:
                        self._client.execute_command(*self._alter_args(int(step[1] or 0)))
                except (RedisSearchError, self._redis.ResponseError) as e:
                    if not _already(e):
                        raise
            raise RuntimeError(f"could not create the Redis search index {self.name!r}")

    async def _aensure(self, state: _AState, want: int | None, *, create: bool) -> bool:
        from redisvl.exceptions import RedisSearchError
        from redisvl.index import AsyncSearchIndex

        known = self._ready(want, create)
        if known is not None:
            return known
        async with state.lock:
            known = self._ready(want, create)
            if known is not None:
                return known
            for _ in range(4):
                try:
                    info = await AsyncSearchIndex(
                        self._schema(None), redis_client=state.client, owns_client=False
                    ).info()
                except RedisSearchError as e:
                    if not _missing_index(e):
                        raise
                    info = None
                step = self._step(info, want, create)
                if step is None:
                    return self._has_vector
                try:
                    if step[0] == "create":
                        await AsyncSearchIndex(
                            self._schema(step[1]), redis_client=state.client, owns_client=False
                        ).create()
                    else:
                        await state.client.execute_command(*self._alter_args(int(step[1] or 0)))
                except (RedisSearchError, self._redis.ResponseError) as e:
                    if not _already(e):
                        raise
            raise RuntimeError(f"could not create the Redis search index {self.name!r}")

    def _lost_index(self) -> None:
        """The search index vanished (Redis restarted empty, FLUSHALL): create it again on the next write."""
        with self._lock:
            self._has_index = self._has_vector = False

    # -- async clients ---------------------------------------------------------------------------------------
    def _astate(self) -> _AState | None:
        """This loop's async client (None: only a sync client was given, so run it in a thread)."""
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")
        if self._async_user is not None:
            with self._lock:
                if self._user_astate is None:
                    self._user_astate = _AState(self._async_user, owned=False)
                return self._user_astate
        if not self._owns_client:
            return None
        loop = asyncio.get_running_loop()
        with self._lock:
            state = self._astates.get(loop)
            if state is None:
                for old in [lp for lp in self._astates if lp.is_closed()]:
                    del self._astates[old]
                aclient = self._redis.asyncio.Redis.from_url(
                    self.url, **self._client_kwargs(asynchronous=True)
                )
                state = self._astates[loop] = _AState(aclient, owned=True)
            return state

    # -- VectorIndex: sync -----------------------------------------------------------------------------------
    def add(self, entry: CacheEntry, *, max_entries: int | None = None) -> None:
        """Store ``entry`` (replacing the one with its partition and exact key); evict the least recently used
        entries beyond ``max_entries``."""
        self._ensure(self._check_add(entry, max_entries), create=True)
        keys, args = self._add_args(entry, max_entries)
        self._scripts["add"](keys=keys, args=args)

    def get_exact(self, partition: str, exact_key: str, now: float) -> CacheEntry | None:
        """The live entry with this exact key in this partition (one ``HGETALL``)."""
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")
        key = self._key(partition, exact_key)
        raw = self._client.hgetall(key)
        if not raw:
            return None
        try:
            return self._exact_row(key, raw, partition, exact_key, now)
        except (ValueError, KeyError, TypeError) as e:
            self._corrupt(key, e)
            self._delete_keys([key], "")
            return None

    def search(self, partition: str, vector: Vector, k: int, min_similarity: float, now: float) -> list[Hit]:
        """Up to ``k`` live entries of ``partition`` with cosine similarity >= ``min_similarity``, best
        first."""
        from redisvl.exceptions import RedisSearchError
        from redisvl.index import SearchIndex

        q = self._vector(vector, "query vector")
        query = self._vector_query(partition, q, k)
        if not self._ensure(int(q.shape[0]), create=False):
            return []
        index = SearchIndex(self._schema(self.dim), redis_client=self._client, owns_client=False)
        try:
            rows = index.query(query)
        except RedisSearchError as e:
            if not _missing_index(e):
                raise
            self._lost_index()
            self._ensure(self.dim, create=True)
            return []
        hits, bad = self._search_rows(rows, partition, min_similarity, now)
        if bad:
            self._delete_keys(bad, "")
        return hits

    def touch(self, entry_id: str, now: float) -> None:
        """Mark an entry as recently used."""
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")
        self._scripts["touch"](
            keys=[self._lru, self._exp, self._idp + entry_id, self._clock], args=[self._idp, entry_id]
        )

    def delete(self, ids: Sequence[str]) -> int:
        """Remove entries by id; returns how many were removed."""
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")
        ids = _ids(ids)
        if not ids:
            return 0
        return int(self._scripts["delete_ids"](keys=[self._lru, self._exp], args=[self._idp, *ids]))

    def _delete_keys(self, keys: Sequence[str], tag: str) -> int:
        return int(self._scripts["delete_keys"](keys=[self._lru, self._exp], args=[self._idp, tag, *keys]))

    def invalidate(self, *, tag: str) -> int:
        """Remove every entry carrying ``tag`` (found by a tag query, a page at a time); returns how many."""
        from redisvl.index import SearchIndex

        query = self._tag_query(tag)
        self._ensure(None, create=True)
        index = SearchIndex(self._schema(None), redis_client=self._client, owns_client=False)
        removed = 0
        seen: set[str] = set()
        while True:
            # Deleting a page takes it out of the index, so the next page is at offset 0 again.
            keys = [_text(r["id"]) for r in index.query(query)]
            fresh = [k for k in keys if k not in seen]
            if not fresh:
                return removed
            seen.update(fresh)
            removed += self._delete_keys(fresh, _digest(tag))

    def count(self) -> int:
        """Live entries."""
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")
        return int(self._scripts["count"](keys=[self._lru, self._exp], args=[self._idp]))

    def clear(self) -> None:
        """Remove every entry (the search index stays)."""
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")
        batch: list[Any] = []
        for key in self._client.scan_iter(match=f"{self.name}:*", count=_PAGE):
            batch.append(key)
            if len(batch) >= _PAGE:
                self._client.unlink(*batch)
                batch = []
        if batch:
            self._client.unlink(*batch)

    def close(self) -> None:
        """Close the clients this index created (clients passed in are left to their owner).

        Async clients are closed too when their event loop is not running; from inside a running loop, prefer
        ``await index.aclose()``."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            states, self._astates = self._astates, {}
        if self._owns_client:
            self._client.close()
        for loop, state in states.items():
            if not loop.is_closed():
                close_async_client(state.client, loop)

    # -- VectorIndex: async ----------------------------------------------------------------------------------
    async def aadd(self, entry: CacheEntry, *, max_entries: int | None = None) -> None:
        """Async :meth:`add` (the async client of the running loop)."""
        state = self._astate()
        if state is None:
            await asyncio.to_thread(self.add, entry, max_entries=max_entries)
            return
        await self._aensure(state, self._check_add(entry, max_entries), create=True)
        keys, args = self._add_args(entry, max_entries)
        await state.scripts["add"](keys=keys, args=args)

    async def aget_exact(self, partition: str, exact_key: str, now: float) -> CacheEntry | None:
        """Async :meth:`get_exact`."""
        state = self._astate()
        if state is None:
            return await asyncio.to_thread(self.get_exact, partition, exact_key, now)
        key = self._key(partition, exact_key)
        raw = await state.client.hgetall(key)
        if not raw:
            return None
        try:
            return self._exact_row(key, raw, partition, exact_key, now)
        except (ValueError, KeyError, TypeError) as e:
            self._corrupt(key, e)
            await self._adelete_keys(state, [key], "")
            return None

    async def asearch(
        self, partition: str, vector: Vector, k: int, min_similarity: float, now: float
    ) -> list[Hit]:
        """Async :meth:`search`."""
        from redisvl.exceptions import RedisSearchError
        from redisvl.index import AsyncSearchIndex

        state = self._astate()
        if state is None:
            return await asyncio.to_thread(self.search, partition, vector, k, min_similarity, now)
        q = self._vector(vector, "query vector")
        query = self._vector_query(partition, q, k)
        if not await self._aensure(state, int(q.shape[0]), create=False):
            return []
        index = AsyncSearchIndex(self._schema(self.dim), redis_client=state.client, owns_client=False)
        try:
            rows = await index.query(query)
        except RedisSearchError as e:
            if not _missing_index(e):
                raise
            self._lost_index()
            await self._aensure(state, self.dim, create=True)
            return []
        hits, bad = self._search_rows(rows, partition, min_similarity, now)
        if bad:
            await self._adelete_keys(state, bad, "")
        return hits

    async def atouch(self, entry_id: str, now: float) -> None:
        """Async :meth:`touch`."""
        state = self._astate()
        if state is None:
            await asyncio.to_thread(self.touch, entry_id, now)
            return
        await state.scripts["touch"](
            keys=[self._lru, self._exp, self._idp + entry_id, self._clock], args=[self._idp, entry_id]
        )

    async def adelete(self, ids: Sequence[str]) -> int:
        """Async :meth:`delete`."""
        state = self._astate()
        if state is None:
            return await asyncio.to_thread(self.delete, ids)
        ids = _ids(ids)
        if not ids:
            return 0
        return int(await state.scripts["delete_ids"](keys=[self._lru, self._exp], args=[self._idp, *ids]))

    async def _adelete_keys(self, state: _AState, keys: Sequence[str], tag: str) -> int:
        return int(
            await state.scripts["delete_keys"](keys=[self._lru, self._exp], args=[self._idp, tag, *keys])
        )

    async def ainvalidate(self, *, tag: str) -> int:
        """Async :meth:`invalidate`."""
        from redisvl.index import AsyncSearchIndex

        state = self._astate()
        if state is None:
            return await asyncio.to_thread(self.invalidate, tag=tag)
        query = self._tag_query(tag)
        await self._aensure(state, None, create=True)
        index = AsyncSearchIndex(self._schema(None), redis_client=state.client, owns_client=False)
        removed = 0
        seen: set[str] = set()
        while True:
            keys = [_text(r["id"]) for r in await index.query(query)]
            fresh = [k for k in keys if k not in seen]
            if not fresh:
                return removed
            seen.update(fresh)
            removed += await self._adelete_keys(state, fresh, _digest(tag))

    async def acount(self) -> int:
        """Async :meth:`count`."""
        state = self._astate()
        if state is None:
            return await asyncio.to_thread(self.count)
        return int(await state.scripts["count"](keys=[self._lru, self._exp], args=[self._idp]))

    async def aclear(self) -> None:
        """Async :meth:`clear`."""
        state = self._astate()
        if state is None:
            await asyncio.to_thread(self.clear)
            return
        batch: list[Any] = []
        async for key in state.client.scan_iter(match=f"{self.name}:*", count=_PAGE):
            batch.append(key)
            if len(batch) >= _PAGE:
                await state.client.unlink(*batch)
                batch = []
        if batch:
            await state.client.unlink(*batch)

    async def aclose(self) -> None:
        """Close every client this index created; the running loop's async client is awaited."""
        loop = asyncio.get_running_loop()
        with self._lock:
            mine = self._astates.pop(loop, None)
        if mine is not None:
            try:
                await mine.client.aclose()
            except Exception as e:  # closing is best effort: a slow or gone server must not fail the caller
                log.warning("frugal-chains: closing the Redis cache client failed: %s", e)
        self.close()


def _ids(ids: Sequence[str]) -> list[str]:
    if isinstance(ids, str):
        raise ConfigurationError("delete() takes a list of entry ids, not one string", field="ids")
    return list(ids)


def _resp3(client: Any) -> bool:
    try:
        return str(client.connection_pool.connection_kwargs.get("protocol")) == "3"
    except AttributeError:
        return False


def _decodes(client: Any) -> bool:
    try:
        return bool(client.get_encoder().decode_responses)
    except AttributeError:
        return False
