"""The built-in quality gates and ``resolve_gates``."""

from __future__ import annotations

import asyncio
import math
import re
import sys
from collections.abc import Sequence
from typing import Any

import pytest
from pydantic import BaseModel

from frugal_chains import ConfigurationError, Price, Usage
from frugal_chains.routing import (
    CallableGate,
    Cascade,
    GateContext,
    GateResult,
    JsonGate,
    LengthGate,
    LLMJudgeGate,
    LogprobGate,
    QualityGate,
    RefusalGate,
    RegexGate,
    SelfConsistencyGate,
    TierAnswer,
    TierSpec,
    resolve_gates,
)
from frugal_chains.routing.gates import default_extract

TOOL_CALL = {"name": "get_weather", "args": {"city": "Paris"}, "id": "call_1"}


def ctx(
    text: str = "",
    *,
    question: str = "q",
    messages: Sequence[dict[str, Any]] | None = None,
    tool_calls: Sequence[dict[str, Any]] = (),
    logprobs: Sequence[float] | None = None,
    model: str | None = None,
    sample: Any = None,
    asample: Any = None,
    judge_config: Any = None,
) -> GateContext:
    answer = TierAnswer(
        text=text,
        tool_calls=tuple(tool_calls),
        logprobs=None if logprobs is None else tuple(logprobs),
        model=model,
    )
    return GateContext(
        messages=messages if messages is not None else [{"role": "user", "content": question}],
        answer=answer,
        tier="cheap",
        tier_index=0,
        n_tiers=2,
        sample=sample,
        asample=asample,
        judge_config=judge_config,
    )


def both(gate: QualityGate, c: GateContext) -> GateResult:
    """Run check and acheck; they must agree."""
    sync = gate.check(c)
    async_ = asyncio.run(gate.acheck(c))
    assert (sync.passed, sync.skipped, sync.score) == (async_.passed, async_.skipped, async_.score)
    return sync


def field_of(exc: pytest.ExceptionInfo[ConfigurationError]) -> str | None:
    return exc.value.field


# ---------------------------------------------------------------------------------------------------- protocol


@pytest.mark.parametrize(
    "gate",
    [
        JsonGate(),
        RegexGate("x"),
        LengthGate(min_chars=1),
        RefusalGate(),
        LogprobGate(),
        SelfConsistencyGate(),
        LLMJudgeGate(lambda p: "Rating: [[9]]"),
        CallableGate(lambda c: True),
    ],
)
def test_every_gate_is_a_quality_gate_needing_the_full_answer(gate: Any) -> None:
    assert isinstance(gate, QualityGate)
    assert gate.needs_full_answer is True
    assert isinstance(gate.name, str) and gate.name
    assert repr(gate)


# ---------------------------------------------------------------------------------------------------- JSON


class City(BaseModel):
    city: str
    population: int


CITY_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
    "required": ["city", "population"],
}


@pytest.mark.parametrize(
    ("text", "passed"),
    [
        ('{"a": 1}', True),
        ("  [1, 2, 3]\n", True),
        ('Here you go:\n```json\n{"a": 1}\n```\nAnything else?', True),
        ('```\n{"a": 1}\n```', True),
        ("{'a': 1}", False),
        ('{"a": 1', False),
        ("The answer is 42.", False),
        ("", False),
        ("```json\nnot json\n```", False),
    ],
)
def test_json_gate_parses(text: str, passed: bool) -> None:
    r = both(JsonGate(), ctx(text))
    assert r.passed is passed
    if not passed:
        assert r.reason


@pytest.mark.parametrize("schema", [City, CITY_SCHEMA])
def test_json_gate_validates_against_pydantic_and_json_schema(schema: Any) -> None:
    gate = JsonGate(schema)
    assert both(gate, ctx('{"city": "Paris", "population": 2100000}')).passed
    r = both(gate, ctx('{"city": "Paris", "population": "many"}'))
    assert not r.passed and "population" in r.reason
    r = both(gate, ctx('```json\n{"city": "Paris"}\n```'))
    assert not r.passed and r.reason.startswith("schema")


def test_json_gate_skips_tool_call_answers() -> None:
    r = both(JsonGate(City), ctx("", tool_calls=[TOOL_CALL]))
    assert r.passed and r.skipped


