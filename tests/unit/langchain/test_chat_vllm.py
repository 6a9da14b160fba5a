"""ChatVLLM translates types only: requests built from LangChain calls, answers back as messages, batches handed
to the client in one call with one chat-model run per input (a scripted client stands in for vLLM)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler, UsageMetadataCallbackHandler
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from pydantic import BaseModel

from frugal_chains import Budget, BudgetExceededError, ConfigurationError, Price, SQLiteLedger, Usage
from frugal_chains.langchain import ChatVLLM, TokenBudgetHandler
from frugal_chains.vllm import StructuredOutput, ToolCall
from tests.unit._vllm_fake_client import ScriptedClient, attach


class Runs(BaseCallbackHandler):
    def __init__(self) -> None:
        self.starts: list[dict[str, Any]] = []
        self.ends = 0
        self.errors = 0

    def on_chat_model_start(self, serialized: Any, messages: Any, **kwargs: Any) -> None:
        self.starts.append(
            {"tags": kwargs.get("tags"), "metadata": kwargs.get("metadata"), "name": kwargs.get("name")}
        )

    def on_llm_end(self, response: Any, **kwargs: Any) -> None:
        self.ends += 1

    def on_llm_error(self, error: BaseException, **kwargs: Any) -> None:
        self.errors += 1


def chat(client: ScriptedClient | None = None, **kw: Any) -> tuple[ChatVLLM, ScriptedClient]:
    client = client or ScriptedClient(["one", "two", "three"])
    kw.setdefault("max_tokens", 16)
    return attach(ChatVLLM(model="smol", base_url="http://127.0.0.1:9/v1", **kw), client), client


def test_invoke_reports_usage_cache_reads_and_model() -> None:
    model, client = chat(
        ScriptedClient(["Paris ."], usage=Usage(input_tokens=30, output_tokens=2, cache_read_tokens=16))
    )
    answer = model.invoke("Capital of France?")
    assert answer.content == "Paris ."
    assert answer.usage_metadata == {
        "input_tokens": 30,
        "output_tokens": 2,
        "total_tokens": 32,
        "input_token_details": {"cache_read": 16},
    }
    assert answer.response_metadata["model_name"] == "smol"
    assert answer.response_metadata["finish_reason"] == "stop"
    (request,) = client.batches[0]
    assert request.messages == ({"role": "user", "content": "Capital of France?"},)
    assert request.options.max_tokens == 16


@pytest.mark.parametrize("run", ["sync", "async"])
def test_batch_is_one_client_call_with_one_run_per_input(run: str) -> None:
    model, client = chat()
    runs = Runs()
    configs: list[Any] = [
        {"callbacks": [runs], "tags": ["a"], "metadata": {"user_id": "u1"}, "run_name": "first"},
        {"callbacks": [runs], "tags": ["b"], "metadata": {"user_id": "u2"}},
        {"callbacks": [runs], "tags": ["c"]},
    ]
    inputs: list[Any] = ["q1", "q2", "q3"]
    out = model.batch(inputs, configs) if run == "sync" else asyncio.run(model.abatch(inputs, configs))
    assert [m.content for m in out] == ["one", "two", "three"]
    assert [len(b) for b in client.batches] == [3]
    assert [r.messages[0]["content"] for r in client.batches[0]] == ["q1", "q2", "q3"]
    assert [s["tags"] for s in runs.starts] == [["a"], ["b"], ["c"]]
    assert runs.starts[0]["metadata"]["user_id"] == "u1" and runs.starts[1]["metadata"]["user_id"] == "u2"
    assert runs.starts[0]["name"] == "first"
    assert runs.ends == 3


@pytest.mark.parametrize("run", ["sync", "async"])
def test_batch_budget_refuses_before_any_request(run: str) -> None:
    model, client = chat(max_tokens=100)
    ledger = SQLiteLedger()
    handler = TokenBudgetHandler(
        [Budget(max_tokens=150, scope="global")], ledger=ledger, prices={"smol": Price(input=1.0, output=1.0)}
    )
    runs = Runs()
    config: Any = {"callbacks": [handler, runs]}
    with pytest.raises(BudgetExceededError):
        if run == "sync":
            model.batch(["q1", "q2", "q3"], config)
        else:
            asyncio.run(model.abatch(["q1", "q2", "q3"], config))
    assert client.batches == []
    assert runs.errors == len(runs.starts)  # the started run got its error: its reservation is given back
    assert [r.outcome for r in ledger.records()] == ["refused"]


def test_batch_with_return_exceptions_answers_the_inputs_a_budget_lets_through() -> None:
    model, client = chat(max_tokens=100)
    handler = TokenBudgetHandler(
        [Budget(max_tokens=150, scope="global")], prices={"smol": Price(input=1, output=1)}
    )
    out = model.batch(["q1", "q2"], {"callbacks": [handler]}, return_exceptions=True)
    assert isinstance(out[0], AIMessage) and isinstance(out[1], BudgetExceededError)
    assert [len(b) for b in client.batches] == [1]


def test_batch_falls_back_to_one_call_per_input_under_a_lower_max_concurrency() -> None:
    model, client = chat()
    out = model.batch(["q1", "q2", "q3"], {"max_concurrency": 1})
    assert len(out) == 3
    assert [len(b) for b in client.batches] == [1, 1, 1]


def test_batch_error_ends_every_run_and_reaches_the_caller() -> None:
    from frugal_chains.errors import VLLMServerError

    def down() -> BaseException:
        return VLLMServerError("down", url="http://127.0.0.1:9/v1", status_code=503, attempts=3)

    model, _ = chat(ScriptedClient(error=down))
    runs = Runs()
    with pytest.raises(VLLMServerError):
        model.batch(["q1", "q2"], {"callbacks": [runs]})
    assert (len(runs.starts), runs.errors, runs.ends) == (2, 2, 0)
    out = model.batch(["q1", "q2"], return_exceptions=True)
    assert all(isinstance(o, VLLMServerError) for o in out)


@pytest.mark.parametrize("run", ["stream", "astream"])
def test_stream_reports_usage_and_model_once(run: str) -> None:
    model, _ = chat(ScriptedClient(["a b c d"]))
    counter = UsageMetadataCallbackHandler()
    config: Any = {"callbacks": [counter]}
    if run == "stream":
        chunks = list(model.stream("hi", config=config))
    else:

        async def collect() -> list[Any]:
            return [c async for c in model.astream("hi", config=config)]

        chunks = asyncio.run(collect())
    assert len([c for c in chunks if c.content]) == 4
    whole = chunks[0]
    for c in chunks[1:]:
        whole = whole + c
    assert whole.content == "a b c d"
    assert whole.usage_metadata is not None and whole.usage_metadata["input_tokens"] == 20
    assert whole.response_metadata["model_name"] == "smol"
    assert counter.usage_metadata["smol"]["input_tokens"] == 20
    assert counter.usage_metadata["smol"]["input_token_details"] == {"cache_read": 16}


def test_tools_are_sent_in_openai_format_and_calls_come_back() -> None:
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    call = ToolCall(id="call_1", name="add", arguments='{"a": 1, "b": 2}')
    model, client = chat(ScriptedClient([""], tool_calls=[call]))
    bound = model.bind_tools([add], tool_choice="any")
    answer = bound.invoke("add 1 and 2")
    assert answer.tool_calls == [
        {"name": "add", "args": {"a": 1, "b": 2}, "id": "call_1", "type": "tool_call"}
    ]
    request = client.batches[0][0]
    assert request.tool_choice == "required"
    assert request.tools[0]["function"]["name"] == "add"
    model.bind_tools([add], tool_choice="add").invoke("add")
    assert client.batches[1][0].tool_choice == {"type": "function", "function": {"name": "add"}}
    with pytest.raises(ConfigurationError, match="tool_choice"):
        model.bind_tools([add], tool_choice="sub")
    streamed = list(bound.stream("add 1 and 2"))
    whole = streamed[0]
    for c in streamed[1:]:
        whole = whole + c
    assert whole.tool_calls[0]["args"] == {"a": 1, "b": 2}


def test_a_tool_round_trip_sends_the_call_and_its_result() -> None:
    model, client = chat()
    history = [
        HumanMessage("add 1 and 2"),
        AIMessage("", tool_calls=[{"name": "add", "args": {"a": 1, "b": 2}, "id": "call_1"}]),
        ToolMessage("3", tool_call_id="call_1"),
    ]
    model.invoke(history)
    sent = client.batches[0][0].messages
    assert sent[1]["tool_calls"][0]["function"]["name"] == "add"
    assert sent[2] == {"role": "tool", "content": "3", "tool_call_id": "call_1"}


class Joke(BaseModel):
    setup: str
    punchline: str


def test_structured_output_uses_guided_decoding_by_default() -> None:
    model, client = chat(ScriptedClient(['{"setup": "a", "punchline": "b"}']))
    joke = model.with_structured_output(Joke).invoke("a joke")
    assert joke == Joke(setup="a", punchline="b")
    structured = client.batches[0][0].structured
    assert isinstance(structured, StructuredOutput) and structured.json_schema is not None
    assert set(structured.json_schema["properties"]) == {"setup", "punchline"}
    model.with_structured_output(Joke, method="json_mode").invoke("a joke")
    assert client.batches[1][0].structured == StructuredOutput(json_schema={"type": "object"})


def test_structured_output_by_function_calling_forces_the_tool() -> None:
    call = ToolCall(id="c", name="Joke", arguments='{"setup": "a", "punchline": "b"}')
    model, client = chat(ScriptedClient([""], tool_calls=[call]))
    assert model.with_structured_output(Joke, method="function_calling").invoke("a joke") == Joke(
        setup="a", punchline="b"
    )
    assert client.batches[0][0].tool_choice == {"type": "function", "function": {"name": "Joke"}}


def test_call_options_override_the_model_settings() -> None:
    model, client = chat(temperature=0.5, top_k=20, extra_body={"ignore_eos": False})
    model.invoke("hi", max_tokens=4, temperature=0.0, extra_body={"min_tokens": 2}, stop=["\n"])
    options = client.batches[0][0].options
    assert (options.max_tokens, options.temperature, options.top_k, options.stop) == (4, 0.0, 20, ("\n",))
    assert options.extra == {"ignore_eos": False, "min_tokens": 2}


def test_logprobs_come_back_in_openai_shape() -> None:
    from frugal_chains.vllm import Completion, TokenLogprob

    class WithLogprobs(ScriptedClient):
        def generate(self, requests: Any) -> list[Completion]:
            self.batches.append(list(requests))
            lp = (TokenLogprob(token="Paris", logprob=-0.1, top=(("Paris", -0.1), ("Lyon", -2.5))),)
            return [Completion(text="Paris", model="smol", usage=Usage(), logprobs=lp)]

    model, client = chat(WithLogprobs(), logprobs=1)
    answer = model.invoke("hi")
    assert client.batches[0][0].options.logprobs == 1
    assert answer.response_metadata["logprobs"]["content"][0] == {
        "token": "Paris",
        "logprob": -0.1,
        "top_logprobs": [{"token": "Paris", "logprob": -0.1}, {"token": "Lyon", "logprob": -2.5}],
    }


def test_bad_settings_and_arguments_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="model="):
        ChatVLLM()
    with pytest.raises(ConfigurationError, match="temperature"):
        ChatVLLM(model="m", base_url="http://127.0.0.1:9/v1", temperature=-1)
    model, _ = chat()
    with pytest.raises(ConfigurationError, match="extra_body"):
        model.invoke("hi", guided_choice=["a"])
    with pytest.raises(ConfigurationError, match="dtype"):
        _ = ChatVLLM(model="m", base_url="http://127.0.0.1:9/v1", dtype="bfloat16").client


def test_langsmith_params_and_output_reservation() -> None:
    model = ChatVLLM(model="m", base_url="http://127.0.0.1:9/v1", temperature=0.2, max_tokens=7, stop=["x"])
    assert model._get_ls_params() == {
        "ls_provider": "vllm",
        "ls_model_type": "chat",
        "ls_model_name": "m",
        "ls_temperature": 0.2,
        "ls_max_tokens": 7,
        "ls_stop": ["x"],
    }
    assert model._llm_type == "vllm"
    # no max_tokens: budgets reserve the model's length, else the documented default
    assert ChatVLLM(model="m")._get_invocation_params()["max_output_tokens"] == 4096
    assert ChatVLLM(model="m", max_model_len=2048)._get_invocation_params()["max_output_tokens"] == 2048
    assert "max_output_tokens" not in model._get_invocation_params()


def test_without_vllm_the_adapters_import_and_the_engine_names_the_extra() -> None:
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['vllm'] = None\n"  # vLLM not installed
        "from frugal_chains.langchain import ChatVLLM\n"
        "from frugal_chains.llama_index import VLLM\n"
        "for call in (lambda: ChatVLLM(model='Qwen/Qwen2.5-0.5B-Instruct').invoke('hi'),\n"
        "             lambda: VLLM(model='Qwen/Qwen2.5-0.5B-Instruct').complete('hi')):\n"
        "    try:\n"
        "        call()\n"
        "    except ImportError as e:\n"
        "        print(str(e))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 2, out.stdout + out.stderr
    assert all('pip install "frugal-chains[vllm]"' in line for line in lines)
