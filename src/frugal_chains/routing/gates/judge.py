"""The LLM judge gate: a judge model rates the answer, with MT-Bench's grading prompt by default."""

from __future__ import annotations

import asyncio
import inspect
import json
import re
from collections.abc import Mapping
from typing import Any

from frugal_chains.accounting.provider_usage import get_field, usage_from_provider
from frugal_chains.accounting.usage import Usage
from frugal_chains.errors import ConfigurationError
from frugal_chains.routing.gates.common import FullAnswerGate, check_fraction
from frugal_chains.routing.types import GateContext, GateResult, TierAnswer, content_text, user_turns
from frugal_chains.shared.bridge import is_async_callable, loop_running, resolve_sync

__all__ = ["DEFAULT_JUDGE_PROMPT", "LLMJudgeGate", "fill_prompt", "read_judge_reply"]

DEFAULT_JUDGE_PROMPT = (
    "[Instruction]\n"
    "Please act as an impartial judge and evaluate the quality of the response provided by an AI assistant to "
    "the user question displayed below. Your evaluation should consider factors such as the helpfulness, "
    "relevance, accuracy, depth, creativity, and level of detail of the response. Begin your evaluation by "
    "providing a short explanation. Be as objective as possible. After providing your explanation, you must rate "
    'the response on a scale of 1 to {max_score} by strictly following this format: "[[rating]]", for example: '
    '"Rating: [[5]]".\n\n'
    "[Question]\n{question}\n\n"
    "[The Start of Assistant's Answer]\n{answer}\n[The End of Assistant's Answer]"
)
"""The judge prompt: MT-Bench's single-answer grading prompt (FastChat ``single-v1``), with the scale as a
placeholder. Placeholders: ``{question}`` (the last user turn, preceded by the earlier turns in a multi-turn
conversation), ``{answer}``, ``{max_score}``."""

_RATING = re.compile(r"\[\[\s*(\d+(?:\.\d+)?)\s*\]\]")
_RATING_FALLBACK = re.compile(r"\brating\s*[:=]?\s*\**\s*(\d+(?:\.\d+)?)", re.IGNORECASE)


def _render_question(ctx: GateContext) -> str:
    turns = [m for m in ctx.messages if m.get("role") in ("user", "human", "assistant", "ai")]
    users = user_turns(ctx.messages)
    if len(users) <= 1:
        return ctx.question
    lines = []
    for m in turns:
        who = "User" if m.get("role") in ("user", "human") else "Assistant"
        lines.append(f"{who}: {content_text(m.get('content'))}")
    return "\n".join(lines)


def _answer_text(answer: TierAnswer) -> str:
    if answer.text.strip() or not answer.tool_calls:
        return answer.text
    return "(tool calls) " + json.dumps(
        [{"name": c.get("name"), "args": c.get("args")} for c in answer.tool_calls], default=str
    )


def read_judge_reply(
    reply: Any, *, completion: bool = False, model: str | None = None
) -> tuple[str, Usage | None, str | None]:
    """A judge's reply as ``(text, usage, model)``, duck-typed (no framework is imported): a string; a LangChain
    message (``.content``, ``usage_metadata``, ``response_metadata["model_name"]``); a LlamaIndex completion
    (``.text``, ``raw["usage"]``, ``raw["model"]``; ``completion=True`` when the judge is a LlamaIndex LLM).
    Usage that does not parse is ``None``; ``model`` is the fallback model name. Shared by :class:`LLMJudgeGate`
    and the cache's :class:`~frugal_chains.cache.guard.LLMJudgeVerifier`.

    Example:
        >>> from frugal_chains.routing.gates.judge import read_judge_reply
        >>> read_judge_reply("Rating: [[7]]", model="gpt-4o-mini")
        ('Rating: [[7]]', None, 'gpt-4o-mini')
    """
    if isinstance(reply, str):
        return reply, None, model
    usage: Usage | None = None
    found: str | None = None
    if completion or (not hasattr(reply, "content") and hasattr(reply, "text")):
        text = str(getattr(reply, "text", "") or "")
        raw = getattr(reply, "raw", None)
        try:
            usage = usage_from_provider(get_field(raw, "usage"))
        except Exception:
            usage = None
        m = get_field(raw, "model")
        found = m if isinstance(m, str) and m else None
    else:
        text = content_text(getattr(reply, "content", reply))
        try:
            usage = usage_from_provider(getattr(reply, "usage_metadata", None))
        except Exception:
            usage = None
        meta = getattr(reply, "response_metadata", None)
        if isinstance(meta, Mapping):
            m = meta.get("model_name") or meta.get("model")
            found = m if isinstance(m, str) and m else None
    return text, usage, found or model