@pytest.mark.parametrize("schema", ["City", 42, City(city="x", population=1), [CITY_SCHEMA]])
def test_json_gate_rejects_bad_schema_types(schema: Any) -> None:
    with pytest.raises(ConfigurationError) as e:
        JsonGate(schema)
    assert field_of(e) == "schema"


def test_json_gate_rejects_an_invalid_json_schema() -> None:
    with pytest.raises(ConfigurationError) as e:
        JsonGate({"type": "no-such-type"})
    assert field_of(e) == "schema"


def test_json_gate_without_jsonschema_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "jsonschema", None)  # makes ``import jsonschema`` raise ImportError
    with pytest.raises(ConfigurationError) as e:
        JsonGate(CITY_SCHEMA)
    assert field_of(e) == "schema" and "jsonschema" in str(e.value)
    assert JsonGate(City).check(ctx('{"city": "a", "population": 1}')).passed  # pydantic needs no jsonschema


# ---------------------------------------------------------------------------------------------------- regex


def test_regex_gate_must_match_and_must_not_match() -> None:
    assert both(RegexGate(r"####\s*\d+"), ctx("9 * 2 = 18\n#### 18")).passed
    r = both(RegexGate(r"####\s*\d+"), ctx("It is 18."))
    assert not r.passed and "####" in r.reason
    assert not both(RegexGate("TODO", must_match=False), ctx("x = 1  # TODO")).passed
    assert both(RegexGate("TODO", must_match=False), ctx("x = 1")).passed
    assert both(RegexGate("paris", flags=re.IGNORECASE), ctx("PARIS")).passed
    assert both(RegexGate(re.compile("a+b")), ctx("caaab")).passed


def test_regex_gate_skips_tool_calls_and_rejects_bad_patterns() -> None:
    assert both(RegexGate(r"\d"), ctx("", tool_calls=[TOOL_CALL])).skipped
    for bad in ["(unclosed", "*", 42]:
        with pytest.raises(ConfigurationError) as e:
            RegexGate(bad)  # type: ignore[arg-type]
        assert field_of(e) == "pattern"
    with pytest.raises(ConfigurationError) as e:
        RegexGate(re.compile("a"), flags=re.I)
    assert field_of(e) == "flags"


# ---------------------------------------------------------------------------------------------------- length


def test_length_gate_chars_and_tokens() -> None:
    gate = LengthGate(min_chars=3, max_chars=10)
    assert both(gate, ctx("Paris")).passed
    assert both(gate, ctx("  Paris  \n")).passed  # surrounding whitespace is not counted
    assert not both(gate, ctx("ok")).passed
    assert "max_chars" in both(gate, ctx("a" * 11)).reason
    tokens = LengthGate(min_tokens=2, max_tokens=4)
    assert not both(tokens, ctx("hello")).passed  # 1 token
    assert both(tokens, ctx("hello world again")).passed
    assert "max_tokens" in both(tokens, ctx("one two three four five six seven")).reason
    nonempty = LengthGate(min_chars=1)
    assert not both(nonempty, ctx("   ")).passed


def test_length_gate_passes_tool_call_answers() -> None:
    r = both(LengthGate(min_chars=5), ctx("", tool_calls=[TOOL_CALL]))
    assert r.passed and r.skipped


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"min_chars": -1}, "min_chars"),
        ({"max_tokens": -5}, "max_tokens"),
        ({"max_chars": 1.5}, "max_chars"),
        ({"min_tokens": True}, "min_tokens"),
        ({"min_chars": 10, "max_chars": 5}, "min_chars"),
        ({"min_tokens": 10, "max_tokens": 5}, "min_tokens"),
        ({}, "min_chars"),
    ],
)
def test_length_gate_validation(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigurationError) as e:
        LengthGate(**kwargs)
    assert field_of(e) == field


# ---------------------------------------------------------------------------------------------------- refusal

