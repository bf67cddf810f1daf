"""What kind of thing a tool call does: read, edit, run, search or other.

Every agent names its tools differently (Claude Code `Bash`, Codex `shell`, Cursor
`run_terminal_cmd`, an MCP server `mcp__fs__read_file`), and episodes and lessons only care
what a call does: a command that may fail and be fixed, an edit that may be the fix, a look at
files that changes nothing. The family is decided here once, at capture, from the tool name
and its input, and recorded on the step (`Step.family`), so nothing downstream matches tool
names again.

`tool_family("Bash", {"command": "ls"})` -> `"run"`;
`tool_family("str_replace_editor", {"command": "view", "path": "a.py"})` -> `"read"`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from rune_mcp.trajectory import Step, ToolFamily

RUN_TOOLS = frozenset(
    {"bash", "shell", "exec_command", "local_shell", "run_terminal_cmd", "run_command",
     "terminal", "execute_command", "run_shell_command", "container.exec"}
)
EDIT_TOOLS = frozenset(
    {"edit", "multiedit", "write", "notebookedit", "apply_patch", "edit_file", "write_file",
     "create_file", "str_replace_editor", "str_replace_based_edit_tool", "search_replace",
     "replace", "patch"}
)
READ_TOOLS = frozenset(
    {"read", "notebookread", "read_file", "view_image", "ls", "list_dir", "bashoutput",
     "webfetch"}
)
SEARCH_TOOLS = frozenset(
    {"glob", "grep", "grep_search", "file_search", "codebase_search", "websearch",
     "web_search"}
)
# Editor tools that also show a file: `{"command": "view"}` only reads it.
_VIEWING_EDITORS = frozenset({"str_replace_editor", "str_replace_based_edit_tool"})
_TOOL_KINDS = ("tool_call", "tool_result")


def tool_family(tool: str | None, tool_input: Mapping[str, Any] | None = None) -> ToolFamily:
    """The family of a call to `tool` with `tool_input` (MCP prefixes `mcp__x__` ignored)."""
    name = (tool or "").lower().rsplit("__", 1)[-1]
    if name in RUN_TOOLS:
        return "run"
    if name in EDIT_TOOLS:
        viewing = name in _VIEWING_EDITORS and (tool_input or {}).get("command") == "view"
        return "read" if viewing else "edit"
    if name in READ_TOOLS:
        return "read"
    if name in SEARCH_TOOLS:
        return "search"
    return "other"


def family_of(step: Step) -> ToolFamily | None:
    """The recorded family of a tool step, or the one its tool and input imply (a step built
    by hand has none recorded); None for steps that are not tool calls or results."""
    if step.kind not in _TOOL_KINDS:
        return None
    return step.family or tool_family(step.tool, step.input)


def fill_families(steps: Iterable[Step]) -> None:
    """Record the family on tool steps that have none (trajectory JSON written before the
    field existed); a result takes the family of the call it answers."""
    calls: dict[str, ToolFamily] = {}
    for step in steps:
        if step.kind not in _TOOL_KINDS:
            continue
        if step.family is None:
            known = calls.get(step.tool_id) if step.tool_id and step.kind == "tool_result" else None
            step.family = known or tool_family(step.tool, step.input)
        if step.kind == "tool_call" and step.tool_id:
            calls[step.tool_id] = step.family
