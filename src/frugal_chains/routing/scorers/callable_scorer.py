"""The callable scorer: your function ``messages -> float in [0, 1]``, sync or async."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from frugal_chains.errors import ConfigurationError
from frugal_chains.routing.scorers.inputs import Conversation, as_messages
from frugal_chains.routing.types import Message
from frugal_chains.shared.bridge import callable_name, is_async_callable, loop_running
from frugal_chains.shared.question import QuestionKey, as_question_key

__all__ = ["CallableScorer"]


class CallableScorer:
    """Your own scorer: a function ``messages -> float in [0, 1]``, sync or ``async def``.

    :meth:`ascore` awaits an async function and calls a sync one directly. :meth:`score` calls a sync function;
    an async one is run to completion with ``asyncio.run`` when no event loop is running in this thread (e.g.
    ``model.invoke`` in a script), and raises :class:`~frugal_chains.errors.ConfigurationError` (use ``ascore`` /
    ``ainvoke``) when one is. A result that is not a number in [0, 1] (or is NaN) raises ``ConfigurationError``
    naming the scorer (``field="scorer"``); ``True``/``False`` count as 1/0.

    Args:
        fn: the function; it receives the OpenAI-format message list.
        name: shown in metadata and errors (default: the function's name).
        question_key: when given, ``fn`` receives :meth:`QuestionKey.view <frugal_chains.QuestionKey.view>` of the
            conversation (the question in place of a filled RAG template); default: the conversation as it is.

    Example:
        >>> from frugal_chains.routing import CallableScorer
        >>> scorer = CallableScorer(lambda msgs: 0.9 if "proof" in msgs[-1]["content"] else 0.1, name="proofs")
        >>> scorer.score([{"role": "user", "content": "a proof please"}]), scorer.name
        (0.9, 'proofs')
        >>> async def remote(msgs):
        ...     return 0.3
        >>> import asyncio
        >>> asyncio.run(CallableScorer(remote).ascore([{"role": "user", "content": "hi"}]))
        0.3
    """

    def __init__(
        self,
        fn: Callable[[Sequence[Message]], float | Awaitable[float]],
        name: str | None = None,
        *,
        question_key: QuestionKey | None = None,
    ) -> None:
        if not callable(fn):
            raise ConfigurationError(
                f"fn must be a callable taking the messages and returning a score, got {type(fn).__name__}",
                field="fn",
            )
        if name is None:
            name = callable_name(fn)
        if not isinstance(name, str) or not name:
            raise ConfigurationError("name must be a non-empty string", field="name")
        self._fn = fn
        self._name = name
        self._async = is_async_callable(fn)
        self._question_key = None if question_key is None else as_question_key(question_key)

    @property
    def question_key(self) -> QuestionKey | None:
        """The key whose view of the conversation ``fn`` receives (None: the conversation as it is)."""
        return self._question_key

    def with_question_key(self, question_key: QuestionKey | None) -> CallableScorer:
        """The same function, receiving ``question_key``'s view of the conversation (the question in place of the
        filled template)."""
        return type(self)(self._fn, self._name, question_key=question_key)

    def _messages(self, messages: Conversation) -> Sequence[Message]:
        msgs = as_messages(messages, "messages")
        return msgs if self._question_key is None else self._question_key.view(msgs)

    @property
    def name(self) -> str:
        return self._name

    def __repr__(self) -> str:
        return f"CallableScorer({self._name!r})"

    def _check(self, value: Any) -> float:
        if isinstance(value, bool):
            return 1.0 if value else 0.0
        if isinstance(value, str) or not hasattr(value, "__float__"):
            raise ConfigurationError(
                f"scorer {self._name!r} returned {value!r} ({type(value).__name__}); a score must be a number in "
                "[0, 1]",
                field="scorer",
            )
        v = float(value)
        if not 0.0 <= v <= 1.0:  # also catches NaN
            raise ConfigurationError(
                f"scorer {self._name!r} returned {value!r}; a score must be a number in [0, 1]",
                field="scorer",
            )
        return v

    def score(self, messages: Conversation) -> float:
        """Call the function (see the class docstring for async functions)."""
        msgs = self._messages(messages)
        if self._async and loop_running():
            raise ConfigurationError(
                f"scorer {self._name!r} is async and an event loop is running: use ascore() (ainvoke/astream) "
                "instead of score()",
                field="scorer",
            )
        result: Any = self._fn(msgs)
        if inspect.isawaitable(result):
            if loop_running():
                if inspect.iscoroutine(result):
                    result.close()
                raise ConfigurationError(
                    f"scorer {self._name!r} returned an awaitable while an event loop is running: use ascore()",
                    field="scorer",
                )
            if not inspect.iscoroutine(result):
                raise ConfigurationError(
                    f"scorer {self._name!r} returned a non-coroutine awaitable: use ascore()", field="scorer"
                )
            result = asyncio.run(result)
        return self._check(result)

    async def ascore(self, messages: Conversation) -> float:
        """Await (or call) the function."""
        msgs = self._messages(messages)
        result: Any = self._fn(msgs)
        if inspect.isawaitable(result):
            result = await result
        return self._check(result)
