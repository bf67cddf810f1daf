"""When a session counts as finished, what is queued for it, and what is filtered out.

These drive the watcher by hand (`scan`, then `settle` at a chosen time) so every decision is
deterministic; file times are set explicitly where idleness matters.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from rune_mcp.config import Settings, load_settings
from rune_mcp.watch import Watcher, watch_status
from watch.sessions import (
    aider_run,
    claude_lines,
    codex_lines,
    continue_claude,
    cursor_db,
    cursor_lines,
    write_lines,
)

IDLE = 60.0


class FakeQueue:
    """Records what the watcher queues (the real queue is tested in test_crash/test_e2e)."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(
        self, *, path: Path | None, text: str | None, fmt: str, session_id: str | None
    ) -> str:
        self.calls.append({"path": path, "text": text, "fmt": fmt, "session_id": session_id})
        return f"job-{len(self.calls)}"


@pytest.fixture
def base(tmp_path: Path) -> Settings:
    return load_settings().with_overrides(
        claude_dir=tmp_path / "claude", codex_dir=tmp_path / "codex",
        cursor_dir=tmp_path / "cursor", cursor_state_db=tmp_path / "cursor-db" / "state.vscdb",
        aider_roots=[tmp_path / "code"], idle_seconds=IDLE, min_session_steps=4,
    )


def _watcher(settings: Settings) -> tuple[Watcher, FakeQueue]:
    fake = FakeQueue()
    return Watcher(settings, enqueue=fake, train=False), fake


def _age(path: Path, seconds: float) -> None:
    """Pretend the file was last written `seconds` ago."""
    t = time.time() - seconds
    os.utime(path, (t, t))


def _states(w: Watcher) -> dict[str, tuple[str, str | None]]:
    rows = w.db.conn.execute("SELECT path, state, reason FROM sessions").fetchall()
    return {Path(r["path"]).name: (r["state"], r["reason"]) for r in rows}


def _claude(settings: Settings, project: str, name: str, **kw: Any) -> Path:
    path = settings.claude_dir / "projects" / project / f"{name}.jsonl"
    return write_lines(path, claude_lines(f"task {name}", session=name, **kw))


def test_a_session_is_queued_once_after_the_idle_timeout(base: Settings) -> None:
    w, queued = _watcher(base)
    path = _claude(base, "-home-dev-acme", "s1")
    w.files.scan()
    w.tracker.settle(time.time())
    assert queued.calls == []  # still being written, as far as anyone knows
    w.tracker.settle(time.time() + IDLE + 1)
    assert queued.calls == [
        {"path": path, "text": None, "fmt": "claude-code", "session_id": "s1"}
    ]
    w.tracker.settle(time.time() + 10 * IDLE)
    w.files.scan()
    assert len(queued.calls) == 1
    assert _states(w)["s1.jsonl"][0] == "queued"


def test_next_deadline_is_the_idle_timeout(base: Settings) -> None:
    w, _ = _watcher(base)
    path = _claude(base, "-home-dev-acme", "s1")
    w.files.scan()
    deadline = w.tracker.settle(time.time())
    assert deadline == pytest.approx(path.stat().st_mtime + IDLE, abs=0.01)


def test_a_new_session_in_the_same_project_finishes_the_previous(base: Settings) -> None:
    w, queued = _watcher(base)
    first = _claude(base, "-home-dev-acme", "s1")
    _age(first, 5)
    w.files.scan()
    w.tracker.settle(time.time())
    assert queued.calls == []
    _claude(base, "-home-dev-acme", "s2")  # the user ran /clear or started claude again
    _claude(base, "-home-dev-other", "s3")  # another project: no effect on s1
    w.files.scan()
    w.tracker.settle(time.time())
    assert [c["path"].name for c in queued.calls] == ["s1.jsonl"]
    assert _states(w)["s1.jsonl"] == ("queued", "a new session started in the same project")


def test_first_scan_keeps_only_the_latest_session_of_a_project_open(base: Settings) -> None:
    w, queued = _watcher(base)
    paths = [_claude(base, "-home-dev-acme", f"s{i}") for i in range(3)]
    for i, path in enumerate(paths):
        _age(path, 30 - i * 10)
    w.files.scan()
    w.tracker.settle(time.time())
    assert sorted(c["path"].name for c in queued.calls) == ["s0.jsonl", "s1.jsonl"]


