"""A :class:`~frugal_chains.QuestionKey` from a LangChain prompt template: the cache compares (and the router
scores) the template's question variable, and every other variable (the retrieved context) is an exact key."""

from __future__ import annotations

from typing import Any

from langchain_core.messages import BaseMessage
from langchain_core.prompts import BasePromptTemplate, ChatPromptTemplate, MessagesPlaceholder, PromptTemplate

from frugal_chains.errors import ConfigurationError
from frugal_chains.shared.question import QuestionKey

__all__ = ["question_key_from"]


def _texts(prompt: Any) -> list[str]:
    if isinstance(prompt, PromptTemplate):
        if prompt.template_format != "f-string":
            raise ConfigurationError(
                f"question_key_from reads f-string templates ({{name}} variables), got a "
                f"{prompt.template_format!r} template: pass QuestionKey(fn=...) instead",
                field="prompt",
            )
        return [prompt.template]
    if isinstance(prompt, ChatPromptTemplate):
        out: list[str] = []
        for m in prompt.messages:
            if isinstance(m, (BaseMessage, MessagesPlaceholder)):
                continue  # a fixed message is matched exactly anyway; history is earlier turns
            inner = getattr(m, "prompt", None)
            if isinstance(inner, PromptTemplate):
                out.extend(_texts(inner))
            elif isinstance(inner, list):
                for part in inner:
                    if isinstance(part, PromptTemplate):
                        out.extend(_texts(part))
            else:
                raise ConfigurationError(
                    f"question_key_from cannot read the message template {type(m).__name__}: pass "
                    "QuestionKey(template=[...]) with its text",
                    field="prompt",
                )
        return out
    raise ConfigurationError(
        f"prompt must be a LangChain PromptTemplate or ChatPromptTemplate, got {type(prompt).__name__}",
        field="prompt",
    )


def question_key_from(
    prompt: BasePromptTemplate[Any], *, variable: str = "question", known_templates: bool = True
) -> QuestionKey:
    """A :class:`~frugal_chains.QuestionKey` for requests filled from ``prompt`` (a ``PromptTemplate`` or a
    ``ChatPromptTemplate`` of f-string templates): ``variable`` is the question; the other variables hash into
    the context key. Give it to ``with_cache(..., question_key=)``, ``SemanticCache(question_key=)`` or
    ``CascadeChatModel(question_key=)``.

    Raises:
        ConfigurationError: not a LangChain prompt template, a mustache / jinja2 template (``field="prompt"``), or
            no message has ``{variable}`` (``field="template"``).

    Example:
        >>> from langchain_core.prompts import ChatPromptTemplate
        >>> from frugal_chains.langchain import question_key_from
        >>> prompt = ChatPromptTemplate.from_messages(
        ...     [("system", "Answer from these notes:\\n{notes}"), ("human", "Customer asks: {ask}")])
        >>> key = question_key_from(prompt, variable="ask")
        >>> from langchain_core.messages import convert_to_openai_messages
        >>> filled = convert_to_openai_messages(prompt.format_messages(notes="Ships in 5 days.", ask="When?"))
        >>> key.select(filled).question
        'When?'
    """
    return QuestionKey(template=_texts(prompt), variable=variable, known_templates=known_templates)
