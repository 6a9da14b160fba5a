"""Models with no native streaming behind the wrappers: a LangChain chat model with only ``_generate`` (its
``stream`` yields one whole ``AIMessage``) and a LlamaIndex LLM whose streaming methods raise
``NotImplementedError``. Streaming through ``CascadeChatModel``/``CascadeLLM`` and ``CachedChatModel``/``CachedLLM``
gives the whole answer as one chunk, as LangChain does for such a model; gates and escalation work on it, the budget
handler counts each call once, and the cache stores the answer and replays it.
"""

from __future__ import annotations

import pytest

from frugal_chains import SQLiteLedger
from frugal_chains.cache import AnswerCache
from frugal_chains.cache.replay import replay_pieces
from frugal_chains.metadata import cache_status
from frugal_chains.routing import GateContext, GateResult, RegexGate
from frugal_chains.testing.fake_embeddings import HashEmbeddings
from tests.contract.test_cascade_contract import ok, routed
from tests.contract.wings import MODES, PRICES, Observation, Wing, cheap, cost, strong, without_streaming

STREAMS = ("stream", "astream")
ANSWER = "Paris is the capital of France ."
QUESTION = "What is the capital of France?"


def check_whole(obs: Observation, mode: str, text: str) -> None:
    """The answer; a stream shows it as one chunk (the model could not stream it)."""
    assert obs.error is None, repr(obs.error)
    assert obs.text == text
    assert obs.chunks == ([text] if mode in STREAMS else [])


class _LiveGate:
    """A gate that does not need the whole answer: the chosen tier streams live (its answer is not gated)."""

    name = "stream_safe"
    needs_full_answer = False

    def check(self, ctx: GateContext) -> GateResult:
        return GateResult(gate=self.name, passed="42" in ctx.answer.text)

    async def acheck(self, ctx: GateContext) -> GateResult:
        return self.check(ctx)


def test_a_cascade_streams_a_tier_without_streaming_as_one_chunk(wing: Wing, mode: str) -> None:
    c, s = cheap("It is 42 ."), strong("Forty-two.")
    target = without_streaming(wing).cascade([c, s], gates=[RegexGate(r"\d")])
    obs = target.ask(mode)
    check_whole(obs, mode, "It is 42 .")
    assert obs.outcomes == ["accepted"]
    assert obs.calls == {"cheap-1": 1}
    assert obs.usage == (10, 5)
    assert obs.records == [*ok(c, "cheap-1"), routed("cheap-1")]


def test_a_gate_escalates_a_whole_answer_and_the_strong_tier_streams_as_one_chunk(
    wing: Wing, mode: str
) -> None:
    c, s = cheap("I am not sure ."), strong("It is 42 .")
    target = without_streaming(wing).cascade([c, s], gates=[RegexGate(r"\d")])
    obs = target.ask(mode)
    check_whole(obs, mode, "It is 42 .")  # the rejected cheap answer is never shown
    assert obs.outcomes == ["escalated", "accepted"]
    assert obs.frugal is not None and obs.frugal["cascade"]["tier"] == "strong-1"
    assert obs.calls == {"cheap-1": 1, "strong-1": 1}
    assert obs.usage == (30, 13)
    assert obs.records == [*ok(c, "cheap-1"), *ok(s, "strong-1"), routed("strong-1")]
    assert target.tier_stats() == {"cheap-1": (1, 1, 0, 0), "strong-1": (1, 0, 0, 1)}


def test_a_live_tier_without_streaming_is_shown_whole(wing: Wing, mode: str) -> None:
    c, s = cheap("I am not sure ."), strong()
    obs = without_streaming(wing).cascade([c, s], gates=[_LiveGate()]).ask(mode)
    if mode in STREAMS:  # live: shown as it came (one whole chunk), so not gated
        check_whole(obs, mode, "I am not sure .")
        assert obs.outcomes == ["accepted"] and obs.calls == {"cheap-1": 1}
    else:
        check_whole(obs, mode, "It is 42 .")
        assert obs.outcomes == ["escalated", "accepted"]


def new_cache() -> AnswerCache:
    return AnswerCache(embedder=HashEmbeddings(), ledger=SQLiteLedger(), prices=PRICES)


@pytest.mark.parametrize("then", MODES)
def test_the_cache_stores_a_whole_streamed_answer_and_replays_it(wing: Wing, mode: str, then: str) -> None:
    cache = new_cache()
    target = without_streaming(wing).cached(cheap(ANSWER, "(paid again)"), cache)
    miss = target.ask(mode, QUESTION)
    check_whole(miss, mode, ANSWER)
    assert cache_status({"frugal": miss.frugal}) is None
    assert miss.usage == (10, 5)
    assert miss.records == ok(cheap(ANSWER), None)  # the wrapped call is counted once, the wrapper never
    assert cache.stats.updates == 1

    hit = target.ask(then, QUESTION)
    assert hit.error is None and hit.text == ANSWER
    assert cache_status({"frugal": hit.frugal}) == "hit"
    assert hit.calls == {"cheap-1": 1}  # served: the model was not called again
    assert hit.chunks == (replay_pieces(ANSWER) if then in STREAMS else [])
    assert hit.records == [("cache_hit", "cheap-1", None, 10, 5, 0.0, round(cost("cheap-1", 10, 5), 12))]


def test_a_whole_answer_closed_early_is_not_stored(wing: Wing) -> None:
    cache = new_cache()
    target = without_streaming(wing).cached(cheap(ANSWER), cache)
    obs = target.ask("stream", QUESTION, stop_after=1)
    assert obs.error is None and obs.chunks == [ANSWER]
    assert cache.stats.updates == 0  # the caller closed the stream before it ended
