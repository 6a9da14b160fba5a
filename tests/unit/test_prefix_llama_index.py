"""The LlamaIndex prefix-caching adapters: ``PrefixCacheFormatter`` (ChatMessage lists) and ``with_prefix_caching``
(an LLM wrapper), checked against what the wrapped LLM receives."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from llama_index.core.base.llms.types import CachePoint, ChatMessage, TextBlock
from llama_index.core.callbacks import CallbackManager
from pydantic import Field

from frugal_chains import Budget, ConfigurationError, SQLiteLedger
from frugal_chains.llama_index import (
    PrefixCacheFormatter,
    PrefixCachingLLM,
    TokenBudgetHandler,
    with_prefix_caching,
)
from frugal_chains.testing import FakeUsageLLM

POLICY = "\n".join(
    f"Rule {i}: a ticket in fare class {'ABCDEFG'[i % 7]} may be changed up to {i % 24 + 1} hours before "
    "departure; refunds follow the airline's published conditions."
    for i in range(120)
)


def system_prompt(day: str, request_id: str = "req_8f3a9b2c4d5e6f70") -> str:
    return f"You are the airline's support agent.\n{POLICY}\nToday is {day}. Request id: {request_id}."


def conversation(day: str = "2026-12-07") -> list[ChatMessage]:
    return [
        ChatMessage(role="system", content=system_prompt(day)),
        ChatMessage(role="user", content="Where is my bag?"),
    ]


class Recording(FakeUsageLLM):
    """A fake LLM that records the messages and call kwargs it receives."""

    seen: list[tuple[list[ChatMessage], dict[str, Any]]] = Field(default_factory=list, exclude=True)

    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> Any:
        self.seen.append((list(messages), dict(kwargs)))
        return super().chat(messages, **kwargs)

    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> Any:
        self.seen.append((list(messages), dict(kwargs)))
        return await super().achat(messages, **kwargs)

    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> Any:
        self.seen.append((list(messages), dict(kwargs)))
        return super().stream_chat(messages, **kwargs)

    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> Any:
        self.seen.append((list(messages), dict(kwargs)))
        return await super().astream_chat(messages, **kwargs)


def stable_text(message: ChatMessage) -> str:
    first = message.blocks[0]
    assert isinstance(first, TextBlock)
    return first.text


def test_formatter_anthropic_cache_point_after_the_stable_part() -> None:
    formatter = PrefixCacheFormatter(model="claude-sonnet-4-5")
    first = formatter.format(conversation("2026-12-07"))
    second = formatter.format(conversation("2027-01-15"))
    for out, day in ((first, "2026-12-07"), (second, "2027-01-15")):
        system = out[0]
        kinds = [b.block_type for b in system.blocks]
        assert kinds[:2] == ["text", "cache"]
        assert isinstance(system.blocks[1], CachePoint) and system.blocks[1].cache_control.type == "ephemeral"
        assert day not in stable_text(system) and day in (system.content or "")
        assert "req_8f3a9b2c4d5e6f70" not in stable_text(system)
    assert stable_text(first[0]) == stable_text(second[0])
    assert formatter.last_report is not None and formatter.last_report.cacheable_share >= 0.9


def test_formatter_keeps_untouched_messages_and_reports_the_plan() -> None:
    question = ChatMessage(role="user", content="Where is my bag?")
    messages = [ChatMessage(role="system", content=system_prompt("2026-12-07")), question]
    out, plan = PrefixCacheFormatter(model="gpt-4o").plan(messages)
    assert out[-1] is question
    assert plan.params.get("prompt_cache_key")
    assert all(isinstance(b, TextBlock) for b in out[0].blocks)  # no markers for OpenAI
    with pytest.raises(ConfigurationError) as e:
        PrefixCacheFormatter(model="claude-sonnet-4-5").format(["not a message"])  # type: ignore[list-item]
    assert e.value.field == "messages"
    with pytest.raises(ConfigurationError) as e:
        PrefixCacheFormatter()
    assert e.value.field == "model"


def test_wrapper_formats_chat_in_all_four_modes() -> None:
    inner = Recording(model="claude-sonnet-4-5", responses=["one two"])
    llm = with_prefix_caching(inner)
    assert isinstance(llm, PrefixCachingLLM)
    whole = llm.chat(conversation())
    streamed = list(llm.stream_chat(conversation()))

    async def run() -> tuple[Any, list[Any]]:
        a = await llm.achat(conversation())
        gen = await llm.astream_chat(conversation())
        return a, [r async for r in gen]

    awhole, astreamed = asyncio.run(run())
    assert whole.message.content == awhole.message.content == "one two"
    assert "".join(r.delta for r in streamed) == "".join(r.delta for r in astreamed) == "one two"
    for response in (whole, awhole, streamed[-1], astreamed[-1]):
        prefix = response.additional_kwargs["frugal"]["prefix"]
        assert prefix["provider"] == "anthropic" and prefix["breakpoints"] >= 1
    assert len(inner.seen) == 4
    for received, _ in inner.seen:
        assert received[0].blocks[1].block_type == "cache"
        assert "2026-12-07" not in stable_text(received[0]) and "2026-12-07" in (received[0].content or "")


def test_wrapper_passes_prompt_cache_key_and_counts_usage_once() -> None:
    ledger = SQLiteLedger()
    handler = TokenBudgetHandler([Budget(max_usd=10.0)], ledger=ledger)
    inner = Recording(model="gpt-4o", callback_manager=CallbackManager([handler]))
    llm = with_prefix_caching(inner)
    llm.chat(conversation("2026-12-07"))
    llm.chat(conversation("2026-12-08"))
    llm.chat(conversation(), prompt_cache_key="mine")
    keys = [kwargs.get("prompt_cache_key") for _, kwargs in inner.seen]
    assert keys[0] and keys[0] == keys[1] and keys[2] == "mine"
    records = [r for r in ledger.records() if r.outcome == "ok"]
    assert [r.model for r in records] == ["gpt-4o"] * 3  # one record per provider call, none for the wrapper


def test_wrapper_errors_reach_the_caller_and_complete_passes_through() -> None:
    llm = with_prefix_caching(Recording(model="claude-sonnet-4-5", fail_with=lambda: TimeoutError("slow")))
    with pytest.raises(TimeoutError, match="slow"):
        llm.chat(conversation())
    with pytest.raises(TimeoutError):
        asyncio.run(llm.achat(conversation()))
    plain = with_prefix_caching(FakeUsageLLM(model="gpt-4o", responses=["done"]))
    assert plain.complete("Today is 2026-12-07. Hi").text == "done"


def test_wrapper_bad_input_names_the_field() -> None:
    with pytest.raises(ConfigurationError) as e:
        with_prefix_caching("gpt-4o")  # type: ignore[arg-type]
    assert e.value.field == "llm"
    with pytest.raises(ConfigurationError) as e:
        with_prefix_caching(FakeUsageLLM(model="house-model"))
    assert e.value.field in ("provider", "rules")
    assert with_prefix_caching(FakeUsageLLM(model="house-model"), provider="vllm").chat(conversation())


@pytest.mark.parametrize("how", ["wrapped", "option"])
def test_cascade_llm_tiers_get_their_own_providers_formatting(how: str) -> None:
    from frugal_chains.llama_index import CascadeLLM
    from frugal_chains.routing import RegexGate

    cheap = Recording(model="claude-sonnet-4-5", responses=["not sure"])
    strong = Recording(model="gpt-4o", responses=["42"])
    if how == "wrapped":
        cascade = CascadeLLM(
            tiers=[with_prefix_caching(cheap), with_prefix_caching(strong)], gates=[RegexGate(r"\d")]
        )
    else:
        cascade = CascadeLLM(tiers=[cheap, strong], gates=[RegexGate(r"\d")], prefix_caching=True)
    assert cascade.tier_names == ["claude-sonnet-4-5", "gpt-4o"]
    response = cascade.chat(conversation())
    assert response.message.content == "42"
    ((to_cheap, cheap_kwargs),) = cheap.seen
    ((to_strong, strong_kwargs),) = strong.seen
    assert to_cheap[0].blocks[1].block_type == "cache" and "prompt_cache_key" not in cheap_kwargs
    assert all(isinstance(b, TextBlock) for b in to_strong[0].blocks) and strong_kwargs.get(
        "prompt_cache_key"
    )
    for received in (to_cheap, to_strong):
        assert "2026-12-07" in (received[0].content or "")


def test_cascade_llm_prefix_caching_option_checks_its_value() -> None:
    from frugal_chains.llama_index import CascadeLLM

    tiers = [FakeUsageLLM(model="claude-sonnet-4-5"), FakeUsageLLM(model="gpt-4o")]
    for bad in ("yes", {"model": "gpt-4o"}):
        with pytest.raises(ConfigurationError) as e:
            CascadeLLM(tiers=tiers, prefix_caching=bad)  # type: ignore[arg-type]
        assert e.value.field == "prefix_caching"


def test_formatter_closes_the_conversation_with_a_cache_point_when_asked() -> None:
    history = [
        *conversation("2026-12-07"),
        ChatMessage(role="assistant", content="Your bag is in Oslo."),
        ChatMessage(role="user", content="When will it arrive?"),
    ]
    plain = PrefixCacheFormatter(model="claude-sonnet-4-5").format(history)
    assert all(b.block_type != "cache" for b in plain[-1].blocks)  # off by default
    out = PrefixCacheFormatter(model="claude-sonnet-4-5", cache_conversation=True).format(history)
    last = out[-1]
    assert [b.block_type for b in last.blocks] == ["text", "cache"]
    assert isinstance(last.blocks[1], CachePoint) and last.blocks[1].cache_control.type == "ephemeral"
    assert last.content == "When will it arrive?" and out[1:3] == history[1:3]
