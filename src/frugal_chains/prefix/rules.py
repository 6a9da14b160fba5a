"""What each provider's prompt cache needs: minimum cacheable length, explicit breakpoints, TTLs, cache keys.

The minimum comes from LiteLLM's price map (``prompt_cache_min_tokens``) when it has the model, else from a
per-provider default (:data:`DEFAULT_MIN_TOKENS`). Read offline, like the prices.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from frugal_chains.errors import ConfigurationError

__all__ = ["DEFAULT_MIN_TOKENS", "KNOWN_PROVIDERS", "ProviderRules", "infer_provider", "rules_for"]

KNOWN_PROVIDERS: tuple[str, ...] = ("anthropic", "openai", "gemini", "vllm")
"""Providers with built-in rules; any other needs ``rules=ProviderRules(...)``."""

DEFAULT_MIN_TOKENS: Mapping[str, int] = {"anthropic": 1024, "openai": 1024, "gemini": 1024, "vllm": 0}
"""Minimum cacheable prompt tokens when LiteLLM's map does not give ``prompt_cache_min_tokens`` for the model (and,
for Claude, no documented figure is known by name: Haiku 3 and 3.5 2,048, Haiku 4.5 and Opus 4.5 4,096):
Anthropic's minimum for its Sonnet and Opus models, OpenAI's documented 1,024, Gemini's implicit-caching minimum for
Flash models, none for vLLM (automatic prefix caching works on any block)."""

_KNOWN_MINIMUMS: tuple[tuple[str, int], ...] = (
    ("claude-3-haiku", 2048),
    ("claude-3-5-haiku", 2048),
    ("claude-haiku-4-5", 4096),
    ("claude-opus-4-5", 4096),
)
"""Anthropic's documented minimums for models LiteLLM's map gives none for (by name prefix)."""

# Names used by LangChain (ls_provider, _llm_type) and LiteLLM (litellm_provider, model prefixes) -> our four.
_ALIASES: Mapping[str, str] = {
    "anthropic": "anthropic",
    "anthropic-chat": "anthropic",
    "anthropic_chat": "anthropic",
    "vertex_ai-anthropic_models": "anthropic",
    "openai": "openai",
    "openai-chat": "openai",
    "text-completion-openai": "openai",
    "azure": "openai",
    "azure_openai": "openai",
    "azure-openai-chat": "openai",
    "gemini": "gemini",
    "google": "gemini",
    "google_genai": "gemini",
    "google-genai": "gemini",
    "google_vertexai": "gemini",
    "vertex_ai": "gemini",
    "vertex_ai-language-models": "gemini",
    "vllm": "vllm",
    "hosted_vllm": "vllm",
}
# LiteLLM's key prefix for each provider, to find a model's entry in its map.
_LITELLM_PREFIX: Mapping[str, tuple[str, ...]] = {
    "anthropic": ("anthropic",),
    "openai": ("openai",),
    "gemini": ("gemini", "vertex_ai"),
    "vllm": ("hosted_vllm", "vllm"),
}
_FIX = (
    "pass provider= one of 'anthropic', 'openai', 'gemini', 'vllm', or give the rules yourself: "
    "rules=ProviderRules(provider='my-provider', min_cacheable_tokens=1024, implicit=True)"
)


@dataclass(frozen=True, kw_only=True)
class ProviderRules:
    """How one provider (and model) caches prompt prefixes.

    Example:
        >>> from frugal_chains.prefix import ProviderRules
        >>> rules = ProviderRules(provider="my-vllm", min_cacheable_tokens=0, implicit=True)
        >>> rules.max_breakpoints, rules.ttls
        (0, ())
    """

    provider: str
    """"anthropic", "openai", "gemini", "vllm" or any name of yours."""
    min_cacheable_tokens: int = 0
    """The shortest prefix the provider caches (0: no minimum)."""
    max_breakpoints: int = 0
    """Explicit ``cache_control`` markers allowed per request (Anthropic 4; 0: the provider takes none)."""
    ttls: tuple[str, ...] = ()
    """Cache lifetimes a marker may ask for (Anthropic ``("5m", "1h")``)."""
    prompt_cache_key: bool = False
    """The provider routes requests by a ``prompt_cache_key`` parameter (OpenAI)."""
    implicit: bool = False
    """The provider caches prefixes without markers (OpenAI, Gemini implicit caching, vLLM's automatic prefix
    caching)."""
    implicit_ttl_minutes: float = 5.0
    """How long an implicitly cached prefix lives without use, for the reuse estimate."""

    def __post_init__(self) -> None:
        if not isinstance(self.provider, str) or not self.provider:
            raise ConfigurationError(
                "ProviderRules.provider must be a non-empty name, e.g. provider='anthropic'", field="provider"
            )
        for name in ("min_cacheable_tokens", "max_breakpoints"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigurationError(
                    f"ProviderRules.{name} must be an int >= 0, got {value!r}", field=name
                )
        if not isinstance(self.ttls, tuple) or any(t not in ("5m", "1h") for t in self.ttls):
            raise ConfigurationError(
                f"ProviderRules.ttls must be a tuple of '5m' and/or '1h', got {self.ttls!r}", field="ttls"
            )
        if self.max_breakpoints and not self.ttls:
            raise ConfigurationError(
                "ProviderRules.ttls must name at least one lifetime when max_breakpoints > 0, e.g. ttls=('5m',)",
                field="ttls",
            )
        ttl = self.implicit_ttl_minutes
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not ttl > 0 or math.isnan(ttl):
            raise ConfigurationError(
                f"ProviderRules.implicit_ttl_minutes must be a number of minutes > 0, got {ttl!r}",
                field="implicit_ttl_minutes",
            )


def _entry(model: str, provider: str | None) -> Mapping[str, Any] | None:
    """LiteLLM's map entry for the model (offline); None when it has none or LiteLLM is not installed."""
    from frugal_chains.accounting import pricing

    try:
        cmap = pricing._cost_map()
    except ImportError:
        return None
    names = [model]
    bare = model.split("/", 1)[1] if "/" in model else model
    for prefix in _LITELLM_PREFIX.get(provider or "", ()):
        names.append(f"{prefix}/{bare}")
    names.append(bare)
    entries = [e for e in (cmap.get(name) for name in names) if isinstance(e, Mapping)]
    # the entry that states the minimum, when one of the names has it
    return next((e for e in entries if "prompt_cache_min_tokens" in e), entries[0] if entries else None)


