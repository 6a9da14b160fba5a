"""Every cookbook example runs as documented (offline, fake models)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

COOKBOOK = Path(__file__).resolve().parents[2] / "cookbook"


# The vLLM examples (``vllm_*.py``) need vLLM and a model: tests/vllm/test_cookbook_vllm.py runs them in the vLLM
# stage.
EXAMPLES = sorted(p.name for p in COOKBOOK.glob("*.py") if not p.name.startswith("vllm_"))


@pytest.mark.parametrize("script", EXAMPLES)
def test_cookbook_example_runs(script: str) -> None:
    out = subprocess.run(
        [sys.executable, str(COOKBOOK / script)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=COOKBOOK.parent,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip()
