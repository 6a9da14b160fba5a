"""The hit guard: rule checks (numbers, dates, units, negation, opposites, audience, order, comparatives, scope,
entities, direction) plus the pair model on the raw texts of a candidate semantic hit, and the similarity threshold
it is tuned for."""

from __future__ import annotations

from dataclasses import dataclass

from frugal_chains.cache.guard.lexical import (
    class_difference,
    direction_swapped,
    opposite_words,
    parse_question,
)
from frugal_chains.cache.guard.pair_model import PairModel
from frugal_chains.errors import ConfigurationError

__all__ = ["DEFAULT_THRESHOLD", "GuardVerdict", "HitGuard"]

#: Cosine *similarity* (0..1, higher = stricter) for the default embedder (all-MiniLM-L6-v2 int8),
#: used together with the default :class:`HitGuard` (whose pair model passes ``P(same answer) >= 0.60``).
#: Tuned on held-out training data only (QQP pairs outside eval_4k, BANKING77 train; see
#: :mod:`frugal_chains.cache.tuning`): on validation 0.86 + cutoff 0.60 gave QQP precision 0.761 at hit
#: rate 0.510 and a BANKING77 replay with 41.6% hits, 3.6% of them wrong.
DEFAULT_THRESHOLD: float = 0.86


@dataclass(frozen=True)
class GuardVerdict:
    """The guard's decision on one candidate hit.

    Args:
        ok: ``True`` when the cached answer may be served.
        reason: why it was rejected (``"number: 3/5"``, ``"negation"``, ``"opposite: buy/sell"``,
            ``"entity: apple/google"``, ``"model: 0.12"`` ...), ``None`` when ok.

    Example:
        >>> GuardVerdict(ok=False, reason="negation")
        GuardVerdict(ok=False, reason='negation')
    """

    ok: bool
    reason: str | None = None


_OK = GuardVerdict(ok=True)
_RULES = (
    "numbers", "dates", "units", "negation", "opposites", "audience", "order", "comparatives", "scope", "entities",
    "direction",
)  # fmt: skip


