"""What the user asked: one question selector shared by the cache and the router.

Inside a RAG app the request a model sees is a prompt template filled with retrieved passages. The cache must
compare the **question** by meaning and the **passages** exactly; the router must score the question, not the
template's boilerplate. :class:`QuestionKey` takes OpenAI-format messages and returns a :class:`SelectedQuestion`:
the question, a stable hash of the context around it and the template it came from.

Framework-free: the recognised templates are copied here as text (the tests check them against the installed
LlamaIndex and LangChain packages).
"""

from __future__ import annotations

import hashlib
import json
import re
import string
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from frugal_chains.errors import ConfigurationError

__all__ = ["KNOWN_TEMPLATES", "QuestionKey", "QuestionKeyStats", "SelectedQuestion", "passages_key"]

Source = Literal["last_user_turn", "template", "callable"]

_WS = re.compile(r"\s+")
_RULE = "---------------------"

KNOWN_TEMPLATES: Mapping[str, tuple[str, str]] = {
    # LlamaIndex (llama_index.core.prompts): DEFAULT_TEXT_QA_PROMPT_TMPL, also the user message of CHAT_TEXT_QA_PROMPT
    "llama_index.text_qa": (
        "Context information is below.\n"
        f"{_RULE}\n"
        "{context_str}\n"
        f"{_RULE}\n"
        "Given the context information and not prior knowledge, answer the query.\n"
        "Query: {query_str}\n"
        "Answer: ",
        "query_str",
    ),
    # DEFAULT_TREE_SUMMARIZE_TMPL (and CHAT_TREE_SUMMARIZE_PROMPT's user message)
    "llama_index.tree_summarize": (
        "Context information from multiple sources is below.\n"
        f"{_RULE}\n"
        "{context_str}\n"
        f"{_RULE}\n"
        "Given the information from multiple sources and not prior knowledge, answer the query.\n"
        "Query: {query_str}\n"
        "Answer: ",
        "query_str",
    ),
    # DEFAULT_REFINE_PROMPT_TMPL
    "llama_index.refine": (
        "The original query is as follows: {query_str}\n"
        "We have provided an existing answer: {existing_answer}\n"
        "We have the opportunity to refine the existing answer (only if needed) with some more context below.\n"
        "------------\n"
        "{context_msg}\n"
        "------------\n"
        "Given the new context, refine the original answer to better answer the query. "
        "If the context isn't useful, return the original answer.\n"
        "Refined Answer: ",
        "query_str",
    ),
    # CHAT_REFINE_PROMPT's user message
    "llama_index.chat_refine": (
        "You are an expert Q&A system that strictly operates in two modes when refining existing answers:\n"
        "1. **Rewrite** an original answer using the new context.\n"
        "2. **Repeat** the original answer if the new context isn't useful.\n"
        "Never reference the original answer or context directly in your answer.\n"
        "When in doubt, just repeat the original answer.\n"
        "New Context: {context_msg}\n"
        "Query: {query_str}\n"
        "Original Answer: {existing_answer}\n"
        "New Answer: ",
        "query_str",
    ),
    # CHAT_CONTENT_REFINE_PROMPT's user message, rendered
    "llama_index.content_refine": (
        "New Context:\n"
        f"{_RULE}\n"
        "{context_msg}\n"
        f"{_RULE}\n"
        "Query: {query_str}\n"
        "Original Answer: {existing_answer}\n"
        "New Answer:",
        "query_str",
    ),
    # LangChain hub "rlm/rag-prompt" (a human message)
    "langchain.rag_prompt": (
        "You are an assistant for question-answering tasks. Use the following pieces of retrieved context to "
        "answer the question. If you don't know the answer, just say that you don't know. Use three sentences "
        "maximum and keep the answer concise.\n"
        "Question: {question} \n"
        "Context: {context} \n"
        "Answer:",
        "question",
    ),
    # LangChain's classic "stuff" question-answering prompt
    "langchain.stuff_qa": (
        "Use the following pieces of context to answer the question at the end. If you don't know the answer, "
        "just say that you don't know, don't try to make up an answer.\n\n"
        "{context}\n\n"
        "Question: {question}\n"
        "Helpful Answer:",
        "question",
    ),
}
"""The RAG templates recognised by default: ``name -> (template text, question variable)``. The other variables
of each are its context."""

