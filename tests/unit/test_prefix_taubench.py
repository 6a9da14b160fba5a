"""A realistic prefix: the tau-bench airline policy as the system prompt, with today's date, a request id and the
user's name (a template variable) in it, called 100 times with different dates, users and questions."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from frugal_chains.prefix import CONTEXT_HEADER, PrefixFormatter, split_context_block
from tests.shared_data import shared_data

DATA = shared_data()
TRAJ = DATA / "taubench_airline_traj" / "gpt-4o-airline.json" if DATA is not None else None
pytestmark = pytest.mark.skipif(
    TRAJ is None or not TRAJ.exists(), reason="the shared tau-bench data is not next to this checkout"
)

DATE_IN_POLICY = "The current time is 2024-05-15 15:00:00 EST."


def policy() -> str:
    assert TRAJ is not None
    trajectories = json.loads(TRAJ.read_text(encoding="utf-8"))
    first = next(m for m in trajectories[0]["traj"] if m["role"] == "system")
    text: str = first["content"]
    return text


SHORT_QUESTIONS = [
    "Can I change my flight to tomorrow?",
    "How many bags can I check?",
    "Please cancel my reservation.",
    "Is my flight on time?",
    "Can I upgrade to business?",
]


def first_turns() -> list[str]:
    """The users' first messages of the recorded tau-bench conversations."""
    trajectories = json.loads(TRAJ.read_text(encoding="utf-8")) if TRAJ is not None else []
    return [t["traj"][1]["content"] for t in trajectories if t["traj"][1]["role"] == "user"]


def calls(questions: list[str], n: int = 100) -> list[tuple[str, str, str, str, str]]:
    rng = random.Random(7)
    names = ["Mia Li", "Noah Smith", "Aarav Patel", "Chen Wei", "Sofia Rossi", "Omar Haddad", "Emma Brown"]
    out = []
    for i in range(n):
        day = 1 + i % 28
        hour = rng.randrange(0, 24)
        moment = f"2024-06-{day:02d} {hour:02d}:{rng.randrange(60):02d}:00 EST"
        rid = "req_" + "".join(rng.choice("0123456789abcdef") for _ in range(16))
        name = names[i % len(names)]
        out.append((moment, rid, name, questions[i % len(questions)], f"{day:02d}"))
    return out


def test_the_policy_holds_a_datetime_the_planner_moves() -> None:
    text = policy()
    assert DATE_IN_POLICY in text
    plan = PrefixFormatter(model="claude-sonnet-4-5").plan(
        [{"role": "system", "content": text}, {"role": "user", "content": "Hi"}]
    )
    [span] = plan.report.dynamic_spans
    assert (span.kind, span.text) == ("date", "2024-05-15 15:00:00 EST")


@pytest.mark.parametrize(
    ("model", "questions", "min_share"),
    [
        # short support questions: the cached policy is >= 95% of the input
        ("claude-sonnet-4-5", SHORT_QUESTIONS, 0.95),
        # the recorded users' first turns (20 to 150 tokens each): still >= 90%
        ("claude-sonnet-4-5", None, 0.90),
        # OpenAI caches in 128-token steps past the first 1,024, so up to 127 tokens of the prefix are not counted
        ("gpt-4o", SHORT_QUESTIONS, 0.85),
    ],
)
def test_one_hundred_calls_share_one_byte_identical_prefix(
    model: str, questions: list[str] | None, min_share: float
) -> None:
    base = policy()
    template = (
        base.replace("2024-05-15 15:00:00 EST", "{now}")
        + "\n\nYou are assisting {user_name}. Request id: {request_id}."
    )
    fmt = PrefixFormatter(model=model, templates=[template], dynamic_variables=["user_name"])
    stable_prefixes: set[str] = set()
    hashes: set[str] = set()
    shares: list[float] = []
    for moment, rid, name, question, _ in calls(questions or first_turns()):
        system = template.format(now=moment, user_name=name, request_id=rid)
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": system},
            {"role": "user", "content": question},
        ]
        plan = fmt.plan(messages)
        content = plan.messages[0]["content"]
        if isinstance(content, str):
            stable, values = split_context_block(content)
        else:
            stable = content[0]["text"]
            _, values = split_context_block(content[1]["text"])
            assert content[0]["cache_control"]["type"] == "ephemeral"
            assert len(plan.report.breakpoints) == 1
        stable_prefixes.add(stable)
        hashes.add(plan.prefix_hash)
        shares.append(plan.report.cacheable_share)
        assert {v.label: v.value for v in values} == {"user_name": name, "date": moment, "request id": rid}
        body = json.dumps(plan.messages, ensure_ascii=False)
        assert name in body and moment in body and rid in body and body.count(CONTEXT_HEADER) == 1
        assert plan.messages[1] == messages[1]
        assert plan.report.churn == ()
    assert len(stable_prefixes) == 1 and len(hashes) == 1
    assert min(shares) >= min_share
