"""Hand-written question pairs through the REAL default cache: paraphrases that should hit, look-alikes that must not.

Each pair runs in its own partition of one ``AnswerCache()`` -- the default embedder (all-MiniLM-L6-v2 int8),
``DEFAULT_THRESHOLD``, the default ``HitGuard`` and the default bypass policy: store ``a``, look up ``b``.
A paraphrase (``same: true``) counts when it is served; a look-alike (``same: false``) counts when it is served
(a wrong hit). A second row runs the same cache in FAQ mode (``BypassPolicy(user_specific=False)``): the default
sends "my order ..." questions past the semantic tier, which an FAQ bot whose answers are the same for every user
turns off. Then the same with the shipped cross-encoder verifier (``AnswerCache(verifier=default_verifier())``,
default verify band) and with ``preset="strict"`` (every semantic hit verified by the shipped cross-encoder).

Two sets, both hand-written for this project:

* ``benchmarks/data/support_pairs_heldout.jsonl`` -- 20 paraphrases and 39 look-alikes of customer-support
  questions (shipping, returns, billing, accounts, medical and legal information). Written before the guard's
  audience / order / comparative / scope rules and never used to develop them. Goal: >= 10 of 20 paraphrases
  hit with <= 1 of 39 look-alikes served.
* ``tests/data/guard_pairs.jsonl`` -- the development pairs of those rules (adversarial pairs per class and
  support-style paraphrases); ``tests/unit/cache/test_guard_pairs.py`` checks the guard on them, and
  ``tests/integration/test_strict_guard_pairs.py`` checks ``preset="strict"`` with the real embedder and verifier.

Usage::

    python benchmarks/guard_pairs.py [--json] [--details]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from frugal_chains.cache import AnswerCache, CacheRequest, cache_scope  # noqa: E402
from frugal_chains.cache.guard import DEFAULT_THRESHOLD, BypassPolicy, HitGuard  # noqa: E402
from frugal_chains.cache.guard.cross_encoder import default_verifier  # noqa: E402
from frugal_chains.embeddings import default_embedder  # noqa: E402

HELDOUT = ROOT / "benchmarks" / "data" / "support_pairs_heldout.jsonl"
DEV = ROOT / "tests" / "data" / "guard_pairs.jsonl"
GOAL_HIT, GOAL_SERVED = 10, 1  # of 20 paraphrases / of 39 look-alikes


def load(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.open(encoding="utf-8") if line.strip()]


def run(rows: list[dict[str, Any]], cache: AnswerCache, tag: str) -> list[dict[str, Any]]:
    """Store ``a``, look up ``b``, each pair in its own partition; one outcome per pair."""
    embedder = default_embedder()
    guard = HitGuard()
    out = []
    for i, r in enumerate(rows):
        with cache_scope(tenant_id=f"{tag}-{i}"):
            cache.update(CacheRequest.from_prompt(r["a"]), f"answer-{i}")
            hit = cache.lookup(CacheRequest.from_prompt(r["b"]))
        va, vb = embedder.embed([r["a"], r["b"]])
        sim = float(va @ vb)
        out.append(
            {
                **r,
                "served": hit is not None and hit.answer == f"answer-{i}",
                "similarity": round(sim, 3),
                "guard": guard.check(r["b"], r["a"], sim).reason,
            }
        )
    return out


def summary(outcomes: list[dict[str, Any]]) -> dict[str, Any]:
    para = [o for o in outcomes if o["same"]]
    look = [o for o in outcomes if not o["same"]]
    return {
        "paraphrases": len(para),
        "paraphrases_hit": sum(o["served"] for o in para),
        "lookalikes": len(look),
        "lookalikes_served": sum(o["served"] for o in look),
    }


def per_class(outcomes: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    table: dict[str, dict[str, int]] = defaultdict(lambda: {"pairs": 0, "served": 0})
    for o in outcomes:
        key = o["class"] if not o["same"] else f"paraphrase ({o['class']})"
        table[key]["pairs"] += 1
        table[key]["served"] += int(o["served"])
    return dict(sorted(table.items()))


def modes() -> dict[str, Callable[[], AnswerCache]]:
    """The caches compared: the default, with the shipped verifier, and ``preset="strict"``; each also in FAQ mode."""
    faq = BypassPolicy(user_specific=False).reason
    return {
        "default": lambda: AnswerCache(),
        "faq": lambda: AnswerCache(bypass=faq),
        "verifier": lambda: AnswerCache(verifier=default_verifier()),
        "verifier faq": lambda: AnswerCache(verifier=default_verifier(), bypass=faq),
        "strict": lambda: AnswerCache(preset="strict"),
        "strict faq": lambda: AnswerCache(preset="strict", bypass=faq),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--details", action="store_true", help="list every pair with its similarity and verdict")
    args = ap.parse_args()

    heldout, dev = load(HELDOUT), load(DEV)
    result: dict[str, Any] = {
        "threshold": DEFAULT_THRESHOLD,
        "guard": repr(HitGuard()),
        "verifier": repr(default_verifier()),
    }
    ho: dict[str, list[dict[str, Any]]] = {}
    dv: dict[str, list[dict[str, Any]]] = {}
    for mode, make in modes().items():
        ho[mode] = run(heldout, make(), f"heldout-{mode}")
        dv[mode] = run(dev, make(), f"dev-{mode}")
    result["heldout"] = {mode: summary(o) for mode, o in ho.items()}
    result["heldout"]["goal_met"] = {
        mode: s["paraphrases_hit"] >= GOAL_HIT and s["lookalikes_served"] <= GOAL_SERVED
        for mode, s in result["heldout"].items()
    }
    result["heldout_by_class"] = {mode: per_class(o) for mode, o in ho.items()}
    result["dev"] = {mode: summary(o) for mode, o in dv.items()}
    result["dev_by_class"] = {mode: per_class(o) for mode, o in dv.items()}
    if args.details:
        result["details"] = {"heldout": ho["faq"], "dev": dv["faq"]}
    if args.json:
        print(json.dumps(result, indent=1))
        return

    print(f"{result['guard']}  threshold {DEFAULT_THRESHOLD}\nverifier {result['verifier']}")
    print(
        f"\nHELD-OUT support pairs (goal: >= {GOAL_HIT} of 20 paraphrases hit, <= {GOAL_SERVED} of 39 served)"
    )
    print(f"  {'mode':<13} {'paraphrases hit':>16} {'look-alikes served':>19}  goal")
    for mode in ho:
        s = result["heldout"][mode]
        met = "met" if result["heldout"]["goal_met"][mode] else "MISSED"
        print(
            f"  {mode:<13} {s['paraphrases_hit']:>9} of {s['paraphrases']:<4} "
            f"{s['lookalikes_served']:>11} of {s['lookalikes']:<4}  {met}"
        )
    print("\nDEVELOPMENT pairs per class (served / pairs; look-alike classes should be 0)")
    print(f"  {'class':<34} " + " ".join(f"{mode:>13}" for mode in dv))
    for key in result["dev_by_class"]["default"]:
        cells = [result["dev_by_class"][mode][key] for mode in dv]
        print(f"  {key:<34} " + " ".join(f"{c['served']:>8}/{c['pairs']:<4}" for c in cells))
    if args.details:
        for name in ("heldout", "dev"):
            print(f"\n{name} (faq mode): served, similarity, guard verdict")
            for o in result["details"][name]:
                mark = "HIT " if o["served"] else "miss"
                kind = "same" if o["same"] else "diff"
                print(f"  {mark} {kind} {o['similarity']:.3f} {o['guard']}  {o['a']} | {o['b']}")


if __name__ == "__main__":
    main()
