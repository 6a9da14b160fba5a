"""The python code blocks of README.md and docs/*.md run as tests (pytest-markdown-docs, ``--markdown-docs`` in
pyproject's ``addopts``): each block runs as pasted, in a fresh namespace (a ```` ```python continuation ```` block
continues the one before it), offline, with no API keys.

This file sits at the repository root so that it reaches README.md too. Everything a block needs besides its own
text is here, in one fixture (``docs_snippet``) that only the markdown items use; the rest of the suite is
untouched by it."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

#: The marker pytest-markdown-docs puts on every code block it collects.
DOCS_MARKER = "markdown-docs"


#: Tests that run a real vLLM (its CPU build with a tiny packaged model). They run in their own stage of
#: ``scripts/test`` (``.venv-vllm``); an environment without vLLM does not collect them.
VLLM_TESTS = Path(__file__).parent / "tests" / "vllm"


def _has_vllm() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if collection_path == VLLM_TESTS or VLLM_TESTS in collection_path.parents:
        return None if _has_vllm() else True
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker(DOCS_MARKER) is not None:
            item.add_marker(pytest.mark.usefixtures("docs_snippet"))


@pytest.fixture
def docs_snippet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """What every documentation block runs in, so that a block runs as a user would paste it:

    * offline: LiteLLM's price map from its wheel (``scripts/test`` sets this too; a plain ``pytest`` may not);
    * in an empty temporary working directory, so files a block writes (``cache.sqlite``, ``scorer.json``) land
      there and not in the checkout;
    * with LangChain's global LLM cache (``set_llm_cache``) and LlamaIndex's ``Settings`` put back afterwards, so
      one block's globals never reach the next block or the rest of the suite."""
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    monkeypatch.chdir(tmp_path)
    restore = [_keep_langchain_globals(), _keep_llama_index_settings()]
    try:
        yield
    finally:
        for undo in restore:
            undo()


def _keep_langchain_globals() -> Any:
    try:
        from langchain_core.globals import get_llm_cache, set_llm_cache
    except ImportError:  # the LlamaIndex-only install
        return lambda: None
    cache = get_llm_cache()
    return lambda: set_llm_cache(cache)


def _keep_llama_index_settings() -> Any:
    try:
        from llama_index.core import Settings
    except ImportError:  # the LangChain-only install
        return lambda: None
    saved = {f.name: getattr(Settings, f.name) for f in dataclasses.fields(Settings)}

    def undo() -> None:
        for name, value in saved.items():
            setattr(Settings, name, value)

    return undo


@pytest.fixture
def vcr_cassette_dir(request: pytest.FixtureRequest) -> str:
    """pytest-recording's fixture (langchain-tests installs the plugin), the same directory at function scope.

    The plugin's own is module-scoped and requested by an autouse fixture, and a markdown file is not a Python
    module: every documentation block would fail with "Could not obtain a node for scope Module"."""
    path = Path(str(request.node.path))
    return os.path.join(path.parent, "cassettes", path.stem)