def test_small_sessions_are_skipped(base: Settings) -> None:
    w, queued = _watcher(base)
    path = base.claude_dir / "projects" / "-p" / "tiny.jsonl"
    write_lines(path, claude_lines("hello", turns=0)[:1])
    w.files.scan()
    w.tracker.settle(time.time() + IDLE + 1)
    assert queued.calls == []
    state, reason = _states(w)["tiny.jsonl"]
    assert state == "skipped" and reason is not None and "too small" in reason


def test_runeignore_and_ignore_projects_opt_out(base: Settings, tmp_path: Path) -> None:
    secret = tmp_path / "work" / "secret"
    secret.mkdir(parents=True)
    (secret / ".runeignore").write_text("")
    private = tmp_path / "work" / "private" / "app"
    settings = base.with_overrides(ignore_projects=[str(tmp_path / "work" / "private")])
    w, queued = _watcher(settings)
    _claude(settings, "-secret", "a", cwd=str(secret / "sub"))
    _claude(settings, "-private", "b", cwd=str(private))
    _claude(settings, "-public", "c", cwd=str(tmp_path / "work" / "public"))
    w.files.scan()
    w.tracker.settle(time.time() + IDLE + 1)
    assert [c["path"].name for c in queued.calls] == ["c.jsonl"]
    states = _states(w)
    assert ".runeignore" in str(states["a.jsonl"][1])
    assert "ignore_projects" in str(states["b.jsonl"][1])


def test_subagents_only_when_asked(base: Settings) -> None:
    folder = base.claude_dir / "projects" / "-p"
    write_lines(folder / "main.jsonl", claude_lines("main task", session="main"))
    write_lines(folder / "main" / "subagents" / "agent-a1.jsonl",
                claude_lines("sub task", session="main"))
    write_lines(folder / "main" / "subagents" / "agent-acompact-1.jsonl",
                claude_lines("compaction", session="main"))
    w, queued = _watcher(base)
    w.files.scan()
    w.tracker.settle(time.time() + IDLE + 1)
    assert [c["path"].name for c in queued.calls] == ["main.jsonl"]
    w.close()
    w2, queued2 = _watcher(base.with_overrides(watch_subagents=True, home=base.home / "2"))
    w2.files.scan()
    w2.tracker.settle(time.time() + IDLE + 1)
    assert sorted(c["path"].name for c in queued2.calls) == [
        "agent-a1.jsonl", "agent-acompact-1.jsonl", "main.jsonl"]


def test_a_session_that_grows_is_queued_again_only_with_real_content(base: Settings) -> None:
    w, queued = _watcher(base)
    path = _claude(base, "-p", "s1")
    w.files.scan()
    w.tracker.settle(time.time() + IDLE + 1)
    assert len(queued.calls) == 1
    # Claude Code appends metadata after a session ends: not content.
    write_lines(path, ['{"type":"last-prompt","lastPrompt":"task s1"}'], append=True)
    w.files.scan()
    w.tracker.settle(time.time() + IDLE + 1)
    assert len(queued.calls) == 1 and _states(w)["s1.jsonl"][0] == "queued"
    # One more short exchange: real lines, but fewer than min_session_steps.
    continue_claude(path, turns=0, start=100)
    w.files.scan()
    w.tracker.settle(time.time() + IDLE + 1)
    assert len(queued.calls) == 1
    assert _states(w)["s1.jsonl"] == ("finished", "only 1 new content lines since last time")
    # A real continuation: queued again, as a new trajectory.
    continue_claude(path, turns=3, start=200)
    w.files.scan()
    w.tracker.settle(time.time() + IDLE + 1)
    assert len(queued.calls) == 2
    ids = w.db.conn.execute("SELECT trajectory_id, steps FROM sessions").fetchone()
    assert ids["steps"] > 8


def test_old_transcripts_are_history_until_they_grow(base: Settings) -> None:
    path = _claude(base, "-p", "old")
    _age(path, 3 * 86400)  # written three days before the watcher ever ran
    w, queued = _watcher(base)
    w.files.scan()
    w.tracker.settle(time.time() + IDLE + 1)
    assert queued.calls == [] and _states(w)["old.jsonl"][0] == "historic"
    continue_claude(path, turns=3, start=500)
    w.files.scan()
    w.tracker.settle(time.time() + IDLE + 1)
    assert [c["path"].name for c in queued.calls] == ["old.jsonl"]


