"""PLACEHOLDER (replaced by the engine work): the in-process vLLM engine client."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class EngineClient:
    """Placeholder with the agreed constructor."""

    def __init__(
        self,
        model: str,
        *,
        dtype: str = "auto",
        max_model_len: int | None = None,
        enable_prefix_caching: bool = True,
        quantization: str | None = None,
        tool_parser: str | None = None,
        engine_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        raise NotImplementedError("placeholder")
