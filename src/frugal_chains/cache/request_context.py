"""The cache with the prefix formatter: what the values moved into the request context block do to a lookup.

:class:`~frugal_chains.prefix.PrefixFormatter` moves dates, times, request ids, emails and template variables (the
user's name) out of the system prompt into one context block (``CONTEXT_HEADER``, then ``- label: value`` lines):
the last text part of the leading system message, or the first text part of the first user turn. The formatter
runs before the cache, so every lookup sees that block. :class:`~frugal_chains.cache.CacheRequest` takes it out
(:func:`frugal_chains.prefix.split_context_block` reads it) and decides here what the values change:

* **Generic questions share the partition.** The block is removed from the messages the partition is made of and
  only its labels stay, so two requests that differ only in the moved values (another day, another user, another
  request id) share one partition: a repeat or a paraphrase hits.
* **Time- and user-specific questions do not.** A question (or an earlier user turn) using a word of
  ``_guard_data/context_questions.txt`` ``[time]`` ("today", "tomorrow", "this week", "deadline", "how many days",
  weekday names ...) puts the date and time values into its partition; one using a word of ``[user]`` ("I", "my",
  "our", "account" ...) puts the names, emails and ids. A request with no question to compare (a tool result) puts
  every value.
* **An answer that quotes a moved value stays with it.** An answer naming the user ("Hi Alice"), their email or the
  date is stored with a digest of the values it quotes; it is served only to requests whose block has the same
  values for those labels (the same user on the same day still hits it).

Requests without a context block are keyed exactly as before.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from frugal_chains.prefix import ContextValue

__all__ = [
    "QUOTES_META_KEY",
    "answer_quotes",
    "context_partition",
    "depends_on",
    "quotes_agree",
    "split_messages",
    "split_prompt",
]

_DATA_FILE = "context_questions.txt"
QUOTES_META_KEY = "context_quotes"
"""The key of :class:`~frugal_chains.cache.CacheEntry` ``meta`` holding ``{label: digest}`` of the moved values an
answer quotes."""


@dataclass(frozen=True)
class _Section:
    name: str
    kinds: frozenset[str]
    """The kinds of moved values the section's words depend on."""
    pattern: re.Pattern[str]


def _parse(text: str) -> tuple[_Section, ...]:
    sections: list[tuple[str, frozenset[str], list[str]]] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            name, sep, listed = line.strip("[]").partition(":")
            found = frozenset(k.strip() for k in listed.split(",") if k.strip())
            if not sep or not name.strip() or not found:
                raise ValueError(f"{_DATA_FILE} line {lineno}: expected '[section: kind, kind]', got {raw!r}")
            sections.append((name.strip(), found, []))
            continue
        if not sections:
            raise ValueError(f"{_DATA_FILE} line {lineno}: words before the first [section]")
        sections[-1][2].extend(" ".join(w.split()) for w in line.split(",") if w.strip())
    out = []
    for name, kinds, words in sections:
        alternatives = "|".join(
            r"\s+".join(map(re.escape, w.split())) for w in sorted(set(words), key=lambda w: (-len(w), w))
        )
        out.append(_Section(name, kinds, re.compile(rf"\b(?:{alternatives})\b")))
    return tuple(out)


@lru_cache(maxsize=1)
def _sections() -> tuple[_Section, ...]:
    from frugal_chains.cache.guard.lexical import DATA_PACKAGE

    return _parse(resources.files(DATA_PACKAGE).joinpath(_DATA_FILE).read_text(encoding="utf-8"))


def _listed() -> frozenset[str]:
    return frozenset(k for s in _sections() for k in s.kinds)


def depends_on(texts: Sequence[str]) -> frozenset[str]:
    """The kinds of moved values whose change changes the answer to ``texts`` (the question and the user's
    earlier turns): the kinds of every section one of whose words they use.

    Example:
        >>> from frugal_chains.cache.request_context import depends_on
        >>> sorted(depends_on(["What is the baggage allowance?"]))
        []
        >>> "date" in depends_on(["Is the desk open today?"]), "name" in depends_on(["Where is my booking?"])
        (True, True)
    """
    from frugal_chains.cache.guard.lexical import fold

    folded = [" ".join(fold(t).split()) for t in texts]
    kinds: set[str] = set()
    for section in _sections():
        if any(section.pattern.search(t) for t in folded):
            kinds |= section.kinds
    return frozenset(kinds)


