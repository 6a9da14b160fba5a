"""Token counting for the pre-call estimate, offline.

tiktoken downloads its BPE files on first use, which fails on machines without internet. We load
``o200k_base`` and ``cl100k_base`` from the copies shipped inside the ``litellm`` wheel (or
``llama-index-core``'s), verified by their SHA-256, without touching ``TIKTOKEN_CACHE_DIR``. If neither
package has them, ``tiktoken.get_encoding`` is tried (it honours ``TIKTOKEN_CACHE_DIR``).

Messages are OpenAI-format dicts. The count follows OpenAI's recipe (3 tokens per message, 1 per name,
3 to prime the reply), plus tool calls, tool schemas (their JSON, plus 10 tokens each) and a flat
:data:`IMAGE_TOKENS` per image part (the most a high-detail image costs on OpenAI and Anthropic).

Providers whose tokenizer is not OpenAI's count the same text differently, so the estimate is raised by a
**safety margin** (:data:`DEFAULT_MARGINS`): 5% for OpenAI and Azure OpenAI (exact tokenizer, the margin
covers chat-format overhead), 35% for Anthropic (Claude's tokenizers produce up to ~30% more tokens than
o200k for the same text), 25% for every other provider. Override with ``margins={...}``.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import importlib.util
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from frugal_chains.errors import ConfigurationError

if TYPE_CHECKING:
    import tiktoken

__all__ = [
    "DEFAULT_MARGINS",
    "IMAGE_TOKENS",
    "OUTPUT_CAP_KEYS",
    "TokenEstimator",
    "count_message_tokens",
    "count_text_tokens",
    "get_encoding",
    "uses_prompt_caching",
]

IMAGE_TOKENS = 1_600
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


def _content_parts(content: Any) -> Iterable[tuple[str, str]]:
    """Yield ``("text", s)`` and ``("image", "")`` from a message content (string or list of parts)."""
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
                    yield "image", ""
                elif isinstance(part.get("text"), str):
                    yield "text", part["text"]
                else:
                    yield (
                        "text",
                        json.dumps({k: v for k, v in part.items() if k != "cache_control"}, default=str),
                    )
        return
    yield "text", str(content)


def count_message_tokens(
    messages: Sequence[Mapping[str, Any]],
    *,
    model: str | None = None,
    tools: Sequence[Mapping[str, Any]] | None = None,
) -> int:
    """Prompt tokens of OpenAI-format messages (and tool schemas), without any margin.

    Example:
        >>> from frugal_chains.accounting import count_message_tokens
        >>> count_message_tokens([{"role": "user", "content": "hello world"}])
        9
    """
    encoding = _encoding_name_for(model)

    def n(text: str) -> int:
        return _count(encoding, text)

    total = 3  # every reply is primed with <|start|>assistant<|message|>
    for message in messages:
        total += 3
        for key, value in message.items():
            if key == "content":
                for kind, text in _content_parts(value):
                    total += IMAGE_TOKENS if kind == "image" else n(text)
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
    return total


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
    """Estimates a call's prompt tokens with a per-provider safety margin.

    Args:
        margins: fraction added to the count, by LiteLLM provider name, with ``"default"`` for the rest
            (see :data:`DEFAULT_MARGINS`). Merged over the defaults.

    Example:
        >>> from frugal_chains.accounting import TokenEstimator
        >>> est = TokenEstimator(margins={"default": 0.5})
        >>> est.estimate([{"role": "user", "content": "hello world"}], provider="acme")
        14
    """

    def __init__(self, margins: Mapping[str, float] | None = None) -> None:
        merged = dict(DEFAULT_MARGINS)
        for key, value in (margins or {}).items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 10:
                raise ConfigurationError(
                    f"margins[{key!r}] must be a fraction between 0 and 10 (0.25 = +25%), got {value!r}.",
                    field="margins",
                )
            merged[key] = float(value)
        self.margins: Mapping[str, float] = merged

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
        """Prompt tokens, margin included, rounded up."""
        raw = count_message_tokens(messages, model=model, tools=tools)
        return math.ceil(raw * (1 + self.margin_for(provider)))
