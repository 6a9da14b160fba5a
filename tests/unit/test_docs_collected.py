"""Every python code block of README.md and docs/*.md is a test (pytest-markdown-docs; set-up in ../../conftest.py).

These tests fail when the collection is switched off (``--markdown-docs`` dropped from ``addopts``, a page left out
of ``testpaths``, the plugin not installed) or when a block is excluded without a reason written down here."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

#: The info-string words a python block may carry besides its language.
ALLOWED_OPTIONS = {"continuation"}

#: Blocks that may be excluded (```python notest): "page:line of the fence" -> why it cannot run. Keep it short:
#: a block that only shows a value can compute it with a fake model and print it instead.
NOTEST: dict[str, str] = {}

PYTHON = {"py", "python", "python3"}


def _fences(page: Path) -> list[tuple[int, str, list[str]]]:
    """Every fenced block of the page: (1-based line of the opening fence, language, other info-string words).

    Read with a plain line scanner, independently of the plugin's markdown parser."""
    out: list[tuple[int, str, list[str]]] = []
    fence: str | None = None
    for number, line in enumerate(page.read_text("utf-8").splitlines(), 1):
        m = re.match(r"^\s*(`{3,}|~{3,})(.*)$", line)
        if fence is None:
            if m:
                fence = m.group(1)
                words = m.group(2).split()
                out.append((number, words[0].lower() if words else "", words[1:]))
        elif m and m.group(1).startswith(fence) and not m.group(2).strip():
            fence = None
    return out


def _python_blocks() -> dict[str, list[str]]:
    """``"page:line" -> options`` of every python block (a language spelled in any case counts)."""
    return {
        f"{page.relative_to(ROOT).as_posix()}:{line}": options
        for page in PAGES
        for line, lang, options in _fences(page)
        if lang in PYTHON
    }


def test_the_pages_hold_python_blocks() -> None:
    assert (ROOT / "README.md").is_file()
    assert len(_python_blocks()) >= 20  # README's quickstarts and the guides; the scanner found them


def test_no_block_is_excluded_without_a_reason() -> None:
    blocks = _python_blocks()
    unknown = {k: o for k, o in blocks.items() if set(o) - ALLOWED_OPTIONS - {"notest"}}
    assert not unknown, (
        f"python blocks with info-string words other than {sorted(ALLOWED_OPTIONS)}: {unknown}"
    )
    excluded = {k for k, o in blocks.items() if "notest" in o}
    assert excluded <= set(NOTEST), (
        f"python blocks marked notest: {sorted(excluded - set(NOTEST))}. Make them run (fakes from "
        "frugal_chains.testing, tempfile for files) or write in NOTEST why they cannot."
    )
    assert set(NOTEST) <= excluded, (
        f"NOTEST names blocks that are not marked notest: {set(NOTEST) - excluded}"
    )


def test_the_project_configuration_collects_the_pages(pytestconfig: pytest.Config) -> None:
    """A plain ``python -m pytest`` (no paths: ``testpaths``) collects README.md and docs/ with the plugin on."""
    assert pytestconfig.getoption("markdowndocs") is True, "--markdown-docs left pyproject's addopts"
    testpaths = pytestconfig.getini("testpaths")
    assert "README.md" in testpaths and "docs" in testpaths, testpaths


def test_every_python_block_is_collected_as_a_test() -> None:
    """What the plugin collects, in a separate pytest run with the project's configuration, is exactly every
    python block not excluded."""
    command = ["-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "README.md", "docs"]
    out = subprocess.run(
        [sys.executable, *command],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    collected = set()
    for line in out.stdout.splitlines():
        m = re.match(r"^(\S+\.md)::\[CodeFence#\d+\]\[line:(\d+)\]$", line.strip())
        if m:
            collected.add(f"{m.group(1)}:{m.group(2)}")
    expected = {k for k, o in _python_blocks().items() if "notest" not in o}
    assert collected == expected, (
        f"not collected: {sorted(expected - collected)}; unexpected: {sorted(collected - expected)}"
    )
