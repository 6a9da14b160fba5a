"""Provider rules: inferred from the model name and LiteLLM's map; unknown providers say how to give the rules."""

from __future__ import annotations

import pytest

from frugal_chains import ConfigurationError
from frugal_chains.prefix import PrefixFormatter, ProviderRules, rules_for


def test_anthropic_minimums_come_from_litellm() -> None:
    sonnet = rules_for("claude-sonnet-4-5")
    haiku = rules_for("claude-haiku-4-5")
    assert (sonnet.provider, sonnet.min_cacheable_tokens, sonnet.max_breakpoints) == ("anthropic", 1024, 4)
    assert haiku.min_cacheable_tokens == 4096
    assert sonnet.ttls == ("5m", "1h") and not sonnet.implicit and not sonnet.prompt_cache_key


def test_anthropic_default_minimum_when_the_map_has_none() -> None:
    assert rules_for("claude-3-7-sonnet-20250219").min_cacheable_tokens == 1024
    assert (
        rules_for("claude-3-5-haiku-20241022").min_cacheable_tokens == 2048
    )  # Anthropic's documented figure
    assert rules_for("anthropic/claude-haiku-4-5-20251001").min_cacheable_tokens == 4096


def test_openai_gemini_vllm() -> None:
    openai = rules_for("gpt-4o-mini")
    assert (openai.provider, openai.min_cacheable_tokens, openai.prompt_cache_key, openai.implicit) == (
        "openai",
        1024,
        True,
        True,
    )
    assert openai.max_breakpoints == 0 and openai.ttls == ()
    assert rules_for("o3-mini").provider == "openai"
    assert rules_for("ft:gpt-4o-mini-2024-07-18:acme::abc123").provider == "openai"
    gemini = rules_for("gemini/gemini-2.5-pro")
    assert (gemini.provider, gemini.min_cacheable_tokens, gemini.implicit) == ("gemini", 2048, True)
    assert rules_for("gemini-2.0-flash-lite-made-up").min_cacheable_tokens == 1024  # default
    vllm = rules_for("meta-llama/Llama-3.1-8B-Instruct", provider="vllm")
    assert (vllm.provider, vllm.min_cacheable_tokens, vllm.max_breakpoints, vllm.prompt_cache_key) == (
        "vllm",
        0,
        0,
        False,
    )
    assert rules_for("hosted_vllm/my-llama").provider == "vllm"


def test_provider_aliases() -> None:
    assert rules_for("my-deployment", provider="azure_openai").provider == "openai"
    assert rules_for("claude-sonnet-4-5", provider="anthropic-chat").provider == "anthropic"
    assert rules_for("gemini-2.5-flash", provider="google_genai").provider == "gemini"
    # Claude served by Vertex AI follows Anthropic's rules
    assert rules_for("vertex_ai/claude-sonnet-4-5").provider == "anthropic"
    assert rules_for("claude-sonnet-4-5", provider="google_vertexai").provider == "anthropic"
    assert rules_for("vertex_ai/gemini-2.5-pro").provider == "gemini"


def test_unknown_model_names_the_fix() -> None:
    with pytest.raises(ConfigurationError) as err:
        rules_for("my-private-model")
    assert err.value.field == "provider"
    assert "provider=" in str(err.value) and "rules=ProviderRules(" in str(err.value)
    with pytest.raises(ConfigurationError) as err:
        PrefixFormatter(model="my-private-model")
    assert err.value.field == "provider"


def test_unknown_provider_names_the_fix() -> None:
    with pytest.raises(ConfigurationError) as err:
        rules_for("mistral-large", provider="mistral")
    assert err.value.field == "provider" and "rules=ProviderRules(" in str(err.value)


def test_own_rules_for_any_provider() -> None:
    rules = ProviderRules(provider="acme", min_cacheable_tokens=256, implicit=True)
    fmt = PrefixFormatter(model="acme-large", rules=rules)
    assert fmt.provider == "acme" and fmt.rules is rules


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"provider": ""}, "provider"),
        ({"provider": "x", "min_cacheable_tokens": -1}, "min_cacheable_tokens"),
        ({"provider": "x", "max_breakpoints": 2}, "ttls"),
        ({"provider": "x", "ttls": ("10m",)}, "ttls"),
        ({"provider": "x", "implicit_ttl_minutes": 0}, "implicit_ttl_minutes"),
    ],
)
def test_bad_rules(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigurationError) as err:
        ProviderRules(**kwargs)  # type: ignore[arg-type]
    assert err.value.field == field


def test_importing_the_planner_is_light() -> None:
    import subprocess
    import sys

    code = (
        "import sys; from frugal_chains.prefix import PrefixFormatter, ProviderRules, find_dynamic_spans; "
        "PrefixFormatter(model='m', rules=ProviderRules(provider='p')); "
        "print([m for m in ('litellm', 'llama_index', 'langchain_core', 'tiktoken', 'numpy', 'redis') "
        "if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_azure_openai_gets_implicit_caching_without_a_prompt_cache_key() -> None:
    from frugal_chains.prefix import rules_for

    for model, provider in (("gpt-4o", "azure"), ("gpt-4o", "azure_openai"), ("azure/gpt-4o", None)):
        rules = rules_for(model, provider)
        assert rules.provider == "openai" and rules.implicit
        assert rules.prompt_cache_key is False
    assert rules_for("gpt-4o", "openai").prompt_cache_key is True
