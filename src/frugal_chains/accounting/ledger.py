"""The spend ledger: where reservations, commits and call records live.

A ledger knows nothing about budgets. It keeps **counters** (one per budget scope key and window, e.g.
``user|day|u1``) split in time **buckets**, each holding four integers: committed nano-USD, committed tokens,
reserved nano-USD, reserved tokens. A :class:`Claim` names a counter, the bucket a call writes, the oldest
bucket still inside the window, and the limits to check. :meth:`SpendLedger.reserve` checks every claim and adds
the reservation to all of them **atomically** (one SQLite ``BEGIN IMMEDIATE`` transaction, one Redis Lua
script), so concurrent calls in threads, tasks, processes or hosts cannot overspend together.

Reservations are idempotent by id: committing twice, or releasing after a commit, changes nothing. A
reservation that is neither committed nor released before ``expires_at`` (a crashed process) is released by
the next ``reserve`` on the same ledger. A commit for an unknown or expired reservation (a call let through
while the ledger was down, or a very slow one) adds the actual spend without subtracting anything.

Implementations: :class:`~frugal_chains.accounting.SQLiteLedger` (embedded default, a file or ``:memory:``) and
:class:`~frugal_chains.accounting.RedisLedger` (many processes and hosts).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from frugal_chains.accounting.usage import CallRecord, nano_to_usd
from frugal_chains.errors import ConfigurationError

__all__ = [
    "Claim",
    "CommitResult",
    "Counter",
    "ReserveResult",
    "SpendLedger",
    "SpendRow",
    "prefix_hit_rate",
    "summarize",
]

GroupBy = Literal["feature", "user", "tenant", "model", "day", "task", "outcome", "tier"]


@dataclass(frozen=True, kw_only=True)
class Counter:
    """Amounts of one counter over a window (integers: nano-USD and tokens).

    Example:
        >>> from frugal_chains.accounting import Counter
        >>> c = Counter(committed_nano=1_500_000_000, reserved_nano=500_000_000)
        >>> c.total_nano, c.committed_usd
        (2000000000, 1.5)
    """

    committed_nano: int = 0
    committed_tokens: int = 0
    reserved_nano: int = 0
    reserved_tokens: int = 0

    @property
    def total_nano(self) -> int:
        return self.committed_nano + self.reserved_nano

    @property
    def total_tokens(self) -> int:
        return self.committed_tokens + self.reserved_tokens

    @property
    def committed_usd(self) -> float:
        return nano_to_usd(self.committed_nano)


@dataclass(frozen=True, kw_only=True)
class Claim:
    """One counter a reservation must fit in.

    Example:
        >>> from frugal_chains.accounting import Claim
        >>> Claim(counter="user|day|u1", bucket=20414, min_bucket=20414, limit_nano=5_000_000_000).enforce
        True
    """

    counter: str
    """Counter name, ``scope|window|key``."""
    bucket: int
    """The bucket this call writes."""
    min_bucket: int
    """The oldest bucket inside the window; buckets ``min_bucket..bucket`` are summed."""
    limit_nano: int | None = None
    limit_tokens: int | None = None
    enforce: bool = True
    """False for ``on_exceed="warn"`` budgets: checked and reported, never refused."""
    ttl_s: int | None = None
    """How long a backend that expires data (Redis) must keep this bucket."""

    def __post_init__(self) -> None:
        if self.min_bucket > self.bucket:
            raise ConfigurationError("Claim.min_bucket must not be after Claim.bucket.", field="min_bucket")


@dataclass(frozen=True, kw_only=True)
class ReserveResult:
    """What :meth:`SpendLedger.reserve` found.

    ``before`` holds each claim's counter *before* this reservation, in the order of the claims.
    ``ok`` is False when an enforced claim would pass its limit; ``denied`` is its index and nothing was
    reserved. ``exceeded`` lists the indexes of non-enforced claims that passed their limit (the reservation
    was made).

    Example:
        >>> from frugal_chains.accounting import Claim, SQLiteLedger
        >>> claim = Claim(counter="global|all|*", bucket=0, min_bucket=0, limit_tokens=100)
        >>> r = SQLiteLedger().reserve("r1", [claim], nano=0, tokens=150, expires_at=9e9)
        >>> r.ok, r.denied, r.denied_unit
        (False, 0, 'tokens')
    """

    ok: bool
    before: tuple[Counter, ...]
    denied: int | None = None
    denied_unit: Literal["usd", "tokens"] | None = None
    exceeded: tuple[int, ...] = ()


@dataclass(frozen=True, kw_only=True)
class CommitResult:
    """What :meth:`SpendLedger.commit` did: ``applied`` is False for a repeated commit (nothing changed).
    ``after`` holds each claim's counter after the commit (empty when not applied).

    Example:
        >>> from frugal_chains.accounting import Claim, SQLiteLedger
        >>> ledger, claim = SQLiteLedger(), Claim(counter="global|all|*", bucket=0, min_bucket=0)
        >>> ledger.commit("r1", [claim], nano=10, tokens=1).after[0].committed_nano
        10
        >>> ledger.commit("r1", [claim], nano=10, tokens=1).applied  # idempotent by reservation id
        False
    """

    applied: bool
    after: tuple[Counter, ...] = ()


@dataclass(frozen=True, kw_only=True)
class SpendRow:
    """One group of :meth:`SpendLedger.summary`.

    USD sums hold the records whose USD is known. A record of a model with no price (``cost_usd=None``, counted
    in tokens only) is left out of them, never added as ``$0``: ``unpriced`` says how many there were, and
    their tokens are in the token sums.

    Example:
        >>> from frugal_chains.accounting import CallRecord, SQLiteLedger, Usage
        >>> ledger = SQLiteLedger()
        >>> ledger.add_record(CallRecord(model="m", usage=Usage(input_tokens=3), cost_usd=0.25))
        >>> ledger.add_record(CallRecord(model="m", usage=Usage(input_tokens=4), cost_usd=None, price_known=False))
        >>> row = ledger.summary("model")[0]
        >>> row.calls, row.cost_usd, row.unpriced, row.input_tokens
        (2, 0.25, 1, 7)
    """

    key: str
    calls: int
    """Provider calls, as in :func:`~frugal_chains.accounting.spend_report` (cache hits are counted in
    ``cache_hits``, refused calls in ``refused``)."""
    cost_usd: float
    """USD of the calls whose cost is known (see ``unpriced``)."""
    input_tokens: int
    """Tokens the provider calls sent (a cache hit sends none)."""
    output_tokens: int
    """Tokens the provider calls received."""
    cache_hits: int
    saved_usd: float
    """USD the cache hits saved, where known."""
    unpriced: int = 0
    """Records whose USD is unknown (a model with no price: ``cost_usd`` or ``saved_usd`` is ``None``), left out
    of ``cost_usd`` and ``saved_usd``. ``0``: the USD sums are complete."""
    overshoots: int = 0
    """Calls that used more than they reserved (``CallRecord.overshoot_tokens`` or ``overshoot_usd`` above 0)."""
    overshoot_tokens: int = 0
    """Tokens past the reservations, summed over those calls."""
    overshoot_usd: float = 0.0
    """USD past the reservations, summed over those calls (where known)."""
    refused: int = 0
    """Calls a budget refused before they were made (``outcome="refused"`` records): not in ``calls``, and
    never spend."""
    cache_read_tokens: int = 0
    """Of ``input_tokens``, those the provider served from its prompt cache (what it reported: Anthropic cache
    reads, OpenAI ``cached_tokens``, LangChain ``input_token_details.cache_read``)."""
    cache_write_tokens: int = 0
    """Of ``input_tokens``, those the provider wrote to its prompt cache (both lifetimes, 5-minute and 1-hour)."""

    @property
    def prefix_hit_rate(self) -> float | None:
        """``cache_read_tokens / input_tokens``: the share of the prompt tokens sent that the provider served from
        its prompt cache (``None`` when no input tokens were sent). See :func:`prefix_hit_rate`."""
        return prefix_hit_rate(self.cache_read_tokens, self.input_tokens)


def prefix_hit_rate(cache_read_tokens: int, input_tokens: int) -> float | None:
    """The prefix hit rate of a group of provider calls: the prompt tokens the provider reported as read from its
    prompt cache, divided by all the prompt tokens sent (cached parts included, as in
    :attr:`~frugal_chains.Usage.input_tokens`). ``None`` when no input tokens were sent (not ``0.0``: nothing
    was measured). Calls whose provider reports no cache details count as uncached.

    Example:
        >>> from frugal_chains.accounting.ledger import prefix_hit_rate
        >>> prefix_hit_rate(900, 1000), prefix_hit_rate(0, 0)
        (0.9, None)
    """
    return cache_read_tokens / input_tokens if input_tokens > 0 else None


@runtime_checkable
class SpendLedger(Protocol):
    """Where spend is reserved, committed and recorded. Sync and async methods both work.

    Example:
        >>> from frugal_chains.accounting import Claim, SQLiteLedger
        >>> ledger = SQLiteLedger(":memory:")
        >>> claim = Claim(counter="global|all|*", bucket=0, min_bucket=0, limit_nano=1_000)
        >>> ledger.reserve("r1", [claim], nano=600, tokens=10, expires_at=9e9).ok
        True
        >>> ledger.reserve("r2", [claim], nano=600, tokens=10, expires_at=9e9).ok
        False
        >>> ledger.commit("r1", [claim], nano=400, tokens=8).applied
        True
        >>> ledger.counter("global|all|*", 0, 0).committed_nano
        400
    """

    def reserve(
        self, reservation_id: str, claims: Sequence[Claim], *, nano: int, tokens: int, expires_at: float
    ) -> ReserveResult: ...

    def commit(
        self,
        reservation_id: str,
        claims: Sequence[Claim],
        *,
        nano: int,
        tokens: int,
        record: CallRecord | None = None,
    ) -> CommitResult: ...

    def release(self, reservation_id: str) -> bool: ...

    def add_record(self, record: CallRecord) -> None: ...

    def counter(self, counter: str, min_bucket: int, max_bucket: int) -> Counter: ...

    def records(
        self,
        *,
        since: float | None = None,
        until: float | None = None,
        feature: str | None = None,
        user_id: str | None = None,
        tenant_id: str | None = None,
        model: str | None = None,
        task_id: str | None = None,
        limit: int | None = None,
    ) -> list[CallRecord]: ...

    def summary(
        self, by: GroupBy = "feature", *, since: float | None = None, until: float | None = None
    ) -> list[SpendRow]: ...

    async def areserve(
        self, reservation_id: str, claims: Sequence[Claim], *, nano: int, tokens: int, expires_at: float
    ) -> ReserveResult: ...

    async def acommit(
        self,
        reservation_id: str,
        claims: Sequence[Claim],
        *,
        nano: int,
        tokens: int,
        record: CallRecord | None = None,
    ) -> CommitResult: ...

    async def arelease(self, reservation_id: str) -> bool: ...

    async def aadd_record(self, record: CallRecord) -> None: ...

    def close(self) -> None: ...


def check_claims(
    claims: Sequence[Claim], before: Sequence[Counter], nano: int, tokens: int
) -> tuple[int | None, Literal["usd", "tokens"] | None, tuple[int, ...]]:
    """Shared by backends that check in the host language: ``(denied index, its unit, exceeded warn claims)``."""
    exceeded: list[int] = []
    for i, (claim, cur) in enumerate(zip(claims, before, strict=True)):
        unit: Literal["usd", "tokens"] | None = None
        if claim.limit_nano is not None and cur.total_nano + nano > claim.limit_nano:
            unit = "usd"
        elif claim.limit_tokens is not None and cur.total_tokens + tokens > claim.limit_tokens:
            unit = "tokens"
        if unit is None:
            continue
        if claim.enforce:
            return i, unit, ()
        exceeded.append(i)
    return None, None, tuple(exceeded)


def distinct_writes(claims: Sequence[Claim]) -> list[tuple[str, int]]:
    """The (counter, bucket) pairs a reservation writes, each once even if several budgets share it."""
    return list(dict.fromkeys((c.counter, c.bucket) for c in claims))


@dataclass
class Totals:
    """Running sums over call records, the one place that says what each record adds (shared by
    :func:`summarize` and :func:`frugal_chains.accounting.report.spend_report`).

    A provider call adds its USD (where known) and tokens; a cache hit adds what it saved (no tokens: none were
    sent); a refusal adds only to ``refused`` (nothing was spent); a cascade's ``routed`` decision adds only its
    escalations.
    """

    calls: int = 0
    """Provider calls (outcome ``ok`` or ``error``)."""
    cost_usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    """Prompt tokens the provider calls read from the provider's prompt cache (a part of ``input_tokens``)."""
    cache_write_tokens: int = 0
    """Prompt tokens the provider calls wrote to the provider's prompt cache, both lifetimes."""
    cache_hits: int = 0
    saved_usd: float = 0.0
    refused: int = 0
    escalations: int = 0
    unpriced: int = 0
    overshoots: int = 0
    overshoot_tokens: int = 0
    overshoot_usd: float = 0.0

    def add(self, r: CallRecord) -> None:
        if r.outcome == "routed":
            esc = r.extra.get("escalations", 0)
            self.escalations += esc if isinstance(esc, int) and not isinstance(esc, bool) else 0
            return
        if r.outcome == "refused":
            self.refused += 1  # nothing spent: never counted as spend, tokens or a call
            return
        if r.outcome == "cache_hit":
            self.cache_hits += 1  # the tokens it saved were never sent: not in the token sums
        else:
            self.calls += 1
            self.input_tokens += r.usage.input_tokens
            self.output_tokens += r.usage.output_tokens
            self.cache_read_tokens += r.usage.cache_read_tokens
            self.cache_write_tokens += r.usage.cache_write_tokens + r.usage.cache_write_1h_tokens
        if r.cost_usd is None or r.saved_usd is None:
            self.unpriced += 1  # unknown USD: counted apart, never summed as $0
        if r.cost_usd is not None:
            self.cost_usd += r.cost_usd
        if r.saved_usd is not None:
            self.saved_usd += r.saved_usd
        if r.overshoot_tokens or r.overshoot_usd:
            self.overshoots += 1
            self.overshoot_tokens += r.overshoot_tokens
            self.overshoot_usd += r.overshoot_usd or 0.0


