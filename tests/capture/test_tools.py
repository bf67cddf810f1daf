"""Tool families: decided once at capture, recorded on the step, computed for old JSON."""

from __future__ import annotations

import json

import pytest

from capture.builders import ClaudeSession
from rune_mcp.capture import parse_text
from rune_mcp.capture.tools import family_of, tool_family
from rune_mcp.trajectory import Step, Trajectory


@pytest.mark.parametrize(("tool", "tool_input", "family"), [
    ("Bash", {"command": "ls"}, "run"),
    ("shell", {"command": ["bash", "-lc", "make"]}, "run"),
    ("run_terminal_cmd", {"command": "npm test"}, "run"),
    ("Edit", {"file_path": "a.py"}, "edit"),
    ("apply_patch", {"input": "*** Begin Patch"}, "edit"),
    ("str_replace_editor", {"command": "str_replace", "path": "a.py"}, "edit"),
    ("str_replace_editor", {"command": "view", "path": "a.py"}, "read"),
    ("Read", {"file_path": "a.py"}, "read"),
    ("mcp__fs__read_file", {"path": "a.py"}, "read"),
    ("list_dir", {}, "read"),
    ("Grep", {"pattern": "x"}, "search"),
    ("codebase_search", {"query": "x"}, "search"),
    ("web_search", None, "search"),
    ("TodoWrite", {"todos": []}, "other"),
    ("Task", {"prompt": "look"}, "other"),
    ("mcp__github__create_issue", {}, "other"),
    (None, None, "other"),
])
def test_tool_family(tool: str | None, tool_input: dict[str, object] | None, family: str) -> None:
    assert tool_family(tool, tool_input) == family


def test_parsers_record_the_family_on_calls_and_their_results() -> None:
    s = ClaudeSession()
    s.user("look, then fix")
    s.call("Read", {"file_path": "/p/a.py"}, "x = 1")
    s.edit("/p/a.py", "x = 1", "x = 2")
    s.bash("pytest -q", "1 passed")
    traj = parse_text(s.text())
    tools = [(st.kind, st.tool, st.family) for st in traj.steps if st.tool]
    assert tools == [
        ("tool_call", "Read", "read"), ("tool_result", "Read", "read"),
        ("tool_call", "Edit", "edit"), ("tool_result", "Edit", "edit"),
        ("tool_call", "Bash", "run"), ("tool_result", "Bash", "run"),
    ]
    assert all(st.family is None for st in traj.steps if st.kind == "user")
    assert json.loads(traj.to_json())["steps"][1]["family"] == "read"


def test_trajectory_json_without_families_gets_them_computed() -> None:
    s = ClaudeSession()
    s.user("edit it")
    s.call("str_replace_editor", {"command": "view", "path": "/p/a.py"}, "x = 1")
    s.bash("make", "ok")
    traj = parse_text(s.text())
    data = traj.to_dict()
    for step in data["steps"]:
        del step["family"]  # JSON written before steps had a family
    again = Trajectory.from_dict(data)
    assert [st.family for st in again.steps] == [st.family for st in traj.steps]
    assert [st.family for st in again.steps if st.tool] == ["read", "read", "run", "run"]
    assert again.id == traj.id  # the family is derived, never part of the content id


def test_a_step_built_by_hand_has_the_family_its_tool_implies() -> None:
    assert family_of(Step(0, "tool_call", tool="Bash", input={"command": "ls"})) == "run"
    assert family_of(Step(0, "tool_call", tool="Bash", family="other")) == "other"
    assert family_of(Step(0, "assistant", text="hi")) is None