REFUSALS = [
    "I can't help with that.",
    "I'm sorry, but I cannot assist with that request.",
    "I\u2019m unable to browse the internet.",
    "As an AI language model, I do not have opinions. But here is a summary.",
    "Sorry, I can\u2019t help with creating malware.",
    "I must decline to answer this.",
    "I apologize, but I can't provide that information.",
    "**I cannot assist with this.**",
]
UNCERTAIN = [
    "I'm not sure.",
    "I DON'T KNOW.",
    "Honestly, I do not know the answer to that.",
    "I cannot determine the answer from this.",
    "It is unclear whether the bridge opened in 1890 or 1891.",
    "There is not enough information to answer this question.",
    "I\u2019m not sure, but I think it is 42.",
    "The capital moved several times. The answer cannot be determined from the given information.",
    "Here is what I found. The sources disagree. Some say 1890. Others 1891. Others 1892. I don't know.",
]
HELPFUL = [
    "Paris is the capital of France.",
    "I don't know of any reason not to. Go ahead and merge it.",
    "People often say 'I don't know' when they are nervous. Psychologists call it a hedge.",
    'The phrase "I\'m not sure" softens a statement.',
    "Use `re.search`. It is unclear to many users that re.match anchors at the start.",
    "The function can't help but allocate here. Use a buffer instead.",
    "Here is the code. It handles edge cases. It also logs errors. You can extend it easily if you like. "
    "I'm not sure which Python version you use, so I avoided match statements here. Then run the tests. "
    "Hope it helps!",
    "To reset it, open Settings and choose Reset.",
    "",
]


@pytest.mark.parametrize("text", REFUSALS + UNCERTAIN)
def test_refusal_gate_fails_refusals_and_uncertainty(text: str) -> None:
    r = both(RefusalGate(), ctx(text))
    assert not r.passed, text
    assert r.reason.startswith("found")


@pytest.mark.parametrize("text", HELPFUL)
def test_refusal_gate_passes_helpful_answers(text: str) -> None:
    assert both(RefusalGate(), ctx(text)).passed, text


@pytest.mark.parametrize("text", UNCERTAIN[:6])
def test_refusal_gate_without_uncertainty(text: str) -> None:
    assert both(RefusalGate(uncertainty=False), ctx(text)).passed


@pytest.mark.parametrize("text", REFUSALS)
def test_refusal_gate_without_uncertainty_still_fails_refusals(text: str) -> None:
    assert not both(RefusalGate(uncertainty=False), ctx(text)).passed


def test_refusal_gate_extra_and_replaced_phrases() -> None:
    gate = RefusalGate(extra_phrases=["Contact support"])
    assert not gate.check(ctx("Please contact   SUPPORT for this.")).passed
    assert not gate.check(ctx("I'm not sure.")).passed  # built-ins kept
    only = RefusalGate(phrases=["ne sais pas"])
    assert not only.check(ctx("Je ne sais pas.")).passed
    assert only.check(ctx("I can't help with that.")).passed  # built-ins replaced
    from_generator = RefusalGate(extra_phrases=(p for p in ["contact support"]))
    assert from_generator.extra_phrases == ("contact support",)
    assert not from_generator.check(ctx("Contact support.")).passed
    assert not RefusalGate(phrases="nope").check(ctx("Nope.")).passed
    apostrophes = RefusalGate(phrases=["won\u2019t do"])
    assert not apostrophes.check(ctx("I won't do that.")).passed


def test_refusal_gate_skips_tool_calls_and_validates() -> None:
    assert both(RefusalGate(), ctx("", tool_calls=[TOOL_CALL])).skipped
    for kwargs, field in [
        ({"phrases": [""]}, "phrases"),
        ({"phrases": []}, "phrases"),
        ({"extra_phrases": [3]}, "extra_phrases"),
        ({"uncertainty": "yes"}, "uncertainty"),
    ]:
        with pytest.raises(ConfigurationError) as e:
            RefusalGate(**kwargs)
        assert field_of(e) == field


# ---------------------------------------------------------------------------------------------------- logprob


def logs(*probs: float) -> list[float]:
    return [math.log(p) for p in probs]


def test_logprob_gate_mean_probability() -> None:
    gate = LogprobGate(min_mean_prob=0.7)
    r = both(gate, ctx("x", logprobs=logs(0.9, 0.8, 0.95)))
    assert r.passed and r.score == pytest.approx((0.9 * 0.8 * 0.95) ** (1 / 3))
    r = both(gate, ctx("x", logprobs=logs(0.9, 0.2)))
    assert not r.passed and r.score == pytest.approx(math.sqrt(0.18))
    assert both(LogprobGate(min_mean_prob=1.0), ctx("x", logprobs=[0.0, 0.0])).passed


