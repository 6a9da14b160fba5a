"""Copy and pickle rules of the stateful objects: budget guards and handlers, ledgers, caches and their indexes,
cascade engines and their stats.

These are shared services: they hold budget counters, reservations, connections, an index and the locks that guard
them. A copy that did not share that state would bypass the budget it was meant to enforce, or fill a cache nobody
reads. So:

* ``copy.copy`` and ``copy.deepcopy`` return the object itself. Deep-copying a model that holds one (a pydantic
  ``model_copy(deep=True)``, ``copy.deepcopy(chain)``) therefore works and the copy shares the budget, the cache
  and the counters with the original.
* ``pickle`` raises a ``TypeError`` that names the object and the fix: locks and connections do not cross a process
  boundary, and a copy in another process could not share the state. Build one per process from its settings (a
  SQLite ledger from the same path, a Redis ledger or cache from the same URL share the state through the store).
"""

from __future__ import annotations

from typing import Any, NoReturn

__all__ = ["NotPicklable", "SharedService", "not_picklable"]


def not_picklable(obj: object) -> TypeError:
    """The error pickling a shared service (or a model that holds one) raises."""
    name = type(obj).__name__
    return TypeError(
        f"{name} cannot be pickled: it holds live state (locks, connections, budget, cache or routing counters) that "
        f"every copy must share. Build one {name} per process from its settings instead (a SQLite ledger on the same "
        "path, a Redis ledger or cache on the same URL share their state); see docs/concurrency.md. copy.copy and "
        "copy.deepcopy keep sharing the same object."
    )


class SharedService:
    """Mixin of the stateful service objects: copies are the object itself; pickling raises a clear ``TypeError``.

    Example:
        >>> import copy, pickle
        >>> from frugal_chains.shared.sharing import SharedService
        >>> class Counter(SharedService):
        ...     def __init__(self) -> None:
        ...         self.n = 0
        >>> c = Counter()
        >>> copy.deepcopy(c) is c, copy.copy(c) is c
        (True, True)
        >>> pickle.dumps(c)
        Traceback (most recent call last):
        ...
        TypeError: Counter cannot be pickled: ...
    """

    __slots__ = ()

    def __copy__(self) -> Any:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        return self

    def __reduce_ex__(self, protocol: Any) -> NoReturn:
        raise not_picklable(self)


class NotPicklable:
    """Mixin of the pydantic models that hold shared services (the cascade and cache wrappers): pydantic copies
    them as usual (the services inside stay shared), and pickling raises the same clear ``TypeError`` instead of
    failing on a lock, or of silently dropping the services (LlamaIndex's components drop what does not pickle).
    Put it first among the bases."""

    __slots__ = ()

    def __getstate__(self) -> NoReturn:
        raise not_picklable(self)
