"""LLMJudgeVerifier: the yes/no duplicate judge, its calls recorded in the ledger (tokens and USD), the async path,
a failing judge failing the cache open, and the two wings' judge_verifier translations."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from frugal_chains import ConfigurationError, Price, SQLiteLedger, attribute
from frugal_chains.cache import AnswerCache, CacheRequest, LLMJudgeVerifier
from frugal_chains.cache.guard import VERIFIER_PURPOSE
from frugal_chains.testing import HashEmbeddings

STORED = "How long is the refund window?"
ASKED = "How long is the refund window please?"
PRICES = {"judge-mini": Price(input=1.0, output=2.0)}


def q(text: str) -> CacheRequest:
    return CacheRequest.from_prompt(text)


def reply(text: str, input_tokens: int = 50, output_tokens: int = 1) -> Any:
    """A provider response shaped like a LangChain message (what judge_verifier's callable returns)."""
    return SimpleNamespace(
        content=text,
        usage_metadata={
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens,
        },
        response_metadata={"model_name": "judge-mini"},
    )


def strict_cache(verifier: LLMJudgeVerifier, ledger: SQLiteLedger | None = None) -> AnswerCache:
    cache = AnswerCache(
        embedder=HashEmbeddings(), preset="strict", verifier=verifier, ledger=ledger, prices=PRICES
    )
    cache.update(q(STORED), "30 days.")
    return cache


def judge_records(ledger: SQLiteLedger) -> list[Any]:
    return [r for r in ledger.records() if r.extra.get("purpose") == VERIFIER_PURPOSE]


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_the_judges_call_is_recorded_with_its_tokens_and_usd(is_async: bool) -> None:
    ledger = SQLiteLedger()
    prompts: list[str] = []

    def judge(prompt: str) -> Any:
        prompts.append(prompt)
        return reply("Yes")

    cache = strict_cache(LLMJudgeVerifier(judge), ledger)
    with attribute(feature="faq"):
        hit = asyncio.run(cache.alookup(q(ASKED))) if is_async else cache.lookup(q(ASKED))
    assert hit is not None and hit.tier == "semantic"
    assert len(prompts) == 1 and ASKED in prompts[0] and STORED in prompts[0]
    [record] = judge_records(ledger)
    assert (record.outcome, record.model, record.usage.input_tokens, record.usage.output_tokens) == (
        "ok",
        "judge-mini",
        50,
        1,
    )
    assert record.cost_usd == pytest.approx((50 * 1.0 + 1 * 2.0) / 1_000_000)
    assert record.price_known and not record.usage_estimated
    assert record.attribution.feature == "faq"
    assert record.extra["duplicate"] is True
    assert [r.outcome for r in ledger.records()] == ["ok", "cache_hit"]  # the judge's call, then the hit


def test_the_async_path_awaits_the_async_judge() -> None:
    seen: list[str] = []

    def sync_judge(prompt: str) -> Any:
        raise AssertionError("the async path must not call the sync judge")

    async def async_judge(prompt: str) -> Any:
        await asyncio.sleep(0)
        seen.append("awaited")
        return reply("no")

    ledger = SQLiteLedger()
    cache = strict_cache(LLMJudgeVerifier(sync_judge, async_judge), ledger)
    assert asyncio.run(cache.alookup(q(ASKED))) is None
    assert seen == ["awaited"]
    assert cache.stats.verifier_rejections == 1
    assert [r.extra["duplicate"] for r in judge_records(ledger)] == [False]


def test_an_async_def_judge_serves_both_paths() -> None:
    async def judge(prompt: str) -> str:
        await asyncio.sleep(0)
        return "yes"

    verifier = LLMJudgeVerifier(judge)
    assert verifier.verify("a?", "b?", 0.9) is True  # no loop running: run to completion
    assert asyncio.run(verifier.averify("a?", "b?", 0.9)) is True


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_a_failing_judge_is_a_miss_not_a_crash(is_async: bool, caplog: pytest.LogCaptureFixture) -> None:
    def judge(prompt: str) -> Any:
        raise TimeoutError("judge timed out")

    ledger = SQLiteLedger()
    cache = strict_cache(LLMJudgeVerifier(judge), ledger)
    found = asyncio.run(cache.alookup(q(ASKED))) if is_async else cache.lookup(q(ASKED))
    assert found is None
    assert (cache.stats.errors, cache.stats.misses, cache.stats.verifier_rejections) == (1, 1, 0)
    assert judge_records(ledger) == []
    assert "the verifier failed" in caplog.text


def test_an_async_judge_under_a_running_loop_in_the_sync_path_fails_open() -> None:
    async def judge(prompt: str) -> str:
        return "yes"

    cache = strict_cache(LLMJudgeVerifier(judge))

    async def main() -> Any:
        return cache.lookup(q(ASKED))  # sync lookup inside a loop: the judge cannot run, a miss

    assert asyncio.run(main()) is None
    assert cache.stats.errors == 1


def test_a_string_reply_is_estimated_and_priced_by_the_model_given() -> None:
    ledger = SQLiteLedger()
    verifier = LLMJudgeVerifier(lambda prompt: "Yes, the same question.", model="judge-mini")
    strict_cache(verifier, ledger).lookup(q(ASKED))
    [record] = judge_records(ledger)
    assert record.usage_estimated and record.usage.input_tokens > 0 and record.usage.output_tokens > 0
    assert record.cost_usd == pytest.approx(
        (record.usage.input_tokens * 1.0 + record.usage.output_tokens * 2.0) / 1_000_000
    )


def test_an_unpriced_judge_is_recorded_with_unknown_usd() -> None:
    ledger = SQLiteLedger()
    verifier = LLMJudgeVerifier(lambda prompt: "yes", model="my-private-judge")
    strict_cache(verifier, ledger).lookup(q(ASKED))
    [record] = judge_records(ledger)
    assert record.cost_usd is None and not record.price_known


@pytest.mark.parametrize(
    ("text", "duplicate"),
    [
        ("yes", True),
        ("Yes.", True),
        ("No, different audience.", False),
        ("I am not sure.", False),
        ("", False),
    ],
)
def test_only_a_clear_yes_is_a_duplicate(text: str, duplicate: bool) -> None:
    assert LLMJudgeVerifier(lambda prompt: text).verify("a?", "b?", 0.9) is duplicate


def test_the_cache_lends_its_ledger_only_to_a_verifier_without_one() -> None:
    cache_ledger, own = SQLiteLedger(), SQLiteLedger()
    bare = LLMJudgeVerifier(lambda prompt: "yes")
    cache = AnswerCache(embedder=HashEmbeddings(), verifier=bare, ledger=cache_ledger)
    assert isinstance(cache.verifier, LLMJudgeVerifier) and cache.verifier.ledger is cache_ledger
    assert bare.ledger is None  # the user's object is left as it was
    mine = LLMJudgeVerifier(lambda prompt: "yes", ledger=own)
    assert AnswerCache(embedder=HashEmbeddings(), verifier=mine, ledger=cache_ledger).verifier is mine


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"judge": "gpt-4o-mini"}, "judge"),
        ({"judge": lambda p: "yes", "prompt": "Same? {query}"}, "prompt"),
        ({"judge": lambda p: "yes", "ajudge": 3}, "ajudge"),
        ({"judge": lambda p: "yes", "ledger": object()}, "ledger"),
        ({"judge": lambda p: "yes", "prices": [1]}, "prices"),
    ],
)
def test_bad_arguments_name_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigurationError) as e:
        LLMJudgeVerifier(**kwargs)
    assert e.value.field == field


