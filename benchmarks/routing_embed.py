"""A memoising wrapper around the real default embedder, so the routing benchmark embeds each text once.

Every scorer and verifier of every fold gets the same :class:`MemoEmbedder`: the texts are embedded once up
front in length-sorted batches (little padding), and every later ``embed`` call is served from memory. It
reports the wrapped embedder's ``name`` and ``dim``, so saved models record the real embedder. ``--embedding-cache
FILE`` keeps the vectors on disk between runs (an ``.npz`` keyed by the embedder's name and the texts' SHA-256).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray


def _h(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


class MemoEmbedder:
    """Embedder protocol over ``base`` with an unbounded in-memory memo (and an optional ``.npz`` file)."""

    def __init__(self, base: Any, cache_file: str | Path | None = None) -> None:
        self.base = base
        self._memo: dict[str, NDArray[np.float32]] = {}
        self._lock = threading.Lock()
        self.cache_file = Path(cache_file) if cache_file else None
        self.embedded = 0
        """Texts this process embedded with the model (not from memory or the file)."""
        self.embed_seconds = 0.0
        self.loaded = 0
        if self.cache_file is not None and self.cache_file.exists():
            with np.load(self.cache_file, allow_pickle=False) as z:
                if str(z["name"]) == base.name and int(z["dim"]) == base.dim:
                    for k, v in zip(z["keys"], z["vectors"], strict=True):
                        self._memo[str(k)] = v
                    self.loaded = len(self._memo)

    @property
    def name(self) -> str:
        return str(self.base.name)

    @property
    def dim(self) -> int:
        return int(self.base.dim)

    def _compute(self, texts: list[str], batch: int = 32) -> None:
        todo = sorted({t for t in texts if _h(t) not in self._memo}, key=len)
        if not todo:
            return
        t0 = time.perf_counter()
        for i in range(0, len(todo), batch):
            part = todo[i : i + batch]
            vecs = np.asarray(self.base.embed(part), dtype=np.float32)
            for t, v in zip(part, vecs, strict=True):
                self._memo[_h(t)] = v
        self.embedded += len(todo)
        self.embed_seconds += time.perf_counter() - t0

    def precompute(self, texts: Iterable[str], batch: int = 32) -> None:
        with self._lock:
            self._compute(list(texts), batch)

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        items = list(texts)
        with self._lock:
            self._compute(items)
            if not items:
                return np.zeros((0, self.dim), np.float32)
            return np.vstack([self._memo[_h(t)] for t in items])

    async def aembed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        return self.embed(texts)

    def save(self) -> None:
        if self.cache_file is None:
            return
        with self._lock:
            keys = np.asarray(list(self._memo))
            vectors = (
                np.vstack(list(self._memo.values())) if self._memo else np.zeros((0, self.dim), np.float32)
            )
        self.cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.cache_file.with_suffix(".tmp.npz")
        np.savez(tmp, name=np.asarray(self.name), dim=np.asarray(self.dim), keys=keys, vectors=vectors)
        tmp.replace(self.cache_file)
