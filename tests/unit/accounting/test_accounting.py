"""Usage, Price, PriceBook and token counting."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from frugal_chains import ConfigurationError, Price, UnknownModelPriceError, Usage
from frugal_chains.accounting import (
    PriceBook,
    TokenEstimator,
    count_message_tokens,
    count_text_tokens,
    get_encoding,
)
from frugal_chains.accounting.tokens import IMAGE_TOKENS, uses_prompt_caching
from frugal_chains.accounting.usage import CallRecord, usd_to_nano


def test_usage_input_includes_cached_parts() -> None:
    u = Usage(
        input_tokens=100,
        output_tokens=10,
        cache_read_tokens=60,
        cache_write_tokens=20,
        cache_write_1h_tokens=5,
    )
    assert u.uncached_input_tokens == 15
    assert u.total_tokens == 110
    with pytest.raises(ConfigurationError) as e:
        Usage(input_tokens=10, cache_read_tokens=20)
    assert e.value.field == "input_tokens"
    with pytest.raises(ConfigurationError) as e:
        Usage(output_tokens=1, reasoning_tokens=2)
    assert e.value.field == "reasoning_tokens"
    with pytest.raises(ConfigurationError):
        Usage(input_tokens=-1)


def test_price_validation_names_field() -> None:
    with pytest.raises(ConfigurationError) as e:
        Price(input=-1, output=1)
    assert e.value.field == "input"
    with pytest.raises(ConfigurationError) as e:
        Price(input=1, output=float("nan"))
    assert e.value.field == "output"
    with pytest.raises(ConfigurationError) as e:
        Price(input=1, output=1, max_output_tokens=0)
    assert e.value.field == "max_output_tokens"


def test_worst_case_uses_highest_input_rate_only_when_caching() -> None:
    p = Price(input=3, output=15, cache_read=0.3, cache_write=3.75, cache_write_1h=6)
    assert p.worst_case_cost(1000, 100) == pytest.approx((1000 * 3 + 100 * 15) / 1e6)
    assert p.worst_case_cost(1000, 100, prompt_caching=True) == pytest.approx((1000 * 6 + 100 * 15) / 1e6)


def test_nano_rounding() -> None:
    assert usd_to_nano(1e-9 * 2.2) == 2
    assert usd_to_nano(1e-9 * 2.2, round_up=True) == 3
    assert usd_to_nano(0.000522, round_up=True) == 522_000


def test_unknown_model_raises_by_default() -> None:
    with pytest.raises(UnknownModelPriceError) as e:
        PriceBook().price_for("no-such-model-xyz")
    assert e.value.field == "prices"
    assert "no-such-model-xyz" in str(e.value)


def test_unknown_model_error_suggests_close_names() -> None:
    import pickle

    with pytest.raises(UnknownModelPriceError) as e:
        PriceBook().price_for("gpt4o")
    assert e.value.did_you_mean[0] == "gpt-4o"
    assert "Did you mean 'gpt-4o'" in str(e.value)
    # your own prices are candidates too, also without LiteLLM
    with pytest.raises(UnknownModelPriceError) as own:
        PriceBook({"acme-large-2": Price(input=1, output=1)}, use_litellm=False).price_for("acme-larg-2")
    assert own.value.did_you_mean == ["acme-large-2"]
    # nothing close: no hint
    with pytest.raises(UnknownModelPriceError) as far:
        PriceBook().price_for("zzqx-nothing-like-it")
    assert far.value.did_you_mean == [] and "Did you mean" not in str(far.value)
    again = pickle.loads(pickle.dumps(e.value))
    assert (again.model, again.did_you_mean, str(again)) == ("gpt4o", e.value.did_you_mean, str(e.value))


def test_unknown_model_warns_once_and_uses_fallback(caplog: pytest.LogCaptureFixture) -> None:
    book = PriceBook(unknown_model="warn", fallback_price=Price(input=2, output=2))
    with caplog.at_level(logging.WARNING, logger="frugal_chains.pricing"):
        price, known = book.resolve("mystery")
        book.resolve("mystery")
    assert known is False
    assert price.input == 2
    assert len([r for r in caplog.records if "mystery" in r.getMessage()]) == 1


def test_unknown_model_warn_without_fallback_says_zero(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="frugal_chains.pricing"):
        price, known = PriceBook(unknown_model="warn").resolve("mystery-2")
    assert (price.input, price.output, known) == (0.0, 0.0, False)
    assert "$0" in caplog.text


def test_pricebook_rejects_bad_input() -> None:
    with pytest.raises(ConfigurationError) as e:
        PriceBook({"m": {"input": 1}})  # type: ignore[dict-item]
    assert e.value.field == "prices"
    with pytest.raises(ConfigurationError) as e:
        PriceBook(unknown_model="ignore")  # type: ignore[arg-type]
    assert e.value.field == "unknown_model"


def test_encodings_load_offline_and_count() -> None:
    assert get_encoding("o200k_base").encode("hello world") == [24912, 2375]
    assert len(get_encoding("cl100k_base").encode("hello world")) == 2
    with pytest.raises(ConfigurationError):
        get_encoding("p50k_base")


def test_encodings_do_not_need_tiktoken_cache(tmp_path: object) -> None:
    # A fresh interpreter with an empty cache dir and no network still gets both encodings.
    code = "from frugal_chains.accounting import count_text_tokens as c; print(c('hi there', 'gpt-4'), c('hi there'))"
    env = {**os.environ, "TIKTOKEN_CACHE_DIR": str(tmp_path), "HTTPS_PROXY": "http://127.0.0.1:9"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["2", "2"]


def test_message_count_follows_openai_recipe() -> None:
    text = "The quick brown fox jumps over the lazy dog."
    n = count_text_tokens(text)
    one = count_message_tokens([{"role": "user", "content": text}])
    assert one == 3 + 3 + count_text_tokens("user") + n
    two = count_message_tokens([{"role": "system", "content": text}, {"role": "user", "content": text}])
    assert two == one + 3 + count_text_tokens("system") + n


def test_message_count_includes_images_tools_and_tool_calls() -> None:
    base = count_message_tokens([{"role": "user", "content": "look"}])
    image = count_message_tokens(
        [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "look"},
                    {"type": "image_url", "image_url": {"url": "x"}},
                ],
            }
        ]
    )
    assert image == base + IMAGE_TOKENS
    tool = {"type": "function", "function": {"name": "search", "parameters": {"type": "object"}}}
    assert count_message_tokens([{"role": "user", "content": "look"}], tools=[tool]) > base + 10
    call = {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"function": {"name": "search", "arguments": '{"q": "x"}'}}],
    }
    assert count_message_tokens([call]) > count_message_tokens([{"role": "assistant", "content": ""}])


def test_margins_by_provider() -> None:
    est = TokenEstimator()
    msgs = [{"role": "user", "content": "word " * 100}]
    raw = count_message_tokens(msgs)
    assert est.estimate(msgs, provider="openai") == -(-raw * 105 // 100)
    assert est.estimate(msgs, provider="anthropic") >= raw * 1.35
    assert est.estimate(msgs, provider="somebody") >= raw * 1.25
    assert TokenEstimator(margins={"openai": 0}).estimate(msgs, provider="openai") == raw
    with pytest.raises(ConfigurationError) as e:
        TokenEstimator(margins={"openai": -0.1})
    assert e.value.field == "margins"


def test_prompt_caching_detected() -> None:
    assert not uses_prompt_caching([{"role": "user", "content": "x"}])
    assert uses_prompt_caching(
        [
            {
                "role": "system",
                "content": [{"type": "text", "text": "x", "cache_control": {"type": "ephemeral"}}],
            }
        ]
    )


def test_call_record_round_trips() -> None:
    r = CallRecord(model="m", usage=Usage(input_tokens=5, output_tokens=1), cost_usd=0.5, extra={"tier": 1})
    assert CallRecord.from_dict(r.to_dict()) == r


def test_offline_encodings_equal_tiktoken_own(tmp_path: object) -> None:
    """Our hard-coded encoding definitions give the same tokens as tiktoken's own loader."""
    import importlib.util

    spec = importlib.util.find_spec("litellm")
    assert spec is not None and spec.submodule_search_locations
    cache = f"{next(iter(spec.submodule_search_locations))}/litellm_core_utils/tokenizers"
    text = "Hello, wörld! 12345 <|endoftext|> don't\\n\\n  spaces\\tand tabs 😀 ünïcödé"
    code = (
        "import tiktoken, json, sys; t = sys.argv[1]; "
        "print(json.dumps([tiktoken.get_encoding(n).encode(t, disallowed_special=()) "
        "for n in ('o200k_base', 'cl100k_base')]))"
    )
    import json

    out = subprocess.run(
        [sys.executable, "-c", code, text],
        env={**os.environ, "TIKTOKEN_CACHE_DIR": cache},
        capture_output=True,
        text=True,
        check=True,
    )
    theirs = json.loads(out.stdout)
    ours = [get_encoding(n).encode(text, disallowed_special=()) for n in ("o200k_base", "cl100k_base")]
    assert ours == theirs
