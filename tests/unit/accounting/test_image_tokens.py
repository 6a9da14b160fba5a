"""Image reservations: each provider's published rule, with its worked examples, and the image's size read from an
inline image's header."""

from __future__ import annotations

import base64
import logging
import struct
import zlib
from typing import Any

import pytest

from frugal_chains import Budget, ConfigurationError, Price
from frugal_chains.accounting import TokenEstimator, count_message_tokens, image_tokens
from frugal_chains.accounting.tokens import (
    IMAGE_TOKENS,
    UNKNOWN_MODEL_IMAGE_TOKENS,
    _image_size,
    _openai_patches,
)
from frugal_chains.budget import BudgetGuard


# -- inline images of a given size (headers only: enough for the size) -------------------------------------------
def png(w: int, h: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", 13)
        + b"IHDR"
        + ihdr
        + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    )


def gif(w: int, h: int) -> bytes:
    return b"GIF89a" + struct.pack("<HH", w, h) + b"\x00\x00\x00;"


def jpeg(w: int, h: int, exif: int = 0) -> bytes:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    app1 = b""
    remaining = exif
    while remaining > 0:  # EXIF-like segments before the size (a photo's metadata)
        n = min(remaining, 65_000)
        app1 += b"\xff\xe1" + struct.pack(">H", n + 2) + b"\x00" * n
        remaining -= n
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, h, w, 3) + b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    return b"\xff\xd8" + app0 + app1 + sof + b"\xff\xd9"


def webp(w: int, h: int, kind: str) -> bytes:
    if kind == "VP8 ":
        body = b"\x00" * 3 + b"\x9d\x01\x2a" + struct.pack("<HH", w, h)
    elif kind == "VP8L":
        bits = (w - 1) | (h - 1) << 14
        body = b"\x2f" + struct.pack("<I", bits)
    else:
        body = b"\x00" * 4 + (w - 1).to_bytes(3, "little") + (h - 1).to_bytes(3, "little")
    chunk = kind.encode() + struct.pack("<I", len(body)) + body
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def part(w: int | None = None, h: int | None = None, detail: str | None = None) -> dict[str, Any]:
    """An OpenAI image part: inline ``w`` x ``h`` PNG, or (no size) an image given by URL."""
    url = data_url(png(w, h)) if w is not None and h is not None else "https://example.com/photo.jpg"
    image: dict[str, Any] = {"url": url}
    if detail is not None:
        image["detail"] = detail
    return {"type": "image_url", "image_url": image}


# -- reading the size ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("data", "mime"),
    [
        (png(1800, 2400), "image/png"),
        (gif(1800, 2400), "image/gif"),
        (jpeg(1800, 2400), "image/jpeg"),
        (jpeg(1800, 2400, exif=150_000), "image/jpeg"),  # the size past the first decoded chunk
        (webp(1800, 2400, "VP8 "), "image/webp"),
        (webp(1800, 2400, "VP8L"), "image/webp"),
        (webp(1800, 2400, "VP8X"), "image/webp"),
    ],
    ids=["png", "gif", "jpeg", "jpeg-exif", "webp-lossy", "webp-lossless", "webp-extended"],
)
def test_the_size_of_an_inline_image_is_read_from_its_header(data: bytes, mime: str) -> None:
    assert _image_size(data_url(data, mime)) == (1800, 2400)
    assert _image_size(base64.b64encode(data).decode()) == (
        1800,
        2400,
    )  # bare base64 (Anthropic's source.data)


@pytest.mark.parametrize(
    "ref", ["https://example.com/a.png", data_url(b"not an image"), "data:image/png,rawbytes", "", "%%%"]
)
def test_an_image_of_unknown_size_has_no_size(ref: str) -> None:
    assert _image_size(ref) is None


