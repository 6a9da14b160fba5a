"""Integrity checks: a model file's sha256 is checked once per process before it loads, and the bundled tokenizer's
on every load; a mismatch raises :class:`~frugal_chains.errors.EmbedderIntegrityError`."""

from __future__ import annotations

import hashlib
import threading
from importlib import resources
from pathlib import Path

from frugal_chains.embeddings.models import MINILM_TOKENIZER_RESOURCE, MINILM_TOKENIZER_SHA256
from frugal_chains.errors import EmbedderIntegrityError

__all__ = ["read_verified_tokenizer", "sha256_file", "verify_file_once"]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


_verified: set[tuple[str, str]] = set()
_verified_lock = threading.Lock()


def verify_file_once(path: Path, expected: str, fix: str) -> None:
    key = (str(path.resolve()), expected)
    with _verified_lock:
        if key in _verified:
            return
        actual = sha256_file(path)
        if actual != expected:
            raise EmbedderIntegrityError(str(path), expected=expected, actual=actual, fix=fix)
        _verified.add(key)


def read_verified_tokenizer() -> bytes:
    """The bundled MiniLM tokenizer file (JSON bytes), after checking its sha256."""
    data = resources.files("frugal_chains").joinpath(MINILM_TOKENIZER_RESOURCE).read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if actual != MINILM_TOKENIZER_SHA256:
        raise EmbedderIntegrityError(
            f"frugal_chains/{MINILM_TOKENIZER_RESOURCE}",
            expected=MINILM_TOKENIZER_SHA256,
            actual=actual,
            fix='Reinstall frugal-chains: pip install --force-reinstall "frugal-chains[embeddings]".',
        )
    return data