def _canonical(provider: str) -> str | None:
    return _ALIASES.get(provider.strip().lower())


def infer_provider(model: str, provider: str | None = None) -> str | None:
    """Which of :data:`KNOWN_PROVIDERS` serves ``model`` (``provider`` wins when given); None if unknown.

    Example:
        >>> from frugal_chains.prefix.rules import infer_provider
        >>> infer_provider("claude-sonnet-4-5"), infer_provider("gpt-4o-mini"), infer_provider("hosted_vllm/llama")
        ('anthropic', 'openai', 'vllm')
    """
    name = model.strip()
    tail = name.split("/", 1)[1] if "/" in name else name
    if provider:
        known = _canonical(provider)
        # Claude on Vertex AI (ChatAnthropicVertex, "vertex_ai/claude-..."): Anthropic's cache_control rules
        return "anthropic" if known == "gemini" and tail.lower().startswith("claude") else known
    if "/" in name:
        head = name.split("/", 1)[0]
        known = _canonical(head)
        if known is not None:
            return "anthropic" if known == "gemini" and tail.lower().startswith("claude") else known
        name = tail
    entry = _entry(model, None)
    if entry is not None:
        known = _canonical(str(entry.get("litellm_provider", "")))
        if known is not None:
            return known
    low = name.lower().removeprefix("ft:")  # fine-tuned OpenAI models: ft:gpt-4o-mini:org::id
    if low.startswith("claude"):
        return "anthropic"
    if low.startswith(("gpt-", "gpt4", "chatgpt", "o1", "o3", "o4", "text-davinci")):
        return "openai"
    if low.startswith(("gemini", "gemma")):
        return "gemini"
    return None


def rules_for(model: str, provider: str | None = None) -> ProviderRules:
    """The caching rules of ``model`` (provider inferred from the name or LiteLLM's map when not given).

    Raises:
        ConfigurationError: the provider is unknown (``field="provider"``): pass ``provider=`` or ``rules=``.

    Example:
        >>> from frugal_chains.prefix import rules_for
        >>> r = rules_for("claude-haiku-4-5")
        >>> r.provider, r.min_cacheable_tokens, r.max_breakpoints, r.ttls
        ('anthropic', 4096, 4, ('5m', '1h'))
        >>> rules_for("gpt-4o-mini").prompt_cache_key
        True
    """
    if not isinstance(model, str) or not model.strip():
        raise ConfigurationError("model must be a model name, e.g. model='claude-sonnet-4-5'", field="model")
    canonical = infer_provider(model, provider)
    if canonical is None:
        if provider:
            raise ConfigurationError(
                f"provider={provider!r} has no built-in prompt-caching rules; {_FIX}", field="provider"
            )
        raise ConfigurationError(
            f"cannot tell which provider serves model={model!r}; {_FIX}", field="provider"
        )
    entry = _entry(model, canonical)
    minimum = entry.get("prompt_cache_min_tokens") if entry is not None else None
    if isinstance(minimum, (int, float)) and not isinstance(minimum, bool) and minimum >= 0:
        min_tokens = int(minimum)
    else:
        bare = model.rsplit("/", 1)[-1].lower()
        min_tokens = next(
            (n for prefix, n in _KNOWN_MINIMUMS if bare.startswith(prefix)), DEFAULT_MIN_TOKENS[canonical]
        )
    if canonical == "anthropic":
        return ProviderRules(
            provider="anthropic", min_cacheable_tokens=min_tokens, max_breakpoints=4, ttls=("5m", "1h")
        )
    if canonical == "openai":
        # Azure OpenAI caches prefixes too, but takes prompt_cache_key only on its newest model families (an older
        # deployment may reject an unknown parameter): no key there unless you give the rules yourself.
        via = (provider or (model.split("/", 1)[0] if "/" in model else "")).strip().lower()
        return ProviderRules(
            provider="openai",
            min_cacheable_tokens=min_tokens,
            prompt_cache_key=not via.startswith("azure"),
            implicit=True,
            implicit_ttl_minutes=5.0,
        )
    if canonical == "gemini":
        return ProviderRules(
            provider="gemini", min_cacheable_tokens=min_tokens, implicit=True, implicit_ttl_minutes=5.0
        )
    return ProviderRules(
        provider="vllm", min_cacheable_tokens=min_tokens, implicit=True, implicit_ttl_minutes=60.0
    )