# -- OpenAI: tiles ------------------------------------------------------------------------------------------------
def test_openai_tile_rule_worked_examples() -> None:
    assert image_tokens(part(1024, 1024, "high"), model="gpt-4o") == 765  # 4 tiles
    assert image_tokens(part(2048, 4096, "high"), model="gpt-4o") == 1105  # 768 x 1536: 6 tiles
    assert image_tokens(part(4096, 8192, "low"), model="gpt-4o") == 85  # low: the base only
    assert (
        image_tokens(part(1024, 1024), model="gpt-4o-2024-08-06") == 765
    )  # no detail: high (the worst case)
    assert image_tokens(part(500, 500, "auto"), model="openai/gpt-4.1") == 85 + 170
    # the other models' rates
    assert image_tokens(part(1024, 1024, "high"), model="gpt-4o-mini") == 2833 + 4 * 5667
    assert image_tokens(part(1024, 1024, "high"), model="gpt-5") == 70 + 4 * 140
    assert image_tokens(part(1024, 1024, "high"), model="o1") == 75 + 4 * 150
    assert image_tokens(part(1024, 1024, "low"), model="computer-use-preview") == 65


def test_openai_tile_rule_at_the_largest_size_when_the_size_is_unknown() -> None:
    # the most tiles any image can take: 2048 x 768 after scaling, 4 x 2 tiles
    assert (
        image_tokens(part(2048, 768), model="gpt-4o") == image_tokens(part(), model="gpt-4o") == 85 + 8 * 170
    )
    assert image_tokens(part(), model="gpt-4o-mini-2024-07-18") == 2833 + 8 * 5667
    assert image_tokens(part(detail="low"), model="gpt-4o-mini") == 2833


# -- OpenAI: patches ----------------------------------------------------------------------------------------------
def test_openai_patch_rule_worked_examples() -> None:
    # the page's examples: fitted to the detail's pixel limit, then to the model's patch budget
    assert _openai_patches((1024, 1024), 2048, 2500) == 1024
    assert _openai_patches((2048, 2048), 2048, 2500) == 2500  # scaled to 1600 x 1600: 50 x 50 patches
    assert _openai_patches((1800, 2400), 2048, 6144) == 3072  # scaled to 1536 x 2048: 48 x 64 patches
    assert image_tokens(part(1024, 1024, "high"), model="gpt-5.4") == 1229  # 1024 x 1.2, rounded up
    assert image_tokens(part(2048, 2048, "high"), model="gpt-5.4-2026-03-05") == 3000  # 2500 x 1.2
    assert image_tokens(part(1024, 1024), model="gpt-4.1-mini") == 1659  # 1024 x 1.62
    assert image_tokens(part(1800, 2400), model="gpt-4.1-mini-2025-04-14") == 4977  # 3072 x 1.62, rounded up
    # the older models keep 1,536 patches at 2048 px: 1800 x 2400 -> 1056 x 1408, 33 x 44 patches
    assert _openai_patches((1800, 2400), 2048, 1536) == 1452
    assert image_tokens(part(1800, 2400), model="gpt-4.1-nano") == 3572  # x 2.46
    assert image_tokens(part(1024, 1024), model="o4-mini") == 1762  # x 1.72
    assert image_tokens(part(1024, 1024, "low"), model="gpt-5-mini") == 1229  # x 1.2; detail changes nothing
    assert image_tokens(part(1024, 1024), model="gpt-5-nano") == 1536  # x 1.5


def test_openai_patch_rule_by_detail_on_the_gpt_5_4_family() -> None:
    big = part(8000, 6000, "original")  # fitted to 6000 x 4500, then to 10,000 patches
    assert 11_000 < image_tokens(big, model="gpt-5.4-mini") <= 12_000
    assert image_tokens(part(8000, 6000, "low"), model="gpt-5.4-nano") <= 4916  # 6,144 patches at 2048 px
    assert image_tokens(part(8000, 6000, "high"), model="gpt-5.4") <= 3000
    assert image_tokens(part(8000, 6000, "auto"), model="gpt-5.4") <= 3000  # auto is high
    assert image_tokens(part(8000, 6000), model="gpt-5.4") == image_tokens(
        big, model="gpt-5.4"
    )  # no detail: the
    # largest of the levels
    # gpt-5.5: auto and no detail mean original
    assert image_tokens(part(8000, 6000, "auto"), model="gpt-5.5") == image_tokens(big, model="gpt-5.4")
    assert image_tokens(part(8000, 6000, "high"), model="gpt-5.5") <= 3000


