"""How a cached answer is replayed to a caller who asked for a stream: a few chunks at word boundaries."""

from __future__ import annotations

import re

__all__ = ["REPLAY_CHUNKS", "replay_pieces"]

REPLAY_CHUNKS = 4
"""A cached answer is replayed in about this many chunks."""


def replay_pieces(text: str, n: int = REPLAY_CHUNKS) -> list[str]:
    """``text`` split at word boundaries into at most ``n`` pieces that concatenate back to it.

    Example:
        >>> replay_pieces("Paris is the capital of France.")
        ['Paris is ', 'the capital ', 'of France.']
        >>> replay_pieces("")
        ['']
    """
    words = [w for w in re.split(r"(?<=\s)(?=\S)", text) if w]
    if len(words) <= 1:
        return [text]
    size = -(-len(words) // n)
    return ["".join(words[i : i + size]) for i in range(0, len(words), size)]
