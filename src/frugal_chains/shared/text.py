"""Text that every store accepts: lone surrogates (``"\\ud800"``, from a bad decode upstream) cannot be encoded
as UTF-8, so SQLite and Redis refuse a row holding one. Keys and labels replace them; stored texts escape them."""

from __future__ import annotations

import re

__all__ = ["SURROGATE", "without_surrogates"]

SURROGATE = re.compile("[\ud800-\udfff]")
"""A lone surrogate code point."""


def without_surrogates(text: str) -> str:
    """``text`` with each lone surrogate replaced by U+FFFD (the text itself when it has none).

    Example:
        >>> from frugal_chains.shared.text import without_surrogates
        >>> without_surrogates("u\\udc001")
        'u\\ufffd1'
    """
    return SURROGATE.sub("\ufffd", text) if SURROGATE.search(text) else text
