"""The refusal gate: fails refusals and (by default) uncertainty in an answer's key sentences."""

from __future__ import annotations

import re
from collections.abc import Iterable

from frugal_chains.errors import ConfigurationError
from frugal_chains.routing.gates.common import LocalGate, tool_call_only
from frugal_chains.routing.gates.phrases import (
    KEY_OPENING_SENTENCES,
    REFUSAL_PATTERNS,
    SHORT_SENTENCE_WORDS,
    UNCERTAINTY_PATTERNS,
    normalise_phrase_text,
    split_sentences,
)
from frugal_chains.routing.types import GateContext, GateResult

__all__ = ["RefusalGate"]


class RefusalGate(LocalGate):
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
            patterns = list(REFUSAL_PATTERNS) + (list(UNCERTAINTY_PATTERNS) if uncertainty else [])
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
            norm = re.escape(normalise_phrase_text(p).strip()).replace(r"\ ", r"\s+")
            out.append(rf"(?<!\w){norm}(?!\w)")
        return out

    @property
    def name(self) -> str:
        """``"refusal"``."""
        return "refusal"

    def __repr__(self) -> str:
        return f"RefusalGate(uncertainty={self.uncertainty})"

    def find(self, text: str) -> str | None:
        """The refusal or uncertainty phrase found in ``text``'s key sentences (normalised), or None.

        Example:
            >>> from frugal_chains.routing import RefusalGate
            >>> RefusalGate().find("As an AI language model, I cannot browse.")
            'as an ai language model'
        """
        sentences = split_sentences(normalise_phrase_text(text))
        if not sentences:
            return None
        key = sentences[:KEY_OPENING_SENTENCES]
        if len(sentences) > KEY_OPENING_SENTENCES:
            key.append(sentences[-1])
        key.extend(s for s in sentences[KEY_OPENING_SENTENCES:-1] if len(s.split()) <= SHORT_SENTENCE_WORDS)
        for sentence in key:
            m = self._regex.search(sentence)
            if m is not None:
                return m.group(0)
        return None

    def check(self, ctx: GateContext) -> GateResult:
        """Look for refusal / uncertainty phrases in the answer text."""
        if tool_call_only(ctx.answer):
            return GateResult(gate=self.name, passed=True, skipped=True, reason="tool-call answer")
        found = self.find(ctx.answer.text)
        if found is None:
            return GateResult(gate=self.name, passed=True)
        return GateResult(gate=self.name, passed=False, reason=f"found {found!r}")
