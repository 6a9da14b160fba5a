"""Gates from short names: :func:`resolve_gates` turns ``"json"``, ``"refusal"``, ``"nonempty"`` and ``"logprob"``
(and gate objects) into a tuple of gates."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from frugal_chains.errors import ConfigurationError
from frugal_chains.routing.gates.json_gate import JsonGate
from frugal_chains.routing.gates.length_gate import LengthGate
from frugal_chains.routing.gates.logprob import LogprobGate
from frugal_chains.routing.gates.refusal import RefusalGate
from frugal_chains.routing.types import QualityGate

__all__ = ["resolve_gates"]


_NAMED: dict[str, Callable[[], QualityGate]] = {
    "json": JsonGate,
    "refusal": RefusalGate,
    "nonempty": lambda: LengthGate(min_chars=1),
    "logprob": LogprobGate,
}


def resolve_gates(spec: Any) -> tuple[QualityGate, ...]:
    """Gates from ``None``, one gate, a name, or a sequence of gates and names.

    Names: ``"json"`` (:class:`JsonGate`), ``"refusal"`` (:class:`RefusalGate`), ``"nonempty"``
    (``LengthGate(min_chars=1)``), ``"logprob"`` (:class:`LogprobGate`). Any object implementing
    :class:`~frugal_chains.routing.types.QualityGate` passes through.

    Raises:
        ConfigurationError: an unknown name or an object that is not a gate (``field="gates"``).

    Example:
        >>> from frugal_chains.routing import RegexGate, resolve_gates
        >>> [g.name for g in resolve_gates(["nonempty", "refusal", RegexGate(r"\\d")])]
        ['length', 'refusal', 'regex']
        >>> resolve_gates(None)
        ()
    """
    if spec is None:
        return ()
    if isinstance(spec, str) or _is_gate(spec):
        items: list[Any] = [spec]
    elif isinstance(spec, Iterable) and not isinstance(spec, (bytes, Mapping)):
        items = list(spec)
    else:
        raise ConfigurationError(_unknown_gate(spec), field="gates")
    out: list[QualityGate] = []
    for item in items:
        if isinstance(item, str):
            factory = _NAMED.get(item.strip().lower())
            if factory is None:
                raise ConfigurationError(_unknown_gate(item), field="gates")
            out.append(factory())
        elif _is_gate(item):
            out.append(item)
        else:
            raise ConfigurationError(_unknown_gate(item), field="gates")
    return tuple(out)


def _is_gate(obj: object) -> bool:
    return not isinstance(obj, type) and isinstance(obj, QualityGate)


def _unknown_gate(item: object) -> str:
    known = ", ".join(repr(n) for n in _NAMED)
    what = repr(item) if isinstance(item, str) else f"a {type(item).__name__}"
    hint = f" (pass an instance: {item.__name__}())" if isinstance(item, type) else ""
    return (
        f"unknown gate {what}{hint}: use one of the names {known}, or an object implementing QualityGate "
        "(name, needs_full_answer, check, acheck), e.g. RegexGate(...) or CallableGate(fn)"
    )