# LangChain's usual RAG layout: instructions and the retrieved context in the system prompt, the question in the
# user turn. The instructions (up to the first blank line or rule after the phrase) stay exact; the rest is context.
# Found by two searches (the phrase, then the first blank line or rule after it), each linear in the text.
_SYSTEM_PHRASE = re.compile(r"\buse the following (?:pieces of )?(?:retrieved )?context\b", re.IGNORECASE)
_SYSTEM_SEPARATOR = re.compile(r"\n[ \t]*\n|\n-{3,}[ \t]*\n")


def _system_context(text: str) -> tuple[str, str] | None:
    """``(instructions, passages)`` of a system prompt in the RAG layout above; None when it is not one."""
    phrase = _SYSTEM_PHRASE.search(text)
    if phrase is None:
        return None
    rule = _SYSTEM_SEPARATOR.search(text, phrase.end())
    if rule is None or not text[rule.end() :].strip():
        return None
    return text[: rule.start()], text[rule.end() :]


_SYSTEM_NAME = "system_context"


def _norm(text: str) -> str:
    return _WS.sub(" ", text).strip()


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def passages_key(passages: Sequence[str]) -> str:
    """A stable hash of retrieved passages (their texts, or their ids): whitespace is normalised, order kept.

    Use it in a ``QuestionKey(fn=...)`` that knows the passages' ids.

    Example:
        >>> from frugal_chains.shared.question import passages_key
        >>> a = passages_key(["Ships to Canada.", "Takes 5 days."])
        >>> a == passages_key(["Ships  to Canada.\\n", "Takes 5 days."]), a == passages_key(["Takes 5 days."])
        (True, False)
        >>> passages_key([])
        ''
    """
    if isinstance(passages, str) or not isinstance(passages, Sequence):
        raise ConfigurationError("passages must be a list of texts or ids", field="passages")
    if not passages:
        return ""
    return _sha(json.dumps([_norm(str(p)) for p in passages], ensure_ascii=False))


def _context_key(values: Mapping[str, str]) -> str:
    """Hash of the context variables' values (whitespace-normalised); '' when there is none."""
    kept = {k: _norm(v) for k, v in sorted(values.items())}
    if not any(kept.values()):
        return ""
    return _sha(json.dumps(kept, ensure_ascii=False, sort_keys=True))


def split_content(content: Any) -> tuple[str, list[Any]]:
    """The text of a message's content and its non-text parts (images, audio, files)."""
    if content is None:
        return "", []
    if isinstance(content, str):
        return content, []
    if isinstance(content, Sequence):
        texts: list[str] = []
        others: list[Any] = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif (
                isinstance(part, Mapping) and part.get("type") == "text" and isinstance(part.get("text"), str)
            ):
                texts.append(part["text"])
            else:
                others.append(part)
        return "\n".join(texts), others
    return str(content), []


def _content_text(content: Any) -> str:
    return split_content(content)[0]


def _turn_text(content: Any) -> str:
    """A user turn's text without the request context block the prefix formatter puts in front of it (the
    moved dates, ids and names are not part of what the user asked)."""
    text = _content_text(content)
    from frugal_chains.prefix.context import CONTEXT_HEADER, split_context_block

    if text.startswith(CONTEXT_HEADER):
        text = split_context_block(text)[0].lstrip("\n")
    return text


@dataclass(frozen=True)
class _Template:
    """One f-string template compiled into a regular expression that inverts it."""

    name: str
    text: str
    variable: str | None
    pattern: re.Pattern[str]
    variables: tuple[str, ...]

    @classmethod
    def compile(cls, name: str, text: str, variable: str | None, field: str) -> _Template:
        try:
            parsed = list(string.Formatter().parse(text))
        except ValueError as e:
            raise ConfigurationError(
                f"{field}: {text[:60]!r} is not an f-string template ({e})", field=field
            ) from e
        # Every run of whitespace around a literal or a variable is matched atomically (a lookahead captures it,
        # a backreference consumes it: no backtracking into it) and a variable's value starts and ends on a
        # non-space, so a text that does not match fails in linear time instead of trying every split of its
        # whitespace runs. Values are stripped, as they were.
        regex: list[str] = []

        def space() -> None:
            group = f"_fc_ws{len(regex)}"
            regex.append(f"(?=(?P<{group}>\\s*))(?P={group})")

        space()
        seen: list[str] = []
        for literal, name_, _spec, _conv in parsed:
            core = literal.strip() if literal else ""
            if core:
                regex.append(r"\s+".join(re.escape(w) for w in core.split()))
                space()
            if name_ is None:
                continue
            if not name_.isidentifier():
                raise ConfigurationError(
                    f"{field}: template variable {{{name_}}} is not a plain name; use {{name}} variables",
                    field=field,
                )
            if name_ in seen:
                regex.append(f"(?P={name_})")
            else:
                seen.append(name_)
                regex.append(f"(?P<{name_}>(?:.*?\\S)??)")
            space()
        if variable is not None and variable not in seen:
            raise ConfigurationError(
                f"{field}: the template has no {{{variable}}} variable (its variables: {seen}); pass "
                f"variable= the name that holds the question",
                field=field,
            )
        return cls(name, text, variable, re.compile("".join(regex), re.DOTALL), tuple(seen))

    def match(self, text: str) -> dict[str, str] | None:
        m = self.pattern.fullmatch(text)
        return None if m is None else {k: m.group(k) for k in self.variables}


