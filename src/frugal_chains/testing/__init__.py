"""Test seams you can use too: fake chat models that report real-looking usage, a model that replays recorded
answers, and a fake embedder; no API keys.

:class:`FakeEmbeddings` needs no framework. The chat models are LangChain models: they need langchain-core
(``pip install "frugal-chains[langchain]"``) and are imported on first use, so this package also imports in an
app that only has LlamaIndex.

Example:
    >>> from frugal_chains.testing import FakeUsageChatModel
    >>> msg = FakeUsageChatModel(model="gpt-4o-mini", output_tokens=7).invoke("hello")
    >>> msg.usage_metadata["output_tokens"], msg.response_metadata["model_name"]
    (7, 'gpt-4o-mini')
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from frugal_chains.testing.fake_embeddings import FakeEmbeddings

if TYPE_CHECKING:
    from frugal_chains.testing.fake_chat import FakeToolCallingChatModel, FakeUsageChatModel
    from frugal_chains.testing.replay import ReplayChatModel, ReplayEntry

__all__ = [
    "FakeEmbeddings",
    "FakeToolCallingChatModel",
    "FakeUsageChatModel",
    "ReplayChatModel",
    "ReplayEntry",
]

# The LangChain fakes: imported on first access (their modules raise an ImportError naming the extra).
_LAZY = {
    "FakeToolCallingChatModel": "frugal_chains.testing.fake_chat",
    "FakeUsageChatModel": "frugal_chains.testing.fake_chat",
    "ReplayChatModel": "frugal_chains.testing.replay",
    "ReplayEntry": "frugal_chains.testing.replay",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
