"""What the LangChain and LlamaIndex prefix-caching adapters share (framework-free): building the core
:class:`~frugal_chains.prefix.PrefixFormatter` for a model, keeping the last report, and mapping the planner's
OpenAI-format messages back onto the caller's own message objects.

The planner decides everything; this module only translates. A message the plan left as it was is handed back as
the caller's own object (nothing a framework keeps on it is lost); a message the plan rewrote is rebuilt from the
plan, and a conversation turn the plan only prefixed with text (the request-context block) keeps its own content
after that text.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from frugal_chains.errors import ConfigurationError

if TYPE_CHECKING:
    from frugal_chains.prefix import PrefixFormatter, PrefixPlan, PrefixReport

__all__ = [
    "ReportSlot",
    "build_formatter",
    "cascade_prefix_options",
    "content_parts",
    "restored",
    "summary",
    "tool_marks",
    "with_tool_marks",
]

_T = TypeVar("_T")


def build_formatter(
    model: str | None,
    options: Mapping[str, Any],
    *,
    fallback_provider: str | None = None,
    owner: str,
) -> PrefixFormatter:
    """The core formatter for ``model`` with the caller's ``options``. ``fallback_provider`` (what the framework
    says serves the model, e.g. LangChain's ``ls_provider``) is used only when neither ``provider=`` nor
    ``rules=`` is given and the model's name does not tell the provider."""
    from frugal_chains.prefix import PrefixFormatter
    from frugal_chains.prefix.rules import infer_provider

    if not isinstance(model, str) or not model.strip():
        raise ConfigurationError(
            f"{owner} needs the model it formats for: pass model=, e.g. model='claude-sonnet-4-5'",
            field="model",
        )
    kwargs = dict(options)
    if (
        kwargs.get("provider") is None
        and kwargs.get("rules") is None
        and fallback_provider
        and infer_provider(model, fallback_provider) is not None
        # the name decides, except that a host with its own rules (Azure OpenAI: no prompt_cache_key) wins
        and (infer_provider(model) is None or fallback_provider.strip().lower().startswith("azure"))
    ):
        kwargs["provider"] = fallback_provider
    return PrefixFormatter(model=model, **kwargs)


def cascade_prefix_options(option: Any) -> dict[str, Any] | None:
    """A cascade's ``prefix_caching=`` as the options to wrap each tier with (None: leave the tiers as they are).
    ``True`` or a dict of options; ``model=`` is refused (each tier's own model is used)."""
    if option is None or option is False:
        return None
    if option is not True and not isinstance(option, Mapping):
        raise ConfigurationError(
            f"prefix_caching must be True or a dict of with_prefix_caching options, got {type(option).__name__}",
            field="prefix_caching",
        )
    options = dict(option) if isinstance(option, Mapping) else {}
    if "model" in options:
        raise ConfigurationError(
            "prefix_caching options apply to every tier: leave model= out (each tier's own model is used), or "
            "wrap the tiers yourself with with_prefix_caching(tier, model=...)",
            field="prefix_caching",
        )
    return options


class ReportSlot:
    """The last :class:`~frugal_chains.prefix.PrefixReport` a formatter produced (from any thread: with threads
    or concurrent tasks, read each call's own report from its result instead)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._report: PrefixReport | None = None

    def set(self, report: PrefixReport) -> None:
        with self._lock:
            self._report = report

    def get(self) -> PrefixReport | None:
        with self._lock:
            return self._report


def content_parts(message: Mapping[str, Any]) -> list[Any]:
    """An OpenAI-format message's content as a list of parts (a string is one text part)."""
    content = message.get("content")
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    return list(content)


def _prefixed_by(planned: Mapping[str, Any], original: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """The text parts ``planned`` puts before ``original``'s own content (same role and other keys), or None when
    ``planned`` is not ``original`` with text in front."""
    if planned.get("role") != original.get("role"):
        return None
    if {k: v for k, v in planned.items() if k != "content"} != {
        k: v for k, v in original.items() if k != "content"
    }:
        return None
    new, old = content_parts(planned), content_parts(original)
    if len(new) <= len(old):
        return None
    if old and new[len(new) - len(old) :] != old:
        return None
    head = new[: len(new) - len(old)]
    if not all(isinstance(p, Mapping) and p.get("type") == "text" for p in head):
        return None
    return [dict(p) for p in head]


def restored(
    originals: Sequence[_T],
    original_dicts: Sequence[Mapping[str, Any]],
    planned: Sequence[Mapping[str, Any]],
    *,
    build: Callable[[Mapping[str, Any]], _T],
    prepend: Callable[[_T, list[dict[str, Any]]], _T],
) -> list[_T]:
    """The planned messages as the framework's messages: a planned message equal to an original one is that
    original object; one that is an original with text parts in front is ``prepend(original, parts)``; any other
    is ``build(planned)``. Originals are matched in order, each once."""
    used = [False] * len(originals)
    out: list[_T] = []
    start = 0  # originals are matched in order: search from just after the last match first
    for p in planned:
        order = [*range(start, len(originals)), *range(0, min(start, len(originals)))]
        found = next((i for i in order if not used[i] and dict(original_dicts[i]) == dict(p)), None)
        if found is not None:
            used[found] = True
            start = found + 1
            out.append(originals[found])
            continue
        for i in order:
            head = None if used[i] else _prefixed_by(p, original_dicts[i])
            if head is not None:
                used[i] = True
                start = i + 1
                out.append(prepend(originals[i], head))
                break
        else:
            out.append(build(p))
    return out


def tool_marks(plan_tools: Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any] | None]:
    """The ``cache_control`` the plan put on each tool (on the tool, or on its ``function``), None where none."""
    marks: list[dict[str, Any] | None] = []
    for tool in plan_tools or ():
        mark = tool.get("cache_control") if isinstance(tool, Mapping) else None
        if mark is None and isinstance(tool, Mapping) and isinstance(tool.get("function"), Mapping):
            mark = tool["function"].get("cache_control")
        marks.append(dict(mark) if isinstance(mark, Mapping) else None)
    return marks


def with_tool_marks(tools: Sequence[Any], marks: Sequence[dict[str, Any] | None]) -> list[Any]:
    """The provider's own tool definitions with the plan's ``cache_control`` marks (a tool that is not a dict,
    e.g. a provider object, is left as it is)."""
    out: list[Any] = []
    for i, tool in enumerate(tools):
        mark = marks[i] if i < len(marks) else None
        if isinstance(tool, Mapping):
            rest = {k: v for k, v in tool.items() if k != "cache_control"}
            out.append({**rest, "cache_control": mark} if mark is not None else rest)
        else:
            out.append(tool)
    return out


def summary(plan: PrefixPlan) -> dict[str, Any]:
    """What an answer's metadata says about the formatting of its request (``frugal["prefix"]``): the sizes, the
    breakpoints, the TTL, the prefix hash and the warnings; no dynamic values (they may be personal data)."""
    report = plan.report
    return {
        "provider": report.provider,
        "model": report.model,
        "total_tokens": report.total_tokens,
        "cacheable_tokens": report.cacheable_tokens,
        "cacheable_share": report.cacheable_share,
        "breakpoints": len(report.breakpoints),
        "ttl": report.ttl,
        "prefix_hash": plan.prefix_hash,
        "changed": plan.changed,
        "warnings": list(report.warnings),
    }