_BUILTIN: tuple[_Template, ...] = tuple(
    _Template.compile(name, text, var, "template") for name, (text, var) in KNOWN_TEMPLATES.items()
)


@dataclass(frozen=True, kw_only=True)
class SelectedQuestion:
    """What the user asked, and the context around it.

    Example:
        >>> from frugal_chains.shared.question import SelectedQuestion
        >>> SelectedQuestion(question="Do you ship to Canada?").source
        'last_user_turn'
    """

    question: str
    """The text compared by the cache's semantic tier and scored by the router."""
    context_key: str = ""
    """A stable hash of the retrieved context (whitespace-normalised); ``""`` when there is none."""
    template: str = ""
    """The template the question came from (its text with ``{variables}``), exact; ``""`` for a bare question."""
    context_chars: int = 0
    """Characters of retrieved context."""
    source: Source = "last_user_turn"
    """Where the question came from: the last user turn, a template variable or your callable."""

    def __post_init__(self) -> None:
        for name in ("question", "context_key", "template"):
            if not isinstance(getattr(self, name), str):
                raise ConfigurationError(
                    f"SelectedQuestion.{name} must be a str, got {type(getattr(self, name)).__name__}",
                    field=name,
                )


@dataclass(frozen=True)
class QuestionKeyStats:
    """How a :class:`QuestionKey` selected its questions since it was built.

    Example:
        >>> from frugal_chains.shared.question import QuestionKeyStats
        >>> QuestionKeyStats(selected=2, templated=1, fallbacks=0).templated
        1
    """

    selected: int
    """Questions selected."""
    templated: int
    """Questions taken from a template variable."""
    fallbacks: int
    """Requests that matched none of your templates (``template=``): their last user turn was used."""


@dataclass(frozen=True)
class Selection:
    """A :class:`SelectedQuestion` with where it sits in the conversation (for the cache and the router).

    Example:
        >>> from frugal_chains.shared.question import QuestionKey
        >>> sel = QuestionKey().selection([{"role": "system", "content": "Be brief."},
        ...                                {"role": "user", "content": "Hi?"}])
        >>> sel.question_index, dict(sel.consumed), sel.selected.question
        (1, {}, 'Hi?')
    """

    selected: SelectedQuestion
    question_index: int | None
    """Index of the message the question was read from (None: no user turn)."""
    consumed: Mapping[int, str]
    """Messages whose context moved to ``context_key``: index -> the template skeleton that replaces them."""


