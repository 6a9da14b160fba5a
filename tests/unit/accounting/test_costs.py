"""Costs equal hand-computed figures from the per-token rates (LiteLLM's map and custom prices)."""

from __future__ import annotations

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage

from frugal_chains import Price, Usage
from frugal_chains.accounting import PriceBook, litellm_price
from frugal_chains.langchain import TokenBudgetHandler

M = 1e-6  # USD per token at $1 per million

# (case, model, usage, hand-computed USD from the per-million rates below)
# gpt-4o-mini: in 0.15, out 0.60 | gpt-4o: in 2.50, cached 1.25, out 10.00
# claude-sonnet-4-5: in 3.00, cache read 0.30, 5-min write 3.75, 1-hour write 6.00, out 15.00
# o3-mini: in 1.10, out 4.40 (reasoning billed as output) | gemini-2.5-pro over 200k: in 2.50, out 15.00
CASES = [
    ("plain", "gpt-4o-mini", Usage(input_tokens=1000, output_tokens=500), 1000 * 0.15 * M + 500 * 0.60 * M),
    (
        "anthropic cache read",
        "claude-sonnet-4-5",
        Usage(input_tokens=10_000, output_tokens=200, cache_read_tokens=8000),
        2000 * 3.00 * M + 8000 * 0.30 * M + 200 * 15.00 * M,
    ),
    (
        "anthropic 5-minute cache write",
        "claude-sonnet-4-5",
        Usage(input_tokens=5000, output_tokens=100, cache_write_tokens=4000),
        1000 * 3.00 * M + 4000 * 3.75 * M + 100 * 15.00 * M,
    ),
    (
        "anthropic 1-hour cache write",
        "claude-sonnet-4-5",
        Usage(input_tokens=5000, output_tokens=100, cache_write_1h_tokens=4000),
        1000 * 3.00 * M + 4000 * 6.00 * M + 100 * 15.00 * M,
    ),
    (
        "openai cached tokens",
        "gpt-4o",
        Usage(input_tokens=2000, output_tokens=100, cache_read_tokens=1024),
        976 * 2.50 * M + 1024 * 1.25 * M + 100 * 10.00 * M,
    ),
    (
        "reasoning tokens",
        "o3-mini",
        Usage(input_tokens=100, output_tokens=1000, reasoning_tokens=800),
        100 * 1.10 * M + 1000 * 4.40 * M,
    ),
    (
        "long-context tier",
        "gemini-2.5-pro",
        Usage(input_tokens=250_000, output_tokens=1000),
        250_000 * 2.50 * M + 1000 * 15.00 * M,
    ),
]


@pytest.mark.parametrize(("case", "model", "usage", "expected"), CASES, ids=[c[0] for c in CASES])
def test_litellm_costs_match_hand_computed(case: str, model: str, usage: Usage, expected: float) -> None:
    assert PriceBook().cost(model, usage) == pytest.approx(expected, rel=1e-12)


def test_custom_price_and_reasoning_rate() -> None:
    book = PriceBook(
        {"my-llama": Price(input=0.5, output=0.5), "thinker": Price(input=1, output=2, reasoning=3)}
    )
    assert book.cost("my-llama", Usage(input_tokens=1_000_000, output_tokens=1_000_000)) == pytest.approx(1.0)
    thinker = book.cost("thinker", Usage(input_tokens=100, output_tokens=1000, reasoning_tokens=800))
    assert thinker == pytest.approx(100 * 1 * M + 200 * 2 * M + 800 * 3 * M)


def test_override_wins_over_litellm() -> None:
    book = PriceBook({"gpt-4o-mini": Price(input=100, output=100)})
    assert book.cost("gpt-4o-mini", Usage(input_tokens=10, output_tokens=0)) == pytest.approx(1000 * M)


def test_rates_read_from_litellm_map() -> None:
    p = litellm_price("claude-sonnet-4-5")
    assert p is not None
    assert (p.input, p.output, p.cache_read, p.cache_write, p.cache_write_1h) == pytest.approx(
        (3.0, 15.0, 0.3, 3.75, 6.0)
    )
    assert litellm_price("anthropic/claude-sonnet-4-5") == p
    assert litellm_price("claude-sonnet-4-5", provider="anthropic") == p


