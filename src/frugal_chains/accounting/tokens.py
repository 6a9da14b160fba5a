"""Token counting for the pre-call estimate, offline.

tiktoken downloads its BPE files on first use, which fails on machines without internet. We load
``o200k_base`` and ``cl100k_base`` from the copies shipped inside the ``litellm`` wheel (or
``llama-index-core``'s), verified by their SHA-256, without touching ``TIKTOKEN_CACHE_DIR``. If neither
package has them, ``tiktoken.get_encoding`` is tried (it honours ``TIKTOKEN_CACHE_DIR``).

Messages are OpenAI-format dicts. The count follows OpenAI's recipe (3 tokens per message, 1 per name,
3 to prime the reply), plus tool calls, tool schemas (their JSON, plus 10 tokens each) and, in
:func:`count_message_tokens`, a flat :data:`IMAGE_TOKENS` per image part (a typical figure, used for routing and
cache statistics).

A budget's **reservation** (:meth:`TokenEstimator.estimate`) counts each image by its provider's published rule
instead (:func:`image_tokens`): OpenAI's 512 px tiles or 32 px patches, Anthropic's 28 px patches, Gemini's
tiles or per-image figure. The image's size is read from its header when it is sent inline (a base64 ``data:``
URL: PNG, JPEG, GIF, WebP), so the reservation is exact; an image given by URL is reserved at the largest size the
provider accepts. A model with no known rule reserves ``unknown_model_image_tokens`` per image
(:data:`UNKNOWN_MODEL_IMAGE_TOKENS` by default; a warning is logged once per model).

Providers whose tokenizer is not OpenAI's count the same text differently, so the estimate is raised by a
**safety margin** (:data:`DEFAULT_MARGINS`): 5% for OpenAI and Azure OpenAI (exact tokenizer, the margin
covers chat-format overhead), 35% for Anthropic (Claude's tokenizers produce up to ~30% more tokens than
o200k for the same text), 25% for every other provider. Override with ``margins={...}``.

Self-hosted models render messages with their own chat template, which may add a prompt the messages do not show
(SmolLM2's and Qwen2.5's default system prompt, Llama 3.1's date header: 20-30 tokens). For those providers the
estimate adds a flat :data:`TEMPLATE_TOKENS` per call (vLLM: 32).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import importlib.util
import json
import logging
import math
import os
import re
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from frugal_chains.errors import ConfigurationError

if TYPE_CHECKING:
    import tiktoken

__all__ = [
    "DEFAULT_MARGINS",
    "IMAGE_TOKENS",
    "OUTPUT_CAP_KEYS",
    "TEMPLATE_TOKENS",
    "UNKNOWN_MODEL_IMAGE_TOKENS",
    "TokenEstimator",
    "count_message_tokens",
    "count_text_tokens",
    "get_encoding",
    "image_tokens",
    "uses_prompt_caching",
]

log = logging.getLogger("frugal_chains.accounting")

IMAGE_TOKENS = 1_600
"""The flat per-image figure of :func:`count_message_tokens` (routing and cache statistics, test fakes); budget
reservations use :func:`image_tokens` instead."""
UNKNOWN_MODEL_IMAGE_TOKENS = 12_000
"""Tokens a budget reserves per image on a model with no known image rule (``unknown_model_image_tokens``): the
largest per-image figure of the known rules for common models (gpt-5.4 / gpt-5.5 at ``detail="original"``: 10,000
patches x 1.2), above Claude's (4,784) and Gemini's (6,192); only gpt-4o-mini's high detail (48,169) and the
gpt-5.6 models' undocumented original resolution (up to 36,000) are larger. Lower it with
``unknown_model_image_tokens=`` when your model's provider documents a smaller figure."""
OUTPUT_CAP_KEYS: tuple[str, ...] = (
    "max_tokens",
    "max_completion_tokens",
    "max_output_tokens",
    "max_new_tokens",
    "num_predict",
)
"""Parameter names under which LLM integrations carry a call's output cap."""
DEFAULT_MARGINS: Mapping[str, float] = {
    "openai": 0.05,
    "azure": 0.05,
    "anthropic": 0.35,
    "default": 0.25,
}

TEMPLATE_TOKENS: Mapping[str, int] = {"vllm": 32, "hosted_vllm": 32}
"""Prompt tokens a provider's chat template adds to every call that the messages do not show (a default system
prompt, a date header), by LiteLLM provider name; added to the reservation's estimate after the margin."""