def test_logprob_gate_min_token_prob() -> None:
    gate = LogprobGate(min_mean_prob=0.5, min_token_prob=0.3)
    assert both(gate, ctx("x", logprobs=logs(0.99, 0.99, 0.99, 0.4))).passed
    r = both(gate, ctx("x", logprobs=logs(0.99, 0.99, 0.99, 0.25)))
    assert not r.passed and "token" in r.reason


def test_logprob_gate_missing_logprobs() -> None:
    r = both(LogprobGate(), ctx("x"))
    assert r.passed and r.skipped
    assert both(LogprobGate(), ctx("x", logprobs=[])).skipped
    r = both(LogprobGate(on_missing="fail"), ctx("x"))
    assert not r.passed and not r.skipped


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"min_mean_prob": 0}, "min_mean_prob"),
        ({"min_mean_prob": 1.5}, "min_mean_prob"),
        ({"min_mean_prob": float("nan")}, "min_mean_prob"),
        ({"min_mean_prob": True}, "min_mean_prob"),
        ({"min_token_prob": -0.1}, "min_token_prob"),
        ({"on_missing": "skip"}, "on_missing"),
    ],
)
def test_logprob_gate_validation(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigurationError) as e:
        LogprobGate(**kwargs)
    assert field_of(e) == field


# ---------------------------------------------------------------------------------------------------- self-consistency


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("so 9 * 2 = 18.\n#### 18", "The answer is 18.", True),
        ("#### 3.0", "3", True),
        ("It costs $1,000.", "the total is 1000", True),
        ("First 2 + 2 = 4, then 4 * 5 = 20. The answer is 20 apples, i.e. 2 boxes", "#### 20", True),
        ("#### 18", "#### 19", False),
        ("Paris!", "  paris ", True),
        ("Paris", "Lyon", False),
        ("-5", "\u22125", False),  # a unicode minus is not a hyphen: no normalisation of that
    ],
)
def test_default_extract(a: str, b: str, same: bool) -> None:
    assert (default_extract(a) == default_extract(b)) is same


class Sampler:
    def __init__(self, texts: list[str]) -> None:
        self.texts = texts
        self.calls: list[int] = []

    def __call__(self, n: int) -> list[TierAnswer]:
        self.calls.append(n)
        return [TierAnswer(text=t) for t in self.texts[:n]]

    async def asample(self, n: int) -> list[TierAnswer]:
        await asyncio.sleep(0)
        return self(n)


def test_self_consistency_agreement() -> None:
    sampler = Sampler(["The answer is 18.", "#### 18"])
    gate = SelfConsistencyGate(n=3, min_agreement=0.67)
    r = gate.check(ctx("9 * 2 = 18\n#### 18", sample=sampler))
    assert r.passed and r.score == 1.0
    assert sampler.calls == [2]
    r = gate.check(ctx("9 * 2 = 18\n#### 18", sample=Sampler(["#### 18", "#### 20"])))
    assert r.passed and r.score == pytest.approx(2 / 3)
    r = gate.check(ctx("#### 17", sample=Sampler(["#### 18", "#### 18"])))
    assert not r.passed and r.score == pytest.approx(1 / 3)
    r = SelfConsistencyGate(n=3, min_agreement=1.0).check(
        ctx("#### 18", sample=Sampler(["#### 18", "#### 20"]))
    )
    assert not r.passed


async def test_self_consistency_async_uses_asample() -> None:
    sampler = Sampler(["#### 4", "#### 4", "#### 5", "#### 4"])
    gate = SelfConsistencyGate(n=5, min_agreement=0.8)
    r = await gate.acheck(ctx("2 + 2 = 4", asample=sampler.asample))
    assert r.passed and r.score == pytest.approx(4 / 5) and sampler.calls == [4]
    # only a sync sampler: it runs in a worker thread
    sync_only = Sampler(["#### 5", "#### 5"])
    r = await SelfConsistencyGate(n=3).acheck(ctx("#### 4", sample=sync_only))
    assert not r.passed and sync_only.calls == [2]


