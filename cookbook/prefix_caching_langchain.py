"""Prompt-prefix caching in a LangChain chain: `prompt | PrefixCacheFormatter | model`.

A support bot's long system prompt carries today's date, a request id and the customer's name. Left in place,
they change the prompt on every call and the provider's prompt cache never hits. The formatter moves them into a
short request-context block after the stable prefix, puts an Anthropic cache breakpoint at the end of the stable
part, and reports what share of the input tokens can be served from the cache.

python cookbook/prefix_caching_langchain.py
"""

from __future__ import annotations

import uuid

from langchain_core.prompts import ChatPromptTemplate

from frugal_chains.langchain import PrefixCacheFormatter
from frugal_chains.testing import FakeUsageChatModel

POLICY = "\n".join(
    f"- Rule {i}: tickets in fare class {'ABCDEFG'[i % 7]} can be changed up to {i % 24 + 1} hours before "
    "departure; a change fee applies unless the fare includes free changes."
    for i in range(1, 121)
)
prompt = ChatPromptTemplate.from_messages(
    [
        (
            "system",
            "You are the airline's customer support agent. Follow the policy below.\n"
            + POLICY
            + "\nToday is {today}. Request id: {request_id}. The customer is {customer}.",
        ),
        ("human", "{question}"),
    ]
)
formatter = PrefixCacheFormatter(model="claude-sonnet-4-5", prompt=prompt, dynamic_variables=["customer"])
model = FakeUsageChatModel(model="claude-sonnet-4-5", provider="anthropic", responses=["Happy to help."])
# in your app: ChatAnthropic(model="claude-sonnet-4-5")
chain = prompt | formatter | model

if __name__ == "__main__":
    calls = [
        ("2026-12-07", "Alice Martin", "Can I change my flight to Friday?"),
        ("2026-12-08", "Bob Stone", "What does a change cost in fare class C?"),
        ("2026-12-09", "Chen Wei", "Can I get a refund?"),
    ]
    stable_parts = set()
    for today, customer, question in calls:
        values = {"today": today, "request_id": f"req_{uuid.uuid4().hex[:16]}", "customer": customer}
        answer = chain.invoke({**values, "question": question})
        report = formatter.last_report
        assert report is not None
        messages = formatter.invoke(prompt.invoke({**values, "question": question}))
        system = messages[0].content
        stable_parts.add(system[0]["text"])  # the part before the breakpoint
        print(
            f"{today} {customer:<13} cacheable {report.cacheable_share:.1%} of {report.total_tokens} input "
            f"tokens, {len(report.breakpoints)} breakpoint(s), ttl {report.ttl}; answer: {answer.content}"
        )
    print("stable prefix identical across calls:", len(stable_parts) == 1)
    print("context block sent after it:\n" + system[-1]["text"])
    print()
    print(report.format())
