"""The watcher obeys the capture controls: excluded projects and paused capture are skipped,
with the reason recorded, and capture goes on once resumed."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from rune_mcp.capture import control
from rune_mcp.config import Settings, load_settings
from rune_mcp.watch import Watcher
from watch.sessions import claude_lines, write_lines

IDLE = 60.0


@pytest.fixture
def base(tmp_path: Path) -> Settings:
    return load_settings().with_overrides(claude_dir=tmp_path / "claude", idle_seconds=IDLE,
                                          min_session_steps=4)


def _run(settings: Settings, sessions: dict[str, str]) -> tuple[list[str], dict[str, Any]]:
    """Write one Claude Code session per name (value: its cwd), let them go idle, and return
    what was queued and each session's (state, reason)."""
    queued: list[str] = []

    def enqueue(*, path: Path | None, text: str | None, fmt: str, session_id: str | None) -> str:
        queued.append(session_id or "")
        return f"job-{len(queued)}"

    watcher = Watcher(settings, enqueue=enqueue, train=False)
    try:
        for name, cwd in sessions.items():
            path = settings.claude_dir / "projects" / f"-{name}" / f"{name}.jsonl"
            write_lines(path, claude_lines(f"task {name}", session=name, cwd=cwd))
        watcher.files.scan()
        watcher.tracker.settle(time.time() + IDLE + 1)
        rows = watcher.db.conn.execute("SELECT path, state, reason FROM sessions").fetchall()
        return queued, {Path(r["path"]).stem: (r["state"], r["reason"]) for r in rows}
    finally:
        watcher.close()


def test_exclude_projects_are_skipped(base: Settings, tmp_path: Path) -> None:
    settings = base.with_overrides(exclude_projects=[str(tmp_path / "clients" / "*")])
    queued, states = _run(settings, {"a": str(tmp_path / "clients" / "acme"),
                                     "b": str(tmp_path / "own")})
    assert queued == ["b"]
    assert states["a"][0] == "skipped" and "exclude_projects" in states["a"][1]


def test_paused_project_is_skipped_and_resume_restarts_capture(
    base: Settings, tmp_path: Path
) -> None:
    control.pause(base, tmp_path / "quiet")
    queued, states = _run(base, {"a": str(tmp_path / "quiet" / "app"),
                                 "b": str(tmp_path / "loud")})
    assert queued == ["b"]
    assert states["a"] == ("skipped", control.pause_reason(base, str(tmp_path / "quiet")))
    control.resume(base, tmp_path / "quiet")
    queued, _ = _run(base, {"c": str(tmp_path / "quiet" / "app")})
    assert queued == ["c"]


def test_paused_everywhere_queues_nothing(base: Settings, tmp_path: Path) -> None:
    control.pause(base)
    queued, states = _run(base, {"a": str(tmp_path / "x"), "b": str(tmp_path / "y")})
    assert queued == []
    assert {s for s, _ in states.values()} == {"skipped"}
    assert all("paused everywhere" in str(reason) for _, reason in states.values())