class QuestionKey:
    """Selects what the user asked from a conversation, for the cache (the semantic key) and the router (what is
    scored). Three modes:

    * default, ``QuestionKey()``: the last user turn; but when a message is one of the known RAG templates
      (:data:`KNOWN_TEMPLATES`: LlamaIndex's text-QA, tree-summarize and refine prompts, LangChain's
      ``rlm/rag-prompt`` and "stuff" prompt) the question is the template's question variable and the retrieved
      passages go to ``context_key``; a system prompt of the form "Use the following pieces of retrieved context
      ... <blank line> passages" keeps its instructions exact and hashes the passages into ``context_key``.
    * ``QuestionKey(template=..., variable="question")``: your own template(s), ``{name}`` style text or a list of
      message templates (:func:`frugal_chains.langchain.question_key_from` and
      :func:`frugal_chains.llama_index.question_key_from` translate prompt template objects). The filled message
      is inverted against the template; ``variable`` is the question, the other variables hash into
      ``context_key``. A request that matches none of them falls back to the last user turn (counted in
      :attr:`stats` ``.fallbacks``); the known templates are tried after yours unless ``known_templates=False``.
    * ``QuestionKey(fn=callable)``: ``fn(messages) -> str | SelectedQuestion``, like GPTCache's
      ``pre_embedding_func``.

    A bare question (no template) is selected as itself, so keys and scores of bare questions do not change.
    Thread-safe (immutable but for its counters).

    Example:
        >>> from frugal_chains import QuestionKey
        >>> key = QuestionKey()
        >>> filled = ("Context information is below.\\n---------------------\\nWe ship to Canada in 5 days.\\n"
        ...           "---------------------\\nGiven the context information and not prior knowledge, answer the "
        ...           "query.\\nQuery: Do you ship to Canada?\\nAnswer: ")
        >>> s = key.select([{"role": "user", "content": filled}])
        >>> s.question, s.source, len(s.context_key)
        ('Do you ship to Canada?', 'template', 64)
        >>> mine = QuestionKey(template="Docs: {docs}\\nQ: {q}", variable="q")
        >>> mine.select([{"role": "user", "content": "Docs: a, b\\nQ: Is it free?"}]).question
        'Is it free?'
        >>> QuestionKey(fn=lambda messages: messages[-1]["content"].upper()).select("hi").question
        'HI'
    """

    def __init__(
        self,
        *,
        template: str | Sequence[str] | None = None,
        variable: str = "question",
        fn: Callable[[Sequence[Mapping[str, Any]]], str | SelectedQuestion] | None = None,
        known_templates: bool = True,
    ) -> None:
        if not isinstance(known_templates, bool):
            raise ConfigurationError(
                f"known_templates must be True or False, got {known_templates!r}", field="known_templates"
            )
        if fn is not None and not callable(fn):
            raise ConfigurationError(
                f"fn must be a function messages -> str (the question), got {type(fn).__name__}", field="fn"
            )
        if fn is not None and template is not None:
            raise ConfigurationError("pass template= or fn=, not both", field="fn")
        if not isinstance(variable, str) or not variable.isidentifier():
            raise ConfigurationError(
                f"variable must be the name of the template variable holding the question, got {variable!r}",
                field="variable",
            )
        mine: list[_Template] = []
        if template is not None:
            texts = [template] if isinstance(template, str) else template
            if not isinstance(texts, Sequence) or not texts or not all(isinstance(t, str) for t in texts):
                raise ConfigurationError(
                    "template must be a template string ('... {question} ...') or a non-empty list of them",
                    field="template",
                )
            compiled = [_Template.compile(f"template[{i}]", t, None, "template") for i, t in enumerate(texts)]
            if not any(variable in t.variables for t in compiled):
                raise ConfigurationError(
                    f"template: no template has a {{{variable}}} variable (their variables: "
                    f"{sorted({v for t in compiled for v in t.variables})}); pass variable= the one holding "
                    f"the question",
                    field="template",
                )
            for t in compiled:
                mine.append(
                    _Template(
                        t.name, t.text, variable if variable in t.variables else None, t.pattern, t.variables
                    )
                )
        self._fn = fn
        self._variable = variable
        self._mine = tuple(mine)
        self._known = known_templates
        self._lock = threading.Lock()
        self._selected = 0
        self._templated = 0
        self._fallbacks = 0

    @property
    def mode(self) -> Literal["default", "template", "callable"]:
        return "callable" if self._fn is not None else "template" if self._mine else "default"

    def __repr__(self) -> str:
        if self._fn is not None:
            return f"QuestionKey(fn={getattr(self._fn, '__name__', self._fn)!r})"
        if self._mine:
            return f"QuestionKey(template={[t.text for t in self._mine]!r}, variable={self._variable!r})"
        return "QuestionKey()" if self._known else "QuestionKey(known_templates=False)"

    @property
    def stats(self) -> QuestionKeyStats:
        """Counts of selected, templated and fallen-back requests."""
        with self._lock:
            return QuestionKeyStats(self._selected, self._templated, self._fallbacks)

    def _count(self, templated: bool, fallback: bool) -> None:
        with self._lock:
            self._selected += 1
            self._templated += templated
            self._fallbacks += fallback

    # -- selection -------------------------------------------------------------------------------------------
    def select(self, messages: str | Sequence[Mapping[str, Any]]) -> SelectedQuestion:
        """The question of ``messages`` (OpenAI-format dicts; a string is one user turn)."""
        return self.selection(messages).selected

    def selection(self, messages: str | Sequence[Mapping[str, Any]]) -> Selection:
        """:meth:`select` with where the question sits (what the cache and the scorers use)."""
        msgs = _as_messages(messages)
        last_user = next(
            (i for i in range(len(msgs) - 1, -1, -1) if msgs[i].get("role") in ("user", "human")), None
        )
        if self._fn is not None:
            return self._by_fn(msgs, last_user)
        templates = self._mine + (_BUILTIN if self._known else ())
        values: dict[str, str] = {}
        skeletons: list[str] = []
        consumed: dict[int, str] = {}
        question: str | None = None
        if last_user is not None:
            text = _turn_text(msgs[last_user].get("content"))
            for t in templates:
                if t.variable is None:
                    continue
                found = t.match(text)
                if found is not None:
                    question = found.pop(t.variable).strip()
                    values.update({f"{len(skeletons)}.{k}": v for k, v in found.items()})
                    skeletons.append(t.text)
                    break
        for i, m in enumerate(msgs):
            if m.get("role") not in ("system", "developer"):
                continue
            text = _content_text(m.get("content"))
            hit = self._system_match(text)
            if hit is not None:
                skeleton, found = hit
                values.update({f"{len(skeletons)}.{k}": v for k, v in found.items()})
                skeletons.append(skeleton)
                consumed[i] = skeleton
        fallback = bool(self._mine) and question is None
        self._count(question is not None, fallback)
        if question is None:
            question = "" if last_user is None else _turn_text(msgs[last_user].get("content"))
            source: Source = "last_user_turn"
        else:
            source = "template"
        selected = SelectedQuestion(
            question=question,
            context_key=_context_key(values),
            template="\x00".join(skeletons),
            context_chars=sum(len(v) for v in values.values()),
            source=source,
        )
        return Selection(selected, last_user, consumed)

    def _system_match(self, text: str) -> tuple[str, dict[str, str]] | None:
        for t in self._mine:
            if t.variable is None:
                found = t.match(text)
                if found is not None:
                    return t.text, found
        if self._known:
            layout = _system_context(text)
            if layout is not None:
                head, context = layout
                return head.strip() + "\n\n{context}", {"context": context}
        return None

    def _by_fn(self, msgs: Sequence[Mapping[str, Any]], last_user: int | None) -> Selection:
        assert self._fn is not None
        out = self._fn(msgs)
        if isinstance(out, str):
            selected = SelectedQuestion(question=out, source="callable")
        elif isinstance(out, SelectedQuestion):
            selected = out
        else:
            raise ConfigurationError(
                f"fn must return the question (a str) or a SelectedQuestion, got {type(out).__name__}",
                field="fn",
            )
        self._count(False, False)
        return Selection(selected, last_user, {})

    def view(self, messages: str | Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """``messages`` as a scorer should see them: the question's message holds the question only, and a system
        prompt whose passages were recognised holds its instructions only.

        Example:
            >>> from frugal_chains import QuestionKey
            >>> QuestionKey().view([{"role": "system", "content": "Use the following pieces of retrieved context "
            ...     "to answer.\\n\\nShipping takes 5 days."}, {"role": "user", "content": "Shipping time?"}])[0]
            {'role': 'system', 'content': 'Use the following pieces of retrieved context to answer.\\n\\n{context}'}
        """
        msgs = _as_messages(messages)
        sel = self.selection(msgs)
        out = [dict(m) for m in msgs]
        for i, skeleton in sel.consumed.items():
            out[i]["content"] = skeleton
        if sel.question_index is not None:
            out[sel.question_index]["content"] = sel.selected.question
        return out


def _as_messages(messages: Any) -> Sequence[Mapping[str, Any]]:
    if isinstance(messages, str):
        return ({"role": "user", "content": messages},)
    if isinstance(messages, Sequence) and not isinstance(messages, bytes):
        for m in messages:
            if not isinstance(m, Mapping):
                raise ConfigurationError(
                    "messages must be a string or a list of OpenAI-format message dicts, got an item of type "
                    f"{type(m).__name__}",
                    field="messages",
                )
        return messages
    raise ConfigurationError(
        f"messages must be a string or a list of OpenAI-format message dicts, got {type(messages).__name__}",
        field="messages",
    )


DEFAULT_QUESTION_KEY = QuestionKey()
"""The process-wide default key (known templates, last user turn otherwise)."""


def as_question_key(value: Any, field: str = "question_key") -> QuestionKey:
    """``value`` as a :class:`QuestionKey` (None: the default); ConfigurationError naming ``field``."""
    if value is None:
        return DEFAULT_QUESTION_KEY
    if isinstance(value, QuestionKey):
        return value
    if callable(value):
        return QuestionKey(fn=value)
    raise ConfigurationError(
        f"{field} must be a QuestionKey (or a function messages -> question), got {type(value).__name__}",
        field=field,
    )
