"""FakeVLLMServer speaks vLLM's OpenAI-compatible API: answers, SSE streams with a final usage chunk, prefix-cache
counts by block, tool calls, its model list and health, vLLM's 4xx answers, and each failure on purpose."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from frugal_chains.errors import ConfigurationError
from frugal_chains.testing import FakeVLLMServer


def _body(content: str = "Capital of France?", **extra: Any) -> dict[str, Any]:
    return {"model": "fake-vllm", "messages": [{"role": "user", "content": content}], **extra}


def _events(response: httpx.Response) -> list[Any]:
    out: list[Any] = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            data = line[len("data: ") :]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def test_answers_cycle_and_usage_counts_words() -> None:
    with FakeVLLMServer(["one", "two words"]) as server:
        answers = [httpx.post(server.base_url + "/chat/completions", json=_body()).json() for _ in range(3)]
    texts = [a["choices"][0]["message"]["content"] for a in answers]
    assert texts == ["one", "two words", "one"]
    usage = answers[1]["usage"]
    assert usage["prompt_tokens"] == 4  # "<|user|> Capital of France?"
    assert usage["completion_tokens"] == 2
    assert usage["total_tokens"] == 6
    assert answers[0]["choices"][0]["finish_reason"] == "stop"
    assert len(server.requests) == 3 and server.requests[0]["messages"][0]["content"] == "Capital of France?"


def test_cached_tokens_are_the_shared_prefix_rounded_to_blocks() -> None:
    system = {"role": "system", "content": " ".join(f"rule{i}" for i in range(40))}
    with FakeVLLMServer(block_size=16) as server:

        def ask(q: str) -> dict[str, Any]:
            body = {"model": "fake-vllm", "messages": [system, {"role": "user", "content": q}]}
            return dict(httpx.post(server.base_url + "/chat/completions", json=body).json()["usage"])

        first, second = ask("first question"), ask("another question")
    assert first["prompt_tokens_details"]["cached_tokens"] == 0
    # 42 shared words (<|system|>, 40 rules, <|user|>) -> 2 full blocks of 16
    assert second["prompt_tokens_details"]["cached_tokens"] == 32
    assert second["prompt_tokens"] == 44


def test_stream_has_several_chunks_and_a_final_usage_chunk() -> None:
    answer = "The capital of France is Paris, a city on the Seine."
    with (
        FakeVLLMServer([answer]) as server,
        httpx.stream(
            "POST",
            server.base_url + "/chat/completions",
            json=_body(stream=True, stream_options={"include_usage": True}),
        ) as response,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        events = _events(response)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == answer
    content_chunks = [c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]
    assert len(content_chunks) >= 3
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == len(answer.split())
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert all(c["usage"] is None for c in chunks[:-1])


def test_stream_without_include_usage_has_no_usage() -> None:
    with (
        FakeVLLMServer(["a b c d"]) as server,
        httpx.stream("POST", server.base_url + "/chat/completions", json=_body(stream=True)) as response,
    ):
        events = _events(response)
    assert all("usage" not in e for e in events[:-1])


def test_callable_answer_sees_the_body_and_can_call_tools() -> None:
    seen: list[dict[str, Any]] = []

    def answer(body: dict[str, Any]) -> dict[str, Any]:
        seen.append(body)
        return {"tool_calls": [{"function": {"name": "add", "arguments": {"a": 1, "b": 2}}}]}

    with FakeVLLMServer(answer) as server:
        plain = httpx.post(
            server.base_url + "/chat/completions", json=_body(tools=[{"type": "function"}])
        ).json()
        with httpx.stream("POST", server.base_url + "/chat/completions", json=_body(stream=True)) as response:
            events = _events(response)
    assert seen[0]["tools"] == [{"type": "function"}]
    message = plain["choices"][0]["message"]
    assert plain["choices"][0]["finish_reason"] == "tool_calls"
    assert message["tool_calls"][0]["function"] == {"name": "add", "arguments": '{"a": 1, "b": 2}'}
    pieces = [tc for e in events[:-1] for c in e["choices"] for tc in c["delta"].get("tool_calls") or ()]
    assert pieces[0]["function"]["name"] == "add" and pieces[0]["id"]
    assert "".join(p["function"]["arguments"] for p in pieces) == '{"a": 1, "b": 2}'
    assert len(pieces) >= 3


def test_logprobs_when_asked() -> None:
    with FakeVLLMServer(["Paris is"]) as server:
        answer = httpx.post(
            server.base_url + "/chat/completions", json=_body(logprobs=True, top_logprobs=2)
        ).json()
    content = answer["choices"][0]["logprobs"]["content"]
    assert [t["token"] for t in content] == ["Paris", "is"]
    assert len(content[0]["top_logprobs"]) == 2


def test_models_and_health() -> None:
    with FakeVLLMServer(model="smollm2") as server:
        models = httpx.get(server.base_url + "/models").json()
        health = httpx.get(server.base_url.removesuffix("/v1") + "/health")
    assert [m["id"] for m in models["data"]] == ["smollm2"]
    assert health.status_code == 200


def test_vllm_errors_for_wrong_model_and_too_long_requests() -> None:
    with FakeVLLMServer() as server:
        wrong = httpx.post(server.base_url + "/chat/completions", json={**_body(), "model": "gpt-4"})
        long = httpx.post(server.base_url + "/chat/completions", json=_body(max_tokens=5000))
        empty = httpx.post(server.base_url + "/chat/completions", json={"model": "fake-vllm", "messages": []})
    assert wrong.status_code == 404 and "gpt-4" in wrong.json()["error"]["message"]
    assert long.status_code == 400 and "maximum context length" in long.json()["error"]["message"]
    assert empty.status_code == 400


@pytest.mark.parametrize("failure", ["503", "garbage", "close"])
def test_fail_first_then_answers(failure: str) -> None:
    with FakeVLLMServer(["ok"], fail_first=2, failure=failure) as server:  # type: ignore[arg-type]
        outcomes = []
        for _ in range(3):
            try:
                r = httpx.post(server.base_url + "/chat/completions", json=_body())
                outcomes.append((r.status_code, r.headers.get("content-type", "")))
            except httpx.TransportError as e:
                outcomes.append((0, type(e).__name__))
        last = r.json()
    assert last["choices"][0]["message"]["content"] == "ok"
    assert outcomes[2][0] == 200
    if failure == "503":
        assert [o[0] for o in outcomes[:2]] == [503, 503]
    elif failure == "garbage":
        assert all(o == (200, "text/html") for o in outcomes[:2])
    else:
        assert all(o[0] == 0 for o in outcomes[:2])
    assert len(server.requests) == 3


def test_hang_times_out_the_client_and_stop_releases_it() -> None:
    with FakeVLLMServer(fail_first=1, failure="hang") as server:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(server.base_url + "/chat/completions", json=_body(), timeout=0.3)
        r = httpx.post(server.base_url + "/chat/completions", json=_body())
    assert r.status_code == 200


def test_cut_stream_drops_after_the_first_chunks() -> None:
    with FakeVLLMServer(["a b c d e f g h"], fail_first=1, failure="cut") as server:
        with httpx.stream("POST", server.base_url + "/chat/completions", json=_body(stream=True)) as response:
            events = _events(response)
        assert "[DONE]" not in events and len(events) == 2
        plain = httpx.post(server.base_url + "/chat/completions", json=_body())
    assert plain.status_code == 200


def test_a_stopped_server_answers_nothing() -> None:
    server = FakeVLLMServer()
    with httpx.Client() as client:
        assert client.get(server.base_url + "/models").status_code == 200  # a kept-alive connection
        server.stop()
        server.stop()  # idempotent
        with pytest.raises(httpx.TransportError):
            client.get(server.base_url + "/models")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"answers": []}, "answers"),
        ({"failure": "boom"}, "failure"),
        ({"fail_first": -1}, "fail_first"),
        ({"block_size": 0}, "block_size"),
    ],
)
def test_bad_arguments_name_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigurationError, match=field):
        FakeVLLMServer(**kwargs)
