"""The embedded vector index: numpy in memory, persisted in SQLite (a file or ``:memory:``). No server.

Every partition keeps its vectors in float32 matrices (rows are L2-normalised, so a dot product is the cosine
similarity). Below 20,000 vectors a lookup scans the partition exactly; above, an inverted file (k-means lists,
the 32+ nearest lists probed, every candidate re-scored exactly: see ``_ann.py``) keeps a lookup at about 2 ms
at 100k entries; a neighbour it misses is a cache miss, never a wrong answer. Entries live in a
SQLite table too, so a file-backed cache survives restarts: the file is read back on open, and a row that does not
parse (a corrupted entry) is deleted with a warning, never served.

Several processes may share one file: each keeps its own copy in memory, picks up the rows the others added
when SQLite's ``data_version`` says the file changed, and re-reads a candidate's row before serving it, so an
entry another process invalidated or deleted is never served. For many processes under load, use
:class:`~frugal_chains.cache.RedisIndex`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from frugal_chains.cache._ann import IvfPartition
from frugal_chains.cache.index import CacheEntry, Hit
from frugal_chains.errors import ConfigurationError
from frugal_chains.shared.sharing import SharedService

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Vector = npt.NDArray[np.float32]
else:
    Vector = Any

__all__ = ["EmbeddedIndex"]

log = logging.getLogger("frugal_chains.cache")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cache_entries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    part TEXT NOT NULL,
    exact_key TEXT NOT NULL,
    data TEXT NOT NULL,
    vector BLOB,
    expires_at REAL,
    UNIQUE (part, exact_key)
);
CREATE TABLE IF NOT EXISTS cache_tags (
    tag TEXT NOT NULL,
    id TEXT NOT NULL,
    PRIMARY KEY (tag, id)
);
CREATE INDEX IF NOT EXISTS cache_tags_id ON cache_tags (id);
CREATE TABLE IF NOT EXISTS cache_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

_SWEEP_EVERY = 256
_OPEN_TIMEOUT_S = 30.0
"""How long a connection waits for another process's write lock."""


def _corrupted(e: sqlite3.DatabaseError) -> bool:
    """Real corruption (not a locked, read-only or missing file): SQLITE_CORRUPT or SQLITE_NOTADB."""
    name = str(getattr(e, "sqlite_errorname", ""))
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")):
        return True
    text = str(e).lower()
    return "file is not a database" in text or "malformed" in text


_SQLITE_HEADER = b"SQLite format 3\x00"
"""The first 16 bytes of every SQLite database file."""


def _foreign(path: str) -> bool:
    """True when ``path`` holds data that is not a SQLite database: no SQLite header, and not only zero bytes
    (what a crash can leave of a file being written). Such a file is somebody else's (a typo in ``path=``): never
    moved, never written. False when it is missing, empty or unreadable (SQLite reports those)."""
    try:
        with open(Path(path).expanduser(), "rb") as f:
            head = f.read(len(_SQLITE_HEADER))
            if not head or head == _SQLITE_HEADER:
                return False
            chunk = head
            while chunk:
                if chunk.strip(b"\0"):
                    return True
                chunk = f.read(1 << 20)
            return False
    except OSError:
        return False


def _not_ours(path: str) -> ConfigurationError:
    return ConfigurationError(
        f"{path} is not a frugal-chains cache file (it is not a SQLite database); choose another path or delete it",
        field="path",
    )


def _identity(path: str) -> tuple[int, int] | None:
    """The file's (device, inode), None when it does not exist (or is ``:memory:``)."""
    try:
        st = Path(path).expanduser().stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _cannot_open(path: str, e: BaseException) -> ConfigurationError:
    return ConfigurationError(
        f"the cache file {path} cannot be opened ({e}): check that it is a writable file that no other program "
        "holds locked, or pass another path (or ':memory:')",
        field="path",
    )


# Exact search below 20,000 vectors a partition, an inverted file with exact re-scoring above (see _ann.py).
_Partition = IvfPartition


