"""The LangChain prefix-caching adapters: ``PrefixCacheFormatter`` (a Runnable) and ``with_prefix_caching`` (a chat
model wrapper), checked against what the wrapped model receives and, for Anthropic, against ``langchain-anthropic``'s
request building and the ``anthropic`` SDK's typed request params (offline)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler, get_usage_metadata_callback
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.prompts import ChatPromptTemplate
from pydantic import BaseModel, Field, TypeAdapter

from frugal_chains import ConfigurationError
from frugal_chains.langchain import (
    CascadeChatModel,
    PrefixCacheFormatter,
    PrefixCachingChatModel,
    with_prefix_caching,
)
from frugal_chains.routing import RegexGate
from frugal_chains.testing import FakeUsageChatModel

POLICY = "\n".join(
    f"Rule {i}: a ticket in fare class {'ABCDEFG'[i % 7]} may be changed up to {i % 24 + 1} hours before "
    "departure; refunds follow the airline's published conditions."
    for i in range(120)
)
"""A long stable system prompt (well above every provider's minimum cacheable length)."""


def system_prompt(day: str, request_id: str) -> str:
    return f"You are the airline's support agent.\n{POLICY}\nToday is {day}. Request id: {request_id}."


class Recording(FakeUsageChatModel):
    """A fake provider that records the messages and call kwargs it receives."""

    seen: list[tuple[list[BaseMessage], dict[str, Any]]] = Field(default_factory=list, exclude=True)

    def _answer(self, messages: list[BaseMessage], **kwargs: Any) -> AIMessage:
        self.seen.append((list(messages), dict(kwargs)))
        return super()._answer(messages, **kwargs)


def claude(**kw: Any) -> Recording:
    return Recording(**{"model": "claude-sonnet-4-5", "provider": "anthropic", "responses": ["ok"], **kw})


def gpt(**kw: Any) -> Recording:
    return Recording(**{"model": "gpt-4o", "provider": "openai", "responses": ["ok"], **kw})


def texts(message: BaseMessage) -> list[str]:
    content = message.content
    if isinstance(content, str):
        return [content]
    return [b["text"] if isinstance(b, Mapping) else str(b) for b in content]


def marks(message: BaseMessage) -> list[bool]:
    content = message.content
    return (
        [] if isinstance(content, str) else [isinstance(b, Mapping) and "cache_control" in b for b in content]
    )


# -- the Runnable ------------------------------------------------------------------------------------------------
PROMPT = ChatPromptTemplate.from_messages(
    [
        (
            "system",
            "You are the airline's support agent.\n"
            + POLICY.replace("{", "{{").replace("}", "}}")
            + "\nToday is {today}. The customer is {user_name}.",
        ),
        ("human", "{question}"),
    ]
)


def filled(today: str, user: str, question: str) -> Any:
    return PROMPT.invoke({"today": today, "user_name": user, "question": question})


def test_formatter_moves_template_variables_out_of_the_stable_prefix() -> None:
    formatter = PrefixCacheFormatter(
        model="claude-sonnet-4-5", prompt=PROMPT, dynamic_variables=["user_name"]
    )
    first = formatter.invoke(filled("2026-12-07", "Alice Martin", "Can I change my flight?"))
    second = formatter.invoke(filled("2027-01-15", "Bob Stone", "What about refunds?"))
    for out, name, day in ((first, "Alice Martin", "2026-12-07"), (second, "Bob Stone", "2027-01-15")):
        system = out[0]
        assert isinstance(system, SystemMessage)
        assert marks(system)[0] is True  # the breakpoint closes the stable part
        stable, rest = texts(system)[0], "\n".join(texts(system)[1:])
        assert name not in stable and day not in stable
        assert name in rest and day in rest  # still there for the model
    assert texts(first[0])[0] == texts(second[0])[0]  # byte-identical stable prefix
    assert texts(first[-1]) == ["Can I change my flight?"]
    report = formatter.last_report
    assert report is not None and report.provider == "anthropic"
    assert report.cacheable_share >= 0.9
    assert {s.label for s in report.dynamic_spans} >= {"user_name"}


def test_formatter_accepts_messages_prompt_values_and_strings() -> None:
    formatter = PrefixCacheFormatter(model="claude-sonnet-4-5")
    tool_call = AIMessage("", tool_calls=[{"name": "lookup", "args": {"q": "x"}, "id": "call_1"}])
    tool_result = ToolMessage("found", tool_call_id="call_1")
    messages = [
        SystemMessage(system_prompt("2026-12-07", "req_8f3a9b2c4d5e6f70")),
        HumanMessage("Look it up"),
        tool_call,
        tool_result,
    ]
    out = formatter.invoke(messages)
    assert out[2] is tool_call and out[3] is tool_result  # untouched turns are the caller's own objects
    assert "req_8f3a9b2c4d5e6f70" not in texts(out[0])[0]
    assert [m.type for m in formatter.invoke("just a question")] == ["human"]
    assert [m.type for m in formatter.invoke(filled("2026-12-07", "A", "q"))] == ["system", "human"]
    with pytest.raises(ConfigurationError) as e:
        formatter.invoke(42)
    assert e.value.field == "input"


def test_formatter_batch_async_and_stream_agree() -> None:
    formatter = PrefixCacheFormatter(model="claude-sonnet-4-5")
    inputs = [
        [SystemMessage(system_prompt(day, "req_1a2b3c4d5e6f7a8b")), HumanMessage("Hi")]
        for day in ("2026-12-07", "2026-12-08")
    ]
    invoked = [formatter.invoke(i) for i in inputs]
    assert formatter.batch(inputs) == invoked
    assert asyncio.run(formatter.abatch(inputs)) == invoked
    assert asyncio.run(formatter.ainvoke(inputs[0])) == invoked[0]
    assert list(formatter.stream(inputs[1])) == [invoked[1]]


def test_formatter_pipes_into_a_model_and_reports_per_call() -> None:
    class Events(BaseCallbackHandler):
        def __init__(self) -> None:
            self.reports: list[dict[str, Any]] = []

        def on_custom_event(self, name: str, data: Any, **kwargs: Any) -> None:
            if name == "frugal_prefix_report":
                self.reports.append(data)

    model = claude()
    formatter = PrefixCacheFormatter(
        model="claude-sonnet-4-5", prompt=PROMPT, dynamic_variables=["user_name"]
    )
    chain = PROMPT | formatter | model
    events = Events()
    answer = chain.invoke(
        {"today": "2026-12-07", "user_name": "Alice", "question": "Hi"}, config={"callbacks": [events]}
    )
    assert answer.content == "ok"
    ((received, _),) = model.seen
    assert marks(received[0])[0] is True
    assert len(events.reports) == 1 and events.reports[0]["provider"] == "anthropic"
    messages, plan = formatter.plan(filled("2026-12-07", "Alice", "Hi"))
    assert plan.report.provider == "anthropic" and messages[0].content == received[0].content


def test_formatter_bad_options_name_the_field() -> None:
    with pytest.raises(ConfigurationError) as e:
        PrefixCacheFormatter()
    assert e.value.field == "model"
    with pytest.raises(ConfigurationError) as e:
        PrefixCacheFormatter(model="my-house-model-7")
    assert e.value.field in ("provider", "rules")
    with pytest.raises(ConfigurationError) as e:
        PrefixCacheFormatter(model="claude-sonnet-4-5", prompt=PROMPT, dynamic_variables=["nickname"])
    assert e.value.field == "dynamic_variables"
    with pytest.raises(ConfigurationError) as e:
        PrefixCacheFormatter(model="claude-sonnet-4-5", prompt="not a prompt")  # type: ignore[arg-type]
    assert e.value.field == "prompt"


def test_formatter_last_report_is_safe_across_threads() -> None:
    formatter = PrefixCacheFormatter(model="gpt-4o")
    errors: list[BaseException] = []

    def run(n: int) -> None:
        try:
            for _ in range(5):
                messages, plan = formatter.plan(
                    [SystemMessage(system_prompt(f"2026-12-{n + 1:02d}", f"req_{n:016x}")), HumanMessage("q")]
                )
                assert f"2026-12-{n + 1:02d}" in str(messages[0].content)
                assert plan.report.provider == "openai"
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and formatter.last_report is not None


# -- the wrapper -------------------------------------------------------------------------------------------------
def conversation(day: str = "2026-12-07") -> list[BaseMessage]:
    return [SystemMessage(system_prompt(day, "req_8f3a9b2c4d5e6f70")), HumanMessage("Where is my bag?")]


def test_wrapper_sends_anthropic_blocks_and_reports_on_the_answer() -> None:
    inner = claude()
    llm = with_prefix_caching(inner)
    assert isinstance(llm, PrefixCachingChatModel)
    with get_usage_metadata_callback() as usage:
        answer = llm.invoke(conversation())
    ((received, _),) = inner.seen
    assert marks(received[0])[0] is True and "2026-12-07" not in texts(received[0])[0]
    assert "2026-12-07" in "".join(texts(received[0]))
    prefix = answer.response_metadata["frugal"]["prefix"]
    assert prefix["provider"] == "anthropic" and prefix["breakpoints"] >= 1
    assert "2026-12-07" not in repr(prefix)  # no dynamic values in the metadata
    assert answer.usage_metadata is not None
    assert usage.usage_metadata["claude-sonnet-4-5"]["input_tokens"] == answer.usage_metadata["input_tokens"]
    assert llm.last_report is not None and llm.last_report.provider == "anthropic"


def test_wrapper_passes_openai_prompt_cache_key_unless_the_call_sets_it() -> None:
    inner = gpt()
    llm = with_prefix_caching(inner)
    llm.invoke(conversation("2026-12-07"))
    llm.invoke(conversation("2026-12-08"))
    llm.invoke(conversation(), prompt_cache_key="mine")
    keys = [kwargs.get("prompt_cache_key") for _, kwargs in inner.seen]
    assert keys[0] and keys[0] == keys[1]  # same stable prefix, same key
    assert keys[2] == "mine"
    assert all(isinstance(m[0].content, str) for m, _ in inner.seen)  # no markers for OpenAI


def test_wrapper_streams_async_and_counts_usage_once() -> None:
    inner = claude(responses=["one two three"])
    llm = with_prefix_caching(inner)
    with get_usage_metadata_callback() as usage:
        chunks = list(llm.stream(conversation()))
    assert "".join(str(c.content) for c in chunks) == "one two three"
    assert chunks[-1].response_metadata["frugal"]["prefix"]["provider"] == "anthropic"
    summed = sum(c.usage_metadata["input_tokens"] for c in chunks if c.usage_metadata)
    assert usage.usage_metadata["claude-sonnet-4-5"]["input_tokens"] == summed > 0

    async def run() -> tuple[Any, list[Any]]:
        whole = await llm.ainvoke(conversation())
        return whole, [c async for c in llm.astream(conversation())]

    whole, achunks = asyncio.run(run())
    assert whole.content == "one two three"
    assert "".join(str(c.content) for c in achunks) == "one two three"
    assert all(marks(m[0])[0] for m, _ in inner.seen)


def test_wrapper_errors_reach_the_caller() -> None:
    llm = with_prefix_caching(claude(fail_with=lambda: TimeoutError("provider timed out")))
    with pytest.raises(TimeoutError, match="provider timed out"):
        llm.invoke(conversation())
    with pytest.raises(TimeoutError):
        list(llm.stream(conversation()))
    with pytest.raises(TimeoutError):
        asyncio.run(llm.ainvoke(conversation()))


def test_wrapper_bad_input_names_the_field() -> None:
    with pytest.raises(ConfigurationError) as e:
        with_prefix_caching("claude")  # type: ignore[arg-type]
    assert e.value.field == "llm"
    with pytest.raises(ConfigurationError) as e:
        with_prefix_caching(FakeUsageChatModel(model="house-model", provider="house"))
    assert e.value.field in ("provider", "rules")
    # the name says nothing, LangChain's provider does
    assert with_prefix_caching(FakeUsageChatModel(model="house-model", provider="anthropic")).core is not None


def test_wrapper_tools_and_structured_output_go_through() -> None:
    inner = claude(tool_to_call="lookup")
    tool = {
        "type": "function",
        "function": {"name": "lookup", "description": "Look up a booking.", "parameters": {"type": "object"}},
    }
    answer = with_prefix_caching(inner).bind_tools([tool]).invoke(conversation())
    assert answer.tool_calls[0]["name"] == "lookup"
    assert inner.seen[-1][1]["tools"][0]["function"]["name"] == "lookup"

    class Booking(BaseModel):
        code: str

    structured = with_prefix_caching(
        Recording(
            model="claude-sonnet-4-5",
            provider="anthropic",
            tool_to_call="Booking",
        )
    ).with_structured_output(Booking)
    assert isinstance(structured.invoke(conversation()), Booking)


# -- inside a cascade ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["wrapped", "option"])
def test_cascade_tiers_get_their_own_providers_formatting(how: str) -> None:
    cheap = Recording(model="claude-sonnet-4-5", provider="anthropic", responses=["not sure"])
    strong = Recording(model="gpt-4o", provider="openai", responses=["42"])
    if how == "wrapped":
        cascade = CascadeChatModel(
            tiers=[with_prefix_caching(cheap), with_prefix_caching(strong)], gates=[RegexGate(r"\d")]
        )
    else:
        cascade = CascadeChatModel(tiers=[cheap, strong], gates=[RegexGate(r"\d")], prefix_caching=True)
    assert cascade.names == ["claude-sonnet-4-5", "gpt-4o"]
    answer = cascade.invoke(conversation())
    assert answer.content == "42" and answer.response_metadata["frugal"]["cascade"]["escalations"] == 1
    ((to_cheap, cheap_kwargs),) = cheap.seen
    ((to_strong, strong_kwargs),) = strong.seen
    assert marks(to_cheap[0])[0] is True and "prompt_cache_key" not in cheap_kwargs
    assert isinstance(to_strong[0].content, str) and strong_kwargs.get("prompt_cache_key")
    for received in (to_cheap, to_strong):
        assert "2026-12-07" in "".join("".join(texts(m)) for m in received)


def test_cascade_prefix_caching_option_checks_its_value() -> None:
    tiers = [claude(), gpt()]
    with pytest.raises(ConfigurationError) as e:
        CascadeChatModel(tiers=tiers, prefix_caching="yes")
    assert e.value.field == "prefix_caching"
    with pytest.raises(ConfigurationError) as e:
        CascadeChatModel(tiers=tiers, prefix_caching={"model": "gpt-4o"})
    assert e.value.field == "prefix_caching"


# -- Anthropic acceptance, offline ----------------------------------------------------------------------------------
anthropic_types = pytest.importorskip("anthropic.types")
langchain_anthropic = pytest.importorskip("langchain_anthropic")


def _materialised(value: Any) -> Any:
    """A validated TypedDict value with its lazily validated iterables consumed (which validates them)."""
    if isinstance(value, Mapping):
        return {k: _materialised(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, Iterator)) or type(value).__name__ == "ValidatorIterator":
        return [_materialised(v) for v in value]
    return value


def _validate_payload(payload: Mapping[str, Any]) -> None:
    """``system``, each message's content blocks and ``tools`` against the SDK's typed params (unknown keys and
    wrong values rejected)."""
    from anthropic.types import (
        ImageBlockParam,
        TextBlockParam,
        ToolParam,
        ToolResultBlockParam,
        ToolUseBlockParam,
    )
    from pydantic import ConfigDict

    strict = ConfigDict(extra="forbid")
    blocks: dict[str, Any] = {
        "text": TextBlockParam,
        "image": ImageBlockParam,
        "tool_use": ToolUseBlockParam,
        "tool_result": ToolResultBlockParam,
    }
    system = payload["system"]
    assert isinstance(system, list)
    _materialised(TypeAdapter(list[TextBlockParam], config=strict).validate_python(system))
    for message in payload["messages"]:
        assert set(message) == {"role", "content"} and message["role"] in ("user", "assistant")
        content = message["content"]
        if isinstance(content, str):
            continue
        for block in content:
            kind = blocks[block["type"]]
            inner = block.get("content") if block["type"] == "tool_result" else None
            if isinstance(inner, list):
                # a tool result's own blocks are checked one by one (pydantic cannot walk the nested iterators)
                block = {k: v for k, v in block.items() if k != "content"}
                _materialised(TypeAdapter(list[TextBlockParam], config=strict).validate_python(inner))
            _materialised(TypeAdapter(list[kind], config=strict).validate_python([block]))  # type: ignore[valid-type]
    if payload.get("tools"):
        _materialised(TypeAdapter(list[ToolParam], config=strict).validate_python(payload["tools"]))


def _breakpoints(payload: Mapping[str, Any]) -> int:
    count = sum(1 for t in payload.get("tools") or () if "cache_control" in t)
    system = payload.get("system")
    if isinstance(system, list):
        count += sum(1 for b in system if "cache_control" in b)
    for m in payload["messages"]:
        if isinstance(m["content"], list):
            count += sum(1 for b in m["content"] if isinstance(b, Mapping) and "cache_control" in b)
    return count


def test_strict_validation_rejects_a_bad_marker() -> None:
    """The check below can fail: a marker the SDK does not accept is rejected."""
    from pydantic import ValidationError

    bad = {
        "system": [{"type": "text", "text": "x", "cache_control": {"type": "ephemeral", "ttl": "2h"}}],
        "messages": [{"role": "user", "content": "hi"}],
    }
    with pytest.raises(ValidationError):
        _validate_payload(bad)


class CapturingAnthropic(langchain_anthropic.ChatAnthropic):
    """``ChatAnthropic`` that builds its real request payload and answers without calling the API."""

    payloads: list[dict[str, Any]] = Field(default_factory=list, exclude=True)

    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any) -> Any:
        from langchain_core.outputs import ChatGeneration, ChatResult

        self.payloads.append(self._get_request_payload(messages, stop=stop, **kwargs))
        return ChatResult(generations=[ChatGeneration(message=AIMessage("ok"))])


