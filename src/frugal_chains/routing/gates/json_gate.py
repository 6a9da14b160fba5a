"""The JSON gate: the answer is JSON (a fenced block is fine), valid against a schema when one is given."""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from frugal_chains.errors import ConfigurationError
from frugal_chains.routing.gates.common import LocalGate, tool_call_only
from frugal_chains.routing.types import GateContext, GateResult

__all__ = ["JsonGate"]


_FENCE = re.compile(r"```[ \t]*(?:json|JSON|json5)?[ \t]*\r?\n(.*?)```", re.DOTALL)


def _json_candidates(text: str) -> list[str]:
    stripped = text.strip()
    out = [stripped]
    out.extend(m.group(1).strip() for m in _FENCE.finditer(text))
    return out


class JsonGate(LocalGate):
    """Passes when the answer text is JSON, optionally valid against a schema.

    The whole text must parse (surrounding whitespace is fine), or a fenced code block in it (````` ```json ... ```
    `````). An answer that is only tool calls is skipped (passed, ``skipped=True``): the provider already
    returned structured arguments.

    Args:
        schema: ``None`` (any JSON), a pydantic ``BaseModel`` subclass (``model_validate``), or a JSON Schema
            dict (validated with the ``jsonschema`` package, which must then be installed).

    Raises:
        ConfigurationError: ``schema`` is none of these, an invalid JSON Schema, or ``jsonschema`` is missing
            (``field="schema"``).

    Example:
        >>> from frugal_chains.routing import GateContext, JsonGate, TierAnswer
        >>> def ctx(text):
        ...     return GateContext(messages=[], answer=TierAnswer(text=text), tier="t", tier_index=0, n_tiers=2)
        >>> gate = JsonGate({"type": "object", "required": ["city"]})
        >>> gate.check(ctx('```json\\n{"city": "Paris"}\\n```')).passed
        True
        >>> gate.check(ctx('{"town": "Paris"}')).reason
        "schema: 'city' is a required property"
        >>> JsonGate().check(ctx("Paris")).passed
        False
    """

    def __init__(self, schema: Any = None) -> None:
        self.schema = schema
        self._validate: Callable[[Any], str | None]
        if schema is None:
            self._validate = lambda obj: None
        elif isinstance(schema, type) and callable(getattr(schema, "model_validate", None)):
            self._validate = self._pydantic_validator(schema)
        elif isinstance(schema, Mapping):
            self._validate = self._jsonschema_validator(schema)
        else:
            raise ConfigurationError(
                f"schema must be None, a pydantic BaseModel subclass or a JSON Schema dict, got "
                f"{type(schema).__name__}",
                field="schema",
            )

    @property
    def name(self) -> str:
        """``"json"``."""
        return "json"

    def __repr__(self) -> str:
        return f"JsonGate(schema={self.schema!r})"

    @staticmethod
    def _pydantic_validator(model: type) -> Callable[[Any], str | None]:
        def validate(obj: Any) -> str | None:
            try:
                model.model_validate(obj)  # type: ignore[attr-defined]
            except Exception as e:  # pydantic.ValidationError, or a validator's own error
                errors = getattr(e, "errors", None)
                if callable(errors):
                    try:
                        first = errors()[0]
                        loc = ".".join(str(p) for p in first.get("loc", ())) or "(root)"
                        return f"{loc}: {first.get('msg', e)}"
                    except Exception:
                        pass
                return str(e).splitlines()[0] if str(e) else type(e).__name__
            return None

        return validate

    @staticmethod
    def _jsonschema_validator(schema: Mapping[str, Any]) -> Callable[[Any], str | None]:
        try:
            jsonschema: Any = importlib.import_module("jsonschema")
        except ImportError as e:
            raise ConfigurationError(
                "a JSON Schema dict needs the jsonschema package (pip install jsonschema), or pass a pydantic "
                "model as schema",
                field="schema",
            ) from e
        cls = jsonschema.validators.validator_for(schema)
        try:
            cls.check_schema(schema)
        except jsonschema.exceptions.SchemaError as e:
            raise ConfigurationError(f"schema is not a valid JSON Schema: {e.message}", field="schema") from e
        validator = cls(dict(schema))

        def validate(obj: Any) -> str | None:
            error = jsonschema.exceptions.best_match(validator.iter_errors(obj))
            if error is None:
                return None
            path = ".".join(str(p) for p in error.absolute_path)
            return f"{path}: {error.message}" if path else str(error.message)

        return validate

    def check(self, ctx: GateContext) -> GateResult:
        """Parse and validate ``ctx.answer.text``."""
        answer = ctx.answer
        if tool_call_only(answer):
            return GateResult(gate=self.name, passed=True, skipped=True, reason="tool-call answer")
        if not answer.text.strip():
            return GateResult(gate=self.name, passed=False, reason="empty answer")
        parse_error = ""
        for candidate in _json_candidates(answer.text):
            try:
                obj = json.loads(candidate)
            except (ValueError, RecursionError) as e:
                parse_error = parse_error or f"not JSON: {e}"
                continue
            problem = self._validate(obj)
            if problem is None:
                return GateResult(gate=self.name, passed=True)
            return GateResult(gate=self.name, passed=False, reason=f"schema: {problem}"[:300])
        return GateResult(gate=self.name, passed=False, reason=parse_error[:300])