class _Scripted(GenericFakeChatModel):
    model: str = "claude-sonnet-4-5"


# usage_metadata as langchain-anthropic / langchain-openai report it -> the same hand-computed costs
HANDLER_CASES = [
    (
        "anthropic read + both writes",
        "claude-sonnet-4-5",
        {
            "input_tokens": 10_000,
            "output_tokens": 300,
            "total_tokens": 10_300,
            "input_token_details": {
                "cache_read": 5000,
                "cache_creation": 3000,
                "ephemeral_5m_input_tokens": 1000,
                "ephemeral_1h_input_tokens": 2000,
            },
        },
        2000 * 3.00 * M + 5000 * 0.30 * M + 1000 * 3.75 * M + 2000 * 6.00 * M + 300 * 15.00 * M,
    ),
    (
        "openai cached + reasoning",
        "o3-mini",
        {
            "input_tokens": 3000,
            "output_tokens": 2000,
            "total_tokens": 5000,
            "input_token_details": {"cache_read": 1024},
            "output_token_details": {"reasoning": 1500},
        },
        1976 * 1.10 * M + 1024 * 0.55 * M + 2000 * 4.40 * M,
    ),
]


@pytest.mark.parametrize(
    ("case", "model", "usage", "expected"), HANDLER_CASES, ids=[c[0] for c in HANDLER_CASES]
)
def test_handler_commits_hand_computed_cost(case: str, model: str, usage: dict, expected: float) -> None:
    handler = TokenBudgetHandler()
    msg = AIMessage("ok", usage_metadata=usage, response_metadata={"model_name": model})
    _Scripted(model=model, messages=iter([msg])).invoke("hi", config={"callbacks": [handler]})
    (record,) = handler.ledger.records()
    assert record.model == model
    assert record.cost_usd == pytest.approx(expected, rel=1e-12)
    assert record.usage_estimated is False


def test_one_hour_cache_write_above_the_long_context_threshold() -> None:
    # vertex_ai/claude-sonnet-4-5 above 200k input tokens: input $6/M, 1-hour cache write $12/M, output $22.5/M
    usage = Usage(input_tokens=300_000, output_tokens=1000, cache_write_1h_tokens=250_000)
    expected = 50_000 * 6.0 * M + 250_000 * 12.0 * M + 1000 * 22.5 * M
    assert PriceBook().cost("vertex_ai/claude-sonnet-4-5", usage) == pytest.approx(expected, rel=1e-12)


def test_commit_keeps_your_price_when_the_response_names_a_snapshot() -> None:
    handler = TokenBudgetHandler(prices={"gpt-4o": Price(input=0.1, output=0.1)})
    msg = AIMessage(
        "ok",
        usage_metadata={"input_tokens": 1000, "output_tokens": 100, "total_tokens": 1100},
        response_metadata={"model_name": "gpt-4o-2024-08-06"},
    )
    _Scripted(model="gpt-4o", messages=iter([msg])).invoke("hi", config={"callbacks": [handler]})
    (record,) = handler.ledger.records()
    assert record.model == "gpt-4o-2024-08-06"
    assert record.cost_usd == pytest.approx(1100 * 0.1 * M)


def test_commit_reprices_with_the_snapshot_from_the_price_map() -> None:
    handler = TokenBudgetHandler()
    msg = AIMessage(
        "ok",
        usage_metadata={"input_tokens": 1000, "output_tokens": 100, "total_tokens": 1100},
        response_metadata={"model_name": "gpt-4o-mini-2024-07-18"},
    )
    _Scripted(model="gpt-4o-mini", messages=iter([msg])).invoke("hi", config={"callbacks": [handler]})
    (record,) = handler.ledger.records()
    expected = PriceBook().cost("gpt-4o-mini-2024-07-18", Usage(input_tokens=1000, output_tokens=100))
    assert record.cost_usd == pytest.approx(expected)