# tiktoken's published definitions of the two encodings (MIT licensed), with the hashes of their BPE files.
_ENDOFTEXT = "<|endoftext|>"
_ENCODINGS: dict[str, dict[str, Any]] = {
    "cl100k_base": {
        "url": "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
        "sha256": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        "pat_str": (
            r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
            r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
        ),
        "special_tokens": {
            _ENDOFTEXT: 100257,
            "<|fim_prefix|>": 100258,
            "<|fim_middle|>": 100259,
            "<|fim_suffix|>": 100260,
            "<|endofprompt|>": 100276,
        },
    },
    "o200k_base": {
        "url": "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
        "sha256": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
        "pat_str": "|".join(
            [
                r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
                r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
                r"""\p{N}{1,3}""",
                r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
                r"""\s*[\r\n]+""",
                r"""\s+(?!\S)""",
                r"""\s+""",
            ]
        ),
        "special_tokens": {_ENDOFTEXT: 199999, "<|endofprompt|>": 200018},
    },
}

_SHIPPED_DIRS = (
    ("litellm", ("litellm_core_utils", "tokenizers")),
    ("llama_index.core", ("_static", "tiktoken_cache")),
)


def _package_dir(name: str) -> list[str]:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return []
    if spec is None or not spec.submodule_search_locations:
        return []
    return list(spec.submodule_search_locations)


def _shipped_bpe(name: str) -> bytes | None:
    info = _ENCODINGS[name]
    cache_key = hashlib.sha1(str(info["url"]).encode()).hexdigest()
    for package, parts in _SHIPPED_DIRS:
        for root in _package_dir(package):
            path = os.path.join(root, *parts, cache_key)
            if os.path.exists(path):
                with open(path, "rb") as f:
                    data = f.read()
                if hashlib.sha256(data).hexdigest() == info["sha256"]:
                    return data
    return None


@functools.lru_cache(maxsize=4)
def get_encoding(name: str = "o200k_base") -> tiktoken.Encoding:
    """A tiktoken encoding loaded without network access.

    Example:
        >>> from frugal_chains.accounting import get_encoding
        >>> len(get_encoding("o200k_base").encode("hello world"))
        2
    """
    import tiktoken

    if name not in _ENCODINGS:
        raise ConfigurationError(
            f"Unknown encoding {name!r}; use one of {sorted(_ENCODINGS)}.", field="encoding"
        )
    data = _shipped_bpe(name)
    if data is None:
        return tiktoken.get_encoding(name)  # honours TIKTOKEN_CACHE_DIR; needs network otherwise
    info = _ENCODINGS[name]
    ranks = {
        base64.b64decode(tok): int(rank) for tok, rank in (line.split() for line in data.splitlines() if line)
    }
    return tiktoken.Encoding(
        name=f"{name}",
        pat_str=str(info["pat_str"]),
        mergeable_ranks=ranks,
        special_tokens=dict(info["special_tokens"]),
    )


_CL100K_PREFIXES = ("gpt-4-", "gpt-3.5", "gpt-35", "text-embedding-3", "text-embedding-ada")


def _encoding_name_for(model: str | None) -> str:
    if model:
        m = model.rsplit("/", 1)[-1].lower()
        if m == "gpt-4" or (m.startswith(_CL100K_PREFIXES) and not m.startswith(("gpt-4o", "gpt-4."))):
            return "cl100k_base"
    return "o200k_base"


@functools.lru_cache(maxsize=8192)
def _count(encoding: str, text: str) -> int:
    # Cached: an agent loop sends the same history again at every step, so most parts repeat.
    return len(get_encoding(encoding).encode(text, disallowed_special=()))


def count_text_tokens(text: str, model: str | None = None) -> int:
    """Tokens of plain text with the model's OpenAI encoding (``o200k_base`` for non-OpenAI models)."""
    return _count(_encoding_name_for(model), text)


def _content_parts(content: Any) -> Iterable[tuple[str, Any]]:
    """Yield ``("text", s)`` and ``("image", part)`` from a message content (string or list of parts)."""
    if content is None:
        return
    if isinstance(content, str):
        yield "text", content
        return
    if isinstance(content, Sequence):
        for part in content:
            if isinstance(part, str):
                yield "text", part
            elif isinstance(part, Mapping):
                kind = str(part.get("type", ""))
                if kind in ("image_url", "image", "input_image") or "image_url" in part:
                    yield "image", part
                elif isinstance(part.get("text"), str):
                    yield "text", part["text"]
                else:
                    yield (
                        "text",
                        json.dumps({k: v for k, v in part.items() if k != "cache_control"}, default=str),
                    )
        return
    yield "text", str(content)


