"""The vLLM cookbook examples (``cookbook/vllm_*.py``) run as documented, on the CPU engine with SmolLM2.

Each runs in a subprocess with this interpreter (the one that has vLLM), on the test session's model folder.
The main stage's ``tests/unit/test_cookbook.py`` leaves these examples out.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

COOKBOOK = Path(__file__).resolve().parents[2] / "cookbook"
EXAMPLES = sorted(p.name for p in COOKBOOK.glob("vllm_*.py"))


def test_there_are_vllm_examples() -> None:
    assert "vllm_cheap_tier.py" in EXAMPLES


def run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    return subprocess.run(
        [sys.executable, str(COOKBOOK / script), *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=COOKBOOK.parent,
        env=env,
    )


@pytest.mark.parametrize("script", EXAMPLES)
def test_vllm_cookbook_example_runs(script: str, smollm2_dir: Path) -> None:
    out = run(script, "--model", str(smollm2_dir))
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip()
    if script == "vllm_cheap_tier.py":
        check_cheap_tier(out.stdout)
        # each reservation covers the prompt SmolLM2's chat template adds (its default system prompt)
        assert "alert (overshoot)" not in out.stderr, out.stderr[-3000:]


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
