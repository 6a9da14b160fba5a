"""Token columns count the tokens provider calls sent and received. A cache hit sent none: its record keeps the
tokens it saved (``usage``), but neither ``summary()`` nor ``spend_report`` adds them, so tokens, calls and USD of a
group describe the same calls (and match what the budget counters counted)."""

from __future__ import annotations

from frugal_chains.accounting import CallRecord, SQLiteLedger, Usage, spend_report
from frugal_chains.accounting.context import Attribution


def _ledger() -> SQLiteLedger:
    ledger = SQLiteLedger()
    faq = Attribution(feature="faq")
    ledger.add_record(
        CallRecord(model="m", usage=Usage(input_tokens=10, output_tokens=5), cost_usd=0.01, attribution=faq)
    )
    for _ in range(3):  # three answers from the cache: each saved a call like the first
        ledger.add_record(
            CallRecord(
                model="m",
                usage=Usage(input_tokens=10, output_tokens=5),
                cost_usd=0.0,
                saved_usd=0.01,
                outcome="cache_hit",
                attribution=faq,
            )
        )
    return ledger


def test_summary_calls_and_tokens_are_those_of_provider_calls() -> None:
    """``summary()`` and ``spend_report`` say the same: ``calls`` are provider calls, hits are apart."""
    (row,) = _ledger().summary("feature")
    assert (row.calls, row.cache_hits, row.input_tokens, row.output_tokens) == (1, 3, 10, 5)


def test_spend_report_tokens_are_those_of_provider_calls() -> None:
    report = spend_report(_ledger(), by=["feature"])
    for row in (report.rows[0], report.total):
        assert (row.calls, row.cache_hits, row.input_tokens, row.output_tokens) == (1, 3, 10, 5)
        assert (row.cost_usd, row.saved_usd) == (0.01, 0.03)
