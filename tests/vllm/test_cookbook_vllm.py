"""The vLLM cookbook examples (``cookbook/vllm_*.py``) run as documented, on the CPU engine with SmolLM2.

Each runs as ``python cookbook/<example>.py --model <folder>`` would, but inside the test process (``runpy``), so it
shares the session's engine (same model folder and settings) instead of starting vLLM again: an engine start is
most of an example's time on a CPU. The main stage's ``tests/unit/test_cookbook.py`` leaves these examples out.
"""

from __future__ import annotations

import logging
import re
import runpy
import sys
from pathlib import Path

import pytest

COOKBOOK = Path(__file__).resolve().parents[2] / "cookbook"
EXAMPLES = sorted(p.name for p in COOKBOOK.glob("vllm_*.py"))


def test_there_are_vllm_examples() -> None:
    assert "vllm_cheap_tier.py" in EXAMPLES


def run(script: str, *args: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run ``script`` as ``__main__`` with ``args`` on its command line (what ``python script args`` does)."""
    monkeypatch.setattr(sys, "argv", [str(COOKBOOK / script), *args])
    monkeypatch.chdir(COOKBOOK.parent)
    runpy.run_path(str(COOKBOOK / script), run_name="__main__")


@pytest.mark.parametrize("script", EXAMPLES)
def test_vllm_cookbook_example_runs(
    script: str,
    smollm2_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="frugal_chains")
    run(script, "--model", str(smollm2_dir), monkeypatch=monkeypatch)
    stdout = capsys.readouterr().out
    assert stdout.strip()
    if script == "vllm_cheap_tier.py":
        check_cheap_tier(stdout)
        # each reservation covers the prompt SmolLM2's chat template adds (its default system prompt)
        overshoots = [r.getMessage() for r in caplog.records if "alert (overshoot)" in r.getMessage()]
        assert overshoots == [], overshoots


def cost_of(line: str) -> float:
    m = re.search(r"\(\$([0-9.]+)\)$", line)
    assert m, line
    return float(m.group(1))


def check_cheap_tier(stdout: str) -> None:
    lines = stdout.splitlines()
    answered = [line for line in lines if re.match(r"\[(local|gpt-4o)\] ", line)]
    assert len(answered) == 4, stdout
    # an easy question stays on the local model; the proof starts on gpt-4o
    assert answered[0].startswith("[local]") and answered[2].startswith("[gpt-4o]"), stdout
    local = [cost_of(line) for line in answered if line.startswith("[local]")]
    strong = [cost_of(line) for line in answered if line.startswith("[gpt-4o]")]
    assert all(c > 0 for c in local), (
        stdout
    )  # priced from the machine's hourly cost: neither free nor unknown
    assert max(local) < min(strong), stdout
    assert any(line.startswith("budget: $") for line in lines), stdout
