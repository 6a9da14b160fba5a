"""Quality gates: checks on a tier's answer after the call; a failed gate escalates to the next tier.

Every gate implements :class:`~frugal_chains.routing.types.QualityGate` (``name``, ``needs_full_answer``,
``check(ctx)``, ``async acheck(ctx)``) and returns a :class:`~frugal_chains.routing.types.GateResult`. Gates
never raise on an odd answer (an empty text, a tool call, non-JSON, missing logprobs): they fail it or skip it
(``skipped=True`` counts as passed) with a reason. Errors of the calls a gate makes itself (a judge, extra
samples) propagate; the engine counts them as a failed gate.

============================  ======================================================================
gate                          passes when
============================  ======================================================================
:class:`JsonGate`             the text is JSON (a fenced block is fine), valid against a schema if given
:class:`RegexGate`            a pattern is (``must_match=False``: is not) found
:class:`LengthGate`           the length in characters / tokens is within bounds
:class:`RefusalGate`          no refusal and (by default) no uncertainty phrase
:class:`LogprobGate`          the mean token probability is high enough (needs logprobs)
:class:`SelfConsistencyGate`  most of ``n`` answers of the same tier agree on the final answer
:class:`LLMJudgeGate`         a judge model rates the answer high enough
:class:`CallableGate`         your function says so
============================  ======================================================================

:func:`resolve_gates` turns the short names ``"json"``, ``"refusal"``, ``"nonempty"`` and ``"logprob"`` into gates.
The trained answer verifier is :class:`frugal_chains.routing.TrainedVerifier`.

One module per concept: :mod:`~frugal_chains.routing.gates.json_gate`, :mod:`~frugal_chains.routing.gates.regex_gate`,
:mod:`~frugal_chains.routing.gates.length_gate`, :mod:`~frugal_chains.routing.gates.refusal` (with the phrase lists in
:mod:`~frugal_chains.routing.gates.phrases`), :mod:`~frugal_chains.routing.gates.logprob`,
:mod:`~frugal_chains.routing.gates.self_consistency` (with number extraction in
:mod:`~frugal_chains.routing.gates.extract`), :mod:`~frugal_chains.routing.gates.judge`,
:mod:`~frugal_chains.routing.gates.callable_gate` and :mod:`~frugal_chains.routing.gates.resolve`; every name is
importable from ``frugal_chains.routing.gates``.

Example:
    >>> from frugal_chains.routing import GateContext, RefusalGate, TierAnswer
    >>> ctx = GateContext(messages=[{"role": "user", "content": "Fix my regex"}],
    ...                   answer=TierAnswer(text="Sorry, I can't help with that."), tier="cheap",
    ...                   tier_index=0, n_tiers=2)
    >>> RefusalGate().check(ctx).passed
    False
"""

from __future__ import annotations

from frugal_chains.routing.gates.callable_gate import CallableGate
from frugal_chains.routing.gates.extract import default_extract
from frugal_chains.routing.gates.json_gate import JsonGate
from frugal_chains.routing.gates.judge import DEFAULT_JUDGE_PROMPT, LLMJudgeGate
from frugal_chains.routing.gates.length_gate import LengthGate
from frugal_chains.routing.gates.logprob import LogprobGate
from frugal_chains.routing.gates.refusal import RefusalGate
from frugal_chains.routing.gates.regex_gate import RegexGate
from frugal_chains.routing.gates.resolve import resolve_gates
from frugal_chains.routing.gates.self_consistency import SelfConsistencyGate

# The protocol types the gates implement, importable from here as before the split.
from frugal_chains.routing.types import GateContext as GateContext
from frugal_chains.routing.types import GateResult as GateResult
from frugal_chains.routing.types import QualityGate as QualityGate
from frugal_chains.routing.types import TierAnswer as TierAnswer

__all__ = [
    "DEFAULT_JUDGE_PROMPT",
    "CallableGate",
    "JsonGate",
    "LLMJudgeGate",
    "LengthGate",
    "LogprobGate",
    "RefusalGate",
    "RegexGate",
    "SelfConsistencyGate",
    "default_extract",
    "resolve_gates",
]
