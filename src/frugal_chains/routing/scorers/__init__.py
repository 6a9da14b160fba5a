"""Pre-call scorers: how likely is it that the cheapest tier is **not** good enough for this conversation?

=============================  ===========================================================================
:class:`HeuristicScorer`       hand-set weights over cheap text features (no training, a few microseconds)
:class:`TrainedScorer`         an embedding classifier fit on your own labelled outcomes
:class:`CallableScorer`        your function (sync or async), ``messages -> float in [0, 1]``
=============================  ===========================================================================

Every scorer takes OpenAI-format messages (a plain string is accepted as one user turn) and returns a number in
[0, 1]; the :class:`~frugal_chains.routing.RoutingPolicy` turns it into a starting tier.

One module per scorer (:mod:`~frugal_chains.routing.scorers.heuristic`, with its word lists in
:mod:`~frugal_chains.routing.scorers.lexicon`; :mod:`~frugal_chains.routing.scorers.trained`;
:mod:`~frugal_chains.routing.scorers.callable_scorer`), and :mod:`~frugal_chains.routing.scorers.inputs` for the
conversation type they all take; every name is importable from ``frugal_chains.routing.scorers``.
"""

from __future__ import annotations

from frugal_chains.routing.scorers.callable_scorer import CallableScorer
from frugal_chains.routing.scorers.heuristic import HeuristicScorer
from frugal_chains.routing.scorers.inputs import Conversation as Conversation
from frugal_chains.routing.scorers.trained import TrainedScorer

# Importable from here as before the split (the logistic fit now lives in frugal_chains.shared.logistic).
from frugal_chains.routing.types import Message as Message
from frugal_chains.shared.logistic import Logistic as Logistic
from frugal_chains.shared.logistic import fit_logistic as fit_logistic

__all__ = ["CallableScorer", "HeuristicScorer", "TrainedScorer"]