# -- the wings' translations ---------------------------------------------------------------------------------------
def test_langchain_judge_verifier_reads_the_chat_models_usage() -> None:
    from frugal_chains.langchain import judge_verifier
    from frugal_chains.testing import FakeUsageChatModel

    ledger = SQLiteLedger()
    judge = FakeUsageChatModel(model="judge-mini", responses=["yes"], output_tokens=1)
    cache = strict_cache(judge_verifier(judge), ledger)
    assert cache.lookup(q(ASKED)) is not None
    assert asyncio.run(cache.alookup(q(ASKED))) is not None
    records = judge_records(ledger)
    assert [(r.model, r.usage.output_tokens, r.usage_estimated) for r in records] == [
        ("judge-mini", 1, False)
    ] * 2
    assert all(r.cost_usd == pytest.approx((r.usage.input_tokens + 2) / 1_000_000) for r in records)


def test_llama_index_judge_verifier_reads_the_completions_usage() -> None:
    from frugal_chains.llama_index import judge_verifier
    from frugal_chains.testing import FakeUsageLLM

    ledger = SQLiteLedger()
    judge = FakeUsageLLM(model="judge-mini", responses="yes", output_tokens=1)
    cache = strict_cache(judge_verifier(judge), ledger)
    assert cache.lookup(q(ASKED)) is not None
    assert asyncio.run(cache.alookup(q(ASKED))) is not None
    records = judge_records(ledger)
    assert [(r.model, r.usage.output_tokens, r.usage_estimated) for r in records] == [
        ("judge-mini", 1, False)
    ] * 2


