"""Filling a JSON schema from a prompt: how the fakes answer tool calls and structured output (no framework)."""

from __future__ import annotations

import re
from typing import Any

__all__ = ["fill_schema"]

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_QUOTED = re.compile(r"'([^']+)'|\"([^\"]+)\"")


def fill_schema(schema: dict[str, Any], prompt: str) -> Any:
    """A value for a JSON schema taken from ``prompt``: numbers, then quoted strings, then the prompt itself."""
    numbers = iter(_NUMBER.findall(prompt))
    quoted = iter(a or b for a, b in _QUOTED.findall(prompt))
    defs = schema.get("$defs") or schema.get("definitions") or {}

    def value(spec: dict[str, Any]) -> Any:
        ref = spec.get("$ref")
        if isinstance(ref, str):
            spec = defs.get(ref.rsplit("/", 1)[-1], {})
        options = spec.get("anyOf") or spec.get("oneOf")
        if options:
            spec = next((o for o in options if o.get("type") != "null"), options[0])
        if "enum" in spec:
            return spec["enum"][0]
        kind = spec.get("type")
        if kind == "object" or "properties" in spec:
            return {key: value(sub) for key, sub in (spec.get("properties") or {}).items()}
        if kind == "array":
            return [value(spec.get("items") or {})]
        if kind in ("integer", "number"):
            found = next(numbers, "0")
            return int(float(found)) if kind == "integer" else float(found)
        if kind == "boolean":
            return True
        if kind == "null":
            return None
        return next(quoted, None) or prompt or "fake"

    return value(schema)