@pytest.mark.parametrize(
    ("model_name", "tools_cached"),
    [
        ("claude-sonnet-4-5", True),
        ("claude-haiku-4-5", False),
    ],  # the tools alone: above 1,024, below 4,096 tokens
)
def test_anthropic_requests_pass_the_sdk_types_and_langchain_anthropic(
    model_name: str, tools_cached: bool
) -> None:
    big_tool = {
        "name": "search_policy",
        "description": "Search the airline policy. " + "Use it for fare rules, baggage and refunds. " * 200,
        "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}},
    }
    example_q = HumanMessage("Example question: can I bring a cat?", name="example_1")
    example_a = AIMessage("Example answer: yes, in the cabin, in a carrier.", name="example_1")
    document = HumanMessage("Baggage rules:\n" + POLICY, name="document")
    model = CapturingAnthropic(model=model_name, api_key="x")  # type: ignore[call-arg]
    wrapper = with_prefix_caching(model)
    llm = wrapper.bind_tools([big_tool])
    for day in ("2026-12-07", "2026-12-08"):
        llm.invoke(
            [
                SystemMessage(system_prompt(day, "req_8f3a9b2c4d5e6f70")),
                example_q,
                example_a,
                document,
                HumanMessage("Can I change my flight?"),
            ]
        )
    first, second = model.payloads
    for payload in (first, second):
        _validate_payload(payload)
        assert 1 <= _breakpoints(payload) <= 4
        assert isinstance(payload["system"], list) and any("cache_control" in b for b in payload["system"])
    assert first["system"] == second["system"] and first["tools"] == second["tools"]
    assert (
        "cache_control" in first["tools"][-1]
    ) is tools_cached  # survives bind_tools and langchain-anthropic
    from frugal_chains.prefix import rules_for

    minimum = rules_for(model_name).min_cacheable_tokens
    report = wrapper.last_report
    assert report is not None and report.breakpoints
    for bp in report.breakpoints:
        assert bp.prefix_tokens >= minimum