def test_openai_patch_rule_at_the_largest_size_when_the_size_is_unknown() -> None:
    assert image_tokens(part(), model="gpt-4.1-mini") == 6636  # 64 x 64 patches x 1.62, rounded up
    assert image_tokens(part(), model="gpt-5.2") == 4916  # 4,096 x 1.2
    assert image_tokens(part(detail="high"), model="gpt-5.4") == 3000
    assert image_tokens(part(detail="auto"), model="gpt-5.4-mini") == 3000
    assert image_tokens(part(detail="low"), model="gpt-5.4") == 4916
    assert image_tokens(part(detail="original"), model="gpt-5.4") == 12_000
    assert image_tokens(part(), model="gpt-5.4-nano") == 12_000  # no detail: the largest level
    assert image_tokens(part(detail="auto"), model="gpt-5.5") == 12_000  # auto is original
    assert image_tokens(part(detail="high"), model="gpt-5.5") == 3000
    # gpt-5.6: no documented budget at original: reserved at the 30,000 patches the API accepts
    assert image_tokens(part(), model="gpt-5.6-sol") == 36_000
    assert image_tokens(part(detail="auto"), model="gpt-5.6-terra") == 36_000
    assert image_tokens(part(detail="high"), model="gpt-5.6-luna") == 3000
    assert (
        image_tokens(part(1000, 1000, "original"), model="gpt-5.6-luna") == 1229
    )  # a known size: its patches
    # the older patch models
    assert image_tokens(part(), model="gpt-4.1-nano") == 3779  # 1536 x 2.46
    assert image_tokens(part(), model="gpt-5-nano") == 2304  # 1536 x 1.5
    assert image_tokens(part(), model="gpt-5-mini") == 1844  # 1536 x 1.2
    assert image_tokens(part(), model="codex-mini-latest") == 2642  # 1536 x 1.72
    assert (
        _openai_patches((1, 100_000), 2048, 1536) <= 1536
    )  # an extreme aspect ratio stays within the budget


def test_the_most_specific_model_name_picks_the_rule() -> None:
    # gpt-5-codex-mini is a patch model, not gpt-5's tiles (gpt-5 + "-codex-mini")
    assert (
        image_tokens(part(), model="gpt-5-codex-mini") == 3779
    )  # 1536 patches x 2.46 (no multiplier published)
    assert image_tokens(part(), model="gpt-5-codex") == 70 + 8 * 140  # gpt-5's tiles
    assert image_tokens(part(detail="low"), model="gpt-5.1") == 70
    assert image_tokens(part(), model="gpt-5.1-2025-11-13") == 70 + 8 * 140
    assert image_tokens(part(), model="openai/gpt-5.4-mini") == 12_000  # not gpt-5.4's tiles or gpt-5's
    assert image_tokens(part(), model="gpt-4.1-mini") != image_tokens(part(), model="gpt-4.1")


# -- Anthropic ----------------------------------------------------------------------------------------------------
def test_anthropic_rule_worked_examples() -> None:
    assert image_tokens(part(1568, 728), model="claude-sonnet-4-5") == 1456  # 56 x 26 patches
    assert image_tokens(part(960, 540), model="claude-3-5-sonnet-20241022") == 700  # 35 x 20
    assert image_tokens(part(200, 200), model="claude-3-haiku-20240307") == 64  # 8 x 8
    assert image_tokens(part(1928, 1928), model="claude-sonnet-4-20250514") == 1521  # scaled to 1092 x 1092
    assert image_tokens(part(1928, 1928), model="claude-opus-4-7") == 4761  # high resolution: 69 x 69
    assert image_tokens(part(4000, 1000), model="claude-haiku-4-5") <= 1568
    # Bedrock's names and the provider
    assert image_tokens(part(960, 540), model="us.anthropic.claude-3-7-sonnet-20250219-v1:0") == 700
    assert image_tokens(part(960, 540), model="my-claude-deployment", provider="anthropic") == 700


def test_anthropic_rule_at_the_cap_when_the_size_is_unknown() -> None:
    assert image_tokens(part(), model="claude-3-5-sonnet-latest") == 1568
    assert image_tokens(part(), model="claude-opus-4-1") == 1568
    assert image_tokens(part(), model="claude-opus-4-7") == 4784
    assert image_tokens(part(), model="claude-sonnet-5") == 4784  # later models: the high-resolution cap
    anthropic_part = {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}
    assert image_tokens(anthropic_part, model="claude-sonnet-4-5") == 1568
    data = base64.b64encode(png(960, 540)).decode()
    inline = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}}
    assert image_tokens(inline, model="claude-sonnet-4-5") == 700


