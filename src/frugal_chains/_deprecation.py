"""Old public names kept working for one release, with a ``DeprecationWarning`` that names the new one."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["deprecated_attributes", "warn_renamed"]


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
