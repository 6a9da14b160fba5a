"""``preset="strict"`` on the hand-written development pairs (``tests/data/guard_pairs.jsonl``), with the real default
embedder and the real shipped cross-encoder: no adversarial look-alike is ever served, in either direction."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from frugal_chains.cache import AnswerCache, CacheRequest, cache_scope
from frugal_chains.cache.guard import BypassPolicy, CrossEncoderVerifier, HitGuard, default_verifier

PAIRS_FILE = Path(__file__).resolve().parents[1] / "data" / "guard_pairs.jsonl"
PAIRS: list[dict[str, Any]] = [
    json.loads(line) for line in PAIRS_FILE.read_text("utf-8").splitlines() if line
]
ADVERSARIAL = [p for p in PAIRS if not p["same"]]


@pytest.fixture(scope="module")
def strict() -> AnswerCache:
    # FAQ mode: the user-specific bypass off, so every pair reaches the semantic tier (the harder case).
    return AnswerCache(preset="strict", bypass=BypassPolicy(user_specific=False).reason)


def test_strict_uses_the_shipped_cross_encoder(strict: AnswerCache) -> None:
    assert isinstance(strict.verifier, CrossEncoderVerifier)
    assert strict.verifier is default_verifier()


@pytest.mark.parametrize("pair", ADVERSARIAL, ids=lambda p: f"{p['class']}: {p['a']} | {p['b']}")
def test_strict_never_serves_an_adversarial_look_alike(strict: AnswerCache, pair: dict[str, Any]) -> None:
    for i, (stored, asked) in enumerate(((pair["a"], pair["b"]), (pair["b"], pair["a"]))):
        with cache_scope(tenant_id=f"strict-{pair['a']}-{i}"):
            strict.update(CacheRequest.from_prompt(stored), "the stored answer")
            assert strict.lookup(CacheRequest.from_prompt(asked)) is None
            # the same question again is an exact repeat: strict still serves those
            assert strict.lookup(CacheRequest.from_prompt(stored)) is not None


NO_RULES = dict.fromkeys(
    (
        "numbers",
        "dates",
        "units",
        "negation",
        "opposites",
        "entities",
        "direction",
        "audience",
        "order",
        "comparatives",
        "scope",
    ),
    False,
)


@pytest.mark.parametrize("pair", ADVERSARIAL, ids=lambda p: f"{p['class']}: {p['a']} | {p['b']}")
def test_the_shipped_verifier_alone_rejects_each_look_alike(pair: dict[str, Any]) -> None:
    # The second layer on its own: strict with every guard rule and the pair model off still serves none of them.
    verifier = default_verifier()
    assert not verifier.verify(pair["b"], pair["a"], 1.0)
    assert not verifier.verify(pair["a"], pair["b"], 1.0)
    cache = AnswerCache(
        preset="strict",
        guard=HitGuard(model=False, **NO_RULES),
        bypass=BypassPolicy(user_specific=False).reason,
        threshold=0.5,
    )
    cache.update(CacheRequest.from_prompt(pair["a"]), "the stored answer")
    assert cache.lookup(CacheRequest.from_prompt(pair["b"])) is None
    # the candidate reached the verifier (no rule stopped it) and the verifier said no; or the question skips the
    # semantic tier altogether ("this month", "newest": time-sensitive)
    stats = cache.stats
    assert (stats.verifier_calls, stats.verifier_rejections, stats.bypassed) in ((1, 1, 0), (0, 0, 1))
