"""Quality gates: checks on a tier's answer after the call; a failed gate escalates to the next tier.

Every gate implements :class:`~frugal_chains.routing.types.QualityGate` (``name``, ``needs_full_answer``,
``check(ctx)``, ``async acheck(ctx)``) and returns a :class:`~frugal_chains.routing.types.GateResult`. Gates
never raise on an odd answer (an empty text, a tool call, non-JSON, missing logprobs): they fail it or skip it
(``skipped=True`` counts as passed) with a reason. Errors of the calls a gate makes itself (a judge, extra
samples) propagate; the engine counts them as a failed gate.

============================  ======================================================================
gate                          passes when
============================  ======================================================================
:class:`JsonGate`             the text is JSON (a fenced block is fine), valid against a schema if given
:class:`RegexGate`            a pattern is (``must_match=False``: is not) found
:class:`LengthGate`           the length in characters / tokens is within bounds
:class:`RefusalGate`          no refusal and (by default) no uncertainty phrase
:class:`LogprobGate`          the mean token probability is high enough (needs logprobs)
:class:`SelfConsistencyGate`  most of ``n`` answers of the same tier agree on the final answer
:class:`LLMJudgeGate`         a judge model rates the answer high enough
:class:`CallableGate`         your function says so
============================  ======================================================================

:func:`resolve_gates` turns the short names ``"json"``, ``"refusal"``, ``"nonempty"`` and ``"logprob"`` into gates.
The trained answer verifier is :class:`frugal_chains.routing.TrainedVerifier`.

Example:
    >>> from frugal_chains.routing import GateContext, RefusalGate, TierAnswer
    >>> ctx = GateContext(messages=[{"role": "user", "content": "Fix my regex"}],
    ...                   answer=TierAnswer(text="Sorry, I can't help with that."), tier="cheap",
    ...                   tier_index=0, n_tiers=2)
    >>> RefusalGate().check(ctx).passed
    False
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import math
import re
import unicodedata
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from frugal_chains.accounting.provider_usage import get_field, usage_from_provider
from frugal_chains.accounting.tokens import count_text_tokens
from frugal_chains.accounting.usage import Usage
from frugal_chains.errors import ConfigurationError
from frugal_chains.routing.types import (
    GateContext,
    GateResult,
    QualityGate,
    TierAnswer,
    content_text,
    user_turns,
)

__all__ = [
    "DEFAULT_JUDGE_PROMPT",
    "CallableGate",
    "JsonGate",
    "LLMJudgeGate",
    "LengthGate",
    "LogprobGate",
    "RefusalGate",
    "RegexGate",
    "SelfConsistencyGate",
    "default_extract",
    "resolve_gates",
]


# ----------------------------------------------------------------------------------------------------
# helpers shared by the gates (and the trained verifier)


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _tool_call_only(answer: TierAnswer) -> bool:
    return bool(answer.tool_calls) and not answer.text.strip()


def _check_fraction(value: object, field: str, *, allow_zero: bool = False) -> float:
    """A number in (0, 1] (or [0, 1] with ``allow_zero``), else ConfigurationError naming ``field``."""
    v = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan
    if not (v >= 0.0 if allow_zero else v > 0.0) or v > 1.0:  # NaN fails both
        rng = "[0, 1]" if allow_zero else "(0, 1]"
        raise ConfigurationError(f"{field} must be a number in {rng}, got {value!r}", field=field)
    return v


def _is_async_callable(fn: object) -> bool:
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 - an object with an async __call__
    return inspect.iscoroutinefunction(call)


def _running_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


async def _await(value: Awaitable[Any]) -> Any:
    return await value


def _resolve_sync(value: Any, what: str) -> Any:
    """The result of a sync call that may have returned an awaitable: run it when no loop is running."""
    if not inspect.isawaitable(value):
        return value
    if _running_loop():
        if inspect.iscoroutine(value):
            value.close()
        raise TypeError(
            f"{what} is async and an event loop is running: use the async path (acheck / ainvoke / arun), "
            "or pass a sync function"
        )
    return asyncio.run(_await(value))


# "1,000" is a thousand, "(1,2)" two numbers.
_NUMBER = re.compile(r"(?<![\w.])-?\$?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?")
_FINAL_MARKER = re.compile(
    r"####|\bthe (?:final |correct )?answer is\b|\bfinal answer\b|\\boxed\{|\banswer\s*[:=]", re.IGNORECASE
)


def _to_decimal(token: str) -> Decimal | None:
    s = token.replace(",", "").replace("$", "")
    try:
        d = Decimal(s)
    except InvalidOperation:
        return None
    return d if d.is_finite() else None


def _numbers(text: str) -> list[Decimal]:
    """Every number in ``text`` (``1,000`` and ``$18`` included), in order."""
    out: list[Decimal] = []
    for m in _NUMBER.finditer(text):
        d = _to_decimal(m.group())
        if d is not None:
            out.append(d)
    return out


def _final_number(text: str) -> Decimal | None:
    """The number after the last final-answer marker (``####``, "the answer is" ...), else the last number."""
    markers = list(_FINAL_MARKER.finditer(text))
    if markers:
        after = _numbers(text[markers[-1].end() :])
        if after:
            return after[0]
    nums = _numbers(text)
    return nums[-1] if nums else None


def _format_number(d: Decimal) -> str:
    """``3.0`` -> ``"3"``, ``2.50`` -> ``"2.5"``, ``1000`` -> ``"1000"``."""
    if d == d.to_integral_value():
        return str(int(d))
    return format(d.normalize(), "f")


_PUNCT = re.compile(r"[^\w\s]+")
_SPACE = re.compile(r"\s+")


def default_extract(text: str) -> str:
    """The final answer of ``text``, normalised for comparison (used by :class:`SelfConsistencyGate`).

    With numbers in the text: the number after the last ``####`` / "the answer is" / "final answer", else the last
    number, with commas and ``$`` removed and ``3.0 == 3``. Without numbers: the casefolded text with punctuation
    and whitespace squeezed.

    Example:
        >>> from frugal_chains.routing.gates import default_extract
        >>> default_extract("3 + 4 = 7, so the answer is 1,000.0 apples")
        '1000'
        >>> default_extract("  Paris!  ") == default_extract("paris")
        True
    """
    number = _final_number(text)
    if number is not None:
        return _format_number(number)
    return _SPACE.sub(" ", _PUNCT.sub(" ", unicodedata.normalize("NFKC", text).casefold())).strip()


def _tool_calls_key(answer: TierAnswer) -> str:
    calls = [
        {"name": str(c.get("name", "")), "args": c.get("args", c.get("arguments", {}))}
        for c in answer.tool_calls
    ]
    return "tool_calls:" + json.dumps(calls, sort_keys=True, default=str)


# ----------------------------------------------------------------------------------------------------
# JSON


_FENCE = re.compile(r"```[ \t]*(?:json|JSON|json5)?[ \t]*\r?\n(.*?)```", re.DOTALL)


def _json_candidates(text: str) -> list[str]:
    stripped = text.strip()
    out = [stripped]
    out.extend(m.group(1).strip() for m in _FENCE.finditer(text))
    return out


class JsonGate:
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

    @property
    def needs_full_answer(self) -> bool:
        """True: the whole text must be seen."""
        return True

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
        if _tool_call_only(answer):
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

    async def acheck(self, ctx: GateContext) -> GateResult:
        """Same as :meth:`check` (no I/O)."""
        return self.check(ctx)


# ----------------------------------------------------------------------------------------------------
# regex and length


class RegexGate:
    """Passes when ``pattern`` is found in the answer text (``re.search``), or with ``must_match=False`` when it
    is not. An answer that is only tool calls is skipped (passed).

    Args:
        pattern: a regular expression (a string or a compiled pattern).
        must_match: True: the pattern must occur; False: it must not.
        flags: ``re`` flags for a string pattern (e.g. ``re.IGNORECASE``).

    Raises:
        ConfigurationError: the pattern does not compile (``field="pattern"``).

    Example:
        >>> from frugal_chains.routing import GateContext, RegexGate, TierAnswer
        >>> def ctx(text):
        ...     return GateContext(messages=[], answer=TierAnswer(text=text), tier="t", tier_index=0, n_tiers=2)
        >>> RegexGate(r"####\\s*\\d+").check(ctx("so 9 * 2 = 18\\n#### 18")).passed
        True
        >>> RegexGate(r"TODO", must_match=False).check(ctx("def f(): pass  # TODO")).passed
        False
    """

    def __init__(self, pattern: str | re.Pattern[str], *, must_match: bool = True, flags: int = 0) -> None:
        if isinstance(pattern, re.Pattern):
            if flags:
                raise ConfigurationError("flags cannot be given with a compiled pattern", field="flags")
            self.pattern: re.Pattern[str] = pattern
        elif isinstance(pattern, str):
            try:
                self.pattern = re.compile(pattern, flags)
            except re.error as e:
                raise ConfigurationError(f"pattern {pattern!r} does not compile: {e}", field="pattern") from e
        else:
            raise ConfigurationError(
                f"pattern must be a regex string or compiled pattern, got {type(pattern).__name__}",
                field="pattern",
            )
        if not isinstance(must_match, bool):
            raise ConfigurationError("must_match must be True or False", field="must_match")
        self.must_match = must_match

    @property
    def name(self) -> str:
        """``"regex"``."""
        return "regex"

    @property
    def needs_full_answer(self) -> bool:
        """True."""
        return True

    def __repr__(self) -> str:
        return f"RegexGate({self.pattern.pattern!r}, must_match={self.must_match})"

    def check(self, ctx: GateContext) -> GateResult:
        """Search the answer text."""
        if _tool_call_only(ctx.answer):
            return GateResult(gate=self.name, passed=True, skipped=True, reason="tool-call answer")
        found = self.pattern.search(ctx.answer.text) is not None
        if found == self.must_match:
            return GateResult(gate=self.name, passed=True)
        what = "no match for" if self.must_match else "forbidden match for"
        return GateResult(gate=self.name, passed=False, reason=f"{what} {self.pattern.pattern!r}"[:300])

    async def acheck(self, ctx: GateContext) -> GateResult:
        """Same as :meth:`check`."""
        return self.check(ctx)


class LengthGate:
    """Passes when the answer's length is within bounds, in characters and/or tokens.

    Tokens are counted with :func:`frugal_chains.accounting.count_text_tokens` (the answer model's OpenAI
    encoding, ``o200k_base`` for other models). Surrounding whitespace is not counted. An answer that is only
    tool calls passes (skipped). Bounds are inclusive; give at least one.

    Args:
        min_chars: fewest characters (``LengthGate(min_chars=1)`` is the ``"nonempty"`` gate).
        max_chars: most characters.
        min_tokens: fewest tokens.
        max_tokens: most tokens.

    Raises:
        ConfigurationError: a bound is not an int >= 0, a minimum exceeds its maximum, or no bound is given
            (names the field).

    Example:
        >>> from frugal_chains.routing import GateContext, LengthGate, TierAnswer
        >>> def ctx(text):
        ...     return GateContext(messages=[], answer=TierAnswer(text=text), tier="t", tier_index=0, n_tiers=2)
        >>> gate = LengthGate(min_chars=3, max_tokens=5)
        >>> gate.check(ctx("Paris")).passed, gate.check(ctx("ok")).reason
        (True, '2 chars < min_chars=3')
    """

    def __init__(
        self,
        *,
        min_chars: int | None = None,
        max_chars: int | None = None,
        min_tokens: int | None = None,
        max_tokens: int | None = None,
    ) -> None:
        bounds = {
            "min_chars": min_chars,
            "max_chars": max_chars,
            "min_tokens": min_tokens,
            "max_tokens": max_tokens,
        }
        for field, v in bounds.items():
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
                raise ConfigurationError(f"{field} must be None or an int >= 0, got {v!r}", field=field)
        if all(v is None for v in bounds.values()):
            raise ConfigurationError(
                "LengthGate needs at least one bound: min_chars, max_chars, min_tokens or max_tokens",
                field="min_chars",
            )
        for lo, hi in (("min_chars", "max_chars"), ("min_tokens", "max_tokens")):
            a, b = bounds[lo], bounds[hi]
            if a is not None and b is not None and a > b:
                raise ConfigurationError(f"{lo}={a} exceeds {hi}={b}", field=lo)
        self.min_chars = min_chars
        self.max_chars = max_chars
        self.min_tokens = min_tokens
        self.max_tokens = max_tokens

    @property
    def name(self) -> str:
        """``"length"``."""
        return "length"

    @property
    def needs_full_answer(self) -> bool:
        """True."""
        return True

    def __repr__(self) -> str:
        args = ", ".join(
            f"{k}={getattr(self, k)}"
            for k in ("min_chars", "max_chars", "min_tokens", "max_tokens")
            if getattr(self, k) is not None
        )
        return f"LengthGate({args})"

    def check(self, ctx: GateContext) -> GateResult:
        """Measure the answer text."""
        if _tool_call_only(ctx.answer):
            return GateResult(gate=self.name, passed=True, skipped=True, reason="tool-call answer")
        text = ctx.answer.text.strip()
        chars = len(text)
        if self.min_chars is not None and chars < self.min_chars:
            return GateResult(
                gate=self.name, passed=False, reason=f"{chars} chars < min_chars={self.min_chars}"
            )
        if self.max_chars is not None and chars > self.max_chars:
            return GateResult(
                gate=self.name, passed=False, reason=f"{chars} chars > max_chars={self.max_chars}"
            )
        if self.min_tokens is not None or self.max_tokens is not None:
            tokens = count_text_tokens(text, ctx.answer.model)
            if self.min_tokens is not None and tokens < self.min_tokens:
                return GateResult(
                    gate=self.name, passed=False, reason=f"{tokens} tokens < min_tokens={self.min_tokens}"
                )
            if self.max_tokens is not None and tokens > self.max_tokens:
                return GateResult(
                    gate=self.name, passed=False, reason=f"{tokens} tokens > max_tokens={self.max_tokens}"
                )
        return GateResult(gate=self.name, passed=True)

    async def acheck(self, ctx: GateContext) -> GateResult:
        """Same as :meth:`check`."""
        return self.check(ctx)


# ----------------------------------------------------------------------------------------------------
# refusal and uncertainty

# Patterns run on normalised text: NFKC, casefolded, apostrophes removed ("I'm" -> "im"), spaces squeezed.
_CANT = r"(?:cant|cannot|can not|wont|will not|am unable to|im unable to|am not able to|im not able to)"
_REFUSAL_PATTERNS: tuple[str, ...] = (
    rf"\bi {_CANT} (?:help|assist|comply|fulfil|fulfill|answer (?:that|this|your)|do (?:that|this)"
    r"|provide (?:that|this|any|help|assistance|an answer|information|the information)|support (?:that|this)"
    r"|engage|participate)\b",
    r"\bi(?:m| am) (?:unable|not able|not allowed|not permitted) to\b",
    r"\bas an ai(?: language model| model| assistant| developed by|,)",
    r"\bi (?:must|have to|will have to) (?:decline|refuse)\b",
    r"\bi(?:m| am) (?:sorry|afraid),? (?:but )?i (?:cant|cannot|can not|wont|am unable|im unable|am not able"
    r"|im not able|dont|do not)\b",
    r"\bi apologi[sz]e,? (?:but )?i (?:cant|cannot|can not|wont|am unable|im unable)\b",
    r"\b(?:that|this)(?:s| is) not something i (?:can|am able to|m able to) (?:help|assist)",
    r"\bi (?:cant|cannot|wont|will not) (?:help|assist) (?:you )?with\b",
)
_UNCERTAINTY_PATTERNS: tuple[str, ...] = (
    r"\bi(?:m| am) not (?:sure|certain|confident)\b",
    r"\bi(?:m| am) uncertain\b",
    # "I don't know." / "I don't know what ..." but not "I don't know of any reason not to ..."
    r"\bi (?:dont|do not) know(?=\s*(?:[.,;:!?)]|$)|\s+(?:the answer|the exact|the correct|the specific|what|which"
    r"|who|whom|where|when|why|how|if|whether|for sure|for certain|exactly|enough|much about|anything about))",
    r"\bi (?:cant|cannot|can not|am unable to|im unable to|am not able to|im not able to) (?:determine|say for "
    r"(?:sure|certain)|be (?:sure|certain)|tell for (?:sure|certain)|know)\b",
    r"\bit(?:s| is) (?:unclear|not clear|impossible to (?:say|determine|know|tell)|hard to say|difficult to say)\b"
    r"(?!\s+to\b)",
    r"\b(?:there(?:s| is| are) (?:not|no)|there isnt|there arent) (?:enough|sufficient) (?:information|data"
    r"|details|context)\b",
    r"\b(?:insufficient|not enough) information\b",
    r"\b(?:cannot|cant|can not) be determined\b",
    r"\bi have no (?:way of knowing|idea)\b",
)
_APOSTROPHES = re.compile(r"['\u2019\u2018\u02bc\u0060\u00b4\u2032]")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_SHORT_SENTENCE_WORDS = 8
_KEY_OPENING_SENTENCES = 2


# Quoted or code spans are someone else's words ('people say "I don't know"'): they are not matched.
_QUOTED = re.compile(
    '"[^"\n]{0,300}"|\u201c[^\u201c\u201d\n]{0,300}\u201d|`[^`\n]{0,300}`'
    "|(?<!\\w)['\u2018](?:[^'\u2018\u2019\n]|['\u2019](?=\\w)){1,300}?['\u2019](?!\\w)"
)


def _normalise_phrase_text(text: str) -> str:
    text = _QUOTED.sub(" ", unicodedata.normalize("NFKC", text))
    text = text.casefold()
    text = _APOSTROPHES.sub("", text)
    return re.sub(r"[ \t\r\f\v]+", " ", text)


def _sentences(text: str) -> list[str]:
    out = []
    for s in _SENTENCE_END.split(text):
        s = s.strip(' *_>#-"“”`')
        if s:
            out.append(s)
    return out


class RefusalGate:
    """Fails refusals ("I can't help with that", "As an AI language model ...") and, with ``uncertainty=True``,
    uncertainty ("I'm not sure", "I don't know", "I cannot determine", "it is unclear", "there is not enough
    information" ...).

    Matching is case- and apostrophe-insensitive (``I\u2019m`` = ``I'm`` = ``Im``). To keep false positives low a phrase
    counts only in the answer's **key sentences**: its first two sentences, its last sentence, and any short
    sentence (8 words or fewer) anywhere, such as a standalone "I'm not sure." A long, helpful answer that says
    "I'm not sure which version you use, so here are both" in its fifth sentence passes.

    Borderline cases, decided on purpose: "I don't know" counts only when it ends the clause or is followed by
    what is not known ("I don't know what / the answer / how ..."), so "I don't know of any reason not to"
    passes; "I'm not sure, but I think it's 42" fails (a hedged answer is worth a stronger tier when there is
    one); "As an AI language model" fails even before a helpful answer. Answers that are only tool calls are
    skipped (passed).

    Args:
        uncertainty: also fail on uncertainty phrases (default True).
        extra_phrases: more phrases (plain text, not regexes), added to the built-in ones.
        phrases: replace **all** the built-in phrases (refusal and uncertainty; ``uncertainty`` is then ignored)
            with these plain-text phrases.

    Raises:
        ConfigurationError: a phrase is not a non-empty string (``field="phrases"`` / ``"extra_phrases"``).

    Example:
        >>> from frugal_chains.routing import GateContext, RefusalGate, TierAnswer
        >>> def ctx(text):
        ...     return GateContext(messages=[], answer=TierAnswer(text=text), tier="t", tier_index=0, n_tiers=2)
        >>> gate = RefusalGate()
        >>> gate.check(ctx("I\u2019m not sure. It could be 1912.")).passed
        False
        >>> gate.check(ctx("I don't know of any reason not to. Go ahead.")).passed
        True
        >>> RefusalGate(uncertainty=False).check(ctx("I'm not sure. It could be 1912.")).passed
        True
    """

    def __init__(
        self,
        *,
        uncertainty: bool = True,
        extra_phrases: Iterable[str] = (),
        phrases: Iterable[str] | None = None,
    ) -> None:
        if not isinstance(uncertainty, bool):
            raise ConfigurationError("uncertainty must be True or False", field="uncertainty")
        extra_list = (
            [extra_phrases]
            if isinstance(extra_phrases, str)
            else self._listed(extra_phrases, "extra_phrases")
        )
        phrase_list = (
            None
            if phrases is None
            else ([phrases] if isinstance(phrases, str) else self._listed(phrases, "phrases"))
        )
        extra = self._literal(extra_list, "extra_phrases")
        if phrase_list is not None:
            patterns = self._literal(phrase_list, "phrases")
            if not patterns:
                raise ConfigurationError(
                    "phrases must not be empty (use None for the built-ins)", field="phrases"
                )
        else:
            patterns = list(_REFUSAL_PATTERNS) + (list(_UNCERTAINTY_PATTERNS) if uncertainty else [])
        self.uncertainty = uncertainty
        self.extra_phrases: tuple[str, ...] = tuple(extra_list)
        self.phrases: tuple[str, ...] | None = None if phrase_list is None else tuple(phrase_list)
        self._regex = re.compile("|".join(f"(?:{p})" for p in [*patterns, *extra]))

    @staticmethod
    def _listed(phrases: Iterable[str], field: str) -> list[str]:
        try:
            return list(phrases)
        except TypeError as e:
            raise ConfigurationError(f"{field} must be a list of strings", field=field) from e

    @staticmethod
    def _literal(items: list[str], field: str) -> list[str]:
        out = []
        for p in items:
            if not isinstance(p, str) or not p.strip():
                raise ConfigurationError(f"{field} must contain non-empty strings, got {p!r}", field=field)
            norm = re.escape(_normalise_phrase_text(p).strip()).replace(r"\ ", r"\s+")
            out.append(rf"(?<!\w){norm}(?!\w)")
        return out

    @property
    def name(self) -> str:
        """``"refusal"``."""
        return "refusal"

    @property
    def needs_full_answer(self) -> bool:
        """True."""
        return True

    def __repr__(self) -> str:
        return f"RefusalGate(uncertainty={self.uncertainty})"

    def find(self, text: str) -> str | None:
        """The refusal or uncertainty phrase found in ``text``'s key sentences (normalised), or None.

        Example:
            >>> from frugal_chains.routing import RefusalGate
            >>> RefusalGate().find("As an AI language model, I cannot browse.")
            'as an ai language model'
        """
        sentences = _sentences(_normalise_phrase_text(text))
        if not sentences:
            return None
        key = sentences[:_KEY_OPENING_SENTENCES]
        if len(sentences) > _KEY_OPENING_SENTENCES:
            key.append(sentences[-1])
        key.extend(s for s in sentences[_KEY_OPENING_SENTENCES:-1] if len(s.split()) <= _SHORT_SENTENCE_WORDS)
        for sentence in key:
            m = self._regex.search(sentence)
            if m is not None:
                return m.group(0)
        return None

    def check(self, ctx: GateContext) -> GateResult:
        """Look for refusal / uncertainty phrases in the answer text."""
        if _tool_call_only(ctx.answer):
            return GateResult(gate=self.name, passed=True, skipped=True, reason="tool-call answer")
        found = self.find(ctx.answer.text)
        if found is None:
            return GateResult(gate=self.name, passed=True)
        return GateResult(gate=self.name, passed=False, reason=f"found {found!r}")

    async def acheck(self, ctx: GateContext) -> GateResult:
        """Same as :meth:`check`."""
        return self.check(ctx)


# ----------------------------------------------------------------------------------------------------
# log-probabilities


class LogprobGate:
    """Passes when the model was confident: ``exp(mean token logprob) >= min_mean_prob`` (the geometric mean of
    the token probabilities), and, with ``min_token_prob``, no token below it. ``score`` is that mean probability.

    Needs a provider that returns log-probabilities (``ChatOpenAI(logprobs=True)``); the adapter puts them in
    ``TierAnswer.logprobs`` (natural logs, one per output token).

    Args:
        min_mean_prob: in (0, 1].
        min_token_prob: ``None`` or in (0, 1]: every token's probability must reach it.
        on_missing: ``"pass"`` (default: skipped, counted as passed) or ``"fail"`` when there are no logprobs.

    Raises:
        ConfigurationError: a value out of range (names the field).

    Example:
        >>> import math
        >>> from frugal_chains.routing import GateContext, LogprobGate, TierAnswer
        >>> def ctx(probs):
        ...     a = TierAnswer(text="x", logprobs=None if probs is None else tuple(math.log(p) for p in probs))
        ...     return GateContext(messages=[], answer=a, tier="t", tier_index=0, n_tiers=2)
        >>> gate = LogprobGate(min_mean_prob=0.7)
        >>> r = gate.check(ctx([0.9, 0.8, 0.95]))
        >>> r.passed, round(r.score, 3)
        (True, 0.881)
        >>> gate.check(ctx([0.9, 0.2])).passed
        False
        >>> gate.check(ctx(None)).skipped
        True
    """

    def __init__(
        self,
        *,
        min_mean_prob: float = 0.7,
        min_token_prob: float | None = None,
        on_missing: Literal["pass", "fail"] = "pass",
    ) -> None:
        self.min_mean_prob = _check_fraction(min_mean_prob, "min_mean_prob")
        self.min_token_prob = (
            None if min_token_prob is None else _check_fraction(min_token_prob, "min_token_prob")
        )
        if on_missing not in ("pass", "fail"):
            raise ConfigurationError(
                f'on_missing must be "pass" or "fail", got {on_missing!r}', field="on_missing"
            )
        self.on_missing: Literal["pass", "fail"] = on_missing

    @property
    def name(self) -> str:
        """``"logprob"``."""
        return "logprob"

    @property
    def needs_full_answer(self) -> bool:
        """True."""
        return True

    def __repr__(self) -> str:
        return (
            f"LogprobGate(min_mean_prob={self.min_mean_prob}, min_token_prob={self.min_token_prob}, "
            f"on_missing={self.on_missing!r})"
        )

    def check(self, ctx: GateContext) -> GateResult:
        """Compare the answer's token probabilities with the bounds."""
        raw = ctx.answer.logprobs
        values = [min(0.0, float(v)) for v in raw or () if _is_number(v) and not math.isnan(float(v))]
        if not values:
            reason = "no logprobs returned"
            if self.on_missing == "pass":
                return GateResult(gate=self.name, passed=True, skipped=True, reason=reason)
            return GateResult(gate=self.name, passed=False, reason=reason)
        mean_prob = math.exp(sum(values) / len(values))
        if mean_prob < self.min_mean_prob:
            return GateResult(
                gate=self.name,
                passed=False,
                score=mean_prob,
                reason=f"mean token probability {mean_prob:.3f} < {self.min_mean_prob}",
            )
        if self.min_token_prob is not None:
            lowest = math.exp(min(values))
            if lowest < self.min_token_prob:
                return GateResult(
                    gate=self.name,
                    passed=False,
                    score=mean_prob,
                    reason=f"a token has probability {lowest:.3f} < {self.min_token_prob}",
                )
        return GateResult(gate=self.name, passed=True, score=mean_prob)

    async def acheck(self, ctx: GateContext) -> GateResult:
        """Same as :meth:`check`."""
        return self.check(ctx)


# ----------------------------------------------------------------------------------------------------
# self-consistency


class SelfConsistencyGate:
    """Passes when the tier gives the same final answer most of the time: ``n - 1`` more answers are sampled
    from the same tier (``ctx.sample`` / ``ctx.asample``, supplied by the adapter; their cost is added to the
    attempt), and ``agreement`` = the share of all ``n`` answers whose extracted final answer equals the
    original's. ``score`` = agreement.

    The default extractor (:func:`default_extract`) takes, from a text with numbers, the number after ``####`` /
    "the answer is" / "final answer", else the last number (``1,000`` = ``1000``, ``3.0`` = ``3``); from other
    texts, the casefolded text without punctuation. Answers that are only tool calls compare their calls (names
    and arguments). Without a sampler the gate is skipped (passed) with a reason. Samples need a temperature
    above 0 to disagree at all.

    Args:
        n: answers in all (the original + ``n - 1`` samples), 2..20.
        min_agreement: in (0, 1], compared with the agreement rounded to two decimals: with ``n=3`` and
            ``0.67``, 2 of 3 answers must agree (2/3 = 0.666... counts as 0.67).
        extract: ``text -> str | None`` to compare by instead of the default (``None`` never agrees).

    Raises:
        ConfigurationError: ``n``, ``min_agreement`` or ``extract`` invalid (names the field).

    Example:
        >>> from frugal_chains.routing import GateContext, SelfConsistencyGate, TierAnswer
        >>> samples = [TierAnswer(text="... so the answer is 18."), TierAnswer(text="#### 20")]
        >>> ctx = GateContext(messages=[], answer=TierAnswer(text="9 * 2 = 18\\n#### 18"), tier="t",
        ...                   tier_index=0, n_tiers=2, sample=lambda k: samples[:k])
        >>> r = SelfConsistencyGate(n=3, min_agreement=0.67).check(ctx)
        >>> r.passed, round(r.score, 2)
        (True, 0.67)
    """

    def __init__(
        self,
        *,
        n: int = 3,
        min_agreement: float = 0.67,
        extract: Callable[[str], str | None] | None = None,
    ) -> None:
        if not isinstance(n, int) or isinstance(n, bool) or not 2 <= n <= 20:
            raise ConfigurationError(f"n must be an int in 2..20, got {n!r}", field="n")
        self.n = n
        self.min_agreement = _check_fraction(min_agreement, "min_agreement")
        if extract is not None and not callable(extract):
            raise ConfigurationError("extract must be a callable text -> str, or None", field="extract")
        self.extract = extract

    @property
    def name(self) -> str:
        """``"self_consistency"``."""
        return "self_consistency"

    @property
    def needs_full_answer(self) -> bool:
        """True."""
        return True

    def __repr__(self) -> str:
        return f"SelfConsistencyGate(n={self.n}, min_agreement={self.min_agreement})"

    def _key(self, answer: TierAnswer) -> str | None:
        if self.extract is None:
            if _tool_call_only(answer):
                return _tool_calls_key(answer)
            key = default_extract(answer.text)
            return key or None
        value = self.extract(answer.text)
        return None if value is None else str(value)

    def _verdict(self, original: TierAnswer, samples: Sequence[TierAnswer]) -> GateResult:
        samples = [TierAnswer(text=s) if isinstance(s, str) else s for s in samples]
        samples = [s for s in samples if isinstance(s, TierAnswer)]
        if not samples:
            return GateResult(
                gate=self.name, passed=True, skipped=True, reason="the sampler returned no answers"
            )
        target = self._key(original)
        if target is None:
            return GateResult(gate=self.name, passed=False, score=0.0, reason="no final answer to compare")
        agree = 1 + sum(1 for s in samples if self._key(s) == target)
        total = 1 + len(samples)
        agreement = agree / total
        reason = f"{agree}/{total} answers agree on {target[:60]!r}"
        # Compared to two decimals, so min_agreement=0.67 means "two thirds" (2/3 = 0.666... passes).
        passed = round(agreement, 2) >= self.min_agreement
        return GateResult(gate=self.name, passed=passed, score=agreement, reason=reason)

    def check(self, ctx: GateContext) -> GateResult:
        """Sample ``n - 1`` more answers with ``ctx.sample`` and compare."""
        if ctx.sample is None:
            return GateResult(
                gate=self.name,
                passed=True,
                skipped=True,
                reason="no sampler: the adapter cannot sample this tier",
            )
        return self._verdict(ctx.answer, list(ctx.sample(self.n - 1)))

    async def acheck(self, ctx: GateContext) -> GateResult:
        """Sample with ``ctx.asample`` (``ctx.sample`` in a worker thread when only that is given)."""
        if ctx.asample is not None:
            samples = list(await ctx.asample(self.n - 1))
        elif ctx.sample is not None:
            samples = list(await asyncio.to_thread(ctx.sample, self.n - 1))
        else:
            return GateResult(
                gate=self.name,
                passed=True,
                skipped=True,
                reason="no sampler: the adapter cannot sample this tier",
            )
        return self._verdict(ctx.answer, samples)


# ----------------------------------------------------------------------------------------------------
# LLM judge

DEFAULT_JUDGE_PROMPT = (
    "[Instruction]\n"
    "Please act as an impartial judge and evaluate the quality of the response provided by an AI assistant to "
    "the user question displayed below. Your evaluation should consider factors such as the helpfulness, "
    "relevance, accuracy, depth, creativity, and level of detail of the response. Begin your evaluation by "
    "providing a short explanation. Be as objective as possible. After providing your explanation, you must rate "
    'the response on a scale of 1 to {max_score} by strictly following this format: "[[rating]]", for example: '
    '"Rating: [[5]]".\n\n'
    "[Question]\n{question}\n\n"
    "[The Start of Assistant's Answer]\n{answer}\n[The End of Assistant's Answer]"
)
"""The judge prompt: MT-Bench's single-answer grading prompt (FastChat ``single-v1``), with the scale as a
placeholder. Placeholders: ``{question}`` (the last user turn, preceded by the earlier turns in a multi-turn
conversation), ``{answer}``, ``{max_score}``."""

_RATING = re.compile(r"\[\[\s*(\d+(?:\.\d+)?)\s*\]\]")
_RATING_FALLBACK = re.compile(r"\brating\s*[:=]?\s*\**\s*(\d+(?:\.\d+)?)", re.IGNORECASE)


def _render_question(ctx: GateContext) -> str:
    turns = [m for m in ctx.messages if m.get("role") in ("user", "human", "assistant", "ai")]
    users = user_turns(ctx.messages)
    if len(users) <= 1:
        return ctx.question
    lines = []
    for m in turns:
        who = "User" if m.get("role") in ("user", "human") else "Assistant"
        lines.append(f"{who}: {content_text(m.get('content'))}")
    return "\n".join(lines)


def _answer_text(answer: TierAnswer) -> str:
    if answer.text.strip() or not answer.tool_calls:
        return answer.text
    return "(tool calls) " + json.dumps(
        [{"name": c.get("name"), "args": c.get("args")} for c in answer.tool_calls], default=str
    )


def _judge_kind(judge: object) -> str:
    if callable(getattr(judge, "invoke", None)) or callable(getattr(judge, "ainvoke", None)):
        return "langchain"
    if callable(getattr(judge, "complete", None)) or callable(getattr(judge, "acomplete", None)):
        return "llama_index"
    if callable(judge):
        return "callable"
    return ""


class LLMJudgeGate:
    """Asks a judge model to rate the answer 1..``max_score``; passes when ``rating / max_score >= threshold``.

    The default prompt (:data:`DEFAULT_JUDGE_PROMPT`) is MT-Bench's single-answer grading prompt; the judge must
    write ``Rating: [[N]]``. A reply without a rating fails the gate with a reason. ``score`` = rating /
    ``max_score``. The judge's tokens go to ``GateResult.usage`` (and so into the attempt's cost, priced as
    ``GateResult.model``).

    ``judge`` is duck-typed (no framework is imported):

    * an object with ``invoke`` / ``ainvoke`` (a LangChain chat model or runnable): called with the prompt text
      and, when the adapter gives one, ``config=ctx.judge_config`` so the judge's call is a child run of the
      cascade; the reply's ``.content`` (or the string a chain returns), ``usage_metadata`` and
      ``response_metadata["model_name"]`` are used;
    * an object with ``complete`` / ``acomplete`` (a LlamaIndex LLM): the reply's ``.text``;
    * a function ``prompt -> str`` (sync or ``async def``).

    Under ``acheck`` the judge runs async (``ainvoke`` / ``acomplete`` / awaited); a sync-only judge runs in a
    worker thread. Under ``check`` an async function runs with ``asyncio.run`` when no event loop is running.

    Args:
        judge: the judge model or function.
        threshold: in (0, 1]; the default 0.7 passes ratings of 7/10 and up.
        prompt: a template with ``{question}`` and ``{answer}`` (and optionally ``{max_score}``) placeholders,
            filled by plain replacement (other braces are left alone).
        max_score: the top of the scale, an int >= 2 (default 10).

    Raises:
        ConfigurationError: a judge of none of these kinds, or a value out of range (names the field).

    Example:
        >>> from frugal_chains.routing import GateContext, LLMJudgeGate, TierAnswer
        >>> judge = lambda prompt: "Correct and clear. Rating: [[8]]" if "Paris" in prompt else "Rating: [[2]]"
        >>> def ctx(text):
        ...     return GateContext(messages=[{"role": "user", "content": "Capital of France?"}],
        ...                        answer=TierAnswer(text=text), tier="t", tier_index=0, n_tiers=2)
        >>> gate = LLMJudgeGate(judge, threshold=0.7)
        >>> r = gate.check(ctx("Paris"))
        >>> r.passed, r.score
        (True, 0.8)
        >>> gate.check(ctx("Lyon")).passed
        False
    """

    def __init__(
        self,
        judge: Any,
        *,
        threshold: float = 0.7,
        prompt: str | None = None,
        max_score: int = 10,
    ) -> None:
        kind = _judge_kind(judge)
        if not kind:
            raise ConfigurationError(
                f"judge must be a LangChain chat model or runnable (invoke/ainvoke), a LlamaIndex LLM "
                f"(complete/acomplete) or a function prompt -> str, got {type(judge).__name__}",
                field="judge",
            )
        self.judge = judge
        self._kind = kind
        self.threshold = _check_fraction(threshold, "threshold")
        if not isinstance(max_score, int) or isinstance(max_score, bool) or max_score < 2:
            raise ConfigurationError(f"max_score must be an int >= 2, got {max_score!r}", field="max_score")
        self.max_score = max_score
        if prompt is None:
            prompt = DEFAULT_JUDGE_PROMPT
        if not isinstance(prompt, str) or "{answer}" not in prompt or "{question}" not in prompt:
            raise ConfigurationError(
                "prompt must be a string with {question} and {answer} placeholders", field="prompt"
            )
        self.prompt = prompt

    @property
    def name(self) -> str:
        """``"judge"``."""
        return "judge"

    @property
    def needs_full_answer(self) -> bool:
        """True."""
        return True

    def __repr__(self) -> str:
        return f"LLMJudgeGate({type(self.judge).__name__}, threshold={self.threshold}, max_score={self.max_score})"

    def render(self, ctx: GateContext) -> str:
        """The prompt sent to the judge for ``ctx``."""
        return (
            self.prompt.replace("{max_score}", str(self.max_score))
            .replace("{question}", _render_question(ctx))
            .replace("{answer}", _answer_text(ctx.answer))
        )

    def parse_rating(self, reply: str) -> float | None:
        """The last ``[[N]]`` in ``reply`` (else a ``Rating: N``), or None when there is none in 0..max_score.

        Example:
            >>> from frugal_chains.routing import LLMJudgeGate
            >>> gate = LLMJudgeGate(lambda p: "")
            >>> gate.parse_rating("Good. Rating: [[7]]"), gate.parse_rating("Rating: 6/10"), gate.parse_rating("?")
            (7.0, 6.0, None)
        """
        matches = _RATING.findall(reply) or _RATING_FALLBACK.findall(reply)
        if not matches:
            return None
        value = float(matches[-1])
        if not 0 <= value <= self.max_score:
            return None
        return value

    def _result(self, reply: Any) -> GateResult:
        text, usage, model = self._read_reply(reply)
        rating = self.parse_rating(text)
        if rating is None:
            snippet = " ".join(text.split())[-120:]
            return GateResult(
                gate=self.name,
                passed=False,
                reason=f"no rating in the judge's reply: {snippet!r}",
                usage=usage,
                model=model,
            )
        score = rating / self.max_score
        return GateResult(
            gate=self.name,
            passed=score >= self.threshold,
            score=score,
            reason=f"rated {rating:g}/{self.max_score}",
            usage=usage,
            model=model,
        )

    def _read_reply(self, reply: Any) -> tuple[str, Usage | None, str | None]:
        if isinstance(reply, str):
            return reply, None, self._judge_model()
        usage: Usage | None = None
        model: str | None = None
        if self._kind == "llama_index" or (not hasattr(reply, "content") and hasattr(reply, "text")):
            text = str(getattr(reply, "text", "") or "")
            raw = getattr(reply, "raw", None)
            try:
                usage = usage_from_provider(get_field(raw, "usage"))
            except Exception:
                usage = None
            m = get_field(raw, "model")
            model = m if isinstance(m, str) and m else None
        else:
            text = content_text(getattr(reply, "content", reply))
            try:
                usage = usage_from_provider(getattr(reply, "usage_metadata", None))
            except Exception:
                usage = None
            meta = getattr(reply, "response_metadata", None)
            if isinstance(meta, Mapping):
                m = meta.get("model_name") or meta.get("model")
                model = m if isinstance(m, str) and m else None
        return text, usage, model or self._judge_model()

    def _judge_model(self) -> str | None:
        for attr in ("model_name", "model"):
            try:
                v = getattr(self.judge, attr, None)
            except Exception:
                v = None
            if isinstance(v, str) and v:
                return v
        return None

    def check(self, ctx: GateContext) -> GateResult:
        """Ask the judge synchronously."""
        prompt = self.render(ctx)
        judge = self.judge
        if self._kind == "langchain":
            if callable(getattr(judge, "invoke", None)):
                kwargs = {"config": ctx.judge_config} if ctx.judge_config is not None else {}
                reply = judge.invoke(prompt, **kwargs)
            else:
                reply = _resolve_sync(self._ainvoke(prompt, ctx), "the judge (ainvoke only)")
        elif self._kind == "llama_index":
            if callable(getattr(judge, "complete", None)):
                reply = judge.complete(prompt)
            else:
                reply = _resolve_sync(judge.acomplete(prompt), "the judge (acomplete only)")
        else:
            if _is_async_callable(judge) and _running_loop():
                raise TypeError("the judge is an async function and an event loop is running: use acheck")
            reply = _resolve_sync(judge(prompt), "the judge")
        return self._result(reply)

    async def _ainvoke(self, prompt: str, ctx: GateContext) -> Any:
        kwargs = {"config": ctx.judge_config} if ctx.judge_config is not None else {}
        return await self.judge.ainvoke(prompt, **kwargs)

    async def acheck(self, ctx: GateContext) -> GateResult:
        """Ask the judge asynchronously (``ainvoke`` / ``acomplete`` / awaited function)."""
        prompt = self.render(ctx)
        judge = self.judge
        if self._kind == "langchain":
            if callable(getattr(judge, "ainvoke", None)):
                reply = await self._ainvoke(prompt, ctx)
            else:
                kwargs = {"config": ctx.judge_config} if ctx.judge_config is not None else {}
                reply = await asyncio.to_thread(judge.invoke, prompt, **kwargs)
        elif self._kind == "llama_index":
            if callable(getattr(judge, "acomplete", None)):
                reply = await judge.acomplete(prompt)
            else:
                reply = await asyncio.to_thread(judge.complete, prompt)
        elif _is_async_callable(judge):
            reply = await judge(prompt)
        else:
            reply = await asyncio.to_thread(judge, prompt)
            if inspect.isawaitable(reply):
                reply = await reply
        return self._result(reply)


# ----------------------------------------------------------------------------------------------------
# a user's function


class CallableGate:
    """A gate from your function ``fn(ctx) -> bool | float | GateResult`` (sync or ``async def``).

    ``True``/``False`` pass or fail; a number is a score that passes when ``>= threshold``; a
    :class:`~frugal_chains.routing.types.GateResult` is returned as is. Anything else fails with a reason.
    ``acheck`` awaits an async function (a sync one is called directly: keep it fast). ``check`` on an async
    function runs it with ``asyncio.run`` when no event loop is running, and raises ``TypeError`` (use the async
    path: ``ainvoke`` / ``acheck``) when one is.

    Args:
        fn: the check; it receives the :class:`~frugal_chains.routing.types.GateContext`.
        name: the gate's name in results and metadata (default: the function's name).
        threshold: in [0, 1], for numeric results (default 0.5).

    Raises:
        ConfigurationError: ``fn`` not callable, a bad name or threshold (names the field).

    Example:
        >>> from frugal_chains.routing import CallableGate, GateContext, TierAnswer
        >>> def cites_source(ctx):
        ...     return "http" in ctx.answer.text
        >>> gate = CallableGate(cites_source)
        >>> ctx = GateContext(messages=[], answer=TierAnswer(text="See https://example.org"), tier="t",
        ...                   tier_index=0, n_tiers=2)
        >>> gate.name, gate.check(ctx).passed
        ('cites_source', True)
        >>> CallableGate(lambda ctx: 0.3, name="confidence").check(ctx).passed
        False
    """

    def __init__(
        self, fn: Callable[[GateContext], Any], *, name: str | None = None, threshold: float = 0.5
    ) -> None:
        if not callable(fn):
            raise ConfigurationError(f"fn must be callable, got {type(fn).__name__}", field="fn")
        if name is None:
            name = getattr(fn, "__name__", None) or type(fn).__name__
            if name == "<lambda>":
                name = "callable"
        if not isinstance(name, str) or not name.strip():
            raise ConfigurationError("name must be a non-empty string", field="name")
        self.fn = fn
        self._name = name
        self.threshold = _check_fraction(threshold, "threshold", allow_zero=True)

    @property
    def name(self) -> str:
        """The gate's name."""
        return self._name

    @property
    def needs_full_answer(self) -> bool:
        """True."""
        return True

    def __repr__(self) -> str:
        return f"CallableGate({self._name!r}, threshold={self.threshold})"

    def _result(self, value: Any) -> GateResult:
        if isinstance(value, GateResult):
            return value
        if isinstance(value, bool):
            return GateResult(gate=self._name, passed=value)
        if _is_number(value) and not math.isnan(float(value)):
            score = float(value)
            return GateResult(
                gate=self._name,
                passed=score >= self.threshold,
                score=score,
                reason="" if score >= self.threshold else f"score {score:.3g} < {self.threshold}",
            )
        return GateResult(
            gate=self._name,
            passed=False,
            reason=f"the function returned {type(value).__name__}, not a bool, a score or a GateResult",
        )

    def check(self, ctx: GateContext) -> GateResult:
        """Call the function (an async one only when no event loop is running)."""
        if _is_async_callable(self.fn) and _running_loop():
            raise TypeError(
                f"gate {self._name!r} is an async function and an event loop is running: use the async path "
                "(ainvoke / astream / acheck), or pass a sync function"
            )
        return self._result(_resolve_sync(self.fn(ctx), f"gate {self._name!r}"))

    async def acheck(self, ctx: GateContext) -> GateResult:
        """Call the function, awaiting it when it is async."""
        value = self.fn(ctx)
        if inspect.isawaitable(value):
            value = await value
        return self._result(value)


# ----------------------------------------------------------------------------------------------------
# names


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
