"""Progress bars for long work (trainings, ``frugal-chains cache tune``): on stderr, only when it is a terminal
unless asked for. Drawn with ``rich``; without it (or when off) the work runs silently."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from frugal_chains.errors import ConfigurationError

__all__ = ["Advance", "progress_bar", "wants_progress"]

Advance = Callable[[int], None]
"""Moves a bar on by ``n`` steps."""


def wants_progress(progress: bool | None) -> bool:
    """Whether to draw a bar: ``True``/``False`` as given; ``None`` (auto) when stderr is a terminal.

    Example:
        >>> from frugal_chains._progress import wants_progress
        >>> wants_progress(True), wants_progress(False)
        (True, False)
    """
    if progress is None:
        isatty = getattr(sys.stderr, "isatty", None)
        return bool(isatty and isatty())
    if not isinstance(progress, bool):
        raise ConfigurationError(
            f"progress must be True, False or None (a bar when stderr is a terminal), got {progress!r}.",
            field="progress",
        )
    return progress


def _nothing(n: int) -> None:
    return None


@contextmanager
def progress_bar(description: str, total: int, *, progress: bool | None) -> Iterator[Advance]:
    """A bar of ``total`` steps on stderr while the block runs (see :func:`wants_progress`); yields ``advance``.

    Example:
        >>> from frugal_chains._progress import progress_bar
        >>> with progress_bar("embedding", 3, progress=False) as advance:
        ...     advance(3)
    """
    if not wants_progress(progress) or total <= 0:
        yield _nothing
        return
    try:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    except ImportError:  # pragma: no cover - rich is a dependency; a stripped install still runs
        yield _nothing
        return
    console: Any = Console(file=sys.stderr)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as bar:
        task = bar.add_task(description, total=total)

        def advance(n: int) -> None:
            bar.advance(task, n)

        yield advance