# -- Gemini -------------------------------------------------------------------------------------------------------
def test_gemini_rule_worked_examples() -> None:
    assert image_tokens(part(384, 384), model="gemini-2.0-flash") == 258  # both sides <= 384: one figure
    assert image_tokens(part(600, 400), model="gemini-2.0-flash") == 6 * 258  # tiles of 266.7 px: 3 x 2
    assert image_tokens(part(1024, 1024), model="gemini-1.5-pro") == 4 * 258  # tiles of 682.7 px: 2 x 2
    assert image_tokens(part(3072, 400), model="gemini-2.0-flash") == 24 * 258  # tiles of 266.7 px: 12 x 2
    assert image_tokens(part(3000, 3000), model="gemini-1.5-flash") == 16 * 258  # tiles of 768 px: 4 x 4
    # over 3072 px: scaled down and padded to 3072 x 3072, at least 16 tiles
    assert image_tokens(part(6144, 3072), model="vertex_ai/gemini-2.0-flash") == 16 * 258
    assert image_tokens(part(8000, 1000), model="gemini-2.0-flash") == 24 * 258  # 3072 x 384: 12 x 2 tiles


def test_gemini_rule_at_the_largest_size_when_the_size_is_unknown() -> None:
    assert image_tokens(part(), model="gemini-2.0-flash") == 24 * 258  # the most any size gives
    assert image_tokens(part(), model="gemini-2.5-pro") == 24 * 258


def test_gemini_2_5_reserves_at_least_its_default_media_resolution() -> None:
    # "256 + Pan & Scan (~2048)" per image by default
    assert image_tokens(part(384, 384), model="gemini/gemini-2.5-flash") == 2304
    assert image_tokens(part(600, 400), model="gemini-2.5-flash-lite") == 2304
    assert image_tokens(part(3072, 400), model="gemini-2.5-pro") == 24 * 258
    assert image_tokens(part(384, 384), model="gemini-flash-latest") >= 2304  # no version: the larger rule


def test_gemini_3_reserves_by_media_resolution() -> None:
    assert image_tokens(part(), model="gemini-3-pro-preview") == 1120  # the default
    assert image_tokens(part(256, 256), model="gemini-3-flash") == 1120
    assert image_tokens(part(detail="auto"), model="gemini-3-flash") == 1120
    assert image_tokens(part(detail="low"), model="gemini-3-flash") == 280
    assert image_tokens(part(detail="medium"), model="gemini-3.1-pro") == 560
    assert image_tokens(part(detail="high"), model="gemini-3-flash") == 1120
    assert image_tokens(part(detail="ultra_high"), model="gemini/gemini-3-pro-preview") == 2240
    ultra = {"level": "MEDIA_RESOLUTION_ULTRA_HIGH"}
    by_part = {"type": "image_url", "image_url": {"url": "https://x/a.png"}, "media_resolution": ultra}
    assert image_tokens(by_part, model="gemini-3-flash") == 2240
    by_name = {"type": "image", "url": "https://x/a.png", "media_resolution": "media_resolution_ultra_high"}
    assert image_tokens(by_name, model="gemini-3-flash") == 2240
    assert image_tokens(part(detail="ultra_high"), model="gemini-flash-latest") >= 2240


# -- models with no known rule --------------------------------------------------------------------------------------
def test_the_unknown_model_figure_covers_the_known_rules_of_common_models() -> None:
    common = [
        "gpt-4o",
        "gpt-5.4",
        "gpt-5.5",
        "gpt-4.1-mini",
        "claude-opus-4-7",
        "gemini-2.5-pro",
        "gemini-3-flash",
    ]
    largest = max(image_tokens(part(detail=d), model=m) for m in common for d in (None, "high", "original"))
    assert largest == 12_000  # gpt-5.4 at detail original
    assert largest <= UNKNOWN_MODEL_IMAGE_TOKENS