# -- images ---------------------------------------------------------------------------------------------------------
# What one image costs, by the providers' published rules. Each rule gives the tokens of an image of known size and
# its worst case (the largest image the provider accepts) when the size is unknown (an image given by URL).

# OpenAI, from "Images and vision" (calculating costs):
# https://developers.openai.com/api/docs/guides/images-vision#calculating-costs
# Tile models: the image is scaled to fit 2048 x 2048, then its shortest side to 768 px; each 512 px tile costs the
# tile tokens, plus the base tokens; detail "low" costs the base tokens only, any other detail is "high". Worked
# examples: 1024 x 1024 high on gpt-4o = 85 + 4 x 170 = 765; 2048 x 4096 high = 85 + 6 x 170 = 1105; any size
# low = 85.
_OPENAI_TILES: Mapping[str, tuple[int, int]] = {  # model: (base tokens, tokens per 512 px tile)
    "gpt-5": (70, 140),
    "gpt-5.1": (70, 140),
    "gpt-5-chat-latest": (70, 140),
    "gpt-4o": (85, 170),
    "chatgpt-4o-latest": (85, 170),
    "gpt-4.1": (85, 170),
    "gpt-4.5-preview": (85, 170),
    "gpt-4-turbo": (85, 170),
    "gpt-4-vision-preview": (85, 170),
    "gpt-4o-mini": (2833, 5667),
    "o1": (75, 150),
    "o1-pro": (75, 150),
    "o3": (75, 150),
    "o3-pro": (75, 150),
    "computer-use-preview": (65, 129),
}

# Patch models, from "Images and vision" (model sizing behavior, patch-based image tokenization):
# https://developers.openai.com/api/docs/guides/images-vision#model-sizing-behavior
# https://developers.openai.com/api/docs/guides/images-vision#patch-based-image-tokenization
# The image is first scaled down (aspect kept) to fit the detail's pixel limit, then, if its 32 px patches exceed the
# model's patch budget for that detail, scaled down again to fit the budget (a whole number of patches per side);
# the patches times the model's multiplier (rounded up) are the tokens. LiteLLM's token counter
# (litellm/litellm_core_utils/token_counter.py, _patch_image_limits) applies the same limits. Worked examples:
# gpt-5.4 high, 1024 x 1024 = 1024 patches x 1.2 = 1229; 2048 x 2048 -> 1600 x 1600 = 2500 patches = 3000;
# gpt-4.1-mini, 1800 x 2400 -> 1536 x 2048 = 3072 patches x 1.62 = 4977.
# The detail levels are low, high, auto and original. With no detail (or one the model does not know), the largest
# figure across the levels is reserved, except where the page says what no detail means (gpt-5.5 and the
# gpt-5.6 models: original).
# gpt-5.6 (sol, terra, luna) at original / auto: no pixel limit or patch budget is documented; a third-party note
# says the API rejects an image of more than 30,000 patches, so such an image is reserved at its full size, at most
# 30,000 patches (36,000 tokens). LiteLLM treats gpt-6-astra the same way.
_MAX_PATCHES = 30_000
_PATCH_DETAILS = ("low", "high", "auto", "original")
_PatchLimits = tuple[
    int | None, int | None
]  # (pixel limit of the longer side, patch budget); None: not documented


def _same_limits(limits: _PatchLimits) -> Mapping[str, _PatchLimits]:
    return dict.fromkeys(_PATCH_DETAILS, limits)


