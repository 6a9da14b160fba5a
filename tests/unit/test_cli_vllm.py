"""``frugal-chains vllm command`` prints the recommended ``vllm serve`` command; ``frugal-chains vllm health``
reports a server's health and exits 1 when it is down (never a traceback)."""

from __future__ import annotations

import json
import shlex

import pytest

from frugal_chains.cli import main
from frugal_chains.testing import FakeVLLMServer


def test_command_prints_the_recommended_flags(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["vllm", "command", "Qwen/Qwen2.5-7B-Instruct-AWQ"]) == 0
    cmd = shlex.split(capsys.readouterr().out)
    assert cmd[:3] == ["vllm", "serve", "Qwen/Qwen2.5-7B-Instruct-AWQ"]
    assert "--enable-prefix-caching" in cmd and "--enable-prompt-tokens-details" in cmd
    assert cmd[cmd.index("--port") + 1] == "8000"


def test_command_options_and_extra_flags(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "vllm", "command", "org/m", "--port", "9001", "--max-model-len", "4096", "--quantization", "awq",
            "--tool-call-parser", "hermes", "--dtype", "bfloat16", "--served-model-name", "cheap",
            "--no-prefix-caching", "--extra", "--gpu-memory-utilization 0.85", "--extra=--enforce-eager",
        ]
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out.strip()
    for part in (
        "--port 9001",
        "--max-model-len 4096",
        "--quantization awq",
        "--enable-auto-tool-choice --tool-call-parser hermes",
        "--dtype bfloat16",
        "--served-model-name cheap",
        "--no-enable-prefix-caching",
    ):
        assert part in out, part
    assert out.endswith("--gpu-memory-utilization 0.85 --enforce-eager")


def test_command_bad_value_is_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["vllm", "command", "m", "--max-model-len", "-3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("frugal-chains vllm command: --max-model-len:") and "Traceback" not in err
    assert err.count("\n") == 1


def test_health_up(capsys: pytest.CaptureFixture[str]) -> None:
    with FakeVLLMServer(model="smollm2") as server:
        assert main(["vllm", "health", server.base_url]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"ok: {server.base_url} serves smollm2")


def test_health_down_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    server = FakeVLLMServer()
    server.stop()
    assert main(["vllm", "health", server.base_url, "--timeout", "1", "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is False and data["base_url"] == server.base_url and data["error"]


def test_health_bad_url_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["vllm", "health", "localhost:8000"]) == 2
    assert "frugal-chains vllm health: URL:" in capsys.readouterr().err