def test_aider_history_is_split_into_runs(base: Settings, tmp_path: Path) -> None:
    history = tmp_path / "code" / "shop" / ".aider.chat.history.md"
    history.parent.mkdir(parents=True)
    hour_ago = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(time.time() - 3600))
    history.write_text(aider_run(hour_ago, "first run task"))
    w, queued = _watcher(base)
    w.files.scan()
    w.tracker.settle(time.time())
    assert queued.calls == []
    with history.open("a") as handle:  # aider started again in the same project
        handle.write(aider_run(time.strftime("%Y-%m-%d %H:%M:%S"), "second run task"))
    w.files.scan()
    w.tracker.settle(time.time())
    assert len(queued.calls) == 1
    first = queued.calls[0]
    assert first["fmt"] == "aider" and first["path"] is None
    assert "first run task" in first["text"] and "second run task" not in first["text"]
    w.tracker.settle(time.time() + IDLE + 1)
    assert len(queued.calls) == 2 and "second run task" in queued.calls[1]["text"]


def test_old_aider_runs_are_history(base: Settings, tmp_path: Path) -> None:
    history = tmp_path / "code" / ".aider.chat.history.md"
    history.parent.mkdir(parents=True)
    history.write_text(aider_run("2025-01-02 10:00:00", "old one")
                       + aider_run("2025-01-03 10:00:00", "old two"))
    _age(history, 300 * 86400)
    w, queued = _watcher(base)
    w.files.scan()
    w.tracker.settle(time.time() + IDLE + 1)
    assert queued.calls == []
    assert set(w.db.conn.execute("SELECT state FROM sessions").fetchall()[0]) == {"historic"}


def test_codex_sessions_group_by_their_working_folder(base: Settings) -> None:
    day = base.codex_dir / "sessions" / "2026" / "01" / "02"
    a = write_lines(day / "rollout-2026-01-02T10-00-00-a.jsonl", codex_lines("a", "/w/x", "a"))
    _age(a, 5)
    w, queued = _watcher(base)
    w.files.scan()
    w.tracker.settle(time.time())
    write_lines(day / "rollout-2026-01-02T11-00-00-b.jsonl", codex_lines("b", "/w/x", "b"))
    w.files.scan()
    w.tracker.settle(time.time())
    assert [c["path"].name for c in queued.calls] == ["rollout-2026-01-02T10-00-00-a.jsonl"]
    assert queued.calls[0]["fmt"] == "codex"


def test_cursor_agent_transcripts(base: Settings) -> None:
    folder = base.cursor_dir / "projects" / "home-dev-acme" / "agent-transcripts" / "u1"
    write_lines(folder / "u1.jsonl", cursor_lines("cursor task"))
    w, queued = _watcher(base)
    w.files.scan()
    w.tracker.settle(time.time() + IDLE + 1)
    assert [(c["path"].name, c["fmt"]) for c in queued.calls] == [("u1.jsonl", "cursor")]


def test_cursor_state_database_conversations(base: Settings) -> None:
    db = base.cursor_state_db
    assert db is not None
    now_ms = int(time.time() * 1000)
    cursor_db(db, {"c1": [(1, "add a health endpoint"), (2, "Added it."), (1, "and a test"),
                          (2, "Test added and passing.")]}, now_ms)
    w, queued = _watcher(base)
    w.files.scan()
    w.tracker.settle(time.time() + IDLE + 1)  # the database is read once it settles
    w.tracker.settle(time.time() + 2 * IDLE + 2)  # then the conversation's idle timeout
    assert len(queued.calls) == 1
    call = queued.calls[0]
    assert call["fmt"] == "generic" and "health endpoint" in call["text"]
    assert call["session_id"] == "c1"


def test_a_deleted_transcript_is_not_queued(base: Settings) -> None:
    w, queued = _watcher(base)
    path = _claude(base, "-p", "gone")
    w.files.scan()
    path.unlink()
    w.files.scan()
    w.tracker.settle(time.time() + IDLE + 1)
    assert queued.calls == []
    assert _states(w)["gone.jsonl"] == ("skipped", "transcript deleted")


def test_status_shows_roots_offsets_and_sessions(base: Settings) -> None:
    assert watch_status(base)["files"] == 0  # nothing yet, and nothing created
    assert not (base.home / "watch").exists()
    w, _ = _watcher(base)
    path = _claude(base, "-p", "s1")
    w.files.scan()
    w.tracker.settle(time.time() + IDLE + 1)
    status = watch_status(base)
    assert status["running"] is False
    assert [r["agent"] for r in status["roots"]] == [
        "claude-code", "codex", "cursor", "cursor-db", "aider"]
    assert status["offsets"] == [
        {"path": str(path), "offset": path.stat().st_size, "size": path.stat().st_size}]
    assert status["sessions"] == {"queued": 1}
    assert status["recent_sessions"][0]["job_id"] == "job-1"