GROUP_KEYS: tuple[str, ...] = ("feature", "user", "tenant", "model", "day", "task", "outcome", "tier")


def group_key(record: CallRecord, by: str) -> str:
    """The value of ``record`` for a grouping (``"(none)"`` when it has none)."""
    a = record.attribution
    value = {
        "feature": a.feature,
        "user": a.user_id,
        "tenant": a.tenant_id,
        "model": record.model,
        "day": record.day,
        "task": a.task_id,
        "outcome": record.outcome,
        "tier": record.tier,
    }[by]
    return value if value is not None else "(none)"


def summarize(records: Sequence[CallRecord], by: GroupBy) -> list[SpendRow]:
    """Group call records, most expensive first. A cascade's ``routed`` decision records are not calls: they are
    skipped (read them with :func:`frugal_chains.routing.escalation_rates`). Records whose USD is unknown are
    counted in :attr:`SpendRow.unpriced` and left out of the USD sums. Refused calls are counted in
    :attr:`SpendRow.refused` only."""
    if by not in GROUP_KEYS:
        raise ConfigurationError(
            f"summary(by=...) must be one of {', '.join(GROUP_KEYS)}; got {by!r}.",
            field="by",
        )
    acc: dict[str, Totals] = {}
    for r in records:
        if r.outcome == "routed":
            continue
        acc.setdefault(group_key(r, by), Totals()).add(r)
    rows = [
        SpendRow(
            key=k,
            calls=t.calls,
            cost_usd=t.cost_usd,
            input_tokens=t.input_tokens,
            output_tokens=t.output_tokens,
            cache_hits=t.cache_hits,
            saved_usd=t.saved_usd,
            unpriced=t.unpriced,
            refused=t.refused,
            overshoots=t.overshoots,
            overshoot_tokens=t.overshoot_tokens,
            overshoot_usd=t.overshoot_usd,
            cache_read_tokens=t.cache_read_tokens,
            cache_write_tokens=t.cache_write_tokens,
        )
        for k, t in acc.items()
    ]
    rows.sort(key=lambda r: (-r.cost_usd, r.key))
    return rows


def now() -> float:
    """The ledger clock (UTC unix seconds); a seam for tests."""
    return time.time()