def _keyed(value: ContextValue, kinds: frozenset[str]) -> bool:
    """A value of a kind no section lists joins whenever the question depends on any value."""
    return value.kind in kinds or (bool(kinds) and value.kind not in _listed())


def _is_marked(message: Mapping[str, Any]) -> bool:
    """A few-shot example or a document of the preamble (the formatter places no block there)."""
    name = message.get("name")
    if not isinstance(name, str):
        extra = message.get("additional_kwargs")
        name = extra.get("name") if isinstance(extra, Mapping) else None
    return message.get("example") is True or (
        isinstance(name, str) and (name.startswith("example_") or name == "document")
    )


def _split_text(text: str) -> tuple[str, list[ContextValue]] | None:
    from frugal_chains.prefix import CONTEXT_HEADER, split_context_block

    if CONTEXT_HEADER not in text:
        return None
    rest, values = split_context_block(text)
    # a block joined by one line break (text parts joined with "\n") leaves that break behind: it goes too
    return (rest.strip("\n"), list(values)) if values else None


def _split_message(message: Mapping[str, Any]) -> tuple[dict[str, Any], list[ContextValue]] | None:
    content = message.get("content")
    if isinstance(content, str):
        found = _split_text(content)
        return None if found is None else ({**message, "content": found[0]}, found[1])
    if isinstance(content, Sequence) and not isinstance(content, (str, bytes)):
        parts: list[Any] = []
        values: list[ContextValue] = []
        for part in content:
            text = part.get("text") if isinstance(part, Mapping) and part.get("type") == "text" else None
            found = _split_text(text) if isinstance(text, str) and not values else None
            if found is None:
                parts.append(part)
                continue
            values = found[1]
            if found[0].strip():  # the block was a part of its own (Anthropic): the part goes
                parts.append({**part, "text": found[0]})
        return ({**message, "content": parts}, values) if values else None
    return None


def split_prompt(prompt: str) -> tuple[str, tuple[ContextValue, ...]]:
    """A completion prompt without the formatter's context block, and the values it held (a prompt has no
    roles: a block anywhere in it is read).

    Example:
        >>> from frugal_chains.cache.request_context import split_prompt
        >>> split_prompt("Be brief. Hi")
        ('Be brief. Hi', ())
    """
    found = _split_text(prompt)
    return (prompt, ()) if found is None else (found[0], tuple(found[1]))


def _leads(message: Mapping[str, Any]) -> bool:
    """The message's text starts with a context block (where the formatter puts one in a user turn)."""
    from frugal_chains.prefix import CONTEXT_HEADER

    content = message.get("content")
    if isinstance(content, str):
        return content.startswith(CONTEXT_HEADER)
    if isinstance(content, Sequence) and content:
        first = content[0]
        text = first.get("text") if isinstance(first, Mapping) and first.get("type") == "text" else None
        return isinstance(text, str) and text.startswith(CONTEXT_HEADER)
    return False


def split_messages(
    messages: Sequence[Mapping[str, Any]],
) -> tuple[Sequence[Mapping[str, Any]], tuple[ContextValue, ...]]:
    """``messages`` without the formatter's context block, and the values it held. The block is looked for where
    the formatter puts it: in the leading system (or developer) messages, else in the first user turn that is not a
    few-shot example or a document. Without a block, ``messages`` itself comes back (keys stay byte-identical).

    Example:
        >>> from frugal_chains.cache.request_context import split_messages
        >>> msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
        >>> split_messages(msgs) == (msgs, ())
        True
    """
    marked_seen = False
    # an example or a document holds the block only when no user turn follows (the end of the preamble)
    user_turn = any(m.get("role") in ("user", "human") and not _is_marked(m) for m in messages)
    for i, m in enumerate(messages):
        role = m.get("role")
        if role in ("system", "developer"):
            found = _split_message(m)
        elif role in ("user", "human") and _is_marked(m):
            marked_seen = True
            found = None if user_turn else _split_message(m)
        elif role in ("user", "human"):
            # the formatter puts a block here only after examples or documents, as the turn's first text: a
            # header a user typed anywhere else is the user's text
            found = _split_message(m) if marked_seen and _leads(m) else None
            if found is None:
                break  # the first user turn of the conversation holds no block: there is none
        else:
            continue
        if found is not None:
            out = list(messages)
            out[i] = found[0]
            return out, tuple(found[1])
    return messages, ()


