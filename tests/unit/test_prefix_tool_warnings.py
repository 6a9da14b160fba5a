"""Warnings about tool definitions: once per tool for dynamic-looking content, each time a definition changes."""

from __future__ import annotations

from frugal_chains.prefix import PrefixFormatter


def test_a_date_in_a_tool_description_is_warned_about_once_and_a_changed_tool_each_time() -> None:
    tool = {
        "type": "function",
        "function": {"name": "search", "description": "Dates look like '2024-05-01'.", "parameters": {}},
    }
    fmt = PrefixFormatter(model="gpt-4o")
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]

    def tool_warnings(tools: list[dict[str, object]]) -> list[str]:
        return [w for w in fmt.plan(messages, tools=tools).report.warnings if "tool 'search'" in w]

    assert len(tool_warnings([tool])) == 1  # first sight: the date is pointed out
    assert tool_warnings([tool]) == []  # the same definition again: nothing new to say
    changed = {"type": "function", "function": {**tool["function"], "description": "Today is 2026-12-08."}}  # type: ignore[dict-item]
    assert any("changed between calls" in w for w in tool_warnings([changed]))
