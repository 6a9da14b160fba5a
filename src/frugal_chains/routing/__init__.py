"""Cascading router, framework-free: scorers pick the starting tier, quality gates decide escalation.

Adapters: :class:`frugal_chains.langchain.CascadeChatModel` and :class:`frugal_chains.llama_index.CascadeLLM`.
Guide: ``docs/routing.md``.

Example:
    >>> from frugal_chains.routing import Cascade, RefusalGate, TierSpec, TierAnswer
    >>> cascade = Cascade([TierSpec(name="cheap", model="gpt-4o-mini"), TierSpec(name="strong", model="gpt-4o")],
    ...                   gates=[RefusalGate()])
    >>> answers = ["I'm sorry, I can't help with that.", "Here is how: ..."]
    >>> cascade.run([{"role": "user", "content": "Fix my regex"}], lambda i: TierAnswer(text=answers[i])).tier
    'strong'
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from frugal_chains._lazy import lazy_exports

_EXPORTS = {
    "SelectedQuestion": "..shared.question",
    "QuestionKey": "..shared.question",
    "ASampler": ".types",
    "Attempt": ".types",
    "CallableGate": ".gates",
    "CallableScorer": ".scorers",
    "Calibration": ".calibration",
    "Cascade": ".cascade",
    "CascadeResult": ".cascade",
    "DEFAULT_ALERT_THRESHOLD": ".stats",
    "EscalationAlert": ".stats",
    "GateContext": ".types",
    "GateResult": ".types",
    "HeuristicScorer": ".scorers",
    "JsonGate": ".gates",
    "LLMJudgeGate": ".gates",
    "LabelledOutcome": ".calibration",
    "LengthGate": ".gates",
    "LogprobGate": ".gates",
    "QualityGate": ".types",
    "RefusalGate": ".gates",
    "RegexGate": ".gates",
    "Route": ".cascade",
    "TierChunk": ".cascade",
    "RouterStats": ".stats",
    "RoutingPolicy": ".policy",
    "Sampler": ".types",
    "Scorer": ".types",
    "SelfConsistencyGate": ".gates",
    "TierAnswer": ".types",
    "TierSpec": ".policy",
    "TierStats": ".stats",
    "TrainedScorer": ".scorers",
    "TrainedVerifier": ".verifier",
    "calibrate": ".calibration",
    "default_escalates": ".cascade",
    "escalation_rates": ".stats",
    "resolve_gates": ".gates",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from frugal_chains.routing.calibration import Calibration as Calibration
    from frugal_chains.routing.calibration import LabelledOutcome as LabelledOutcome
    from frugal_chains.routing.calibration import calibrate as calibrate
    from frugal_chains.routing.cascade import Cascade as Cascade
    from frugal_chains.routing.cascade import CascadeResult as CascadeResult
    from frugal_chains.routing.cascade import Route as Route
    from frugal_chains.routing.cascade import TierChunk as TierChunk
    from frugal_chains.routing.cascade import default_escalates as default_escalates
    from frugal_chains.routing.gates import CallableGate as CallableGate
    from frugal_chains.routing.gates import JsonGate as JsonGate
    from frugal_chains.routing.gates import LengthGate as LengthGate
    from frugal_chains.routing.gates import LLMJudgeGate as LLMJudgeGate
    from frugal_chains.routing.gates import LogprobGate as LogprobGate
    from frugal_chains.routing.gates import RefusalGate as RefusalGate
    from frugal_chains.routing.gates import RegexGate as RegexGate
    from frugal_chains.routing.gates import SelfConsistencyGate as SelfConsistencyGate
    from frugal_chains.routing.gates import resolve_gates as resolve_gates
    from frugal_chains.routing.policy import RoutingPolicy as RoutingPolicy
    from frugal_chains.routing.policy import TierSpec as TierSpec
    from frugal_chains.routing.scorers import CallableScorer as CallableScorer
    from frugal_chains.routing.scorers import HeuristicScorer as HeuristicScorer
    from frugal_chains.routing.scorers import TrainedScorer as TrainedScorer
    from frugal_chains.routing.stats import DEFAULT_ALERT_THRESHOLD as DEFAULT_ALERT_THRESHOLD
    from frugal_chains.routing.stats import EscalationAlert as EscalationAlert
    from frugal_chains.routing.stats import RouterStats as RouterStats
    from frugal_chains.routing.stats import TierStats as TierStats
    from frugal_chains.routing.stats import escalation_rates as escalation_rates
    from frugal_chains.routing.types import ASampler as ASampler
    from frugal_chains.routing.types import Attempt as Attempt
    from frugal_chains.routing.types import GateContext as GateContext
    from frugal_chains.routing.types import GateResult as GateResult
    from frugal_chains.routing.types import QualityGate as QualityGate
    from frugal_chains.routing.types import Sampler as Sampler
    from frugal_chains.routing.types import Scorer as Scorer
    from frugal_chains.routing.types import TierAnswer as TierAnswer
    from frugal_chains.routing.verifier import TrainedVerifier as TrainedVerifier
    from frugal_chains.shared.question import QuestionKey as QuestionKey
    from frugal_chains.shared.question import SelectedQuestion as SelectedQuestion