def test_anthropic_payload_from_the_formatter_output() -> None:
    formatter = PrefixCacheFormatter(
        model="claude-sonnet-4-5", prompt=PROMPT, dynamic_variables=["user_name"]
    )
    messages = formatter.invoke(filled("2026-12-07", "Alice", "Hi"))
    payload = CapturingAnthropic(model="claude-sonnet-4-5", api_key="x")._get_request_payload(messages)  # type: ignore[call-arg]
    _validate_payload(payload)
    assert payload["system"][0]["cache_control"]["type"] == "ephemeral"
    assert "Alice" in payload["system"][-1]["text"] and "Alice" not in payload["system"][0]["text"]
    assert _breakpoints(payload) <= 4


def test_too_many_caller_breakpoints_end_at_four() -> None:
    marked = {"type": "ephemeral"}
    messages: list[BaseMessage] = [
        SystemMessage([{"type": "text", "text": POLICY, "cache_control": marked}]),
    ]
    for i in range(5):
        messages.append(
            HumanMessage([{"type": "text", "text": f"Turn {i}: " + POLICY, "cache_control": marked}])
        )
        messages.append(AIMessage(f"Answer {i}"))
    messages.append(HumanMessage("And now?"))
    out, plan = PrefixCacheFormatter(model="claude-sonnet-4-5").plan(messages)
    payload = CapturingAnthropic(model="claude-sonnet-4-5", api_key="x")._get_request_payload(out)  # type: ignore[call-arg]
    _validate_payload(payload)
    assert _breakpoints(payload) == 4
    assert any("breakpoint" in w for w in plan.report.warnings)


