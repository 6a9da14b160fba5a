"""A :class:`~frugal_chains.QuestionKey` from a LlamaIndex prompt template: the cache compares (and the router
scores) the template's question variable (``query_str`` by default), and every other variable (the retrieved
context) is an exact key."""

from __future__ import annotations

from typing import Any

from llama_index.core.prompts import ChatPromptTemplate, PromptTemplate, SelectorPromptTemplate
from llama_index.core.prompts.base import BasePromptTemplate

from frugal_chains.errors import ConfigurationError
from frugal_chains.shared.question import QuestionKey

__all__ = ["question_key_from"]


def _texts(prompt: Any) -> list[str]:
    if isinstance(prompt, PromptTemplate):
        return [prompt.template]
    if isinstance(prompt, ChatPromptTemplate):
        return [
            m.content for m in prompt.message_templates if isinstance(m.content, str) and "{" in m.content
        ]
    if isinstance(prompt, SelectorPromptTemplate):
        out = _texts(prompt.default_template)
        for _cond, template in prompt.conditionals or []:
            out.extend(t for t in _texts(template) if t not in out)
        return out
    if isinstance(prompt, BasePromptTemplate):
        raise ConfigurationError(
            f"question_key_from reads PromptTemplate, ChatPromptTemplate and SelectorPromptTemplate ({{name}} "
            f"variables), got {type(prompt).__name__}: pass QuestionKey(fn=...) instead",
            field="prompt",
        )
    raise ConfigurationError(
        f"prompt must be a LlamaIndex prompt template, got {type(prompt).__name__}", field="prompt"
    )


def question_key_from(
    prompt: BasePromptTemplate, *, variable: str = "query_str", known_templates: bool = True
) -> QuestionKey:
    """A :class:`~frugal_chains.QuestionKey` for requests filled from ``prompt`` (a LlamaIndex
    ``PromptTemplate``, ``ChatPromptTemplate`` or ``SelectorPromptTemplate``): ``variable`` is the question; the
    other variables hash into the context key. Give it to ``CachedLLM(question_key=)``,
    ``CascadeLLM(question_key=)`` or ``configure(question_key=)``. (LlamaIndex's own text-QA and refine prompts
    are recognised without it.)

    Raises:
        ConfigurationError: not a LlamaIndex prompt template, a rich (jinja) template (``field="prompt"``), or no
            message has ``{variable}`` (``field="template"``).

    Example:
        >>> from llama_index.core import PromptTemplate
        >>> from frugal_chains.llama_index import question_key_from
        >>> qa = PromptTemplate("Notes:\\n{context_str}\\nCustomer asks: {query_str}\\nReply:")
        >>> key = question_key_from(qa)
        >>> key.select(qa.format(context_str="Ships in 5 days.", query_str="When will it ship?")).question
        'When will it ship?'
    """
    return QuestionKey(template=_texts(prompt), variable=variable, known_templates=known_templates)
