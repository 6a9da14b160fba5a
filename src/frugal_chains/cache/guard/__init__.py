"""Hit guard: reject a semantic match when the two questions differ in what decides the answer.

An embedding puts "How do I enable 2FA?" and "How do I disable 2FA?" close together; a cache that
serves one answer for both is wrong. :class:`HitGuard` compares the **raw** texts of the incoming
question and the cached one and rejects the hit when they differ in

* numbers (``3`` vs ``5``, ``1,000`` = ``1000``, ``two`` = ``2``), dates (month and weekday names),
* units and currencies (``km`` vs ``miles``, ``$`` vs ``€``),
* negation (one side says ``not``/``never``/``can't``/``without``, the other does not),
* opposites (``enable``/``disable``, ``buy``/``sell``, ``legal``/``illegal`` ...),
* audience and roles (``children``/``adults``, ``buyer``/``seller``, ``landlord``/``tenant`` ...), order and
  direction (``ascending``/``descending``, ``before``/``after``, ``upload``/``download`` ...), comparatives and
  superlatives (``largest``/``smallest``, ``cheaper``/``more expensive`` ...) and scope (``free``/``paid``
  tier, ``online``/``in store``, ``domestic``/``international`` ...): word classes shipped as
  ``_guard_data/word_classes.txt``,
* named entities (capitalised words not at sentence start, acronyms, words with digits) swapped
  between the two sides,
* direction (``from A to B`` vs ``from B to A``),

and finally scores the pair with a small logistic-regression model (12 lexical features, coefficients
shipped as ``_guard_data/pair_model.json``, fitted on held-out Quora Question Pairs -- ``pairs.jsonl.gz``
minus every eval_4k id and text -- and BANKING77 *training* pairs, see :mod:`frugal_chains.cache.tuning`);
a pair passes at ``P(same answer) >= 0.60``. Defaults: every rule on, the shipped model, cutoff 0.60,
meant for :data:`DEFAULT_THRESHOLD` (0.86). A check takes a few tens of microseconds.

:func:`bypass_reason` says when a question must skip the semantic tier altogether: time-sensitive
("today", "latest", "current price"), user-specific ("my order", "my account") and
context-dependent ("this video", "translate this", "the above").

A stronger verifier plugs in through the :class:`Verifier` protocol: :class:`CrossEncoderVerifier` is the shipped
one (a duplicate-question cross-encoder, int8 ONNX, offline; :func:`default_verifier` is a shared instance);
:class:`LLMJudgeVerifier` asks an LLM whether the two questions are duplicates, recording what each of its calls
cost in the ledger; :class:`CallableVerifier` wraps plain functions.

The modules: :mod:`~frugal_chains.cache.guard.lexical` (what is read in a question),
:mod:`~frugal_chains.cache.guard.pair_model` (the pair features and model), :mod:`~frugal_chains.cache.guard.hit_guard`,
:mod:`~frugal_chains.cache.guard.bypass`, :mod:`~frugal_chains.cache.guard.verifiers` and
:mod:`~frugal_chains.cache.guard.cross_encoder`; every name is importable
from ``frugal_chains.cache.guard``.

Example:
    >>> guard = HitGuard()
    >>> guard.check("How do I enable 2FA?", "How do I disable 2FA?")
    GuardVerdict(ok=False, reason='opposite: enable/disable')
    >>> guard.check("Who is the CEO of Apple?", "Who is the CEO of Google?").reason
    'entity: apple/google'
    >>> guard.check("How can I reset my password?", "how do i reset my password").ok
    True
"""

from __future__ import annotations

from frugal_chains.cache.guard.bypass import BypassPolicy, bypass_reason
from frugal_chains.cache.guard.cross_encoder import CrossEncoderVerifier, default_verifier
from frugal_chains.cache.guard.hit_guard import DEFAULT_THRESHOLD, GuardVerdict, HitGuard
from frugal_chains.cache.guard.llm_judge import (
    DEFAULT_DUPLICATE_PROMPT,
    VERIFIER_PURPOSE,
    JudgeVerdict,
    LLMJudgeVerifier,
)
from frugal_chains.cache.guard.pair_model import FEATURE_NAMES as FEATURE_NAMES
from frugal_chains.cache.guard.pair_model import PairModel, pair_features
from frugal_chains.cache.guard.verifiers import CallableVerifier, Verifier

__all__ = [
    "DEFAULT_DUPLICATE_PROMPT",
    "DEFAULT_THRESHOLD",
    "BypassPolicy",
    "CallableVerifier",
    "CrossEncoderVerifier",
    "GuardVerdict",
    "HitGuard",
    "JudgeVerdict",
    "LLMJudgeVerifier",
    "PairModel",
    "VERIFIER_PURPOSE",
    "Verifier",
    "bypass_reason",
    "default_verifier",
    "pair_features",
]