class EmbeddedIndex(SharedService):
    """An in-process vector index persisted in SQLite: the cache's default backend.

    Args:
        path: a SQLite file (created if missing) or ``":memory:"`` (the default: nothing persisted). A SQLite
            file that is damaged ("malformed", "not a database", or only zero bytes, as a crash can leave it) is
            moved aside to ``<name>.corrupt-<UTC time>`` with one warning, and the cache starts empty (a cache is
            disposable).
        dim: the vector size; learnt from the first vector when omitted.

    Raises:
        ConfigurationError: ``field="path"`` when the file is not a SQLite database at all (another program's
            file, left untouched) or cannot be opened for another reason (a folder, no permission, locked by
            another program for 30 s); ``field="embedder"`` when it holds vectors of another size than ``dim``.

    Example:
        >>> import numpy as np
        >>> from frugal_chains.cache import CacheEntry, EmbeddedIndex
        >>> index = EmbeddedIndex()
        >>> v = np.array([1.0, 0.0, 0.0], dtype=np.float32)
        >>> e = CacheEntry(partition="p", exact_key="k", question="Hi?", normalized="hi", answer="Hi!", vector=v)
        >>> index.add(e)
        >>> [round(h.similarity, 3) for h in index.search("p", v, k=3, min_similarity=0.5, now=0.0)]
        [1.0]
        >>> index.search("other", v, k=3, min_similarity=0.5, now=0.0)
        []
    """

    def __init__(self, path: str | Path = ":memory:", *, dim: int | None = None) -> None:
        if dim is not None and (not isinstance(dim, int) or dim <= 0):
            raise ConfigurationError(f"dim must be a positive int, got {dim!r}", field="dim")
        if not isinstance(path, (str, Path)):
            raise ConfigurationError(
                f"path must be a file path or ':memory:', got {type(path).__name__}", field="path"
            )
        self.path = str(path)
        self.dim: int | None = dim
        self._lock = threading.RLock()
        self._entries: dict[str, CacheEntry] = {}
        self._exact: dict[tuple[str, str], str] = {}
        self._parts: dict[str, _Partition] = {}
        self._lru: OrderedDict[str, None] = OrderedDict()
        self.moved_aside: str | None = None
        """Where a corrupted file found at open was moved (None: it was not)."""
        self._adds = 0
        self._shared = self.path != ":memory:"
        if self._shared and _foreign(self.path):
            raise _not_ours(self.path)
        opened = _identity(self.path)
        try:
            self._open_waiting(dim)
        except sqlite3.DatabaseError as e:
            if not (self._shared and _corrupted(e)):
                raise _cannot_open(self.path, e) from e
            if _identity(self.path) == opened:  # else another process replaced it already: open the new file
                self._move_aside(e)
            self._reset_memory()
            self.dim = dim
            try:
                self._open_waiting(dim)
            except sqlite3.DatabaseError as e2:
                raise _cannot_open(self.path, e2) from e2

    def _open_waiting(self, dim: int | None) -> None:
        """:meth:`_open`, retried while another process holds the file locked (switching a new file to WAL does
        not wait on SQLite's busy timeout), up to the same 30 s."""
        deadline = time.monotonic() + _OPEN_TIMEOUT_S
        while True:
            try:
                self._open(dim)
                return
            except sqlite3.OperationalError as e:
                busy = "locked" in str(e) or "busy" in str(e)
                if not busy or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def _open(self, dim: int | None) -> None:
        """Connect, create the schema, check the vector size and read every row (raises sqlite3 errors)."""
        if self._shared:
            try:
                Path(self.path).expanduser().parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise sqlite3.OperationalError(f"cannot create the folder of the file: {e}") from e
        self._db = sqlite3.connect(
            self.path, check_same_thread=False, isolation_level=None, timeout=_OPEN_TIMEOUT_S
        )
        try:
            if self._shared:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            self._last_seq = 0
            self._data_version = self._version()
            self._generation = self._meta("generation") or "0"
            stored_dim = self._meta("dim")
            if stored_dim is not None:
                if dim is not None and int(stored_dim) != dim:
                    raise ConfigurationError(
                        f"{self.path} holds {stored_dim}-dimension vectors, not {dim}: use the embedder it was "
                        "filled with, or another path",
                        field="embedder",
                    )
                self.dim = int(stored_dim)
            elif dim is not None:
                with self._tx():
                    self._claim_dim(dim)
            self._load()
        except BaseException:
            self._db.close()
            raise

    def _move_aside(self, err: sqlite3.DatabaseError) -> None:
        """Rename a corrupted file (and its WAL files) to ``<name>.corrupt-<UTC time>``: the cache starts empty."""
        if _foreign(self.path):  # replaced by something that is not ours since we looked: leave it alone
            raise _not_ours(self.path) from err
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        base = Path(self.path).expanduser()
        target = base.with_name(f"{base.name}.corrupt-{stamp}")
        n = 1
        while target.exists():
            n += 1
            target = base.with_name(f"{base.name}.corrupt-{stamp}-{n}")
        try:
            base.rename(target)
        except FileNotFoundError:
            return  # another process moved it aside first
        except OSError as e:
            raise ConfigurationError(
                f"the cache file {self.path} is corrupted ({err}) and could not be moved aside ({e}): delete it, "
                "or pass another path",
                field="path",
            ) from e
        for suffix in ("-wal", "-shm"):  # an absent one is fine: nothing of the old file is read again
            side = base.with_name(base.name + suffix)
            with contextlib.suppress(OSError):
                side.rename(target.with_name(target.name + suffix))
        self.moved_aside = str(target)
        log.warning(
            "frugal-chains cache: %s is corrupted (%s); moved it to %s and started an empty cache",
            self.path,
            err,
            target,
        )

    # -- loading ---------------------------------------------------------------------------------------------
    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM cache_meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _claim_dim(self, dim: int) -> None:
        """Record the vector size in the file (inside a transaction); another size is a configuration error."""
        self._db.execute("INSERT OR IGNORE INTO cache_meta (key, value) VALUES ('dim', ?)", (str(dim),))
        stored = int(self._meta("dim") or dim)
        if stored != dim:
            raise ConfigurationError(
                f"the vector has {dim} dimensions but {self.path} holds {stored}: use one embedder per index "
                "(or a new index path) when you change the embedding model",
                field="embedder",
            )

    def _version(self) -> int:
        row = self._db.execute("PRAGMA data_version").fetchone()
        return int(row[0])

    def _load(self, *, in_tx: bool = False) -> None:
        """Read rows added since the last load (all of them at open). Rows that do not parse are deleted."""
        rows = self._db.execute(
            "SELECT seq, id, data, vector FROM cache_entries WHERE seq > ? ORDER BY seq", (self._last_seq,)
        ).fetchall()
        bad: list[str] = []
        for seq, entry_id, data, blob in rows:
            self._last_seq = max(self._last_seq, int(seq))
            try:
                vector = None
                if blob is not None:
                    import numpy as np  # only vectors need it: an exact-only cache (semantic=False) does not

                    vector = np.frombuffer(blob, dtype=np.float32).copy()
                    if self.dim is None:
                        self.dim = int(vector.shape[0])
                    if vector.shape != (self.dim,):
                        # another embedder's row (written before the file recorded its size): not ours to delete
                        log.warning(
                            "frugal-chains cache: ignoring entry %s in %s: %s-dimension vector, this index holds %s",
                            entry_id,
                            self.path,
                            vector.shape[0],
                            self.dim,
                        )
                        continue
                    if not np.all(np.isfinite(vector)):
                        raise ValueError("the vector has non-finite values")
                entry = CacheEntry.from_json(data, vector)
                if entry.id != entry_id:
                    raise ValueError("the id column and the entry disagree")
            except (ValueError, KeyError, TypeError) as e:
                log.warning(
                    "frugal-chains cache: skipping corrupted entry %s in %s: %s", entry_id, self.path, e
                )
                bad.append(str(entry_id))
                continue
            self._remember(entry)
        if bad and in_tx:
            self._db.executemany("DELETE FROM cache_entries WHERE id = ?", [(i,) for i in bad])
            self._db.executemany("DELETE FROM cache_tags WHERE id = ?", [(i,) for i in bad])
        elif bad:
            self._delete_rows(bad)

    def _reset_memory(self) -> None:
        self._entries.clear()
        self._exact.clear()
        self._parts.clear()
        self._lru.clear()
        self._last_seq = 0

    def _refresh(self, *, in_tx: bool = False) -> None:
        """Pick up what other processes wrote (cheap: one PRAGMA when nothing changed): new rows, and a clear()
        (the generation counter moved: everything is read again)."""
        if not self._shared:
            return
        version = self._version()
        if version == self._data_version and not in_tx:
            return
        self._data_version = version
        generation = self._meta("generation") or "0"
        if generation != self._generation:
            self._generation = generation
            self._reset_memory()
        self._load(in_tx=in_tx)

    # -- memory ----------------------------------------------------------------------------------------------
    def _remember(self, entry: CacheEntry) -> None:
        key = (entry.partition, entry.exact_key)
        old = self._exact.get(key)
        if old is not None and old != entry.id:
            self._forget(old)
        self._entries[entry.id] = entry
        self._exact[key] = entry.id
        self._lru[entry.id] = None
        self._lru.move_to_end(entry.id)
        if entry.vector is not None:
            part = self._parts.get(entry.partition)
            if part is None:
                assert self.dim is not None
                part = self._parts[entry.partition] = _Partition(self.dim)
            part.add(entry.id, entry.vector)

    def _forget(self, entry_id: str) -> CacheEntry | None:
        entry = self._entries.pop(entry_id, None)
        if entry is None:
            return None
        key = (entry.partition, entry.exact_key)
        if self._exact.get(key) == entry_id:
            del self._exact[key]
        self._lru.pop(entry_id, None)
        part = self._parts.get(entry.partition)
        if part is not None:
            part.remove(entry_id)
            if not part.ids:
                del self._parts[entry.partition]
        return entry

    def _delete_rows(self, ids: Sequence[str]) -> None:
        if not ids:
            return
        with self._tx():
            self._db.executemany("DELETE FROM cache_entries WHERE id = ?", [(i,) for i in ids])
            self._db.executemany("DELETE FROM cache_tags WHERE id = ?", [(i,) for i in ids])

    def _tx(self) -> _Tx:
        return _Tx(self._db)

    def _still_stored(self, entry_id: str) -> bool:
        """Another process may have deleted the row: check before serving (file-backed only)."""
        if not self._shared:
            return True
        return (
            self._db.execute("SELECT 1 FROM cache_entries WHERE id = ?", (entry_id,)).fetchone() is not None
        )

    def _sweep(self, now: float) -> None:
        expired = [e.id for e in self._entries.values() if e.expired(now)]
        for i in expired:
            self._forget(i)
        with self._tx():
            # also the rows a read already forgot (reads never write)
            self._db.execute(
                "DELETE FROM cache_entries WHERE expires_at IS NOT NULL AND expires_at <= ?", (now,)
            )
            self._db.execute("DELETE FROM cache_tags WHERE id NOT IN (SELECT id FROM cache_entries)")

    # -- VectorIndex -----------------------------------------------------------------------------------------
    def add(self, entry: CacheEntry, *, max_entries: int | None = None) -> None:
        """Store ``entry``; evict the least recently used beyond ``max_entries``."""
        blob = None
        vector = entry.vector
        if vector is not None:
            import numpy as np

            vector = np.ascontiguousarray(vector, dtype=np.float32).reshape(-1)
            if not np.all(np.isfinite(vector)):
                raise ValueError("the embedder returned a vector with non-finite values")
            if self.dim is not None and vector.shape != (self.dim,):
                raise ConfigurationError(
                    f"the vector has {vector.shape[0]} dimensions but the index holds {self.dim}: use one "
                    "embedder per index (or a new index path) when you change the embedding model",
                    field="embedder",
                )
            blob = vector.tobytes()
            if vector is not entry.vector:
                from dataclasses import replace

                entry = replace(entry, vector=vector)
        with self._lock:
            with self._tx():
                # Under the write lock: nobody commits between what we read and what we write.
                self._refresh(in_tx=True)
                if vector is not None:
                    self._claim_dim(int(vector.shape[0]))
                self._db.execute(
                    "DELETE FROM cache_tags WHERE id IN (SELECT id FROM cache_entries WHERE part = ? AND "
                    "exact_key = ?)",
                    (entry.partition, entry.exact_key),
                )
                cur = self._db.execute(
                    "INSERT OR REPLACE INTO cache_entries (id, part, exact_key, data, vector, expires_at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (entry.id, entry.partition, entry.exact_key, entry.to_json(), blob, entry.expires_at),
                )
                if entry.tags:
                    self._db.executemany(
                        "INSERT OR IGNORE INTO cache_tags (tag, id) VALUES (?, ?)",
                        [(t, entry.id) for t in entry.tags],
                    )
            if vector is not None:
                self.dim = int(vector.shape[0])  # only once committed
            if self._shared:
                self._load()  # our own row (and nothing else: we held the write lock since the refresh)
            else:
                self._last_seq = max(self._last_seq, int(cur.lastrowid or 0))
                self._remember(entry)
            self._adds += 1
            if self._adds % _SWEEP_EVERY == 0:
                self._sweep(time.time())
            if max_entries is not None and len(self._entries) > max_entries:
                victims: list[str] = []
                while len(self._entries) > max_entries and self._lru:
                    victim = next(iter(self._lru))
                    self._forget(victim)
                    victims.append(victim)
                self._delete_rows(victims)

    def get_exact(self, partition: str, exact_key: str, now: float) -> CacheEntry | None:
        """The live entry with this exact key."""
        with self._lock:
            self._refresh()
            entry_id = self._exact.get((partition, exact_key))
            if entry_id is None:
                return None
            entry = self._entries[entry_id]
            if entry.expired(now) or not self._still_stored(entry_id):
                # Only forgotten here: reads never wait for SQLite's write lock (the next add sweeps the row).
                self._forget(entry_id)
                return None
            return entry

    def search(self, partition: str, vector: Vector, k: int, min_similarity: float, now: float) -> list[Hit]:
        """Up to ``k`` live entries with cosine similarity >= ``min_similarity``, best first."""
        import numpy as np

        with self._lock:
            self._refresh()
            part = self._parts.get(partition)
            if part is None:
                return []
            q = np.asarray(vector, dtype=np.float32).reshape(-1)
            if q.shape != (part.dim,):
                raise ConfigurationError(
                    f"the query vector has {q.shape[0]} dimensions but the index holds {part.dim}",
                    field="embedder",
                )
            hits: list[Hit] = []
            stale: list[str] = []
            for entry_id, sim in part.top(q, k, min_similarity):
                entry = self._entries[entry_id]
                if entry.expired(now) or not self._still_stored(entry_id):
                    stale.append(entry_id)
                    continue
                hits.append(Hit(entry, sim))
            for i in stale:
                self._forget(
                    i
                )  # the next add's sweep deletes expired rows; reads never wait for a write lock
            return hits

    def touch(self, entry_id: str, now: float) -> None:
        """Mark an entry as recently used."""
        with self._lock:
            if entry_id in self._lru:
                self._lru.move_to_end(entry_id)

    def delete(self, ids: Sequence[str]) -> int:
        """Remove entries by id."""
        with self._lock:
            self._refresh()
            removed = sum(1 for i in ids if self._forget(i) is not None)
            self._delete_rows(list(ids))
            return removed

    def invalidate(self, *, tag: str) -> int:
        """Remove every entry carrying ``tag``."""
        with self._lock:
            self._refresh()
            ids = [
                r[0] for r in self._db.execute("SELECT id FROM cache_tags WHERE tag = ?", (tag,)).fetchall()
            ]
            ids += [e.id for e in self._entries.values() if tag in e.tags]
            ids = list(dict.fromkeys(ids))
            for i in ids:
                self._forget(i)
            removed = 0
            with self._tx():
                for i in ids:
                    removed += self._db.execute("DELETE FROM cache_entries WHERE id = ?", (i,)).rowcount
                    self._db.execute("DELETE FROM cache_tags WHERE id = ?", (i,))
            return removed

    def count(self) -> int:
        """Entries held (expired ones count until swept)."""
        with self._lock:
            self._refresh()
            return len(self._entries)

    def clear(self) -> None:
        """Remove every entry."""
        with self._lock, self._tx():
            self._db.execute("DELETE FROM cache_entries")
            self._db.execute("DELETE FROM cache_tags")
            self._db.execute("DELETE FROM cache_meta WHERE key = 'dim'")  # a cleared file takes any embedder
            self.dim = None
            self._generation = str(int(self._meta("generation") or "0") + 1)
            self._db.execute(
                "INSERT OR REPLACE INTO cache_meta (key, value) VALUES ('generation', ?)", (self._generation,)
            )
            self._reset_memory()

    def close(self) -> None:
        """Close the SQLite connection."""
        with self._lock:
            self._db.close()

    # Reads are sub-millisecond and stay on the event loop; writes to a file go to a worker thread.
    async def aadd(self, entry: CacheEntry, *, max_entries: int | None = None) -> None:
        if self._shared:
            await asyncio.to_thread(self.add, entry, max_entries=max_entries)
        else:
            self.add(entry, max_entries=max_entries)

    async def aget_exact(self, partition: str, exact_key: str, now: float) -> CacheEntry | None:
        return self.get_exact(partition, exact_key, now)

    async def asearch(
        self, partition: str, vector: Vector, k: int, min_similarity: float, now: float
    ) -> list[Hit]:
        return self.search(partition, vector, k, min_similarity, now)

    async def atouch(self, entry_id: str, now: float) -> None:
        self.touch(entry_id, now)

    async def adelete(self, ids: Sequence[str]) -> int:
        return await asyncio.to_thread(self.delete, ids) if self._shared else self.delete(ids)

    async def ainvalidate(self, *, tag: str) -> int:
        return await asyncio.to_thread(self.invalidate, tag=tag) if self._shared else self.invalidate(tag=tag)

    async def aclear(self) -> None:
        if self._shared:
            await asyncio.to_thread(self.clear)
        else:
            self.clear()


class _Tx:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (rollback on error) on an autocommit connection."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self._db.execute("COMMIT")
        else:
            self._db.execute("ROLLBACK")