class HitGuard:
    """Rule checks plus a learned pair model on the raw texts of a candidate semantic hit.

    The checks run in this order and the first failing one rejects the hit: numbers, dates, units,
    negation, opposites, audience, order, comparatives, scope, entity swap, direction, then the pair model
    (``P(same answer) >= model_cutoff``). Each can be switched off. The default (all rules, the shipped model,
    cutoff 0.60 from the model file) is what the benchmark ``benchmarks/cache_quality.py`` measures, with
    :data:`DEFAULT_THRESHOLD` (0.86).

    Args:
        numbers: reject when the sets of numbers differ (``1,000`` = ``1000``, ``two`` = ``2``).
        dates: reject when month/weekday names differ.
        units: reject when units or currencies differ.
        negation: reject when only one side is negated.
        opposites: reject when one side has a word and the other its opposite (``enable``/``disable``,
            ``legal``/``illegal``).
        audience: reject an audience or role swap (``children``/``adults``, ``buyer``/``seller``,
            ``landlord``/``tenant``, ``employer``/``employee``, ``patient``/``doctor`` ...), and an age or
            pregnancy audience on one side only (``dose for children`` vs ``dose``).
        order: reject different order or direction words (``ascending``/``descending``, ``before``/``after``,
            ``first``/``last``, ``oldest``/``newest``, ``top``/``bottom``, ``import``/``export``,
            ``upload``/``download``, ``inbound``/``outbound`` ...).
        comparatives: reject comparatives and superlatives of opposite sense (``largest``/``smallest``,
            ``more``/``fewer``, ``cheaper``/``more expensive``, ``fastest``/``slowest``, ``best``/``worst``,
            ``higher``/``lower``, ``maximum``/``minimum`` ...).
        scope: reject a different scope (``free``/``paid`` tier, ``online``/``in store``, ``domestic``/
            ``international`` -- also on one side only --, ``personal``/``business`` account,
            ``monthly``/``annual``, ``mobile``/``desktop``, ``standard``/``express`` shipping ...).
            The words of these four classes are data: ``_guard_data/word_classes.txt``.
        entities: reject when *both* sides have an entity-like word (capitalised mid-sentence, acronym,
            letters+digits) the other side lacks.
        direction: reject ``from A to B`` vs ``from B to A``.
        model: the learned pair model; ``True`` = the shipped one, ``False``/``None`` = rules only, or a
            :class:`PairModel`.
        model_cutoff: override the model's probability cutoff (higher = stricter); default ``None`` = the
            model's own (0.60 for the shipped one).

    Example:
        >>> g = HitGuard()
        >>> g.check("Convert 5 km to miles", "Convert 10 km to miles")
        GuardVerdict(ok=False, reason='number: 5/10')
        >>> g.check("Is coffee bad for you?", "Is coffee not bad for you?").reason
        'negation'
        >>> g.check("Max daily dose of paracetamol for children?", "Max daily dose of paracetamol for adults?").reason
        'audience: child/adult'
        >>> g.check("How do I sort ascending?", "How do I sort descending?").reason
        'order: ascending/descending'
        >>> HitGuard(model=False).check("What is your return policy?", "How do I return an item?").ok
        True
    """

    def __init__(
        self,
        *,
        numbers: bool = True,
        dates: bool = True,
        units: bool = True,
        negation: bool = True,
        opposites: bool = True,
        audience: bool = True,
        order: bool = True,
        comparatives: bool = True,
        scope: bool = True,
        entities: bool = True,
        direction: bool = True,
        model: PairModel | bool | None = True,
        model_cutoff: float | None = None,
    ) -> None:
        self.numbers = numbers
        self.dates = dates
        self.units = units
        self.negation = negation
        self.opposites = opposites
        self.audience = audience
        self.order = order
        self.comparatives = comparatives
        self.scope = scope
        self.entities = entities
        self.direction = direction
        if model is True:
            self.model: PairModel | None = PairModel.default()
        elif model is False or model is None:
            self.model = None
        elif isinstance(model, PairModel):
            self.model = model
        else:
            raise ConfigurationError(
                f"model must be True, False, None or a PairModel, got {type(model).__name__}.", field="model"
            )
        if model_cutoff is not None and not 0.0 <= model_cutoff <= 1.0:
            raise ConfigurationError(
                f"model_cutoff must be in [0, 1], got {model_cutoff!r}.", field="model_cutoff"
            )
        self.model_cutoff = model_cutoff

    def __repr__(self) -> str:
        flags = [n for n in _RULES if getattr(self, n)]
        cut = (
            self.model_cutoff
            if self.model_cutoff is not None
            else (self.model.cutoff if self.model else None)
        )
        return f"HitGuard(rules={flags}, model={'on' if self.model else 'off'}, cutoff={cut})"

    def check_rules(self, query: str, cached: str) -> GuardVerdict:
        """Only the rule checks (no model): the verdict for a pair of raw texts.

        Example:
            >>> HitGuard().check_rules("Flights from Paris to London", "Flights from London to Paris").reason
            'direction'
        """
        if query == cached:
            return _OK
        a, b = parse_question(query), parse_question(cached)
        if self.numbers and a.numbers != b.numbers:
            return GuardVerdict(False, f"number: {_fmt(a.numbers - b.numbers)}/{_fmt(b.numbers - a.numbers)}")
        if self.dates and a.dates != b.dates:
            return GuardVerdict(False, f"date: {_fmt(a.dates - b.dates)}/{_fmt(b.dates - a.dates)}")
        if self.units and a.units != b.units:
            return GuardVerdict(False, f"unit: {_fmt(a.units - b.units)}/{_fmt(b.units - a.units)}")
        if self.negation and a.negated != b.negated:
            return GuardVerdict(False, "negation")
        if self.opposites:
            only_a = set(a.content - b.content)
            only_b = set(b.content - a.content)
            reason = opposite_words(only_a, only_b, a, b)
            if reason:
                return GuardVerdict(False, reason)
        classes = {
            c
            for c, on in (
                ("audience", self.audience),
                ("order", self.order),
                ("comparative", self.comparatives),
                ("scope", self.scope),
            )
            if on
        }
        reason = class_difference(a, b, classes)
        if reason:
            return GuardVerdict(False, reason)
        if self.entities:
            ea = a.entities - b.all_stems
            eb = b.entities - a.all_stems
            if ea and eb:
                ra = frozenset(a.entity_raw[e] for e in ea)
                rb = frozenset(b.entity_raw[e] for e in eb)
                return GuardVerdict(False, f"entity: {_fmt(ra)}/{_fmt(rb)}")
        if self.direction and direction_swapped(query, cached):
            return GuardVerdict(False, "direction")
        return _OK

    def check(self, query: str, cached: str, similarity: float | None = None) -> GuardVerdict:
        """Decide whether ``cached``'s answer may be served for ``query``.

        Args:
            query: the raw incoming question (last user turn).
            cached: the raw cached question.
            similarity: their cosine similarity. The pair model needs it: when ``None`` only the rules run.

        Returns:
            A :class:`GuardVerdict`.
        """
        verdict = self.check_rules(query, cached)
        if not verdict.ok or self.model is None or similarity is None or query == cached:
            return verdict
        p = self.model.score(query, cached, similarity)
        cutoff = self.model_cutoff if self.model_cutoff is not None else self.model.cutoff
        if p < cutoff:
            return GuardVerdict(False, f"model: {p:.2f}")
        return _OK


def _fmt(values: frozenset[str]) -> str:
    out = []
    for v in sorted(values):
        if v.endswith(".0") and v[:-2].lstrip("-").isdigit():
            v = v[:-2]
        out.append(v)
    return ",".join(out) or "-"