@pytest.mark.parametrize("wing", ["langchain", "llama_index"])
def test_judge_verifier_refuses_what_is_not_a_model(wing: str) -> None:
    import importlib

    judge_verifier = importlib.import_module(f"frugal_chains.{wing}").judge_verifier
    with pytest.raises(ConfigurationError):
        judge_verifier("gpt-4o-mini")


def test_langchain_a_judge_call_a_budget_scope_sees_is_recorded_once() -> None:
    from frugal_chains.langchain import budget_scope, judge_verifier
    from frugal_chains.testing import FakeUsageChatModel

    ledger = SQLiteLedger()
    judge = FakeUsageChatModel(model="judge-mini", responses=["yes"], output_tokens=1)
    cache = strict_cache(judge_verifier(judge), ledger)
    with budget_scope(ledger=ledger, prices=PRICES):
        assert cache.lookup(q(ASKED)) is not None
        assert asyncio.run(cache.alookup(q(ASKED))) is not None
    judged = [r for r in ledger.records() if r.model == "judge-mini"]
    assert len(judged) == 2  # one per call, written by the budget handler that reserved it
    assert judge_records(ledger) == []
    assert cache.lookup(q(ASKED)) is not None  # outside the scope the verifier records it itself
    assert len(judge_records(ledger)) == 1


def test_llama_index_a_judge_with_a_budget_handler_is_recorded_once() -> None:
    from llama_index.core.callbacks import CallbackManager

    from frugal_chains.llama_index import TokenBudgetHandler, judge_verifier
    from frugal_chains.testing import FakeUsageLLM

    ledger = SQLiteLedger()
    handler = TokenBudgetHandler([], ledger=ledger, prices=PRICES)
    judge = FakeUsageLLM(
        model="judge-mini", responses="yes", output_tokens=1, callback_manager=CallbackManager([handler])
    )
    cache = strict_cache(judge_verifier(judge), ledger)
    assert cache.lookup(q(ASKED)) is not None
    assert [r.model for r in ledger.records() if r.outcome == "ok"] == ["judge-mini"]
    assert judge_records(ledger) == []


def test_placeholders_inside_the_questions_are_left_as_written() -> None:
    # The prompt is filled once: a question that contains "{cached}" or "{query}" is sent as the user wrote it.
    verifier = LLMJudgeVerifier(lambda prompt: "no", prompt="A: {query}\nB: {cached}")
    assert verifier.render("What does {cached} mean?", "Is {query} a placeholder?") == (
        "A: What does {cached} mean?\nB: Is {query} a placeholder?"
    )
