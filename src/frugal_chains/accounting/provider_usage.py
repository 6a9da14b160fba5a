"""Token usage as providers and frameworks report it, turned into one :class:`~frugal_chains.Usage`.

Understands, as dicts or as objects (pydantic models, SDK responses):

* OpenAI chat completions: ``prompt_tokens`` (cached part included), ``prompt_tokens_details.cached_tokens``,
  ``completion_tokens`` (reasoning included), ``completion_tokens_details.reasoning_tokens``;
* the OpenAI Responses API: ``input_tokens`` / ``input_tokens_details.cached_tokens`` / ``output_tokens_details``;
* LangChain ``usage_metadata``: ``input_tokens`` (cache included), ``input_token_details.cache_read``,
  ``cache_creation`` split by ``ephemeral_5m_input_tokens`` / ``ephemeral_1h_input_tokens``,
  ``output_token_details.reasoning``;
* Anthropic: ``input_tokens`` *excluding* ``cache_read_input_tokens`` and ``cache_creation_input_tokens``, with
  ``cache_creation.ephemeral_1h_input_tokens``;
* Gemini: ``prompt_token_count``, ``cached_content_token_count``, ``candidates_token_count``,
  ``thoughts_token_count``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from frugal_chains.accounting.usage import Usage

__all__ = ["get_field", "usage_from_provider"]


def _int(v: Any) -> int:
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else 0


def get_field(obj: Any, key: str) -> Any:
    """``obj[key]`` for mappings, ``obj.key`` for objects (pydantic models, SDK objects), else ``None``."""
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return obj.get(key)
    try:
        return getattr(obj, key, None)
    except Exception:  # a property that raises
        return None


def _has(obj: Any, key: str) -> bool:
    return get_field(obj, key) is not None


def usage_from_provider(u: Any) -> Usage | None:
    """A :class:`~frugal_chains.Usage` from a provider usage block (dict or object); ``None`` if it is not one
    or reports no tokens at all.

    Example:
        >>> from frugal_chains.accounting import usage_from_provider
        >>> u = usage_from_provider({"input_tokens": 20, "cache_read_input_tokens": 1000, "output_tokens": 5})
        >>> u.input_tokens, u.cache_read_tokens  # Anthropic's input excludes the cached part
        (1020, 1000)
    """
    if u is None or isinstance(u, (str, bytes, int, float)):
        return None
    usage: Usage | None = None
    if _has(u, "prompt_tokens") or _has(u, "completion_tokens"):
        # OpenAI chat completions: prompt_tokens includes the cached part, completion_tokens the reasoning
        cached = _int(get_field(get_field(u, "prompt_tokens_details"), "cached_tokens"))
        out = _int(get_field(u, "completion_tokens"))
        reasoning = _int(get_field(get_field(u, "completion_tokens_details"), "reasoning_tokens"))
        usage = Usage(
            input_tokens=max(_int(get_field(u, "prompt_tokens")), cached),
            output_tokens=out,
            cache_read_tokens=cached,
            reasoning_tokens=min(out, reasoning),
        )
    elif _has(u, "input_tokens") or _has(u, "output_tokens"):
        out = _int(get_field(u, "output_tokens"))
        if _has(u, "input_tokens_details") or _has(u, "output_tokens_details"):
            # OpenAI Responses API: input_tokens includes the cached part
            cached = _int(get_field(get_field(u, "input_tokens_details"), "cached_tokens"))
            reasoning = _int(get_field(get_field(u, "output_tokens_details"), "reasoning_tokens"))
            usage = Usage(
                input_tokens=max(_int(get_field(u, "input_tokens")), cached),
                output_tokens=out,
                cache_read_tokens=cached,
                reasoning_tokens=min(out, reasoning),
            )
        elif _has(u, "input_token_details") or _has(u, "output_token_details"):
            # LangChain usage_metadata (a LangChain model behind LlamaIndex): input_tokens includes the cache
            # cache_creation (all writes) is split by the lifetimes when the provider reports them
            details = get_field(u, "input_token_details")
            read = _int(get_field(details, "cache_read"))
            writes = _int(get_field(details, "cache_creation"))
            w1h = _int(get_field(details, "ephemeral_1h_input_tokens"))
            w5m = (
                _int(get_field(details, "ephemeral_5m_input_tokens"))
                if _has(details, "ephemeral_5m_input_tokens")
                else max(0, writes - w1h)
            )
            reasoning = _int(get_field(get_field(u, "output_token_details"), "reasoning"))
            usage = Usage(
                input_tokens=max(_int(get_field(u, "input_tokens")), read + w5m + w1h),
                output_tokens=out,
                cache_read_tokens=read,
                cache_write_tokens=w5m,
                cache_write_1h_tokens=w1h,
                reasoning_tokens=min(out, reasoning),
            )
        else:
            # Anthropic: input_tokens excludes cache reads and cache writes
            read = _int(get_field(u, "cache_read_input_tokens"))
            writes = _int(get_field(u, "cache_creation_input_tokens"))
            w1h = _int(get_field(get_field(u, "cache_creation"), "ephemeral_1h_input_tokens"))
            usage = Usage(
                input_tokens=_int(get_field(u, "input_tokens")) + read + writes,
                output_tokens=out,
                cache_read_tokens=read,
                cache_write_tokens=max(0, writes - w1h),
                cache_write_1h_tokens=min(w1h, writes),
            )
    elif _has(u, "prompt_token_count") or _has(u, "candidates_token_count"):
        # Gemini usage_metadata: prompt_token_count includes the cached part; thoughts are billed as output
        cached = _int(get_field(u, "cached_content_token_count"))
        thoughts = _int(get_field(u, "thoughts_token_count"))
        usage = Usage(
            input_tokens=max(_int(get_field(u, "prompt_token_count")), cached),
            output_tokens=_int(get_field(u, "candidates_token_count")) + thoughts,
            cache_read_tokens=cached,
            reasoning_tokens=thoughts,
        )
    if usage is None or usage.total_tokens == 0:
        return None
    return usage