async def test_self_consistency_without_sampler_is_skipped() -> None:
    r = SelfConsistencyGate().check(ctx("#### 4"))
    assert r.passed and r.skipped and "sampler" in r.reason
    r = await SelfConsistencyGate().acheck(ctx("#### 4"))
    assert r.passed and r.skipped
    r = SelfConsistencyGate().check(ctx("#### 4", sample=lambda n: []))
    assert r.passed and r.skipped
    r = SelfConsistencyGate().check(
        ctx("#### 4", sample=lambda n: ["#### 5", "#### 5"])
    )  # plain strings work too
    assert not r.passed and r.score == pytest.approx(1 / 3)


def test_self_consistency_custom_extract_and_tool_calls() -> None:
    first_word = SelfConsistencyGate(
        n=2, min_agreement=1.0, extract=lambda t: t.split()[0].strip(",.").lower()
    )
    assert first_word.check(ctx("Yes, because ...", sample=Sampler(["yes it is"]))).passed
    assert not first_word.check(ctx("Yes, because ...", sample=Sampler(["No way"]))).passed
    never = SelfConsistencyGate(n=2, min_agreement=0.5, extract=lambda t: None)
    assert not never.check(ctx("a", sample=Sampler(["a"]))).passed

    other = {"name": "get_weather", "args": {"city": "Lyon"}, "id": "call_2"}
    same = {
        "name": "get_weather",
        "args": {"city": "Paris"},
        "id": "call_9",
    }  # ids differ: still the same call

    def tool_sampler(calls: list[dict[str, Any]]) -> Any:
        return lambda n: [TierAnswer(text="", tool_calls=(c,)) for c in calls[:n]]

    gate = SelfConsistencyGate(n=3, min_agreement=0.67)
    assert gate.check(ctx("", tool_calls=[TOOL_CALL], sample=tool_sampler([same, other]))).passed
    assert not gate.check(ctx("", tool_calls=[TOOL_CALL], sample=tool_sampler([other, other]))).passed


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"n": 1}, "n"),
        ({"n": 21}, "n"),
        ({"n": 3.0}, "n"),
        ({"min_agreement": 0}, "min_agreement"),
        ({"min_agreement": 1.01}, "min_agreement"),
        ({"extract": "last"}, "extract"),
    ],
)
def test_self_consistency_validation(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigurationError) as e:
        SelfConsistencyGate(**kwargs)
    assert field_of(e) == field


def test_self_consistency_through_the_engine_counts_the_samples() -> None:
    tiers = [
        TierSpec(name="cheap", model="cheap", price=Price(input=1.0, output=1.0)),
        TierSpec(name="strong", model="strong", price=Price(input=10.0, output=10.0)),
    ]
    cascade = Cascade(tiers, gates=[SelfConsistencyGate(n=3)])
    usage = Usage(input_tokens=10, output_tokens=10)
    answers = {0: ["#### 4", "#### 5", "#### 6"], 1: ["#### 4"]}

    def call(i: int) -> TierAnswer:
        return TierAnswer(text=answers[i][0], usage=usage)

    def sampler(i: int) -> Any:
        return lambda n: [TierAnswer(text=t, usage=usage) for t in answers[i][1 : 1 + n]]

    result = cascade.run([{"role": "user", "content": "2+2?"}], call, sampler=sampler)
    assert result.tier == "strong"
    cheap = result.attempts[0]
    assert cheap.outcome == "escalated" and cheap.gates[0].gate == "self_consistency"
    assert cheap.usage == Usage(input_tokens=30, output_tokens=30)  # the answer and two samples


# ---------------------------------------------------------------------------------------------------- judge


class FakeAIMessage:
    def __init__(self, content: Any) -> None:
        self.content = content
        self.usage_metadata = {"input_tokens": 120, "output_tokens": 30, "total_tokens": 150}
        self.response_metadata = {"model_name": "judge-model-2024"}


class FakeChatModel:
    """LangChain-like: invoke / ainvoke, returns an AIMessage-like object."""

    def __init__(self, reply: Any) -> None:
        self.reply = reply
        self.calls: list[tuple[str, str, Any]] = []

    def invoke(self, prompt: str, config: Any = None) -> FakeAIMessage:
        self.calls.append(("invoke", prompt, config))
        return FakeAIMessage(self.reply)

    async def ainvoke(self, prompt: str, config: Any = None) -> FakeAIMessage:
        await asyncio.sleep(0)
        self.calls.append(("ainvoke", prompt, config))
        return FakeAIMessage(self.reply)