def test_composes_with_the_semantic_cache_in_the_request_flow_order() -> None:
    """Formatter first, then the cache (the request flow): the cache sees the formatted request, a repeat is
    served from it, and a hit still says how its request was formatted."""
    from frugal_chains.cache import AnswerCache
    from frugal_chains.langchain import with_cache
    from frugal_chains.metadata import cache_status
    from frugal_chains.testing.fake_embeddings import HashEmbeddings

    inner = claude()
    llm = with_prefix_caching(with_cache(inner, AnswerCache(embedder=HashEmbeddings())))
    first = llm.invoke(conversation())
    again = llm.invoke(conversation())
    assert len(inner.seen) == 1 and cache_status(again.response_metadata) == "hit"
    assert marks(inner.seen[0][0][0])[0] is True  # what the provider got was formatted
    assert again.content == first.content and again.response_metadata["frugal"]["prefix"]["breakpoints"] >= 1


def test_wrapper_rebuilt_from_its_fields_keeps_its_planner() -> None:
    """LangChain rebuilds configurable runnables per call: the planner (and its churn history) is carried over."""
    from langchain_core.runnables import ConfigurableField

    llm = with_prefix_caching(claude())
    rebuilt = PrefixCachingChatModel(**{k: getattr(llm, k) for k in ("model", "prefix_options", "formatter")})
    assert rebuilt.core is llm.core
    configurable = llm.configurable_fields(metadata=ConfigurableField(id="meta"))
    warnings = []
    for version in ("v1", "v2"):  # an undetected change in the system prompt between calls
        messages = [SystemMessage(f"Policy {version}.\n{POLICY}"), HumanMessage("Hi")]
        answer = configurable.invoke(messages, config={"configurable": {"meta": {"run": version}}})
        warnings.append(" ".join(answer.response_metadata["frugal"]["prefix"]["warnings"]))
    assert "changed between calls" not in warnings[0] and "changed between calls" in warnings[1]
    with pytest.raises(ConfigurationError) as e:
        PrefixCachingChatModel(model=claude(), formatter="planner")
    assert e.value.field == "formatter"


