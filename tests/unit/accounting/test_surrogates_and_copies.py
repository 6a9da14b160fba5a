"""Labels with a lone surrogate still reach the ledger; a price book copies and pickles with its prices."""

from __future__ import annotations

import copy
import pickle

from frugal_chains import Budget, Price, attribute
from frugal_chains.accounting import Attribution, CallRecord, PriceBook, SQLiteLedger, Usage

BAD = "u\udc00"  # a lone surrogate: what a bad decode upstream leaves in a user id


def test_attribution_and_record_labels_with_a_lone_surrogate_are_stored() -> None:
    record = CallRecord(
        model="m\ud800",
        usage=Usage(input_tokens=1),
        cost_usd=0.0,
        attribution=Attribution(user_id=BAD, feature="f", tags=("t\udfff",)),
    )
    assert record.model == "m\ufffd" and record.attribution.user_id == "u\ufffd"
    assert record.attribution.tags == ("t\ufffd",)
    ledger = SQLiteLedger()
    ledger.add_record(record)
    (stored,) = ledger.records()
    assert stored.attribution.user_id == "u\ufffd"


def test_a_guarded_call_attributed_with_a_lone_surrogate_commits_and_frees_its_reservation() -> None:
    """Before: the ledger refused the record after the provider was paid; the spend was lost and the
    reservation held until it expired."""
    from frugal_chains.langchain import TokenBudgetHandler
    from frugal_chains.testing import FakeUsageChatModel

    budget = Budget(max_tokens=10_000, scope="user")
    handler = TokenBudgetHandler(budget)
    with attribute(user_id=BAD):
        FakeUsageChatModel(output_tokens=20).invoke("hi", config={"callbacks": [handler]})
    (rec,) = handler.ledger.records()
    assert rec.attribution.user_id == "u\ufffd" and rec.usage.output_tokens == 20
    spent = handler.core.spent(budget, Attribution(user_id=BAD))
    assert spent.reserved_tokens == 0 and spent.committed_tokens == rec.usage.total_tokens


def test_a_price_book_copies_and_pickles_with_its_prices() -> None:
    book = PriceBook({"my-llama": Price(input=1.0, output=2.0)}, unknown_model="warn")
    book.find("gpt-4o")  # fills the lookup cache
    for clone in (copy.copy(book), copy.deepcopy(book), pickle.loads(pickle.dumps(book))):
        assert clone.find("my-llama") == Price(input=1.0, output=2.0)
        assert clone.unknown_model == "warn"
        assert clone.find("gpt-4o") == book.find("gpt-4o")
        assert clone._lock is not book._lock
