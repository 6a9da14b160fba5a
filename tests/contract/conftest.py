"""Fixtures of the adapter contract suite: every test runs once per wing and (where it says so) per call mode.

See ``tests/contract/__init__.py`` for what the suite is, how to add a component and the framework limits.
"""

from __future__ import annotations

import pytest

from tests.contract.wings import MODES, WINGS, Wing


@pytest.fixture(params=WINGS, ids=[w.name for w in WINGS])
def wing(request: pytest.FixtureRequest) -> Wing:
    """LangChain, LlamaIndex ``chat`` and LlamaIndex ``complete``: the same scenarios, the same expectations."""
    return request.param  # type: ignore[no-any-return]


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    """invoke, async invoke, stream, async stream (each wing's own methods for them)."""
    return request.param  # type: ignore[no-any-return]
