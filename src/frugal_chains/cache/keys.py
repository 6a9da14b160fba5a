"""What a cache lookup is made of: the question, and the exact partition everything else goes into.

The semantic tier compares only the **question**: the last user turn, or, when the request is a known RAG
template (or one of yours, see :class:`~frugal_chains.QuestionKey`), the template's question variable; the
template itself and a hash of the retrieved passages are exact partition keys. Everything else that shapes the answer is
an exact partition key: the model and its parameters (LangChain's ``llm_string``), the system prompt, every
earlier turn, tools, non-text parts of the question (images), and the caller's :class:`CacheScope`. So "What is
the refund window?" asked in two different conversations, under two system prompts or for two tenants never
shares an answer.

A conversation whose last message is not a user turn (a tool result waiting for the model, say) has no question
to compare: it gets the exact tier only.

A request rewritten by the prefix formatter carries a context block (dates, request ids, the user's name moved out
of the system prompt): it is taken out of the partition, and its values come back in only for a question that
depends on them (see :mod:`frugal_chains.cache.request_context`).

A whole chain or query engine is looked up with :meth:`CacheRequest.from_inputs`: the question is one input (or
what a function makes of the inputs), the other inputs and a knowledge-base version tag are the exact partition.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import frugal_chains.cache.request_context as request_context
from frugal_chains.cache.normalize import has_content, normalize
from frugal_chains.cache.scope import CacheScope, current_cache_scope
from frugal_chains.errors import ConfigurationError
from frugal_chains.shared.question import QuestionKey, Selection, as_question_key
from frugal_chains.shared.question import split_content as _split_content

if TYPE_CHECKING:
    from frugal_chains.prefix import ContextValue

__all__ = ["CacheRequest"]


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


@dataclass(frozen=True, kw_only=True)
class CacheRequest:
    """One lookup: the question, the exact context around it and the scope.

    Build it with :meth:`from_messages` (OpenAI-format message dicts) or :meth:`from_prompt` (plain text).

    Example:
        >>> from frugal_chains.cache import CacheRequest
        >>> a = CacheRequest.from_messages(
        ...     [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What is 2+2?"}],
        ...     llm_string="gpt-4o-mini",
        ... )
        >>> b = CacheRequest.from_messages(
        ...     [{"role": "system", "content": "You are verbose."}, {"role": "user", "content": "What is 2+2?"}],
        ...     llm_string="gpt-4o-mini",
        ... )
        >>> a.question, a.partition == b.partition
        ('What is 2+2?', False)
    """

    question: str
    """The raw text compared by the semantic tier: the question the :class:`~frugal_chains.QuestionKey` selected
    (the last user turn or the whole plain prompt, unless it is a filled template)."""
    context: str = ""
    """Canonical JSON of everything else that shapes the answer (hashed into the partition)."""
    llm_string: str = ""
    """The model and its parameters (LangChain's ``llm_string``); an exact key."""
    scope: CacheScope = field(default_factory=CacheScope)
    semantic: bool = True
    """False when there is no user question to compare (exact tier only)."""
    context_values: tuple[ContextValue, ...] = ()
    """The values of the prefix formatter's context block (date, request id, the user's name ...), taken out of
    the messages; an answer quoting one is served only to requests with the same value (not a partition key)."""
    partition: str = field(init=False)
    """SHA-256 of context, llm_string and scope."""
    normalized: str = field(init=False)
    """``normalize(question)``: what is hashed for the exact tier and embedded for the semantic tier (the raw
    question when ``semantic`` is False)."""
    exact_key: str = field(init=False)
    """SHA-256 of partition and normalised question."""

    @property
    def blank(self) -> bool:
        """True for a user question with no letter or digit (``""``, ``"?"``, ``"..."``) and nothing else (no
        image): such questions all share one key, so the cache neither serves nor stores them.

        Example:
            >>> from frugal_chains.cache import CacheRequest
            >>> CacheRequest.from_prompt("?").blank, CacheRequest.from_prompt("Why?").blank
            (True, False)
        """
        return self.semantic and not has_content(self.question)

    def __post_init__(self) -> None:
        if not isinstance(self.question, str):
            raise ConfigurationError(
                f"CacheRequest.question must be a str, got {type(self.question).__name__}", field="question"
            )
        if not isinstance(self.llm_string, str):
            raise ConfigurationError(
                f"CacheRequest.llm_string must be a str, got {type(self.llm_string).__name__}",
                field="llm_string",
            )
        partition = _sha(_canonical([self.context, self.llm_string, self.scope.key()]))
        # A request with no user question (a tool result, say) is matched byte for byte.
        normalized = normalize(self.question) if self.semantic else self.question
        object.__setattr__(self, "partition", partition)
        object.__setattr__(self, "normalized", normalized)
        object.__setattr__(self, "exact_key", _sha(partition + "\x00" + normalized))

    @classmethod
    def from_prompt(
        cls,
        prompt: str,
        *,
        llm_string: str = "",
        scope: CacheScope | None = None,
        question_key: QuestionKey | None = None,
    ) -> CacheRequest:
        """A plain-text prompt (LLMs, not chat models): the whole prompt is the question, unless it is a filled
        RAG template (``question_key``, default :class:`~frugal_chains.QuestionKey` ()): then the template's
        question is, and the template and its passages are exact keys.

        Example:
            >>> from frugal_chains.cache import CacheRequest
            >>> CacheRequest.from_prompt("  How do I return an ITEM? ").normalized
            'how do i return an item'
        """
        if not isinstance(prompt, str):
            raise ConfigurationError(f"the prompt must be a str, got {type(prompt).__name__}", field="prompt")
        key = as_question_key(question_key)
        prompt, values = request_context.split_prompt(prompt)
        sel = key.selection([{"role": "user", "content": prompt}])
        rag = _rag_part(sel)
        question = prompt if rag is None else sel.selected.question
        parts: dict[str, Any] = {} if rag is None else {"rag": rag}
        if values:  # only then: prompts without a context block are keyed as they always were
            needs = request_context.depends_on([question])
            parts["request_context"] = request_context.context_partition(values, needs)
        return cls(
            question=question,
            context=_canonical(parts) if parts else "",
            llm_string=llm_string,
            scope=scope or current_cache_scope(),
            context_values=values,
        )

    @classmethod
    def from_messages(
        cls,
        messages: Sequence[Mapping[str, Any]],
        *,
        llm_string: str = "",
        tools: Sequence[Any] | None = None,
        scope: CacheScope | None = None,
        question_key: QuestionKey | None = None,
    ) -> CacheRequest:
        """A chat conversation in OpenAI format. The last message, if it is a user turn, holds the question;
        every other message (system prompt and earlier turns, exactly), the tools and any non-text part of the
        question go into the partition.

        A context block written by the prefix formatter (:mod:`frugal_chains.cache.request_context`) is taken out
        first: its labels are part of the partition, its values only when the question (or an earlier user turn)
        is time- or user-specific.

        ``question_key`` (default :class:`~frugal_chains.QuestionKey` ()) selects the question: in a filled RAG
        template it is the template's question variable, and the template and a hash of the passages go into the
        partition instead (a system prompt holding passages: its instructions and the passages' hash). So the same
        question over the same passages hits, a paraphrase over the same passages is compared by its question
        alone, and other passages are another partition.

        Example:
            >>> from frugal_chains.cache import CacheRequest
            >>> def rag(q, passages):
            ...     return [{"role": "system", "content": "Use the following pieces of retrieved context to answer."
            ...              "\\n\\n" + passages}, {"role": "user", "content": q}]
            >>> a = CacheRequest.from_messages(rag("Do you ship to Canada?", "We ship worldwide."))
            >>> b = CacheRequest.from_messages(rag("Do you ship to Canada?", "We ship  worldwide.\\n"))
            >>> c = CacheRequest.from_messages(rag("Do you ship to Canada?", "EU only."))
            >>> a.partition == b.partition, a.partition == c.partition
            (True, False)

        Args:
            messages: ``[{"role": ..., "content": ...}, ...]`` (``langchain_core.messages.convert_to_openai_messages``
                gives these).
            llm_string: the model and its parameters.
            tools: tool schemas offered to the model, when they are not already in ``llm_string``.
            scope: defaults to :func:`~frugal_chains.cache.current_cache_scope`.
            question_key: selects the question (default: the last user turn, known RAG templates recognised).
        """
        key = as_question_key(question_key)
        if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
            raise ConfigurationError(
                "messages must be a list of OpenAI-format message dicts; use CacheRequest.from_prompt for text",
                field="messages",
            )
        if not messages:
            raise ConfigurationError("messages is empty: there is nothing to look up", field="messages")
        msgs: list[Mapping[str, Any]] = []
        for i, m in enumerate(messages):
            if not isinstance(m, Mapping) or "role" not in m:
                raise ConfigurationError(
                    f"messages[{i}] must be a dict with a 'role' (OpenAI format), got {type(m).__name__}",
                    field="messages",
                )
            msgs.append(m)
        cleaned, values = request_context.split_messages(msgs)
        msgs = list(cleaned)
        last = msgs[-1]
        earlier = [dict(m) for m in msgs[:-1]]
        rag: dict[str, str] | None = None
        if last.get("role") == "user" and set(last) <= {"role", "content", "name"}:
            text, others = _split_content(last.get("content"))
            last_rest: dict[str, Any] = {"name": last.get("name"), "parts": others}
            sel = key.selection(msgs)
            rag = _rag_part(sel)
            if rag is not None:
                text = sel.selected.question
                for i, skeleton in sel.consumed.items():  # passages in a system prompt: hashed in rag
                    earlier[i] = {**earlier[i], "content": skeleton}
            # a text question is compared by meaning; an empty text with an image (say) is matched exactly
            question, semantic = text, bool(text.strip()) or not others
        else:
            question, semantic = _canonical(dict(last)), False
            last_rest = {}
        parts: dict[str, Any] = {"earlier": earlier, "last": last_rest, "tools": list(tools or [])}
        if rag is not None:
            parts["rag"] = rag  # only then: the partitions of bare questions are as they always were
        if values:  # likewise: requests without a context block are keyed as they always were
            asked = [question] + [_split_content(m.get("content"))[0] for m in earlier if _is_user(m)]
            # a request with no question to compare (a tool result) keeps every value in its partition
            needs = request_context.depends_on(asked) if semantic else None
            parts["request_context"] = request_context.context_partition(values, needs)
        context = _canonical(parts)
        return cls(
            question=question,
            context=context,
            llm_string=llm_string,
            scope=scope or current_cache_scope(),
            semantic=semantic,
            context_values=values,
        )

    @classmethod
    def from_inputs(
        cls,
        inputs: str | Mapping[str, Any],
        *,
        question: str | Callable[[Mapping[str, Any]], str] = "question",
        exact: Sequence[str] | None = None,
        version: str = "",
        name: str = "",
        scope: CacheScope | None = None,
    ) -> CacheRequest:
        """The inputs of a whole chain or query engine, looked up **before** it runs (before retrieval).

        The question is compared by meaning; the other inputs (canonical JSON), ``version`` (the knowledge base
        the answers came from) and ``name`` (which chain) are exact. Retrieved context is never part of the key:
        it does not exist yet, so a paraphrase whose retrieval would differ still hits.

        Args:
            inputs: the chain's input: a mapping, or a plain string (then the string is the question).
            question: the input key holding the question, or a function ``inputs -> str``.
            exact: the input keys that must match exactly; ``None``: every input but the question. Keys left out
                do not affect the answer (a request id, a trace flag).
            version: a tag of the knowledge base (``"kb-2026-05-01"``): change it when the index is rebuilt and
                no answer from the old one is served again.
            name: which chain or engine, when several share one cache.
            scope: defaults to :func:`~frugal_chains.cache.current_cache_scope`.

        Example:
            >>> from frugal_chains.cache import CacheRequest
            >>> a = CacheRequest.from_inputs({"question": "Do you ship to Canada?", "lang": "en"}, version="kb-1")
            >>> b = CacheRequest.from_inputs({"question": "Do you ship to Canada?", "lang": "fr"}, version="kb-1")
            >>> c = CacheRequest.from_inputs({"question": "Do you ship to Canada?", "lang": "en"}, version="kb-2")
            >>> a.question, a.partition == b.partition, a.partition == c.partition
            ('Do you ship to Canada?', False, False)
            >>> CacheRequest.from_inputs("Do you ship to Canada?").question
            'Do you ship to Canada?'
        """
        if not isinstance(version, str):
            raise ConfigurationError(
                f"version must be a str (a tag of the knowledge base), got {type(version).__name__}",
                field="version",
            )
        if not isinstance(name, str):
            raise ConfigurationError(f"name must be a str, got {type(name).__name__}", field="name")
        if exact is not None and (
            isinstance(exact, (str, bytes))
            or not isinstance(exact, Sequence)
            or not all(isinstance(k, str) for k in exact)
        ):
            raise ConfigurationError(
                f"exact must be a list of input keys or None (every input but the question), got {exact!r}",
                field="exact",
            )
        if not (isinstance(question, str) or callable(question)):
            raise ConfigurationError(
                "question must be the input key holding the question, or a function inputs -> str",
                field="question",
            )
        if isinstance(inputs, str):
            text, rest = inputs, {}
        elif isinstance(inputs, Mapping):
            if isinstance(question, str):
                if question not in inputs:
                    raise ConfigurationError(
                        f"the chain's input has no {question!r} key (it has {sorted(map(str, inputs))}): pass "
                        "question= the key that holds the question, or a function inputs -> str",
                        field="question",
                    )
                text = inputs[question]
                rest = {k: v for k, v in inputs.items() if k != question}
            else:
                text = question(inputs)
                rest = dict(inputs)
            if exact is not None:
                rest = {k: inputs.get(k) for k in exact}
        else:
            raise ConfigurationError(
                f"the chain's input must be a dict or a str to be cached, got {type(inputs).__name__}",
                field="inputs",
            )
        if not isinstance(text, str):
            raise ConfigurationError(
                f"the question must be a str, got {type(text).__name__}: pass question= the key that holds it, "
                "or a function inputs -> str",
                field="question",
            )
        context = _canonical(
            {"chain": name, "inputs": {str(k): v for k, v in rest.items()}, "version": version}
        )
        return cls(question=text, context=context, scope=scope or current_cache_scope())


def _is_user(message: Mapping[str, Any]) -> bool:
    return message.get("role") in ("user", "human")


def _rag_part(sel: Selection) -> dict[str, str] | None:
    """The template and passages' hash a selection adds to the partition; None for a bare question (its request
    is the one it always was)."""
    s = sel.selected
    if s.source == "last_user_turn" and not s.template and not s.context_key:
        return None
    return {"source": s.source, "template": s.template, "context_key": s.context_key}
