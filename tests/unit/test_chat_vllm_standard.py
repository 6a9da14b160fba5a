"""langchain-tests' ``ChatModelUnitTests`` on :class:`~frugal_chains.langchain.ChatVLLM` (nothing is contacted:
the unit suite builds models, binds tools and structured output, and reads the LangSmith params).

The integration suite runs against a real vLLM (the CPU engine and ``vllm serve``) in ``tests/vllm/``."""

from __future__ import annotations

from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_tests.unit_tests import ChatModelUnitTests

from frugal_chains.langchain import ChatVLLM


class TestChatVLLMUnit(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[BaseChatModel]:
        return ChatVLLM

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"model": "Qwen/Qwen2.5-7B-Instruct", "base_url": "http://127.0.0.1:9/v1"}

    @property
    def init_from_env_params(self) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
        return (
            {"VLLM_API_KEY": "key-from-env"},
            {"model": "Qwen/Qwen2.5-7B-Instruct", "base_url": "http://127.0.0.1:9/v1"},
            {"api_key": "key-from-env"},
        )

    @property
    def has_tool_calling(self) -> bool:
        return True

    @property
    def has_tool_choice(self) -> bool:
        return True

    @property
    def has_structured_output(self) -> bool:
        return True

    @property
    def supports_json_mode(self) -> bool:
        return True

    @property
    def returns_usage_metadata(self) -> bool:
        return True
