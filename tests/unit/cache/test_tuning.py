"""Threshold tuning API: curves, the chosen threshold, pair files, refitting the pair model."""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from frugal_chains.cache.guard import HitGuard, PairModel
from frugal_chains.cache.tuning import (
    LabelledPair,
    fit_pair_model,
    format_curve,
    load_pairs,
    pair_similarities,
    tune_threshold,
)
from frugal_chains.errors import ConfigurationError


class KeywordEmbedder:
    """Deterministic 3-d vectors: the share of refund / parcel / other words."""

    name = "kw"
    dim = 3

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(list(texts))
        rows = []
        for t in texts:
            words = t.split()
            rows.append(
                [
                    sum(w.startswith("refund") for w in words) + 0.1,
                    sum(w == "parcel" for w in words) + 0.1,
                    0.3,
                ]
            )
        v = np.array(rows, np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    async def aembed(self, texts: Sequence[str]) -> np.ndarray:
        return self.embed(texts)


PAIRS = [
    LabelledPair("refund please", "i want a refund", 1),
    LabelledPair("where is my parcel", "parcel location", 1),
    LabelledPair("refund please", "track parcel", 0),
    LabelledPair("refund for 2 items", "refund for 3 items", 0),
]


def test_curve_and_threshold_choice_with_precomputed_similarities() -> None:
    sims = [0.95, 0.80, 0.60, 0.97]
    r = tune_threshold(PAIRS, similarities=sims, target_precision=0.9, thresholds=[0.5, 0.7, 0.9, 0.96])
    assert [round(p.precision, 3) for p in r.curve] == [0.5, 0.667, 0.5, 0.0]
    assert not r.reached  # the wrong 0.97 pair beats every threshold without a guard
    g = tune_threshold(
        PAIRS,
        similarities=sims,
        guard=HitGuard(model=False),
        target_precision=0.9,
        thresholds=[0.5, 0.7, 0.9],
    )
    # the guard removes the 2-vs-3 pair; 0.7 keeps both positives and drops the 0.60 negative
    assert g.reached and g.threshold == 0.7 and g.precision == 1.0 and g.hit_rate == 1.0
    assert g.false_hit_rate == 0.0 and g.n_pairs == 4 and g.n_positive == 2


def test_tune_with_an_embedder_embeds_each_distinct_text_once() -> None:
    emb = KeywordEmbedder()
    r = tune_threshold(PAIRS, embedder=emb, guard=HitGuard(model=False), target_precision=0.9)
    embedded = [t for call in emb.calls for t in call]
    assert len(embedded) == len(set(embedded)) == 7
    assert r.reached and r.precision >= 0.9
    sims = pair_similarities(PAIRS, emb)
    assert sims.shape == (4,) and sims[0] > sims[2]


def test_tuples_are_accepted_and_table_prints() -> None:
    r = tune_threshold([("a b", "a b", 1), ("a", "c", 0)], similarities=[1.0, 0.2], target_precision=0.9)
    table = r.table()
    assert table.splitlines()[0].startswith("threshold")
    assert "*" in table and "chosen threshold" in table
    assert format_curve(r, step=10).count("\n") < table.count("\n")
    assert json.loads(json.dumps(r.to_dict()))["threshold"] == r.threshold


def test_bad_tuning_inputs() -> None:
    with pytest.raises(ConfigurationError) as e:
        tune_threshold(PAIRS, similarities=[0.9] * 4, target_precision=0)
    assert e.value.field == "target_precision"
    with pytest.raises(ConfigurationError) as e:
        tune_threshold([LabelledPair("a", "b", 0)], similarities=[0.9])
    assert e.value.field == "pairs"
    with pytest.raises(ConfigurationError) as e:
        tune_threshold(PAIRS, similarities=[0.9])
    assert e.value.field == "similarities"
    with pytest.raises(ConfigurationError):
        tune_threshold([], similarities=[])
    with pytest.raises(ConfigurationError) as e:
        tune_threshold([("a", "b", 7)], similarities=[0.9])
    assert e.value.field == "label"


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_load_pairs_reads_jsonl_and_gz(tmp_path: Path) -> None:
    rows = [
        '{"text_a": "a?", "text_b": "b?", "label": 1, "extra": 5}',
        "",
        '{"text_a": "c", "text_b": "d", "label": false}',
    ]
    assert load_pairs(_write(tmp_path / "p.jsonl", rows)) == [
        LabelledPair("a?", "b?", 1),
        LabelledPair("c", "d", 0),
    ]
    gz = tmp_path / "p.jsonl.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as f:
        f.write(rows[0] + "\n")
    assert load_pairs(gz) == [LabelledPair("a?", "b?", 1)]


@pytest.mark.parametrize(
    ("line", "field", "fragment"),
    [
        ("{broken", "pairs", "line 2: not valid JSON"),
        ("[1, 2, 3]", "pairs", "line 2: expected a JSON object"),
        ('{"text_b": "b", "label": 1}', "text_a", "line 2: field 'text_a'"),
        ('{"text_a": "a", "text_b": "  ", "label": 1}', "text_b", "line 2: field 'text_b'"),
        ('{"text_a": "a", "text_b": "b"}', "label", "line 2: field 'label'"),
        ('{"text_a": "a", "text_b": "b", "label": 2}', "label", "line 2: field 'label'"),
        ('{"text_a": "a", "text_b": "b", "label": "1"}', "label", "line 2: field 'label'"),
    ],
)
def test_load_pairs_names_line_and_field(tmp_path: Path, line: str, field: str, fragment: str) -> None:
    path = _write(tmp_path / "bad.jsonl", ['{"text_a": "x", "text_b": "y", "label": 0}', line])
    with pytest.raises(ConfigurationError) as e:
        load_pairs(path)
    assert e.value.field == field
    assert fragment in str(e.value)


def test_load_pairs_missing_or_empty_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as e:
        load_pairs(tmp_path / "nope.jsonl")
    assert e.value.field == "pairs" and "does not exist" in str(e.value)
    with pytest.raises(ConfigurationError) as e:
        load_pairs(_write(tmp_path / "empty.jsonl", [""]))
    assert "no pairs" in str(e.value)


def test_fit_pair_model_learns_the_signal() -> None:
    pos = [LabelledPair("how do i learn python", "best way to learn python", 1)] * 20
    neg = [LabelledPair("how do i learn python", "how do i learn cobol fortran", 0)] * 20
    m = fit_pair_model(pos + neg, [0.9] * 20 + [0.85] * 20, meta={"note": "test"})
    assert isinstance(m, PairModel) and m.meta["note"] == "test"
    assert m.score(pos[0].text_a, pos[0].text_b, 0.9) > 0.5 > m.score(neg[0].text_a, neg[0].text_b, 0.85)
    guard = HitGuard(model=m)
    assert guard.check(neg[0].text_a, neg[0].text_b, similarity=0.85).reason.startswith("model")  # type: ignore[union-attr]
    with pytest.raises(ConfigurationError) as e:
        fit_pair_model(pos, [0.9])
    assert e.value.field == "similarities"