def test_an_azure_hosted_gpt_model_gets_no_prompt_cache_key() -> None:
    """Azure OpenAI takes prompt_cache_key only on its newest model families: the wrapper reads the host from
    LangChain's ls_provider even when the model name says OpenAI."""
    messages = [
        {"role": "system", "content": "You are the support agent of Acme. " * 300},
        {"role": "user", "content": "hi"},
    ]
    azure = with_prefix_caching(FakeUsageChatModel(model="gpt-4o", provider="azure"))
    openai = with_prefix_caching(FakeUsageChatModel(model="gpt-4o", provider="openai"))
    assert "prompt_cache_key" not in azure.core.plan(messages).params
    assert "prompt_cache_key" in openai.core.plan(messages).params


def test_agent_loop_history_is_closed_by_a_marker_langchain_anthropic_accepts() -> None:
    """cache_conversation=True in an agent loop: the tool result that ends the history carries the marker, through
    langchain-anthropic's conversion (hoisted onto the tool_result block) and the SDK's types."""
    model = CapturingAnthropic(model="claude-sonnet-4-5", api_key="x")  # type: ignore[call-arg]
    wrapper = with_prefix_caching(model, cache_conversation=True)
    history: list[BaseMessage] = [
        SystemMessage(system_prompt("2026-12-07", "req_8f3a9b2c4d5e6f70")),
        HumanMessage("Where is my bag?"),
        AIMessage("", tool_calls=[{"name": "track_bag", "args": {"tag": "AB123"}, "id": "toolu_01"}]),
        ToolMessage("The bag is in Oslo.", tool_call_id="toolu_01"),
    ]
    wrapper.invoke(history)
    (payload,) = model.payloads
    _validate_payload(payload)
    assert _breakpoints(payload) == 2  # the stable system part, and the end of the history
    last = payload["messages"][-1]["content"][-1]
    assert last["type"] == "tool_result" and last["tool_use_id"] == "toolu_01"
    assert last["cache_control"] == {"type": "ephemeral"}
    report = wrapper.last_report
    assert report is not None and [b.conversation for b in report.breakpoints] == [False, True]