_LEGACY_PATCHES = _same_limits((2048, 1536))
_GPT_5_4_PATCHES: Mapping[str, _PatchLimits] = {
    "low": (2048, 6144),
    "high": (2048, 2500),
    "auto": (2048, 2500),
    "original": (6000, 10_000),
}
_GPT_5_5_PATCHES = {**_GPT_5_4_PATCHES, "auto": (6000, 10_000)}
_GPT_5_6_PATCHES = {**_GPT_5_4_PATCHES, "auto": (None, None), "original": (None, None)}
# model: (multiplier, limits per detail, what no detail means: None for the largest across the levels)
_OPENAI_PATCHES: Mapping[str, tuple[float, Mapping[str, _PatchLimits], str | None]] = {
    "gpt-6-astra": (1.2, _GPT_5_6_PATCHES, "original"),
    "gpt-5.6-sol": (1.2, _GPT_5_6_PATCHES, "original"),
    "gpt-5.6-terra": (1.2, _GPT_5_6_PATCHES, "original"),
    "gpt-5.6-luna": (1.2, _GPT_5_6_PATCHES, "original"),
    "gpt-5.5": (1.2, _GPT_5_5_PATCHES, "original"),
    "gpt-5.4": (1.2, _GPT_5_4_PATCHES, None),
    "gpt-5.4-mini": (1.2, _GPT_5_4_PATCHES, None),
    "gpt-5.4-nano": (1.2, _GPT_5_4_PATCHES, None),
    "gpt-5.2": (1.2, _same_limits((2048, 6144)), None),
    "gpt-4.1-mini": (1.62, _same_limits((2048, 6144)), None),
    "gpt-5-mini": (1.2, _LEGACY_PATCHES, None),
    "gpt-5-nano": (1.5, _LEGACY_PATCHES, None),
    # no multiplier is published for the codex minis: the largest of the patch models'
    "gpt-5-codex-mini": (2.46, _LEGACY_PATCHES, None),
    "gpt-5.1-codex-mini": (2.46, _LEGACY_PATCHES, None),
    "gpt-4.1-nano": (2.46, _LEGACY_PATCHES, None),
    "o4-mini": (1.72, _LEGACY_PATCHES, None),
    "codex-mini-latest": (1.72, _LEGACY_PATCHES, None),
}

# Anthropic, from "Images and vision" (image costs, how Claude resizes images):
# https://platform.claude.com/docs/en/build-with-claude/vision
# An image costs ceil(width / 28) x ceil(height / 28) visual tokens after Claude scaled it down (aspect kept) so that
# both padded sides fit the long-edge limit and the patch count fits the token limit: 1568 px and 1568 tokens for
# most models, 2576 px and 4784 tokens for the high-resolution ones (Claude Opus 4.7 and later). (It replaces the
# older approximation width x height / 750.) Worked examples: 1568 x 728 = 56 x 26 = 1456; 1928 x 1928 = 1521
# (scaled to 1092 x 1092), 4761 on a high-resolution model; 960 x 540 = 700.
_CLAUDE_STANDARD = (1568, 1568)  # (long edge px, visual tokens)
_CLAUDE_HIGH_RES = (2576, 4784)

# Gemini 1.5 and 2.x, the Vertex AI rule quoted in "Input file requirements" and in LiteLLM's issue #3269:
# https://firebase.google.com/docs/vertex-ai/input-file-requirements
# https://github.com/BerriAI/litellm/issues/3269
# An image with both sides <= 384 px costs 258 tokens; a larger one is cut into square tiles of side
# u = min(width, height) / 1.5, clamped to [256, 768]: ceil(width / u) x ceil(height / u) tiles of 258 tokens each.
# An image with a side over 3072 px is scaled down and padded to 3072 x 3072, so it is reserved at the larger of 16
# tiles and the rule on its scaled-down size. The most any size can give is 24 tiles (6192 tokens, e.g. 2817 x 257;
# checked over every size up to 3072 x 3072), the figure for an image of unknown size. Worked example: 600 x 400:
# u = 266.7, 3 x 2 tiles = 1548.
# Gemini 2.5's media resolution table gives "256 + Pan & Scan (~2048)" per image by default, so a 2.5 model reserves
# at least 2304 per image (https://ai.google.dev/gemini-api/docs/media-resolution).
# Gemini 3 and later, "Media resolution" (token counts):
# https://ai.google.dev/gemini-api/docs/media-resolution
# A per-image figure set by the media resolution: low 280, medium 560, high 1120, ultra high 2240, 1120 by default.
# LiteLLM sends an OpenAI-style detail="low" / "medium" / "high" / "ultra_high" as that media resolution.
_GEMINI_TILE_TOKENS = 258
_GEMINI_MAX_SIDE = 3072
_GEMINI_MAX_TILES = 24
_GEMINI_2_5_IMAGE_TOKENS = 2304
_GEMINI_3_IMAGE_TOKENS: Mapping[str, int] = {"low": 280, "medium": 560, "high": 1120, "ultra_high": 2240}
_GEMINI_3_DEFAULT_IMAGE_TOKENS = 1120


