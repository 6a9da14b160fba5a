"""LangChain's standard chat-model suites (langchain-tests) on ``CascadeChatModel`` and ``CachedChatModel``, with
fake models underneath that call tools and answer structured output (no network)."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests

from frugal_chains.cache import AnswerCache
from frugal_chains.langchain import CascadeChatModel
from frugal_chains.langchain.cached_model import CachedChatModel
from frugal_chains.testing import FakeEmbeddings, FakeToolCallingChatModel


def cascade_params() -> dict[str, Any]:
    return {
        "tiers": [
            FakeToolCallingChatModel(model="gpt-4o-mini", output_tokens=12),
            FakeToolCallingChatModel(model="gpt-4o", output_tokens=12),
        ]
    }


def cached_params() -> dict[str, Any]:
    return {
        "model": FakeToolCallingChatModel(model="gpt-4o-mini", output_tokens=12),
        "cache": AnswerCache(embedder=FakeEmbeddings()),
    }


class CascadeCapabilities:
    @property
    def chat_model_class(self) -> type[BaseChatModel]:
        return CascadeChatModel

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return cascade_params()

    @property
    def model_override_value(self) -> str | None:
        return "gpt-4.1-nano"


class CachedCapabilities:
    @property
    def chat_model_class(self) -> type[BaseChatModel]:
        return CachedChatModel

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return cached_params()

    @property
    def model_override_value(self) -> str | None:
        return "gpt-4.1-nano"


class TestCascadeChatModelUnit(CascadeCapabilities, ChatModelUnitTests):
    pass


class TestCascadeChatModelIntegration(CascadeCapabilities, ChatModelIntegrationTests):
    pass


class TestCachedChatModelUnit(CachedCapabilities, ChatModelUnitTests):
    pass


class TestCachedChatModelIntegration(CachedCapabilities, ChatModelIntegrationTests):
    pass