def context_partition(values: Sequence[ContextValue], kinds: frozenset[str] | None) -> dict[str, Any]:
    """What the block adds to the partition: its labels, and the values of ``kinds`` (those the question depends
    on, see :func:`depends_on`; None: every value)."""
    return {
        "labels": sorted({v.label for v in values}),
        "values": sorted([v.label, v.value] for v in values if kinds is None or _keyed(v, kinds)),
    }


def _digest(label: str, value: str) -> str:
    return hashlib.sha256(f"{label}\x00{value}".encode("utf-8", "surrogatepass")).hexdigest()[:32]


_DATE_FORMATS = ("%Y-%m-%d", "%B %d, %Y", "%b %d, %Y", "%d %B %Y", "%d %b %Y", "%m/%d/%Y", "%A, %B %d, %Y")


def _as_date(text: str) -> date | None:
    head = text.strip()[:10]
    for candidate, formats in ((text.strip(), _DATE_FORMATS), (head, ("%Y-%m-%d",))):
        for fmt in formats:
            try:
                return datetime.strptime(candidate, fmt).date()
            except ValueError:
                continue
    return None


def _forms(value: ContextValue) -> list[str]:
    """The spellings of a moved value an answer may quote: the value itself, a name's capitalised words, a
    date's usual renderings (``December 7``, ``7 Dec``, ``12/07``)."""
    text = value.value.strip()
    forms = [text]
    if value.kind == "name":
        words = re.findall(r"[^\W\d_][\w'-]*", text)
        forms += [w for w in words if len(w) >= 2 and w[0].isupper()] or [w for w in words if len(w) >= 2]
    elif value.kind == "date":
        day = _as_date(text)
        if day is not None:
            for month in (day.strftime("%B"), day.strftime("%b")):
                forms += [f"{month} {day.day}", f"{day.day} {month}"]
            forms += [day.isoformat(), f"{day.month}/{day.day}", f"{day.month:02d}/{day.day:02d}"]
    return [f for f in dict.fromkeys(forms) if f]


def _quotes(answer: str, form: str) -> bool:
    for spelling in dict.fromkeys((form, json.dumps(form)[1:-1])):  # stored answers are often JSON
        pattern = rf"(?<![\w/]){re.escape(spelling)}(?![\w/])"
        if re.search(pattern, answer, re.IGNORECASE):
            return True
    return False


def answer_quotes(answer: str, values: Sequence[ContextValue]) -> dict[str, str]:
    """``{label: digest of the value}`` for every moved value ``answer`` quotes (empty: a generic answer).

    Example:
        >>> from frugal_chains.prefix import ContextValue
        >>> from frugal_chains.cache.request_context import answer_quotes
        >>> alice = ContextValue(label="user_name", value="Alice Moreau", kind="name")
        >>> list(answer_quotes("Hi Alice, bags are 23 kg.", [alice])), answer_quotes("Bags are 23 kg.", [alice])
        (['user_name'], {})
    """
    return {v.label: _digest(v.label, v.value) for v in values if any(_quotes(answer, f) for f in _forms(v))}


def quotes_agree(quotes: Any, values: Sequence[ContextValue]) -> bool:
    """True if a stored answer quoting ``quotes`` (its entry's ``meta[QUOTES_META_KEY]``) may be served to a
    request whose block holds ``values``: the same value for every quoted label."""
    if not quotes:
        return True
    if not isinstance(quotes, Mapping):
        return False
    mine = {v.label: _digest(v.label, v.value) for v in values}
    return all(mine.get(str(label)) == digest for label, digest in quotes.items())