def test_judge_with_a_langchain_like_model_sync_and_async() -> None:
    judge = FakeChatModel("The answer is right and concise. Rating: [[8]]")
    gate = LLMJudgeGate(judge, threshold=0.7)
    config = {"callbacks": ["cb"]}
    c = ctx("Paris", question="Capital of France?", judge_config=config)
    r = gate.check(c)
    assert r.passed and r.score == 0.8 and r.reason == "rated 8/10"
    assert r.usage == Usage(input_tokens=120, output_tokens=30)
    assert r.model == "judge-model-2024"
    kind, prompt, got_config = judge.calls[-1]
    assert kind == "invoke" and got_config is config
    assert "[Question]\nCapital of France?" in prompt and "Paris" in prompt and "[[rating]]" in prompt
    assert "scale of 1 to 10" in prompt

    r = asyncio.run(gate.acheck(c))
    assert r.passed and judge.calls[-1][0] == "ainvoke" and judge.calls[-1][2] is config
    assert not LLMJudgeGate(judge, threshold=0.9).check(c).passed


def test_judge_without_config_is_called_without_it() -> None:
    class Strict:
        def __init__(self) -> None:
            self.kwargs: dict[str, Any] = {}

        def invoke(self, prompt: str, **kwargs: Any) -> str:
            self.kwargs = kwargs
            return "Rating: [[10]]"

    judge = Strict()
    r = LLMJudgeGate(judge).check(ctx("x"))
    assert r.passed and judge.kwargs == {} and r.usage is None


def test_judge_reads_list_content_and_fails_unparseable_replies() -> None:
    parts = [{"type": "text", "text": "Fine."}, {"type": "text", "text": "Rating: [[3]]"}]
    r = LLMJudgeGate(FakeChatModel(parts)).check(ctx("x"))
    assert not r.passed and r.score == 0.3
    r = LLMJudgeGate(FakeChatModel("It is good, I would say eight.")).check(ctx("x"))
    assert not r.passed and r.score is None and "no rating" in r.reason
    assert r.usage is not None  # the judge's tokens were spent anyway
    r = LLMJudgeGate(FakeChatModel("Rating: [[11]]")).check(ctx("x"))
    assert not r.passed and "no rating" in r.reason


async def test_judge_async_callable() -> None:
    seen: list[str] = []

    async def judge(prompt: str) -> str:
        await asyncio.sleep(0)
        seen.append(prompt)
        return "Rating: [[9]]" if "42" in prompt else "Rating: [[2]]"

    gate = LLMJudgeGate(judge)
    r = await gate.acheck(ctx("It is 42."))
    assert r.passed and r.score == 0.9 and len(seen) == 1
    assert not (await gate.acheck(ctx("It is 41."))).passed
    with pytest.raises(ConfigurationError, match="async") as e:
        gate.check(ctx("It is 42."))  # an event loop is running here
    assert field_of(e) == "judge"


def test_judge_async_callable_under_sync_check_without_a_loop() -> None:
    async def judge(prompt: str) -> str:
        return "Rating: [[7]]"

    r = LLMJudgeGate(judge).check(ctx("x"))
    assert r.passed and r.score == 0.7


async def test_judge_sync_callable_runs_off_the_loop_under_acheck() -> None:
    import threading

    threads: list[int] = []

    def judge(prompt: str) -> str:
        threads.append(threading.get_ident())
        return "Rating: [[8]]"

    assert (await LLMJudgeGate(judge).acheck(ctx("x"))).passed
    assert threads and threads[0] != threading.get_ident()


