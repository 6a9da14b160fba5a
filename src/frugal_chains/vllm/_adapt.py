"""What the LangChain and LlamaIndex adapters of vLLM share (framework-free): the model settings both take, call
options to :class:`SamplingOptions`, OpenAI's ``tool_choice`` / ``response_format`` spellings, logprobs and usage
in OpenAI's shapes, and the output reservation of a call without ``max_tokens``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from frugal_chains.accounting.usage import Usage
from frugal_chains.errors import ConfigurationError
from frugal_chains.vllm.clients import client_for
from frugal_chains.vllm.types import SamplingOptions, StructuredOutput, TokenLogprob, VLLMClient

__all__ = [
    "DEFAULT_CONTEXT_WINDOW",
    "DEFAULT_OUTPUT_RESERVATION",
    "SAMPLING_FIELDS",
    "build_client",
    "check_model",
    "check_settings",
    "unknown_settings",
    "openai_logprobs",
    "openai_usage",
    "output_reservation",
    "sampling_options",
    "structured_from",
    "tool_choice_from",
]

DEFAULT_OUTPUT_RESERVATION = 4096
"""What a budget reserves for the answer of a call that sets no ``max_tokens`` when the model's length
(``max_model_len``) is not known either (a server): vLLM then stops at the model's own length."""

DEFAULT_CONTEXT_WINDOW = 4096
"""The context window LlamaIndex plans prompts for when neither ``context_window`` nor ``max_model_len`` is given."""

SAMPLING_FIELDS = (
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "repetition_penalty",
    "presence_penalty",
    "frequency_penalty",
    "seed",
)
"""Sampling settings a model takes and a call may override (besides ``stop``, ``logprobs``, ``extra_body``)."""


def check_model(model: str | None, base_url: str | None, owner: str) -> None:
    if base_url is None and not model:
        raise ConfigurationError(
            f"{owner} needs model= without base_url: a Hugging Face model id or a local model folder to run "
            "in-process, or base_url='http://host:8000/v1' for a running `vllm serve`.",
            field="model",
        )


def unknown_settings(data: Any, fields: Mapping[str, Any], owner: str) -> None:
    """Refuse keyword arguments the adapter has no field for (a typo such as ``max_token=`` would otherwise be
    dropped silently): vLLM-only sampling parameters go in ``extra_body``."""
    if not isinstance(data, Mapping):
        return
    known = set(fields)
    known.update(f.alias for f in fields.values() if getattr(f, "alias", None))
    unknown = sorted(str(k) for k in data if k not in known)
    if unknown:
        raise ConfigurationError(
            f"{owner} does not take {', '.join(unknown)}: check the spelling; vLLM-only sampling parameters go "
            "in extra_body={...}, more vllm.LLM arguments in engine_kwargs={...}.",
            field=unknown[0],
        )


def check_settings(settings: Any, owner: str) -> None:
    """Check an adapter's settings when it is built, not at its first call: the model, the sampling settings,
    and the server's or engine's own (``base_url``, ``timeout``, ``dtype``...) by building a client, which
    contacts nothing and loads nothing."""
    check_model(settings.model, settings.base_url, owner)
    sampling_options(settings, {})
    build_client(settings)


def build_client(settings: Any) -> VLLMClient:
    """The client for an adapter's settings (``model``, ``base_url``, ``api_key`` ... attributes)."""
    key = settings.api_key
    return client_for(
        settings.model,
        base_url=settings.base_url,
        api_key=key.get_secret_value() if hasattr(key, "get_secret_value") else key,
        timeout=settings.timeout,
        max_retries=settings.max_retries,
        dtype=settings.dtype,
        max_model_len=settings.max_model_len,
        enable_prefix_caching=settings.enable_prefix_caching,
        quantization=settings.quantization,
        tool_parser=settings.tool_parser,
        engine_kwargs=settings.engine_kwargs,
    )


def sampling_options(
    settings: Any, overrides: Mapping[str, Any], stop: Sequence[str] | None = None
) -> SamplingOptions:
    """The model's sampling settings with a call's ``overrides`` (``max_tokens=...`` ...) in their place."""
    values = {name: overrides.get(name, getattr(settings, name)) for name in SAMPLING_FIELDS}
    logprobs = overrides.get("logprobs", settings.logprobs)
    if logprobs is True:
        logprobs = 0
    elif logprobs is False:
        logprobs = None
    stops = stop if stop is not None else overrides.get("stop", settings.stop)
    extra = {**(settings.extra_body or {}), **(overrides.get("extra_body") or {})}
    return SamplingOptions(**values, stop=tuple(stops or ()), logprobs=logprobs, extra=extra)


def output_reservation(max_tokens: int | None, max_model_len: int | None) -> int:
    """The most tokens a call can answer with: its ``max_tokens``, else the model's length, else
    :data:`DEFAULT_OUTPUT_RESERVATION`."""
    return max_tokens or max_model_len or DEFAULT_OUTPUT_RESERVATION


def tool_choice_from(choice: Any, names: Sequence[str]) -> str | dict[str, Any] | None:
    """LangChain's and LlamaIndex's ``tool_choice`` spellings as OpenAI's: ``"any"``/``True`` -> ``"required"``,
    a tool's name -> that function."""
    if choice is None or choice is False:
        return None
    if choice is True or choice == "any":
        return "required"
    if isinstance(choice, str) and choice not in ("auto", "none", "required"):
        choice = {"type": "function", "function": {"name": choice}}
    if isinstance(choice, Mapping):
        name = (choice.get("function") or {}).get("name")
        if names and name not in names:
            raise ConfigurationError(
                f"tool_choice names {name!r}, which is not among the bound tools {list(names)}: bind it first.",
                field="tool_choice",
            )
        return dict(choice)
    if isinstance(choice, str):
        return choice
    raise ConfigurationError(
        "tool_choice must be 'auto', 'none', 'required', 'any', a tool name or an OpenAI tool_choice dict, got "
        f"{choice!r}.",
        field="tool_choice",
    )


def structured_from(response_format: Any) -> StructuredOutput | None:
    """OpenAI's ``response_format`` (or a :class:`StructuredOutput`) as guided decoding."""
    if response_format is None or isinstance(response_format, StructuredOutput):
        return response_format
    if isinstance(response_format, Mapping):
        kind = response_format.get("type")
        if kind == "json_schema":
            spec = response_format.get("json_schema") or {}
            schema = spec.get("schema") if isinstance(spec, Mapping) else None
            if isinstance(schema, Mapping):
                return StructuredOutput(json_schema=schema)
        elif kind == "json_object":
            return StructuredOutput(json_schema={"type": "object"})
        elif kind == "text":
            return None
    raise ConfigurationError(
        "response_format must be {'type': 'json_schema', 'json_schema': {'schema': {...}}}, "
        f"{{'type': 'json_object'}} or a frugal_chains.vllm.StructuredOutput, got {response_format!r}.",
        field="response_format",
    )


def openai_logprobs(logprobs: Sequence[TokenLogprob]) -> dict[str, Any]:
    """OpenAI's ``logprobs`` shape (what the cascade's logprob gate reads)."""
    return {
        "content": [
            {
                "token": t.token,
                "logprob": t.logprob,
                "top_logprobs": [{"token": tok, "logprob": lp} for tok, lp in t.top],
            }
            for t in logprobs
        ]
    }


def openai_usage(usage: Usage) -> dict[str, Any]:
    """OpenAI's ``usage`` shape, with the prompt tokens vLLM's prefix cache served as
    ``prompt_tokens_details.cached_tokens``."""
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cache_read_tokens},
    }
