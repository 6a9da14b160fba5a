"""Each framework is an extra: the core imports without it, and a wing without its framework names the extra."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib.metadata import requires

# Runs in a fresh interpreter where every LangChain package fails to import, as in a LlamaIndex-only install.
_BLOCK_LANGCHAIN = (
    "import sys\n"
    "for name in ('langchain_core', 'langchain', 'langgraph', 'langchain_tests'):\n"
    "    sys.modules[name] = None\n"
)


def _run(code: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", _BLOCK_LANGCHAIN + code], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def _requirements() -> dict[str, set[str]]:
    """The installed package's requirements by extra ("" for the core)."""
    by_extra: dict[str, set[str]] = {}
    for req in requires("frugal-chains") or []:
        spec, _, marker = req.partition(";")
        name = re.split(r"[\s\[<>=!~]", spec.strip(), maxsplit=1)[0].lower().replace("_", "-")
        extra = re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", marker)
        by_extra.setdefault(extra.group(1) if extra else "", set()).add(name)
    return by_extra


def test_frameworks_are_extras() -> None:
    reqs = _requirements()
    assert {"litellm", "pydantic", "tiktoken"} <= reqs[""]
    assert not reqs[""] & {"langchain-core", "langchain", "llama-index-core"}
    assert reqs["langchain"] == {"langchain-core"}
    assert reqs["llama-index"] == {"llama-index-core"}
    (everything,) = [
        r for r in requires("frugal-chains") or [] if re.search(r"extra\s*==\s*['\"]all['\"]", r)
    ]
    included = set(re.findall(r"\[([^]]+)\]", everything)[0].split(","))
    assert {"langchain", "llama-index", "redis", "embeddings", "fast-embeddings"} <= included


def test_missing_langchain_core_names_the_extra() -> None:
    out = _run("try:\n    import frugal_chains.langchain\nexcept ImportError as e:\n    print(e)\n")
    assert 'pip install "frugal-chains[langchain]"' in out


def test_core_imports_without_langchain_core() -> None:
    out = _run(
        "import importlib, pkgutil\n"
        "import frugal_chains\n"
        "skip = ('frugal_chains.langchain', 'frugal_chains.testing.fake_chat', 'frugal_chains.testing.replay')\n"
        "names = [m.name for m in pkgutil.walk_packages(frugal_chains.__path__, 'frugal_chains.')\n"
        "         if not m.name.startswith(skip)]\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        "assert 'langchain_core' not in [n for n, m in sys.modules.items() if m is not None]\n"
        "print(len(names))\n"
    )
    assert int(out) > 30


def test_testing_fakes_without_langchain_core() -> None:
    out = _run(
        "from frugal_chains.testing import HashEmbeddings\n"
        "print(HashEmbeddings(dim=16).embed(['hello']).shape[1])\n"
        "for name in ('FakeUsageChatModel', 'ReplayChatModel', 'ReplayEntry'):\n"
        "    try:\n"
        "        exec(f'from frugal_chains.testing import {name}')\n"
        "    except ImportError as e:\n"
        "        print(name, e)\n"
        "from frugal_chains._demo import run_demo\n"
        "try:\n"
        "    run_demo(echo=lambda s: None)\n"
        "except ImportError as e:\n"
        "    print('demo', e)\n"
    )
    lines = out.splitlines()
    assert lines[0] == "16"
    assert len(lines) == 5
    for line in lines[1:]:
        assert 'pip install "frugal-chains[langchain' in line, line


def test_an_exact_only_cache_needs_no_numpy(tmp_path: object) -> None:
    """``SemanticCache(semantic=False)`` with only the ``[langchain]`` extra (no numpy): stores, serves and reopens
    its file. Only vectors need numpy."""
    code = (
        "import sys\n"
        "sys.modules['numpy'] = None\n"
        "from frugal_chains.langchain import SemanticCache, with_cache\n"
        "from frugal_chains.metadata import cache_status\n"
        "from frugal_chains.testing import FakeUsageChatModel\n"
        f"path = {str(tmp_path) + '/exact.db'!r}\n"
        "for kw in ({}, {'path': path}, {'path': path}):\n"
        "    bot = with_cache(FakeUsageChatModel(), SemanticCache(semantic=False, **kw))\n"
        "    bot.invoke('What are your hours?')\n"
        "    print(cache_status(bot.invoke('What are your hours?').response_metadata))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["hit", "hit", "hit"]
