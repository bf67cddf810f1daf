"""Aider: the last run of a chat history, and how the watcher splits a history into runs."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from capture.builders import AIDER_HISTORY

from rune_mcp.agents import aider
from rune_mcp.capture import parse_path
from rune_mcp.config import Settings


def test_aider_history_last_run_with_edit_blocks(tmp_path: Path) -> None:
    path = tmp_path / ".aider.chat.history.md"
    path.write_text(AIDER_HISTORY)
    traj = parse_path(path)
    assert traj.format == "aider" and traj.task == "make greet() say hello"
    assert traj.session_id == "aider-2025-03-04-10-11-12"
    assert traj.project == str(tmp_path.resolve())
    assert traj.stats["earlier_runs"] == 1
    edit = next(s for s in traj.steps if s.kind == "tool_call" and s.tool == "Edit")
    assert edit.input == {"file_path": "greet.py", "old_string": '    return "hi"',
                          "new_string": '    return "hello"'}
    run = [s for s in traj.steps if s.tool == "shell"]
    assert run[0].input == {"command": "pytest -q"} and run[1].is_error


def test_histories_in_the_configured_project_roots(settings: Settings, tmp_path: Path) -> None:
    assert aider.places(settings) == []
    [place] = aider.places(settings.with_overrides(aider_roots=[tmp_path]))
    assert (place.root, place.depth) == (tmp_path, 1)
    found = place.match(tmp_path, tmp_path / "app" / ".aider.chat.history.md")
    assert found is not None and found.group == f"aider:{tmp_path / 'app'}"
    assert place.match(tmp_path, tmp_path / "app" / "README.md") is None
    runs = aider.AGENT.runs
    assert runs is not None and runs.header == b"# aider chat started at"
    assert runs.started(b"# aider chat started at 2025-03-04 10:11:12") == datetime(
        2025, 3, 4, 10, 11, 12).timestamp()
    assert runs.started(b"# aider chat started at sometime") is None
