"""Old public names kept working for one release, with a ``DeprecationWarning`` that names the new one."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["OLD_METADATA_KEYS", "deprecated_attributes", "old_metadata_keys", "warn_renamed"]


def warn_renamed(old: str, new: str, *, stacklevel: int = 3) -> None:
    """Warn that ``old`` is deprecated in favour of ``new`` (removed in the next release)."""
    warnings.warn(
        f"{old} is deprecated and will be removed in the next release; use {new}",
        DeprecationWarning,
        stacklevel=stacklevel,
    )


def deprecated_attributes(
    module: str, aliases: Mapping[str, tuple[str, Callable[[], Any]]]
) -> Callable[[str], Any]:
    """A module ``__getattr__`` serving ``aliases`` (``old name -> (new name, getter)``) with a warning."""

    def __getattr__(name: str) -> Any:
        found = aliases.get(name)
        if found is None:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        new, get = found
        warn_renamed(f"{module}.{name}", new)
        return get()

    return __getattr__


_CACHE_STATUS = 'response_metadata["frugal"]["cache"] (frugal_chains.metadata.cache_status)'

OLD_METADATA_KEYS: dict[str, tuple[str, Callable[[], Any]]] = {
    "WRAPPER_METADATA_KEY": ("frugal_chains.metadata.WRAPPER_KEY", lambda: "frugal_chains_wrapper"),
    "WRAPPER_PAYLOAD_KEY": ("frugal_chains.metadata.WRAPPER_KEY", lambda: "frugal_chains_wrapper"),
    "TIER_METADATA_KEY": ("frugal_chains.metadata.TIER_KEY", lambda: "frugal_tier"),
    "TIER_KEY": ("frugal_chains.metadata.TIER_KEY", lambda: "frugal_tier"),
    "FRUGAL_KEY": ("frugal_chains.metadata.FRUGAL_KEY", lambda: "frugal"),
    "CACHE_HIT_METADATA_KEY": (_CACHE_STATUS, lambda: "frugal_cache"),
    "HIT_KEY": (_CACHE_STATUS, lambda: "frugal_cache"),
}
"""The metadata-key constants of the wings before ``frugal_chains.metadata`` (their values, unchanged)."""


def old_metadata_keys(*names: str, **values: str) -> dict[str, tuple[str, Callable[[], Any]]]:
    """The :data:`OLD_METADATA_KEYS` entries ``names``, plus module-specific old constants ``values`` (old name ->
    its value, replaced by ``frugal["cache"]``)."""
    found = {name: OLD_METADATA_KEYS[name] for name in names}
    for name, value in values.items():
        found[name] = (_CACHE_STATUS, _constant(value))
    return found


def _constant(value: str) -> Callable[[], Any]:
    return lambda: value