def test_judge_llama_index_like() -> None:
    class Completion:
        def __init__(self, text: str) -> None:
            self.text = text
            self.raw = {"model": "judge-li", "usage": {"prompt_tokens": 50, "completion_tokens": 5}}

    class FakeLLM:
        def __init__(self) -> None:
            self.calls: list[str] = []

        def complete(self, prompt: str) -> Completion:
            self.calls.append("complete")
            return Completion("Rating: [[6]]")

        async def acomplete(self, prompt: str) -> Completion:
            self.calls.append("acomplete")
            return Completion("Rating: [[9]]")

    llm = FakeLLM()
    gate = LLMJudgeGate(llm, threshold=0.7)
    r = gate.check(ctx("x"))
    assert not r.passed and r.score == 0.6 and r.model == "judge-li"
    assert r.usage == Usage(input_tokens=50, output_tokens=5)
    assert asyncio.run(gate.acheck(ctx("x"))).passed
    assert llm.calls == ["complete", "acomplete"]


def test_judge_prompt_placeholders_and_multi_turn() -> None:
    seen: list[str] = []

    def judge(prompt: str) -> str:
        seen.append(prompt)
        return "[[4]]"

    gate = LLMJudgeGate(
        judge, prompt="Q: {question}\nA: {answer}\nScore 1-{max_score}. {json: braces}", max_score=5
    )
    messages = [
        {"role": "system", "content": "be nice"},
        {"role": "user", "content": "Write a poem"},
        {"role": "assistant", "content": "Roses..."},
        {"role": "user", "content": "Now shorter"},
    ]
    r = gate.check(ctx("Short {poem}", messages=messages))
    assert r.passed and r.score == 0.8
    assert seen[0] == (
        "Q: User: Write a poem\nAssistant: Roses...\nUser: Now shorter\nA: Short {poem}\nScore 1-5. {json: braces}"
    )


def test_judge_prompt_leaves_placeholders_inside_the_question_and_answer_as_written() -> None:
    seen: list[str] = []

    def judge(prompt: str) -> str:
        seen.append(prompt)
        return "[[9]]"

    gate = LLMJudgeGate(judge, prompt="Q: {question}\nA: {answer}\nScore 1-{max_score}.")
    gate.check(ctx("Use {answer} or {max_score} as a template slot.", question="What does {answer} mean?"))
    assert seen[0] == (
        "Q: What does {answer} mean?\nA: Use {answer} or {max_score} as a template slot.\nScore 1-10."
    )


@pytest.mark.parametrize(
    ("args", "kwargs", "field"),
    [
        ((object(),), {}, "judge"),
        (("a string",), {}, "judge"),
        ((lambda p: "",), {"threshold": 0}, "threshold"),
        ((lambda p: "",), {"threshold": 1.5}, "threshold"),
        ((lambda p: "",), {"max_score": 1}, "max_score"),
        ((lambda p: "",), {"prompt": "Rate this: {answer}"}, "prompt"),
    ],
)
def test_judge_validation(args: tuple[Any, ...], kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigurationError) as e:
        LLMJudgeGate(*args, **kwargs)
    assert field_of(e) == field


# ---------------------------------------------------------------------------------------------------- callable


def test_callable_gate_bool_score_and_result() -> None:
    assert both(CallableGate(lambda c: "http" in c.answer.text), ctx("see http://x")).passed
    assert not both(CallableGate(lambda c: "http" in c.answer.text), ctx("trust me")).passed
    r = both(CallableGate(lambda c: 0.4, threshold=0.3), ctx("x"))
    assert r.passed and r.score == 0.4
    r = both(CallableGate(lambda c: 0.4), ctx("x"))
    assert not r.passed and r.score == 0.4
    custom = GateResult(gate="mine", passed=False, reason="custom")
    assert CallableGate(lambda c: custom).check(ctx("x")) is custom
    r = both(CallableGate(lambda c: "yes"), ctx("x"))
    assert not r.passed and "str" in r.reason
    assert not both(CallableGate(lambda c: float("nan")), ctx("x")).passed


def test_callable_gate_names() -> None:
    def has_code(c: GateContext) -> bool:
        return "```" in c.answer.text

    assert CallableGate(has_code).name == "has_code"
    assert CallableGate(lambda c: True).name == "callable"
    assert CallableGate(lambda c: True, name="mine").check(ctx("x")).gate == "mine"


async def test_callable_gate_async_function() -> None:
    async def slow_check(c: GateContext) -> float:
        await asyncio.sleep(0)
        return 0.9 if "ok" in c.answer.text else 0.1

    gate = CallableGate(slow_check)
    assert (await gate.acheck(ctx("ok"))).passed
    assert not (await gate.acheck(ctx("bad"))).passed
    with pytest.raises(ConfigurationError, match="async path") as e:
        gate.check(ctx("ok"))  # a loop is running
    assert field_of(e) == "gates"