def _openai_tiles(size: tuple[int, int] | None, base: int, tile: int, detail: str | None) -> int:
    if detail == "low":
        return base
    if size is None:  # the largest: 2048 x 768 after scaling, 4 x 2 tiles
        return base + tile * 8
    w, h = float(size[0]), float(size[1])
    if max(w, h) > 2048:
        f = 2048 / max(w, h)
        w, h = w * f, h * f
    if min(w, h) > 768:
        f = 768 / min(w, h)
        w, h = w * f, h * f
    return base + tile * math.ceil(w / 512) * math.ceil(h / 512)


def _openai_patches(size: tuple[int, int] | None, max_side: int | None, budget: int | None) -> int:
    """32 px patches of an image fitted to ``max_side`` px, then to ``budget`` patches (``None``: not documented,
    at most :data:`_MAX_PATCHES`)."""
    cap = min(budget, _MAX_PATCHES) if budget is not None else _MAX_PATCHES
    if size is None:
        return cap if max_side is None else min(cap, math.ceil(max_side / 32) ** 2)
    w, h = size
    if max_side is not None and max(w, h) > max_side:
        f = max_side / max(w, h)
        w, h = max(1, round(w * f)), max(1, round(h * f))
    patches = math.ceil(w / 32) * math.ceil(h / 32)
    if patches <= cap or budget is None:
        return min(patches, cap)
    shrink = math.sqrt(32 * 32 * budget / (w * h))
    sw, sh = w * shrink / 32, h * shrink / 32  # in patches
    shrink *= min(math.floor(sw) / sw if sw >= 1 else 1.0, math.floor(sh) / sh if sh >= 1 else 1.0)
    rw, rh = max(1, math.floor(w * shrink)), max(1, math.floor(h * shrink))
    return min(cap, math.ceil(rw / 32) * math.ceil(rh / 32))


def _openai_patch_tokens(
    size: tuple[int, int] | None,
    detail: str | None,
    multiplier: float,
    limits: Mapping[str, _PatchLimits],
    default: str | None,
) -> int:
    detail = detail if detail in limits else default
    levels = [limits[detail]] if detail is not None else list(limits.values())
    patches = max(_openai_patches(size, max_side, budget) for max_side, budget in levels)
    return math.ceil(patches * multiplier)  # as LiteLLM: a float just above a whole number rounds up


def _claude_patches(size: tuple[int, int] | None, limits: tuple[int, int]) -> int:
    long_edge, max_tokens = limits
    if size is None:
        return max_tokens

    def fits(w: int, h: int) -> bool:
        pw, ph = math.ceil(w / 28), math.ceil(h / 28)
        return pw * 28 <= long_edge and ph * 28 <= long_edge and pw * ph <= max_tokens

    w, h = size
    if not fits(w, h):  # the largest size with the same aspect that fits, by its long side
        long, short = max(w, h), min(w, h)
        lo, hi = 1, long
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if fits(mid, max(1, round(mid * short / long))):
                lo = mid
            else:
                hi = mid - 1
        long, short = lo, max(1, round(lo * short / long))
        w, h = (long, short) if w >= h else (short, long)
    return math.ceil(w / 28) * math.ceil(h / 28)


def _gemini_tiles(size: tuple[int, int] | None) -> int:
    """Gemini 1.5 / 2.x: the tokens of an image (the largest the rule gives when its size is unknown)."""
    if size is None:
        return _GEMINI_TILE_TOKENS * _GEMINI_MAX_TILES
    w, h = size
    floor = 0
    if max(w, h) > _GEMINI_MAX_SIDE:  # scaled down and padded to 3072 x 3072 (16 tiles)
        f = _GEMINI_MAX_SIDE / max(w, h)
        w, h = max(1, math.ceil(w * f)), max(1, math.ceil(h * f))
        floor = 16
    if w <= 384 and h <= 384:
        return _GEMINI_TILE_TOKENS * max(1, floor)
    u = min(768.0, max(256.0, min(w, h) / 1.5))
    return _GEMINI_TILE_TOKENS * max(floor, math.ceil(w / u) * math.ceil(h / u))


def _gemini_3_tokens(detail: str | None) -> int:
    return _GEMINI_3_IMAGE_TOKENS.get(detail or "", _GEMINI_3_DEFAULT_IMAGE_TOKENS)


