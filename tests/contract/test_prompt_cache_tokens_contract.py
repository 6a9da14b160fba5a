"""The prompt-cache token contract: the cache reads and writes a provider reports reach the ledger's call record
(and its price) in both wings, whatever the call mode and whether the call is bare, cascaded or behind a cache
wrapper, and the spend report gives the prefix hit rate from them.

The shapes are the ones the hosts hand over: LangChain's ``AIMessage.usage_metadata`` with
``input_token_details`` (``cache_read``, ``cache_creation`` and its 1-hour part); LlamaIndex's ``ChatResponse.raw``
holding Anthropic's usage (``cache_read_input_tokens``, ``cache_creation_input_tokens``, input counted apart) or
OpenAI's (``prompt_tokens_details.cached_tokens``, as a dict or as the SDK's objects)."""

from __future__ import annotations

import collections
from typing import Any

import pytest

from frugal_chains import Price, SQLiteLedger
from frugal_chains.accounting import spend_report
from frugal_chains.accounting.usage import Usage
from frugal_chains.cache import AnswerCache
from frugal_chains.testing.fake_embeddings import HashEmbeddings
from tests.contract.wings import (
    PRICES,
    LangChainWing,
    LlamaIndexWing,
    Script,
    Wing,
    _lc_fake_class,
    _li_fake_class,
    handler_options,
)

CACHED_PRICES = {
    **PRICES,
    "cheap-1": Price(input=1.0, output=2.0, cache_read=0.1, cache_write=1.25, cache_write_1h=2.0),
}
"""``cheap-1`` with Anthropic-like cache rates, so a dropped cache figure changes the recorded USD too."""

# What every shape below reports: 1,000 prompt tokens, 800 read from the cache, 100 + 50 written (5 minutes,
# 1 hour), 5 output tokens.
EXPECTED = Usage(input_tokens=1000, output_tokens=5, cache_read_tokens=800, cache_write_tokens=100,
                 cache_write_1h_tokens=50)  # fmt: skip
EXPECTED_OPENAI = Usage(input_tokens=1000, output_tokens=5, cache_read_tokens=800)


def _langchain_usage() -> dict[str, Any]:
    return {
        "input_tokens": 1000,
        "output_tokens": 5,
        "total_tokens": 1005,
        "input_token_details": {"cache_read": 800, "cache_creation": 150, "ephemeral_1h_input_tokens": 50},
    }


def _anthropic_raw_usage() -> dict[str, Any]:
    # Anthropic counts the uncached input apart: 50 + 800 read + 150 written = 1,000 prompt tokens
    return {
        "input_tokens": 50,
        "output_tokens": 5,
        "cache_read_input_tokens": 800,
        "cache_creation_input_tokens": 150,
        "cache_creation": {"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 50},
    }


def _openai_raw_usage() -> dict[str, Any]:
    return {
        "prompt_tokens": 1000,
        "completion_tokens": 5,
        "total_tokens": 1005,
        "prompt_tokens_details": {"cached_tokens": 800},
    }


def _openai_sdk_usage() -> Any:
    from openai.types import CompletionUsage

    return CompletionUsage.model_validate(_openai_raw_usage())


class _CachingLangChainWing(LangChainWing):
    """The LangChain wing whose fake providers report prompt-cache tokens in ``usage_metadata``."""

    name = "langchain"

    def _fake(self, script: Script, tally: collections.Counter[str]) -> Any:
        return _lc_caching_class()(
            model=script.model, script=script, tally=tally, max_tokens=script.max_tokens
        )


def _lc_caching_class() -> Any:
    from langchain_core.messages import AIMessage

    class CachingChatModel(_lc_fake_class()):  # type: ignore[misc]
        def _answer(self, messages: Any, **kwargs: Any) -> AIMessage:
            message: AIMessage = super()._answer(messages, **kwargs)
            return message.model_copy(update={"usage_metadata": _langchain_usage()})

    return CachingChatModel


class _CachingLlamaIndexWing(LlamaIndexWing):
    """A LlamaIndex wing whose fake providers report the provider's own usage (with cache tokens) in ``raw``."""

    def __init__(self, api: str, shape: str) -> None:
        super().__init__(api)
        self.shape = shape
        self.name = f"llama_index-{api}-{shape}"

    def _fake(self, script: Script, tally: collections.Counter[str], manager: Any) -> Any:
        usage = {
            "anthropic": _anthropic_raw_usage,
            "openai": _openai_raw_usage,
            "openai-sdk": _openai_sdk_usage,
        }[self.shape]

        class CachingLLM(_li_fake_class()):  # type: ignore[misc]
            def _raw(self) -> dict[str, Any]:
                return {"model": self.script.model, "usage": usage()}

        return CachingLLM(script=script, tally=tally, callback_manager=manager, max_tokens=script.max_tokens)


CACHING_WINGS: list[tuple[Wing, Usage]] = [
    (_CachingLangChainWing(), EXPECTED),
    (_CachingLlamaIndexWing("chat", "anthropic"), EXPECTED),
    (_CachingLlamaIndexWing("complete", "anthropic"), EXPECTED),
    (_CachingLlamaIndexWing("chat", "openai"), EXPECTED_OPENAI),
    (_CachingLlamaIndexWing("chat", "openai-sdk"), EXPECTED_OPENAI),
]


@pytest.fixture(params=CACHING_WINGS, ids=[w.name for w, _ in CACHING_WINGS])
def caching(request: pytest.FixtureRequest) -> tuple[Wing, Usage]:
    return request.param  # type: ignore[no-any-return]


def _build(wing: Wing, how: str) -> Any:
    with handler_options(prices=CACHED_PRICES):
        if how == "plain":
            return wing.plain(Script("cheap-1"))
        if how == "cascade":
            return wing.cascade([Script("cheap-1"), Script("strong-1")])
        cache = AnswerCache(embedder=HashEmbeddings(), ledger=SQLiteLedger(), prices=CACHED_PRICES)
        return wing.cached(Script("cheap-1"), cache)


@pytest.mark.parametrize("how", ["plain", "cascade", "cached"])
def test_cache_tokens_reach_the_call_record_and_its_price(
    caching: tuple[Wing, Usage], mode: str, how: str
) -> None:
    wing, expected = caching
    target = _build(wing, how)
    obs = target.ask(mode)
    assert obs.error is None, obs.error
    (call,) = [r for r in target.ledger.records() if r.outcome == "ok"]
    assert call.model == "cheap-1"
    assert call.usage == expected
    assert call.cost_usd == pytest.approx(CACHED_PRICES["cheap-1"].cost(expected))
    # 800 of the 1,000 prompt tokens were read from the provider's prompt cache
    (row,) = spend_report(target.ledger, by="model").rows
    assert (row.input_tokens, row.cache_read_tokens) == (1000, 800)
    assert row.cache_write_tokens == expected.cache_write_tokens + expected.cache_write_1h_tokens
    assert row.prefix_hit_rate == pytest.approx(0.8)
    (summary,) = [r for r in target.ledger.summary("model") if r.key == "cheap-1"]
    assert summary.prefix_hit_rate == pytest.approx(0.8)