def test_callable_gate_async_function_under_sync_check_without_a_loop() -> None:
    async def check(c: GateContext) -> bool:
        return "ok" in c.answer.text

    assert CallableGate(check).check(ctx("ok")).passed
    assert not CallableGate(check).check(ctx("no")).passed


@pytest.mark.parametrize(
    ("args", "kwargs", "field"),
    [
        (("not callable",), {}, "fn"),
        ((lambda c: True,), {"threshold": 1.5}, "threshold"),
        ((lambda c: True,), {"threshold": -0.1}, "threshold"),
        ((lambda c: True,), {"name": ""}, "name"),
    ],
)
def test_callable_gate_validation(args: tuple[Any, ...], kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigurationError) as e:
        CallableGate(*args, **kwargs)
    assert field_of(e) == field


# ---------------------------------------------------------------------------------------------------- resolve_gates


def test_resolve_gates() -> None:
    assert resolve_gates(None) == ()
    assert resolve_gates([]) == ()
    regex = RegexGate(r"\d")
    assert resolve_gates(regex) == (regex,)
    gates = resolve_gates(["json", "refusal", "nonempty", "logprob", regex])
    assert [type(g) for g in gates] == [JsonGate, RefusalGate, LengthGate, LogprobGate, RegexGate]
    assert gates[2].check(ctx("")).passed is False  # nonempty
    assert gates[4] is regex
    (one,) = resolve_gates("Refusal")
    assert isinstance(one, RefusalGate)

    class Custom:
        name = "custom"
        needs_full_answer = False

        def check(self, c: GateContext) -> GateResult:
            return GateResult(gate="custom", passed=True)

        async def acheck(self, c: GateContext) -> GateResult:
            return self.check(c)

    custom = Custom()
    assert resolve_gates((custom, "json"))[0] is custom


@pytest.mark.parametrize("spec", ["judge", ["json", "nope"], [42], 3.5, JsonGate, [RegexGate], {"json": 1}])
def test_resolve_gates_rejects_unknown(spec: Any) -> None:
    with pytest.raises(ConfigurationError) as e:
        resolve_gates(spec)
    assert field_of(e) == "gates"
    for name in ("'json'", "'refusal'", "'nonempty'", "'logprob'"):
        assert name in str(e.value)


def test_resolve_gates_hint_for_a_class() -> None:
    with pytest.raises(ConfigurationError, match=re.escape("JsonGate()")):
        resolve_gates([JsonGate])


def test_gates_in_the_engine_sync_and_async() -> None:
    free = Price(input=0, output=0)
    tiers = [TierSpec(name="cheap", model="a", price=free), TierSpec(name="strong", model="b", price=free)]
    cascade = Cascade(tiers, gates=resolve_gates(["nonempty", "refusal"]))
    answers = ["I'm not sure.", "42"]
    msgs = [{"role": "user", "content": "6 x 7?"}]
    result = cascade.run(msgs, lambda i: TierAnswer(text=answers[i]))
    assert result.tier == "strong" and result.attempts[0].gates[-1].gate == "refusal"

    async def acall(i: int) -> TierAnswer:
        return TierAnswer(text=["42", "x"][i])

    result = asyncio.run(cascade.arun(msgs, acall))
    assert result.tier == "cheap" and [g.gate for g in result.attempts[0].gates] == ["length", "refusal"]


def test_judge_with_a_real_langchain_chat_model_gets_the_callbacks() -> None:
    from langchain_core.callbacks import BaseCallbackHandler
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    class Recorder(BaseCallbackHandler):
        def __init__(self) -> None:
            self.starts = 0

        def on_chat_model_start(self, *args: Any, **kwargs: Any) -> None:
            self.starts += 1

    recorder = Recorder()
    judge = FakeListChatModel(responses=["Solid. Rating: [[9]]", "Weak. Rating: [[4]]"])
    gate = LLMJudgeGate(judge)
    c = ctx("Paris", judge_config={"callbacks": [recorder]})
    assert gate.check(c).passed
    assert not asyncio.run(gate.acheck(c)).passed
    assert recorder.starts == 2