_CLAUDE_VERSION = re.compile(r"claude-(?:(opus|sonnet|haiku)-)?(\d+)(?:[-.](\d{1,2}))?(?!\d)")


def _claude_limits(name: str) -> tuple[int, int]:
    """Standard limits for Claude 3.x and 4.0-4.6; the high-resolution ones for anything later or not recognised
    (the larger reservation is the safe one)."""
    m = _CLAUDE_VERSION.search(name)
    if m is not None:
        major, minor = int(m.group(2)), int(m.group(3) or 0)
        if major < 4 or (major == 4 and minor <= 6):
            return _CLAUDE_STANDARD
    return _CLAUDE_HIGH_RES


def _lookup(name: str, table: Mapping[str, Any]) -> str | None:
    """The longest key of ``table`` that is ``name`` or a prefix of it followed by ``-`` (a dated snapshot)."""
    best = None
    for key in table:
        if (name == key or name.startswith(key + "-")) and (best is None or len(key) > len(best)):
            best = key
    return best


def _rule(
    model: str | None, provider: str | None
) -> Callable[[tuple[int, int] | None, str | None], int] | None:
    """The image rule of ``model`` (``None`` when none is known)."""
    name = (model or "").lower().rsplit("/", 1)[-1]
    vendor = (provider or "").lower()
    if "claude" in name or (vendor == "anthropic" and name):
        claude = _claude_limits(name)
        return lambda size, detail: _claude_patches(size, claude)
    if "gemini" in name:
        m = re.search(r"gemini-(\d+)(?:\.(\d+))?", name)
        version = (int(m.group(1)), int(m.group(2) or 0)) if m is not None else None
        if version is not None and version >= (3, 0):
            return lambda size, detail: _gemini_3_tokens(detail)
        if version is not None and version < (2, 5):
            return lambda size, detail: _gemini_tiles(size)
        if version is not None:  # 2.x from 2.5: at least the default media resolution's figure
            return lambda size, detail: max(_GEMINI_2_5_IMAGE_TOKENS, _gemini_tiles(size))
        # no version in the name (an alias such as gemini-flash-latest): the larger of the rules
        return lambda size, detail: max(
            _GEMINI_2_5_IMAGE_TOKENS, _gemini_tiles(size), _gemini_3_tokens(detail)
        )
    tile_key, patch_key = _lookup(name, _OPENAI_TILES), _lookup(name, _OPENAI_PATCHES)
    if patch_key is not None and (tile_key is None or len(patch_key) > len(tile_key)):
        multiplier, limits, default = _OPENAI_PATCHES[patch_key]
        return lambda size, detail: _openai_patch_tokens(size, detail, multiplier, limits, default)
    if tile_key is not None:
        base, tile = _OPENAI_TILES[tile_key]
        return lambda size, detail: _openai_tiles(size, base, tile, detail)
    return None


@functools.lru_cache(maxsize=256)
def _warn_unknown_image_model(model: str, tokens: int) -> None:
    log.warning(
        "frugal-chains: no image token rule is known for model %r; reserving %d tokens per image "
        "(set unknown_model_image_tokens= on the budget handler to change it)",
        model,
        tokens,
    )


