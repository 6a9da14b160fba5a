"""The prefix-caching contract: both wings' ``with_prefix_caching`` send the provider the planner's request (the
stable prefix first and byte-identical across calls, the dynamic values moved after it and still there, an
Anthropic breakpoint closing the stable part), in every call mode; errors from inside reach the caller and usage is
counted once (the wrapper's own run or event is never counted). ``complete`` calls pass through unchanged."""

from __future__ import annotations

from typing import Any

import pytest

from frugal_chains import Budget
from frugal_chains.prefix import PrefixFormatter
from tests.contract.test_cascade_contract import ok
from tests.contract.wings import WINGS, Wing, cheap, prefixed

POLICY = "\n".join(
    f"Rule {i}: a ticket in fare class {'ABCDEFG'[i % 7]} may be changed up to {i % 24 + 1} hours before "
    "departure; refunds follow the airline's published conditions."
    for i in range(120)
)
QUESTION = "What is 6 x 7?"
ROOMY = Budget(max_usd=1.0, scope="global")
CALLS = [
    ("2026-12-07", "req_8f3a9b2c4d5e6f70"),
    ("2027-01-15", "req_0c1d2e3f4a5b6c7d"),
    ("2027-03-02", "req_99aa88bb77cc66dd"),
]


def system(day: str, request_id: str) -> str:
    return f"You are the airline's support agent.\n{POLICY}\nToday is {day}. Request id: {request_id}."


def expected_stable_part() -> str:
    """The stable part of the system prompt as the planner writes it (what every wing must send)."""
    plan = PrefixFormatter(model="claude-sonnet-4-5").plan(
        [{"role": "system", "content": system(*CALLS[0])}, {"role": "user", "content": QUESTION}]
    )
    content: Any = plan.messages[0]["content"]
    return str(content[0]["text"])


CHAT_WINGS = [w for w in WINGS if w.api == "chat"]


@pytest.fixture(params=CHAT_WINGS, ids=[w.name for w in CHAT_WINGS])
def chat_wing(request: pytest.FixtureRequest) -> Wing:
    """The wings whose calls carry a system prompt (LangChain, LlamaIndex ``chat``)."""
    return request.param  # type: ignore[no-any-return]


def test_dynamic_values_move_after_the_stable_prefix_and_stay(chat_wing: Wing, mode: str) -> None:
    target = prefixed(chat_wing, cheap(), system=system(*CALLS[0]), model="claude-sonnet-4-5")
    obs = target.ask(mode, QUESTION)
    assert obs.error is None and obs.text == "It is 42 ."
    (sent,) = target.sent
    first = sent[0]
    assert first.role == "system" and first.marks[0] is True  # a breakpoint closes the stable part
    assert first.parts[0] == expected_stable_part()
    for value in CALLS[0]:
        assert value not in first.parts[0] and value in first.text  # moved, still there for the model
    assert [m.role for m in sent] == ["system", "human"] and sent[-1].text == QUESTION
    assert obs.frugal is not None and obs.frugal["prefix"]["provider"] == "anthropic"


def test_the_stable_prefix_is_byte_identical_across_calls(chat_wing: Wing, mode: str) -> None:
    target = prefixed(chat_wing, cheap(), system=system(*CALLS[0]), model="claude-sonnet-4-5")
    for call in CALLS:
        target.system = system(*call)
        assert target.ask(mode, QUESTION).error is None
    stable = {sent[0].parts[0] for sent in target.sent}
    assert stable == {expected_stable_part()}
    for sent, (day, _) in zip(target.sent, CALLS, strict=True):
        assert day in sent[0].text


def test_errors_from_inside_reach_the_caller(wing: Wing, mode: str) -> None:
    target = prefixed(
        wing,
        cheap(error=lambda: TimeoutError("provider timed out")),
        system=system(*CALLS[0]),
        model="claude-sonnet-4-5",
        budgets=[ROOMY],
    )
    obs = target.ask(mode, QUESTION)
    assert isinstance(obs.error, TimeoutError) and "provider timed out" in str(obs.error)
    assert obs.calls == {"cheap-1": 1} and obs.records == []


def test_usage_is_counted_once(wing: Wing, mode: str) -> None:
    c = cheap("It is 42 .")
    target = prefixed(wing, c, system=system(*CALLS[0]), model="claude-sonnet-4-5", budgets=[ROOMY])
    obs = target.ask(mode, QUESTION)
    assert obs.error is None and obs.text == "It is 42 ."
    assert obs.usage == (c.input_tokens, c.output_tokens)  # the provider's usage, once
    assert obs.records == ok(c, None)  # one record: the provider call, not the wrapper
    assert obs.calls == {"cheap-1": 1}


# -- a realistic prefix: the tau-bench airline policy, 100 calls ------------------------------------------------------
def taubench_policy() -> str | None:
    from tests.shared_data import shared_data

    data = shared_data()
    path = data / "taubench_airline_traj" / "gpt-4o-airline.json" if data is not None else None
    if path is None or not path.exists():
        return None
    import json

    trajectories = json.loads(path.read_text(encoding="utf-8"))
    return str(next(m for m in trajectories[0]["traj"] if m["role"] == "system")["content"])


POLICY_TEXT = taubench_policy()


@pytest.mark.skipif(POLICY_TEXT is None, reason="the shared tau-bench data is not next to this checkout")
def test_taubench_policy_over_100_calls_in_every_mode(chat_wing: Wing) -> None:
    """The tau-bench airline policy as the system prompt with today's date, a request id and the user's name (a
    template variable): 100 calls (25 per call mode) with different values and questions. The stable part sent is
    byte-identical in every call, the planner counts >= 95% of the input as cacheable, and each request still
    carries its own date, id and name."""
    assert POLICY_TEXT is not None
    template = (
        POLICY_TEXT.replace("{", "{{").replace("}", "}}").replace("2024-05-15 15:00:00 EST", "{now}")
        + "\n\nYou are assisting {user_name}. Request id: {request_id}."
    )
    names = ["Mia Li", "Noah Smith", "Aarav Patel", "Chen Wei", "Sofia Rossi"]
    questions = [
        "Can I change my flight?",
        "How many bags can I check?",
        "Please cancel my booking.",
        "Is it on time?",
    ]
    target = prefixed(
        chat_wing,
        cheap(),
        system="",
        model="claude-sonnet-4-5",
        templates=[template],
        dynamic_variables=["user_name"],
    )
    values = []
    for i in range(100):
        now = f"2026-12-{1 + i % 28:02d} {i % 24:02d}:{i % 60:02d}:00 EST"
        request_id, name = f"req_{i:04d}{'ab' * 6}", names[i % len(names)]
        target.system = template.format(now=now, request_id=request_id, user_name=name)
        obs = target.ask(["invoke", "ainvoke", "stream", "astream"][i % 4], questions[i % len(questions)])
        assert obs.error is None and obs.frugal is not None
        assert obs.frugal["prefix"]["cacheable_share"] >= 0.95
        values.append((now, request_id, name))
    assert len({sent[0].parts[0] for sent in target.sent}) == 1
    for sent, moved in zip(target.sent, values, strict=True):
        assert sent[0].marks[0] is True
        for value in moved:
            assert value not in sent[0].parts[0] and value in sent[0].text
