"""Test seams you can use too: fake chat models that report real-looking usage, a model that replays recorded
answers, and a fake embedder; no API keys.

Example:
    >>> from frugal_chains.testing import FakeUsageChatModel
    >>> msg = FakeUsageChatModel(model="gpt-4o-mini", output_tokens=7).invoke("hello")
    >>> msg.usage_metadata["output_tokens"], msg.response_metadata["model_name"]
    (7, 'gpt-4o-mini')
"""

from __future__ import annotations

from frugal_chains.testing.fake_chat import FakeToolCallingChatModel, FakeUsageChatModel
from frugal_chains.testing.fake_embeddings import FakeEmbeddings
from frugal_chains.testing.replay import ReplayChatModel, ReplayEntry

__all__ = [
    "FakeEmbeddings",
    "FakeToolCallingChatModel",
    "FakeUsageChatModel",
    "ReplayChatModel",
    "ReplayEntry",
]
