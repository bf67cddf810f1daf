"""The trajectory model: versioned JSON, content ids, project names."""

from __future__ import annotations

import json

import pytest

from rune_mcp.errors import ParseError
from rune_mcp.trajectory import FORMAT_VERSION, Episode, Step, Trajectory


def _traj(**kw: object) -> Trajectory:
    steps = [Step(0, "user", text="fix it"),
             Step(1, "tool_call", tool="Bash", tool_id="t", input={"command": "make"}),
             Step(2, "tool_result", tool="Bash", tool_id="t", output="ok")]
    base: dict[str, object] = {"format": "generic", "session_id": "s", "task": "fix it",
                               "steps": steps, "project": "/home/me/acme-api/"}
    base.update(kw)
    return Trajectory(**base)  # type: ignore[arg-type]


def test_round_trip_with_nested_subagents_and_episodes() -> None:
    sub = _traj(session_id="sub")
    traj = _traj(episodes=[Episode(1, "$ make", "boom", fix_step=1, fix="$ make -j1")],
                 subagents=[sub], redactions={"jwt": 1}, stats={"lines": 3})
    data = json.loads(traj.to_json())
    assert data["format_version"] == FORMAT_VERSION
    assert data["subagents"][0]["format_version"] == FORMAT_VERSION
    again = Trajectory.from_dict(data)
    assert again == traj and again.id == traj.id


def test_id_is_content_hash_independent_of_session_and_time() -> None:
    a = _traj(session_id="one", started="2026-01-01")
    b = _traj(session_id="two", started="2026-02-02")
    assert a.id == b.id and len(a.id) == 64
    assert _traj(task="other").id != a.id


def test_unknown_version_and_bad_fields_are_clear_errors() -> None:
    data = _traj().to_dict()
    with pytest.raises(ParseError, match="format version 99 is not supported"):
        Trajectory.from_dict({**data, "format_version": 99})
    with pytest.raises(ParseError, match="missing or unknown field"):
        Trajectory.from_dict({**data, "steps": [{"index": 0, "kind": "user", "bogus": 1}]})


def test_project_name() -> None:
    assert _traj().project_name == "acme-api"
    assert _traj(project=None).project_name == "project"
    assert _traj(project="C:\\code\\tool").project_name == "tool"
