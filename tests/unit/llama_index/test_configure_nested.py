"""``configure()`` inside another configuration's ``with`` block: when the inner one is reset, the block's own
configuration is back in effect for the rest of the block (its budgets are not silently dropped)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
from llama_index.core import Settings
from llama_index.core.llms import MockLLM

import frugal_chains.llama_index.settings as configure_module
from frugal_chains import Budget, Price
from frugal_chains.accounting.context import current_attribution
from frugal_chains.cache import AnswerCache
from frugal_chains.llama_index import CachedLLM, configure
from frugal_chains.testing import HashEmbeddings

PRICES = {"MockLLM": Price(input=1.0, output=2.0)}
ROOMY = Budget(max_usd=1.0, scope="global")


@pytest.fixture(autouse=True)
def settings() -> Iterator[Any]:
    saved = {f.name: getattr(Settings, f.name) for f in dataclasses.fields(Settings)}
    Settings._llm, Settings._callback_manager = None, None
    yield Settings
    if configure_module._active is not None:
        configure_module._active.reset()
    for name, value in saved.items():
        setattr(Settings, name, value)


def test_a_nested_with_block_gives_the_outer_configuration_back() -> None:
    outer_llm = MockLLM(max_tokens=8)
    with configure(
        outer_llm, cache=AnswerCache(embedder=HashEmbeddings()), budgets=ROOMY, prices=PRICES, feature="outer"
    ) as outer:
        with configure(MockLLM(max_tokens=8), budgets=ROOMY, prices=PRICES, feature="inner") as inner:
            assert not outer.active and Settings.callback_manager.handlers == [inner.handler]
            Settings.llm.complete("inner question")
        assert outer.active and not inner.active
        assert isinstance(Settings._llm, CachedLLM) and Settings._llm is outer.llm
        assert Settings.callback_manager.handlers == [outer.handler]
        assert current_attribution().feature == "outer"
        assert outer.cache is not None and outer.cache.ledger is outer.ledger
        Settings.llm.complete("outer question")
        assert [r.attribution.feature for r in outer.ledger.records()] == ["outer"]
        assert [r.attribution.feature for r in inner.ledger.records()] == ["inner"]
    assert not outer.active
    assert Settings._llm is None and Settings._callback_manager is None
    assert current_attribution().feature is None
    assert outer.cache.ledger is None


def test_a_plain_configure_reset_inside_a_with_block_gives_the_block_back() -> None:
    with configure(MockLLM(max_tokens=8), budgets=ROOMY, prices=PRICES) as outer:
        inner = configure(MockLLM(max_tokens=8), prices=PRICES)
        inner.reset()
        assert outer.active and Settings.callback_manager.handlers == [outer.handler]
    assert Settings._callback_manager is None


def test_a_second_configure_outside_any_with_block_still_replaces_the_first() -> None:
    first = configure(MockLLM(max_tokens=8), prices=PRICES)
    second = configure(MockLLM(max_tokens=8), prices=PRICES)
    second.reset()
    assert not first.active and Settings._llm is None and Settings._callback_manager is None


def test_a_block_configuration_reset_by_you_is_not_put_back() -> None:
    with configure(MockLLM(max_tokens=8), budgets=ROOMY, prices=PRICES) as outer:
        inner = configure(MockLLM(max_tokens=8), prices=PRICES)
        outer.reset()  # already replaced: nothing to undo now, and it must not come back
        inner.reset()
        assert not outer.active and Settings._callback_manager is None
