"""The bypass policy: questions that must skip the semantic tier (time-sensitive, user-specific,
context-dependent) and questions with nothing to compare (empty or punctuation only)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from frugal_chains.cache.guard.lexical import fold
from frugal_chains.cache.normalize import has_content

__all__ = ["BypassPolicy", "bypass_reason"]

_TIME_SENSITIVE = re.compile(
    r"\b(today|todays|tonight|tomorrow|yesterday|right now|now|currently|current|latest|newest|most recent|"
    r"recently|recent|this (?:week|weekend|month|year|morning|evening|season)|next (?:week|month|year)|"
    r"last (?:night|week|weekend|month)|at the moment|as of now|up to date|breaking news|live score|"
    r"stock price|share price|exchange rate|weather|forecast|score of the|who won)\b"
)
_USER_SPECIFIC = re.compile(
    r"\b(?:my|our)\s+(?:[^\W\d_]+\s+)?(?:account|accounts|order|orders|balance|bill|bills|invoice|invoices|"
    r"package|parcel|delivery|shipment|subscription|plan|booking|reservation|ticket|claim|statement|"
    r"application|appointment|refund|payment|payments|transaction|transactions|transfer|transfers|"
    r"card|cards|profile|history|case|loan|mortgage|policy|contract|flight|points|credit score|"
    r"test results?|results?|grades?|salary|pension|tax return|deposit|withdrawal|pin|password)\b"
)
_CONTEXT_DEPENDENT = re.compile(
    r"\b(?:(?:this|that|these|those|the following|the above|the attached|attached|below|above)\s+"
    r"(?:video|videos|image|images|picture|pictures|photo|photos|pic|pics|screenshot|code|snippet|script|"
    r"function|query|text|article|document|doc|file|pdf|link|url|passage|paragraph|sentence|essay|email|"
    r"message|letter|poem|song|lyrics|chart|graph|table|diagram|equation|problem|puzzle|riddle|quote|"
    r"statement|post|tweet|comment|answer|error|output|log|stack trace|data|list|word|phrase|gif|meme)|"
    r"(?:translate|summari[sz]e|explain|rewrite|paraphrase|proofread|correct|fix|review|debug|solve|"
    r"simplify|shorten|format|analy[sz]e)\s+(?:this|that|it|these|the following|the above|below|above)|"
    r"the above|as above|mentioned above|given above|shown above|shown below|given below|the following|"
    r"in the picture|in the image|in the video|in this picture|in this image|"
    r"what does (?:this|that|it) mean|what is (?:this|that)(?: thing)?$|who is (?:this|that)$)\b"
)


@dataclass(frozen=True)
class BypassPolicy:
    """Which kinds of questions skip the semantic tier (the exact tier still serves identical ones).

    A question with no letter or digit (``""``, ``"?"``, ``"..."``) is always ``"empty"``: every such question
    normalises to the same key, so :class:`~frugal_chains.cache.AnswerCache` neither serves nor stores it.

    Args:
        time_sensitive: "today", "latest", "current", "now", "weather", "stock price" ...
        user_specific: "my order", "my account", "my balance", "my card" ... **On by default**: in a
            general assistant the answer depends on the user's own data, and a semantic hit would hand
            one user's answer to another. Turn it off for an FAQ bot whose answers are the same for
            every user (e.g. a bank's "my card has not arrived" help text), where such questions are
            the whole traffic.
        context_dependent: questions about something not in the question itself: "this video",
            "translate this", "the above", "this code".

    Example:
        >>> BypassPolicy(user_specific=False).reason("Why was my card declined?") is None
        True
        >>> BypassPolicy().reason("Why was my card declined?")
        'user-specific'
    """

    time_sensitive: bool = True
    user_specific: bool = True
    context_dependent: bool = True

    def reason(self, text: str) -> str | None:
        """``"empty"`` / ``"time-sensitive"`` / ``"user-specific"`` / ``"context-dependent"``, or ``None``."""
        if not has_content(text):
            return "empty"
        folded = " ".join(fold(text).split())
        if self.context_dependent and _CONTEXT_DEPENDENT.search(folded):
            return "context-dependent"
        if self.time_sensitive and _TIME_SENSITIVE.search(folded):
            return "time-sensitive"
        if self.user_specific and _USER_SPECIFIC.search(folded):
            return "user-specific"
        return None


_DEFAULT_POLICY = BypassPolicy()


def bypass_reason(text: str, policy: BypassPolicy | None = None) -> str | None:
    """Why ``text`` must skip the semantic tier, or ``None`` when a semantic hit is allowed.

    Args:
        text: the raw question (last user turn).
        policy: which rules apply; default :class:`BypassPolicy()` (all three on).

    Returns:
        ``"empty"`` (no letter or digit), ``"time-sensitive"``, ``"user-specific"``, ``"context-dependent"`` or
        ``None``.

    Example:
        >>> bypass_reason("What is the latest iPhone?")
        'time-sensitive'
        >>> bypass_reason("Where is my order?")
        'user-specific'
        >>> bypass_reason("Translate this into French")
        'context-dependent'
        >>> bypass_reason("?")
        'empty'
        >>> bypass_reason("How do I learn Python?") is None
        True
    """
    return (policy or _DEFAULT_POLICY).reason(text)
