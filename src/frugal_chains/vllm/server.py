"""PLACEHOLDER (replaced by the server work): the `vllm serve` client."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal


class ServerClient:
    """Placeholder with the agreed constructor."""

    mode: Literal["server"] = "server"

    def __init__(
        self,
        base_url: str,
        *,
        model: str | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 2,
        retry_backoff_s: float = 0.5,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.base_url = base_url
