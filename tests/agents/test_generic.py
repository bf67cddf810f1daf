"""The generic JSON format: for agents without a parser, and Rune's own output."""

from __future__ import annotations

import json

from rune_mcp.capture import parse_text


def test_generic_json_and_own_output_round_trip() -> None:
    doc = {"task": "tidy imports", "agent": "my-agent", "project": "/src/x", "steps": [
        {"kind": "tool_call", "tool": "Bash", "tool_id": "1", "input": {"command": "ruff ."}},
        {"kind": "tool_result", "tool_id": "1", "output": "x.py:1:1: F401 unused", "is_error": False},
        {"kind": "bogus"},
        {"kind": "tool_call", "tool": "Bash", "tool_id": "2", "input": {"command": "ruff --fix ."}},
        {"kind": "tool_result", "tool_id": "2", "output": "All checks passed!"},
    ]}
    traj = parse_text(json.dumps(doc))
    assert traj.format == "generic" and traj.agent == "my-agent"
    assert traj.steps[0].kind == "user" and traj.steps[0].text == "tidy imports"
    assert traj.stats["bad_steps"] == 1
    assert len(traj.episodes) == 1  # the linter finding counts as a failure
    again = parse_text(traj.to_json())
    assert again.task == traj.task and len(again.steps) == len(traj.steps)


def test_a_step_may_say_what_its_tool_does() -> None:
    doc = {"task": "deploy", "steps": [
        {"kind": "tool_call", "tool": "deployer", "tool_id": "1", "input": {}, "family": "run"},
        {"kind": "tool_result", "tool_id": "1", "output": "done"},
        {"kind": "tool_call", "tool": "deployer", "tool_id": "2", "family": "bogus"},
    ]}
    traj = parse_text(json.dumps(doc))
    assert [s.family for s in traj.steps if s.tool] == ["run", "run", "other"]
