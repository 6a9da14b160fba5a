"""Prompt-prefix caching in a LlamaIndex chat engine: `Settings.llm = with_prefix_caching(llm, ...)`.

A support chat engine's long system prompt carries today's date, a request id and the customer's name. Left in
place, they change the prompt on every conversation and the provider's prompt cache never hits. The wrapper moves
them into a short request-context block after the stable prefix, marks the end of the stable part as an Anthropic
cache breakpoint (llama-index-core's own `CachePoint` block), and reports the share of input tokens the cache can
serve.

    python cookbook/prefix_caching_llama_index.py
"""

from __future__ import annotations

import uuid

from llama_index.core import Settings
from llama_index.core.chat_engine import SimpleChatEngine

from frugal_chains.llama_index import with_prefix_caching
from frugal_chains.testing import FakeUsageLLM

POLICY = "\n".join(
    f"- Rule {i}: tickets in fare class {'ABCDEFG'[i % 7]} can be changed up to {i % 24 + 1} hours before "
    "departure; a change fee applies unless the fare includes free changes."
    for i in range(1, 121)
)
SYSTEM = (
    "You are the airline's customer support agent. Follow the policy below.\n"
    + POLICY
    + "\nToday is {today}. Request id: {request_id}. The customer is {customer}."
)


def main() -> None:
    # in your app: Anthropic(model="claude-sonnet-4-5") from llama-index-llms-anthropic
    llm = FakeUsageLLM(responses=["Happy to help."])
    Settings.llm = with_prefix_caching(
        llm,
        model="claude-sonnet-4-5",
        templates=[SYSTEM],  # the template the system prompt is filled from
        dynamic_variables=["customer"],  # names are moved only when you say so; dates and ids are detected
    )
    calls = [
        ("2026-12-07", "Alice Martin", "Can I change my flight to Friday?"),
        ("2026-12-08", "Bob Stone", "What does a change cost in fare class C?"),
        ("2026-12-09", "Chen Wei", "Can I get a refund?"),
    ]
    hashes = set()
    for today, customer, question in calls:
        system = SYSTEM.format(today=today, request_id=f"req_{uuid.uuid4().hex[:16]}", customer=customer)
        engine = SimpleChatEngine.from_defaults(system_prompt=system)  # one engine per conversation
        answer = engine.chat(question)
        report = Settings.llm.last_report
        assert report is not None
        plan = Settings.llm.core.plan(
            [{"role": "system", "content": system}, {"role": "user", "content": question}]
        )
        hashes.add(plan.prefix_hash)
        print(
            f"{today} {customer:<13} cacheable {report.cacheable_share:.1%} of {report.total_tokens} input tokens, "
            f"{len(report.breakpoints)} breakpoint(s), ttl {report.ttl}; answer: {answer}"
        )
    print("stable prefix identical across conversations:", len(hashes) == 1)
    print("moved to the request context:", ", ".join(s.label for s in report.dynamic_spans))


if __name__ == "__main__":
    main()