def _judge_kind(judge: object) -> str:
    if callable(getattr(judge, "invoke", None)) or callable(getattr(judge, "ainvoke", None)):
        return "langchain"
    if callable(getattr(judge, "complete", None)) or callable(getattr(judge, "acomplete", None)):
        return "llama_index"
    if callable(judge):
        return "callable"
    return ""


def fill_prompt(template: str, values: Mapping[str, str]) -> str:
    """``template`` with each ``{name}`` of ``values`` replaced, in one pass: a value that itself holds ``{name}`` (a
    question about ``{answer}``, say) is sent as written.

    Example:
        >>> fill_prompt("Q: {question} A: {answer}", {"question": "What is {answer}?", "answer": "42"})
        'Q: What is {answer}? A: 42'
    """
    pattern = re.compile("|".join(re.escape("{" + k + "}") for k in values))
    return pattern.sub(lambda m: values[m.group(0)[1:-1]], template)


class LLMJudgeGate(FullAnswerGate):
    """Asks a judge model to rate the answer 1..``max_score``; passes when ``rating / max_score >= threshold``.

    The default prompt (:data:`DEFAULT_JUDGE_PROMPT`) is MT-Bench's single-answer grading prompt; the judge must
    write ``Rating: [[N]]``. A reply without a rating fails the gate with a reason. ``score`` = rating /
    ``max_score``. The judge's tokens go to ``GateResult.usage`` (and so into the attempt's cost, priced as
    ``GateResult.model``).

    ``judge`` is duck-typed (no framework is imported):

    * an object with ``invoke`` / ``ainvoke`` (a LangChain chat model or runnable): called with the prompt text
      and, when the adapter gives one, ``config=ctx.judge_config`` so the judge's call is a child run of the
      cascade; the reply's ``.content`` (or the string a chain returns), ``usage_metadata`` and
      ``response_metadata["model_name"]`` are used;
    * an object with ``complete`` / ``acomplete`` (a LlamaIndex LLM): the reply's ``.text``;
    * a function ``prompt -> str`` (sync or ``async def``).

    Under ``acheck`` the judge runs async (``ainvoke`` / ``acomplete`` / awaited); a sync-only judge runs in a
    worker thread. Under ``check`` an async function runs with ``asyncio.run`` when no event loop is running.

    Args:
        judge: the judge model or function.
        threshold: in (0, 1]; the default 0.7 passes ratings of 7/10 and up.
        prompt: a template with ``{question}`` and ``{answer}`` (and optionally ``{max_score}``) placeholders,
            filled by plain replacement (other braces are left alone).
        max_score: the top of the scale, an int >= 2 (default 10).

    Raises:
        ConfigurationError: a judge of none of these kinds, or a value out of range (names the field).

    Example:
        >>> from frugal_chains.routing import GateContext, LLMJudgeGate, TierAnswer
        >>> judge = lambda prompt: "Correct and clear. Rating: [[8]]" if "Paris" in prompt else "Rating: [[2]]"
        >>> def ctx(text):
        ...     return GateContext(messages=[{"role": "user", "content": "Capital of France?"}],
        ...                        answer=TierAnswer(text=text), tier="t", tier_index=0, n_tiers=2)
        >>> gate = LLMJudgeGate(judge, threshold=0.7)
        >>> r = gate.check(ctx("Paris"))
        >>> r.passed, r.score
        (True, 0.8)
        >>> gate.check(ctx("Lyon")).passed
        False
    """

    def __init__(
        self,
        judge: Any,
        *,
        threshold: float = 0.7,
        prompt: str | None = None,
        max_score: int = 10,
    ) -> None:
        kind = _judge_kind(judge)
        if not kind:
            raise ConfigurationError(
                f"judge must be a LangChain chat model or runnable (invoke/ainvoke), a LlamaIndex LLM "
                f"(complete/acomplete) or a function prompt -> str, got {type(judge).__name__}",
                field="judge",
            )
        self.judge = judge
        self._kind = kind
        self.threshold = check_fraction(threshold, "threshold")
        if not isinstance(max_score, int) or isinstance(max_score, bool) or max_score < 2:
            raise ConfigurationError(f"max_score must be an int >= 2, got {max_score!r}", field="max_score")
        self.max_score = max_score
        if prompt is None:
            prompt = DEFAULT_JUDGE_PROMPT
        if not isinstance(prompt, str) or "{answer}" not in prompt or "{question}" not in prompt:
            raise ConfigurationError(
                "prompt must be a string with {question} and {answer} placeholders", field="prompt"
            )
        self.prompt = prompt

    @property
    def name(self) -> str:
        """``"judge"``."""
        return "judge"

    def __repr__(self) -> str:
        return f"LLMJudgeGate({type(self.judge).__name__}, threshold={self.threshold}, max_score={self.max_score})"

    def render(self, ctx: GateContext) -> str:
        """The prompt sent to the judge for ``ctx``."""
        values = {
            "max_score": str(self.max_score),
            "question": _render_question(ctx),
            "answer": _answer_text(ctx.answer),
        }
        return fill_prompt(self.prompt, values)  # one pass: an answer holding "{answer}" is sent as written

    def parse_rating(self, reply: str) -> float | None:
        """The last ``[[N]]`` in ``reply`` (else a ``Rating: N``), or None when there is none in 0..max_score.

        Example:
            >>> from frugal_chains.routing import LLMJudgeGate
            >>> gate = LLMJudgeGate(lambda p: "")
            >>> gate.parse_rating("Good. Rating: [[7]]"), gate.parse_rating("Rating: 6/10"), gate.parse_rating("?")
            (7.0, 6.0, None)
        """
        matches = _RATING.findall(reply) or _RATING_FALLBACK.findall(reply)
        if not matches:
            return None
        value = float(matches[-1])
        if not 0 <= value <= self.max_score:
            return None
        return value

    def _result(self, reply: Any) -> GateResult:
        text, usage, model = self._read_reply(reply)
        rating = self.parse_rating(text)
        if rating is None:
            snippet = " ".join(text.split())[-120:]
            return GateResult(
                gate=self.name,
                passed=False,
                reason=f"no rating in the judge's reply: {snippet!r}",
                usage=usage,
                model=model,
            )
        score = rating / self.max_score
        return GateResult(
            gate=self.name,
            passed=score >= self.threshold,
            score=score,
            reason=f"rated {rating:g}/{self.max_score}",
            usage=usage,
            model=model,
        )

    def _read_reply(self, reply: Any) -> tuple[str, Usage | None, str | None]:
        return read_judge_reply(reply, completion=self._kind == "llama_index", model=self._judge_model())

    def _judge_model(self) -> str | None:
        for attr in ("model_name", "model"):
            try:
                v = getattr(self.judge, attr, None)
            except Exception:
                v = None
            if isinstance(v, str) and v:
                return v
        return None

    def check(self, ctx: GateContext) -> GateResult:
        """Ask the judge synchronously."""
        prompt = self.render(ctx)
        judge = self.judge
        if self._kind == "langchain":
            if callable(getattr(judge, "invoke", None)):
                kwargs = {"config": ctx.judge_config} if ctx.judge_config is not None else {}
                reply = judge.invoke(prompt, **kwargs)
            else:
                reply = resolve_sync(self._ainvoke(prompt, ctx), "the judge (ainvoke only)", "judge")
        elif self._kind == "llama_index":
            if callable(getattr(judge, "complete", None)):
                reply = judge.complete(prompt)
            else:
                reply = resolve_sync(judge.acomplete(prompt), "the judge (acomplete only)", "judge")
        else:
            if is_async_callable(judge) and loop_running():
                raise ConfigurationError(
                    "the judge is an async function and an event loop is running: use acheck (ainvoke / astream)",
                    field="judge",
                )
            reply = resolve_sync(judge(prompt), "the judge", "judge")
        return self._result(reply)

    async def _ainvoke(self, prompt: str, ctx: GateContext) -> Any:
        kwargs = {"config": ctx.judge_config} if ctx.judge_config is not None else {}
        return await self.judge.ainvoke(prompt, **kwargs)

    async def acheck(self, ctx: GateContext) -> GateResult:
        """Ask the judge asynchronously (``ainvoke`` / ``acomplete`` / awaited function)."""
        prompt = self.render(ctx)
        judge = self.judge
        if self._kind == "langchain":
            if callable(getattr(judge, "ainvoke", None)):
                reply = await self._ainvoke(prompt, ctx)
            else:
                kwargs = {"config": ctx.judge_config} if ctx.judge_config is not None else {}
                reply = await asyncio.to_thread(judge.invoke, prompt, **kwargs)
        elif self._kind == "llama_index":
            if callable(getattr(judge, "acomplete", None)):
                reply = await judge.acomplete(prompt)
            else:
                reply = await asyncio.to_thread(judge.complete, prompt)
        elif is_async_callable(judge):
            reply = await judge(prompt)
        else:
            reply = await asyncio.to_thread(judge, prompt)
            if inspect.isawaitable(reply):
                reply = await reply
        return self._result(reply)
