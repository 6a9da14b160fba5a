"""What every scorer accepts: a :data:`Conversation` (a string or OpenAI-format messages), checked by
:func:`as_messages`, and finite numbers for weights and biases (:func:`finite`)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

from frugal_chains.errors import ConfigurationError
from frugal_chains.routing.types import Message

__all__ = ["Conversation", "as_messages", "finite"]

Conversation = str | Sequence[Message]
"""One user turn as a string, or a list of OpenAI-format messages."""


def as_messages(conversation: Any, field: str) -> Sequence[Message]:
    """``conversation`` as a message list (a string is one user turn); ConfigurationError naming ``field``."""
    if isinstance(conversation, str):
        return ({"role": "user", "content": conversation},)
    if isinstance(conversation, Sequence) and not isinstance(conversation, bytes):
        for m in conversation:
            if not isinstance(m, Mapping):
                raise ConfigurationError(
                    f"{field}: a conversation must be a string or a list of OpenAI-format message dicts "
                    f"({{'role': 'user', 'content': '...'}}), got an item of type {type(m).__name__}",
                    field=field,
                )
        return conversation
    raise ConfigurationError(
        f"{field}: a conversation must be a string or a list of OpenAI-format message dicts, got "
        f"{type(conversation).__name__}",
        field=field,
    )


def finite(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise ConfigurationError(f"{field} must be a finite number, got {value!r}", field=field)
    return float(value)