def _image_source(part: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(base64 data or a URL, detail) of an image content part in the OpenAI, Responses, Anthropic or LangChain
    standard form."""
    detail = part.get("detail")
    ref: Any = None
    image_url = part.get("image_url")
    if isinstance(image_url, Mapping):
        ref, detail = image_url.get("url"), image_url.get("detail", detail)
    elif isinstance(image_url, str):
        ref = image_url
    source = part.get("source")
    if ref is None and isinstance(source, Mapping):  # Anthropic
        ref = source.get("data") if source.get("type") == "base64" else source.get("url")
    if ref is None:  # LangChain standard blocks
        for key in ("base64", "data", "url"):
            if isinstance(part.get(key), str):
                ref = part[key]
                break
    if detail is None:  # Gemini's per-part media resolution: a level name or {"level": ...}
        resolution = part.get("media_resolution")
        if resolution is None and isinstance(image_url, Mapping):
            resolution = image_url.get("media_resolution")
        detail = resolution.get("level") if isinstance(resolution, Mapping) else resolution
    if detail is None:
        return (ref if isinstance(ref, str) else None), None
    level = str(detail).lower().removeprefix("media_resolution_")
    return (ref if isinstance(ref, str) else None), level


_HEADER_CHARS = 65_536
"""Base64 characters decoded first to find an image's size (a JPEG's size may follow a large EXIF segment: then
the whole image is decoded)."""


def _image_size(ref: str | None) -> tuple[int, int] | None:
    """Width and height of an inline image (a ``data:`` URL or bare base64) from its PNG, JPEG, GIF or WebP header;
    ``None`` for a URL or an unreadable image."""
    if not ref:
        return None
    if ref.startswith("data:"):
        head, _, ref = ref.partition(",")
        if ";base64" not in head:
            return None
    elif ref.startswith(("http://", "https://", "gs://", "s3://", "file:")):
        return None
    ref = ref.strip()
    for chars in (_HEADER_CHARS, None):
        chunk = ref if chars is None or len(ref) <= chars else ref[: chars - chars % 4]
        try:
            data = base64.b64decode(chunk, validate=False)
        except (binascii.Error, ValueError):
            return None
        size = _size_from_header(data)
        if size is not None or chunk is ref:
            return size
    return None


def _size_from_header(data: bytes) -> tuple[int, int] | None:
    try:
        if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
            w, h = struct.unpack(">II", data[16:24])
        elif data[:6] in (b"GIF87a", b"GIF89a"):
            w, h = struct.unpack("<HH", data[6:10])
        elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            kind = data[12:16]
            if kind == b"VP8 ":
                w, h = (v & 0x3FFF for v in struct.unpack("<HH", data[26:30]))
            elif kind == b"VP8L":
                b = data[21:25]
                w = 1 + (b[0] | (b[1] & 0x3F) << 8)
                h = 1 + (b[1] >> 6 | b[2] << 2 | (b[3] & 0x0F) << 10)
            elif kind == b"VP8X":
                w = 1 + int.from_bytes(data[24:27], "little")
                h = 1 + int.from_bytes(data[27:30], "little")
            else:
                return None
        elif data[:2] == b"\xff\xd8":
            return _jpeg_size(data)
        else:
            return None
    except (struct.error, IndexError):
        return None
    return (int(w), int(h)) if w > 0 and h > 0 else None


_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if marker in _JPEG_SOF:
            if i + 9 > len(data):
                return None
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return (w, h) if w > 0 and h > 0 else None
        i += 2 + length
    return None


def image_tokens(
    part: Mapping[str, Any],
    *,
    model: str | None = None,
    provider: str | None = None,
    unknown_model_image_tokens: int = UNKNOWN_MODEL_IMAGE_TOKENS,
) -> int:
    """The most one image content part may cost on ``model`` by its provider's published rule (see the module
    documentation): exact when the image is inline (its size read from its header), the largest size the provider
    accepts when it is given by URL, ``unknown_model_image_tokens`` for a model with no known rule.

    Example:
        >>> from frugal_chains.accounting.tokens import image_tokens
        >>> image_tokens({"type": "image_url", "image_url": {"url": "https://x/cat.png", "detail": "low"}},
        ...              model="gpt-4o")
        85
        >>> image_tokens({"type": "image_url", "image_url": {"url": "https://x/cat.png"}}, model="gpt-4o-mini")
        48169
    """
    rule = _rule(model, provider)
    if rule is None:
        _warn_unknown_image_model(str(model), unknown_model_image_tokens)
        return unknown_model_image_tokens
    ref, detail = _image_source(part)
    return int(rule(_image_size(ref), detail))


def count_message_tokens(
    messages: Sequence[Mapping[str, Any]],
    *,
    model: str | None = None,
    tools: Sequence[Mapping[str, Any]] | None = None,
) -> int:
    """Prompt tokens of OpenAI-format messages (and tool schemas), without any margin; each image part counts a
    flat :data:`IMAGE_TOKENS` (a budget's reservation uses :func:`image_tokens` instead).

    Example:
        >>> from frugal_chains.accounting import count_message_tokens
        >>> count_message_tokens([{"role": "user", "content": "hello world"}])
        9
    """
    text, images = _counted(messages, model, tools, lambda part: IMAGE_TOKENS)
    return text + images


def _counted(
    messages: Sequence[Mapping[str, Any]],
    model: str | None,
    tools: Sequence[Mapping[str, Any]] | None,
    per_image: Callable[[Mapping[str, Any]], int],
) -> tuple[int, int]:
    """(text tokens, image tokens) of the messages and tool schemas; ``per_image(part)`` prices each image."""
    encoding = _encoding_name_for(model)

    def n(text: str) -> int:
        return _count(encoding, text)

    total = 3  # every reply is primed with <|start|>assistant<|message|>
    images = 0
    for message in messages:
        total += 3
        for key, value in message.items():
            if key == "content":
                for kind, item in _content_parts(value):
                    if kind == "image":
                        images += per_image(item)
                    else:
                        total += n(item)
            elif key == "tool_calls" and value:
                for call in value:
                    fn = call.get("function", call) if isinstance(call, Mapping) else {}
                    total += 3 + n(str(fn.get("name", ""))) + n(str(fn.get("arguments", fn.get("args", ""))))
            elif key == "name" and isinstance(value, str):
                total += 1 + n(value)
            elif key in ("role", "tool_call_id") and isinstance(value, str):
                total += n(value)
    for tool in tools or ():
        total += 10 + n(json.dumps(tool, sort_keys=True, default=str))
    return total, images


def uses_prompt_caching(messages: Sequence[Mapping[str, Any]]) -> bool:
    """True if any message or content part asks the provider to cache the prompt (``cache_control``)."""
    for message in messages:
        if "cache_control" in message:
            return True
        content = message.get("content")
        if isinstance(content, Sequence) and not isinstance(content, str):
            for part in content:
                if isinstance(part, Mapping) and "cache_control" in part:
                    return True
    return False


class TokenEstimator:
    """Estimates a call's prompt tokens for a budget's reservation: text with a per-provider safety margin, images
    by their provider's rule (:func:`image_tokens`, no margin).

    Args:
        margins: fraction added to the text count, by LiteLLM provider name, with ``"default"`` for the rest
            (see :data:`DEFAULT_MARGINS`). Merged over the defaults.
        unknown_model_image_tokens: tokens reserved per image on a model with no known image rule (default
            :data:`UNKNOWN_MODEL_IMAGE_TOKENS`); set it to what your model's provider documents.

    Example:
        >>> from frugal_chains.accounting import TokenEstimator
        >>> est = TokenEstimator(margins={"default": 0.5})
        >>> est.estimate([{"role": "user", "content": "hello world"}], provider="acme")
        14
        >>> photo = {"type": "image_url", "image_url": {"url": "https://x/cat.png"}}
        >>> TokenEstimator(unknown_model_image_tokens=1000).estimate(
        ...     [{"role": "user", "content": [photo]}], model="my-llava", provider="ollama")
        1009
    """

    def __init__(
        self,
        margins: Mapping[str, float] | None = None,
        *,
        unknown_model_image_tokens: int = UNKNOWN_MODEL_IMAGE_TOKENS,
    ) -> None:
        merged = dict(DEFAULT_MARGINS)
        for key, value in (margins or {}).items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 10:
                raise ConfigurationError(
                    f"margins[{key!r}] must be a fraction between 0 and 10 (0.25 = +25%), got {value!r}.",
                    field="margins",
                )
            merged[key] = float(value)
        if (
            isinstance(unknown_model_image_tokens, bool)
            or not isinstance(unknown_model_image_tokens, int)
            or unknown_model_image_tokens < 0
        ):
            raise ConfigurationError(
                "unknown_model_image_tokens must be an int >= 0 (tokens reserved per image on a model with no "
                f"known image rule, e.g. 1500), got {unknown_model_image_tokens!r}.",
                field="unknown_model_image_tokens",
            )
        self.margins: Mapping[str, float] = merged
        self.unknown_model_image_tokens = unknown_model_image_tokens

    def margin_for(self, provider: str | None) -> float:
        return self.margins.get(provider or "", self.margins["default"])

    def estimate(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        model: str | None = None,
        provider: str | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> int:
        """Prompt tokens, rounded up: the text with the provider's margin, plus what its chat template adds
        (:data:`TEMPLATE_TOKENS`) and each image's worst case."""

        def per_image(part: Mapping[str, Any]) -> int:
            return image_tokens(
                part,
                model=model,
                provider=provider,
                unknown_model_image_tokens=self.unknown_model_image_tokens,
            )

        text, images = _counted(messages, model, tools, per_image)
        hidden = TEMPLATE_TOKENS.get(provider or "", 0)
        return math.ceil(text * (1 + self.margin_for(provider))) + hidden + images
