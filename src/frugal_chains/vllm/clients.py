"""One set of arguments, engine or server: what both adapters call, so the choice lives once."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from frugal_chains.errors import ConfigurationError
from frugal_chains.vllm.types import VLLMClient

__all__ = ["client_for"]


def client_for(
    model: str | None,
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    timeout: float = 60.0,
    max_retries: int = 2,
    dtype: str = "auto",
    max_model_len: int | None = None,
    enable_prefix_caching: bool = True,
    quantization: str | None = None,
    tool_parser: str | None = None,
    engine_kwargs: Mapping[str, Any] | None = None,
) -> VLLMClient:
    """A :class:`~frugal_chains.vllm.ServerClient` when ``base_url`` is given, else an in-process
    :class:`~frugal_chains.vllm.EngineClient` (shared per process and model; started on first use).

    Server-only arguments (``api_key``, ``timeout``, ``max_retries``) are ignored by the engine; engine-only ones
    (``dtype``, ``max_model_len``, ``quantization``, ``tool_parser``, ``enable_prefix_caching=False``,
    ``engine_kwargs``) are the server's own command-line flags
    (see :func:`~frugal_chains.vllm.serve_command`), so giving them with ``base_url`` is a configuration error.

    Example:
        >>> from frugal_chains.vllm import client_for
        >>> client = client_for(None, base_url="http://127.0.0.1:8000/v1")  # nothing is contacted yet
        >>> client.mode
        'server'
        >>> client_for(None)
        Traceback (most recent call last):
        ...
        frugal_chains.errors.ConfigurationError: model is required without base_url: ...
    """
    if base_url is not None:
        engine_only = {
            "dtype": dtype != "auto",
            "max_model_len": max_model_len is not None,
            "quantization": quantization is not None,
            "engine_kwargs": bool(engine_kwargs),
            "tool_parser": tool_parser is not None,
            "enable_prefix_caching": enable_prefix_caching is not True,
        }
        given = [name for name, set_ in engine_only.items() if set_]
        if given:
            raise ConfigurationError(
                f"{', '.join(given)} configure the in-process engine, not a server at base_url: pass them to "
                "`vllm serve` (frugal_chains.vllm.serve_command builds the command) or drop base_url.",
                field=given[0],
            )
        from frugal_chains.vllm.server import ServerClient

        return ServerClient(
            base_url,
            model=model,
            api_key=api_key,
            timeout=timeout,
            max_retries=max_retries,
        )
    if not model:
        raise ConfigurationError(
            "model is required without base_url: give a Hugging Face model id or a local model folder to run "
            "in-process, or base_url='http://host:8000/v1' to use a running `vllm serve`.",
            field="model",
        )
    from frugal_chains.vllm.engine import EngineClient

    return EngineClient(
        model,
        dtype=dtype,
        max_model_len=max_model_len,
        enable_prefix_caching=enable_prefix_caching,
        quantization=quantization,
        tool_parser=tool_parser,
        engine_kwargs=engine_kwargs,
    )