def test_a_model_with_no_known_rule_reserves_the_configured_figure(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="frugal_chains.accounting"):
        assert image_tokens(part(1024, 1024), model="llava-13b-unknown-test") == UNKNOWN_MODEL_IMAGE_TOKENS
    assert "llava-13b-unknown-test" in caplog.text and "unknown_model_image_tokens" in caplog.text
    assert image_tokens(part(), model="llava-13b-unknown-test", unknown_model_image_tokens=576) == 576
    messages = [{"role": "user", "content": [part(), part(64, 64)]}]
    text = TokenEstimator(margins={"default": 0.0}).estimate([{"role": "user", "content": []}], model="llava")
    estimator = TokenEstimator(margins={"default": 0.0}, unknown_model_image_tokens=576)
    assert estimator.estimate(messages, model="llava", provider="ollama") == text + 2 * 576
    with pytest.raises(ConfigurationError) as e:
        TokenEstimator(unknown_model_image_tokens=-1)
    assert e.value.field == "unknown_model_image_tokens"
    with pytest.raises(ConfigurationError):
        BudgetGuard(unknown_model_image_tokens="many")  # type: ignore[arg-type]
    assert BudgetGuard(unknown_model_image_tokens=576).estimator.unknown_model_image_tokens == 576


def test_the_margin_applies_to_text_not_to_images() -> None:
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "What is in this photo?"}, part(1024, 1024)]}
    ]
    text_only = [{"role": "user", "content": [{"type": "text", "text": "What is in this photo?"}]}]
    est = TokenEstimator()
    assert (
        est.estimate(messages, model="gpt-4o", provider="openai")
        == est.estimate(text_only, model="gpt-4o", provider="openai") + 765
    )


def test_counting_keeps_its_flat_figure_only_the_reservation_changes() -> None:
    """``count_message_tokens`` (routing, cache statistics, test fakes' reported usage) keeps the flat figure."""
    messages = [{"role": "user", "content": [part()]}]
    empty = [{"role": "user", "content": []}]
    assert count_message_tokens(messages, model="gpt-4o-mini") == count_message_tokens(empty) + IMAGE_TOKENS


def test_a_llama_index_inline_image_is_reserved_by_its_size() -> None:
    from llama_index.core.base.llms.types import ChatMessage, ImageBlock

    from frugal_chains.llama_index._convert import openai_message

    block = ImageBlock(image=png(1024, 1024), image_mimetype="image/png", detail="high")
    converted = openai_message(ChatMessage(role="user", blocks=[block]))
    image = converted["content"][0]
    assert image["image_url"]["url"].startswith("data:image/png;base64,")
    assert image_tokens(image, model="gpt-4o") == 765
    low = openai_message(ChatMessage(role="user", blocks=[ImageBlock(url="https://x/a.png", detail="low")]))
    assert low["content"][0]["image_url"] == {"url": "https://x/a.png", "detail": "low"}
    assert image_tokens(low["content"][0], model="gpt-4o") == 85


def test_both_handlers_take_the_unknown_model_figure() -> None:
    from frugal_chains.langchain import TokenBudgetHandler
    from frugal_chains.llama_index import TokenBudgetHandler as LlamaIndexHandler

    for handler_class in (TokenBudgetHandler, LlamaIndexHandler):
        handler = handler_class(
            Budget(max_tokens=10_000),
            unknown_model_image_tokens=576,
            prices={"my-llava": Price(input=0, output=0)},
        )
        assert handler.core.estimator.unknown_model_image_tokens == 576
        messages = [{"role": "user", "content": [part()]}]
        plan = handler.core.plan(messages, model="my-llava", max_output_tokens=10)
        assert plan.input_tokens == TokenEstimator(unknown_model_image_tokens=576).estimate(
            messages, model="my-llava"
        )
        with pytest.raises(ConfigurationError):
            handler_class(unknown_model_image_tokens=-5)


def test_a_nested_budget_scope_keeps_the_unknown_model_figure() -> None:
    from frugal_chains.langchain import budget_scope

    with (
        budget_scope([Budget(max_tokens=10_000)], unknown_model_image_tokens=576) as outer,
        budget_scope([Budget(max_tokens=5_000)]) as inner,
    ):
        assert inner.core.estimator.unknown_model_image_tokens == 576
    assert outer.core.estimator.unknown_model_image_tokens == 576
