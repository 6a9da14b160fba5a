"""Progress bars of long work (the router's trainings, ``frugal-chains cache tune``): off when stderr is not a
terminal, on when asked for (or on a terminal), and complete when the work ends."""

from __future__ import annotations

import io
import json
import re
import sys

import pytest

from frugal_chains import ConfigurationError
from frugal_chains._progress import progress_bar, wants_progress
from frugal_chains.cache.guard import HitGuard
from frugal_chains.cache.tuning import tune_threshold
from frugal_chains.cli import main
from frugal_chains.routing import TrainedScorer, TrainedVerifier
from frugal_chains.testing import HashEmbeddings

EASY = [f"what is the capital of country {i}" for i in range(30)]
HARD = [f"prove the theorem about prime gaps number {i} rigorously" for i in range(30)]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def done(err: str, description: str) -> tuple[int, int]:
    """The ``done/total`` of the bar ``description`` as last drawn."""
    assert description in err, err
    found = re.search(r"(\d+)/(\d+)", err.split(description)[-1])
    assert found, err
    return int(found[1]), int(found[2])


def test_auto_follows_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert wants_progress(None) is False
    monkeypatch.setattr(sys, "stderr", Terminal())
    assert wants_progress(None) is True
    assert wants_progress(False) is False
    with pytest.raises(ConfigurationError) as e:
        wants_progress("yes")  # type: ignore[arg-type]
    assert e.value.field == "progress"


def test_bar_drawn_only_when_on(capsys: pytest.CaptureFixture[str]) -> None:
    with progress_bar("working", 4, progress=None) as advance:  # captured stderr is not a terminal
        advance(4)
    assert capsys.readouterr().err == ""
    with progress_bar("working", 4, progress=True) as advance:
        advance(4)
    assert done(capsys.readouterr().err, "working") == (4, 4)


def test_scorer_training_bar(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    labels = [0] * 30 + [1] * 30
    TrainedScorer.fit(EASY + HARD, labels, embedder=HashEmbeddings(), l2=1.0)
    assert capsys.readouterr().err == ""  # not a terminal: silent
    TrainedScorer.fit(EASY + HARD, labels, embedder=HashEmbeddings(), batch_size=16, progress=True)
    # 4 embedding batches, then 3 folds x 9 penalties and the fit itself
    assert done(capsys.readouterr().err, "training the router's scorer") == (32, 32)
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    TrainedScorer.fit(EASY + HARD, labels, embedder=HashEmbeddings(), l2=1.0, n_tiers=3)
    assert done(terminal.getvalue(), "training the router's scorer") == (3, 3)  # a batch, two boundaries
    with pytest.raises(ConfigurationError, match="progress"):
        TrainedScorer.fit(EASY + HARD, labels, embedder=HashEmbeddings(), progress="on")  # type: ignore[arg-type]


def test_verifier_training_bar(capsys: pytest.CaptureFixture[str]) -> None:
    questions = EASY + EASY
    answers = [f"The capital is city {i}." for i in range(30)] + ["I don't know."] * 30
    labels = [1] * 30 + [0] * 30
    TrainedVerifier.fit(questions, answers, labels, embedder=HashEmbeddings())
    assert capsys.readouterr().err == ""
    TrainedVerifier.fit(questions, answers, labels, embedder=HashEmbeddings(), batch_size=32, progress=True)
    finished, total = done(capsys.readouterr().err, "training the answer verifier")
    assert finished == total >= 4 + 3  # 2 x 2 embedding batches, the inner folds and the two fits


def test_tune_threshold_bar(capsys: pytest.CaptureFixture[str]) -> None:
    pairs = [("How do I reset a password?", "How can I reset a password?", 1), ("Rome?", "Everest?", 0)]
    tune_threshold(pairs, embedder=HashEmbeddings())
    assert capsys.readouterr().err == ""
    tune_threshold(pairs, embedder=HashEmbeddings(), guard=HitGuard(), progress=True)
    err = capsys.readouterr().err
    assert done(err, "embedding the pairs") == (1, 1)
    assert done(err, "checking the pairs with the hit guard") == (2, 2)


def test_cache_tune_command_bar(capsys: pytest.CaptureFixture[str], tmp_path: object) -> None:
    path = f"{tmp_path}/pairs.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for a, b, label in [
            ("How do I reset a password?", "How can I reset a password?", 1),
            ("Rome?", "Hi", 0),
        ]:
            f.write(json.dumps({"text_a": a, "text_b": b, "label": label}) + "\n")
    assert main(["cache", "tune", "--pairs", path, "--json"]) == 0
    assert capsys.readouterr().err == ""  # not a terminal
    assert main(["cache", "tune", "--pairs", path, "--json", "--progress"]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["n_pairs"] == 2  # the bar stays off stdout
    assert done(out.err, "checking the pairs with the hit guard") == (2, 2)
