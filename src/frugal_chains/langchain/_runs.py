"""Child runs for chat models that call other chat models (cascade, cache and formatter wrappers).

Inside ``_generate`` LangChain hands a ``CallbackManagerForLLMRun``, which has no ``get_child()``. A wrapper
builds the child manager itself from the run manager's handlers, tags and metadata (the inheritable ones and
those set on the wrapper itself, since the wrapper's own run is not counted), with the wrapper's run as parent,
so the inner calls are child runs that callbacks (and budgets) see. The wrapper's ``WRAPPER_KEY`` flag
never reaches the children.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from langchain_core.callbacks import (
    AsyncCallbackManager,
    AsyncCallbackManagerForLLMRun,
    CallbackManager,
    CallbackManagerForLLMRun,
)

from frugal_chains.metadata import WRAPPER_KEY

__all__ = ["achild_callbacks", "child_callbacks"]


_M = TypeVar("_M", CallbackManager, AsyncCallbackManager)


def _as_child(
    manager: _M,
    run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun,
    tag: str | None,
    metadata: Mapping[str, Any] | None,
) -> _M:
    # The wrapper's own run is not counted, so what was set on the wrapper itself (its constructor's callbacks,
    # tags and metadata: local to its run) must reach the calls it makes: all of it is passed on, inherited.
    manager.set_handlers(list(dict.fromkeys([*run_manager.handlers, *run_manager.inheritable_handlers])))
    manager.add_tags(list(dict.fromkeys([*run_manager.tags, *run_manager.inheritable_tags])))
    own = {**run_manager.inheritable_metadata, **run_manager.metadata}
    own.pop(WRAPPER_KEY, None)
    for key in [k for k in own if k.startswith("ls_")]:
        del own[key]  # the wrapper's LangSmith params (ls_model_name="cascade(...)"): each child sets its own
    manager.add_metadata(own)
    if tag is not None:
        manager.add_tags([tag], inherit=False)
    if metadata:
        manager.add_metadata(dict(metadata))  # inherited: it reaches the leaf through wrappers
    return manager


def child_callbacks(
    run_manager: CallbackManagerForLLMRun | None,
    tag: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> CallbackManager | None:
    """A callback manager whose runs are children of ``run_manager``'s run (``None`` passes through): for chat
    models that call other chat models inside ``_generate`` (see ``docs/budgets.md``).

    ``tag`` goes on the child run only; ``metadata`` is inherited by the child's own children too.

    Example:
        >>> from frugal_chains.langchain import child_callbacks
        >>> child_callbacks(None) is None
        True
    """
    if run_manager is None:
        return None
    return _as_child(
        CallbackManager(handlers=[], parent_run_id=run_manager.run_id), run_manager, tag, metadata
    )


def achild_callbacks(
    run_manager: AsyncCallbackManagerForLLMRun | None,
    tag: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> AsyncCallbackManager | None:
    """Async :func:`child_callbacks`."""
    if run_manager is None:
        return None
    return _as_child(
        AsyncCallbackManager(handlers=[], parent_run_id=run_manager.run_id), run_manager, tag, metadata
    )
