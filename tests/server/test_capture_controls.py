"""Excluded projects and paused capture across the ways in: hooks, the queue, the worker, the
`remember_session` tool, `rune remember` and `rune status`."""

from __future__ import annotations

import io
import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest

from rune_mcp.capture import control
from rune_mcp.capture.control import CaptureRefusedError
from rune_mcp.config import Settings
from rune_mcp.distill.queue import JobQueue
from rune_mcp.server.hooks import run_hook
from server.conftest import generic_transcript, text_of

APP = "/home/dev/app"


def _claude_session(settings: Settings, cwd: str = APP, name: str = "s-1") -> Path:
    from capture.builders import ClaudeSession

    s = ClaudeSession(name, cwd)
    s.user("make the order tests pass")
    s.bash("pytest -x", "1 failed", is_error=True)
    s.say("Fixing.")
    path = settings.claude_dir / "projects" / "-home-dev-app" / f"{name}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(s.text())
    return path


def _end(path: Path, name: str = "SessionEnd") -> io.StringIO:
    return io.StringIO(json.dumps({"session_id": "s-1", "transcript_path": str(path),
                                   "cwd": APP, "hook_event_name": name}))


def test_hooks_queue_nothing_for_an_excluded_project(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    path = _claude_session(settings)
    excluded = settings.with_overrides(exclude_projects=["/home/dev/*"])
    with caplog.at_level(logging.INFO, logger="rune_mcp"):
        assert run_hook("claude-code", _end(path), excluded, spawn=False) == 0
    assert JobQueue(settings).recent() == []
    assert "matches exclude_projects entry '/home/dev/*'" in caplog.text


def test_cursor_hook_is_refused_by_its_workspace_root(settings: Settings) -> None:
    """A Cursor agent transcript names no project; the hook event's `workspace_roots` does."""
    conversation = "0f9a6c1e-1111-2222-3333-444455556666"
    path = (settings.cursor_dir / "projects" / "home-dev-app" / "agent-transcripts"
            / conversation / f"{conversation}.jsonl")
    path.parent.mkdir(parents=True)
    path.write_text('{"role": "user", "message": {"content": [{"type": "text", '
                    '"text": "rename the util module"}]}}\n')
    event = {"conversation_id": conversation, "hook_event_name": "stop",
             "workspace_roots": [APP]}
    control.pause(settings, Path(APP))
    assert run_hook("cursor", io.StringIO(json.dumps(event)), settings, spawn=False) == 0
    assert JobQueue(settings).recent() == []
    control.resume(settings)
    assert run_hook("cursor", io.StringIO(json.dumps(event)), settings, spawn=False) == 0
    assert len(JobQueue(settings).recent()) == 1


def test_paused_hooks_queue_nothing_and_resume_restarts_them(settings: Settings) -> None:
    path = _claude_session(settings)
    control.pause(settings)
    assert run_hook("claude-code", _end(path), settings, spawn=False) == 0
    assert JobQueue(settings).recent() == []
    control.resume(settings)
    assert run_hook("claude-code", _end(path), settings, spawn=False) == 0
    assert [j.source for j in JobQueue(settings).recent()] == ["hook"]


def test_a_waiting_hook_job_is_not_learned_once_capture_is_paused(settings: Settings) -> None:
    """A `Stop` job waits for the session to go quiet; pausing in the meantime stops it."""
    path = _claude_session(settings)
    quick = settings.with_overrides(idle_seconds=0.05)
    assert run_hook("claude-code", _end(path, "Stop"), quick, spawn=False) == 0
    queue = JobQueue(settings)
    [job] = queue.recent()
    control.pause(settings, Path(APP))
    assert run_hook("claude-code", _end(path, "SessionEnd"), settings, spawn=False) == 0
    assert queue.get(job.id).state == "queued"  # already queued: the worker decides
    time.sleep(0.1)  # the session went quiet
    assert queue.work(once=True) == 1
    failed = queue.get(job.id)
    reason = str(control.pause_reason(settings, APP))
    assert failed.state == "failed" and failed.error == reason[0].upper() + reason[1:]


def test_explicit_text_of_an_excluded_project_is_refused_before_it_is_stored(
    settings: Settings,
) -> None:
    excluded = settings.with_overrides(exclude_projects=["/home/dev/tidewater"])
    with pytest.raises(CaptureRefusedError, match="^Project /home/dev/tidewater matches"):
        JobQueue(excluded).enqueue(text=generic_transcript(1), fmt="generic", source="mcp")
    assert JobQueue(settings).recent() == []
    control.pause(settings)  # paused: an explicit request still goes through
    job = JobQueue(settings).enqueue(text=generic_transcript(2), fmt="generic", source="mcp")
    assert job.state == "queued"


@pytest.mark.anyio
async def test_remember_session_refuses_an_excluded_project_in_one_sentence(
    settings: Settings, tmp_path: Path
) -> None:
    from mcp import Client

    from rune_mcp.server import build_server

    excluded = settings.with_overrides(exclude_projects=["/home/dev/tidewater"],
                                       allowed_roots=[tmp_path])
    (tmp_path / "session.json").write_text(generic_transcript(3))
    server = build_server(excluded, start_worker=False)
    async with Client(server, mode="legacy") as client:
        for args in ({"text": generic_transcript(4), "agent": "generic"},
                     {"transcript_path": str(tmp_path / "session.json")}):
            result = await client.call_tool("remember_session", args)
            assert result.is_error, args
            sentence = text_of(result)
            # (the server names no folder in an error: only the project's own name stays)
            assert sentence.startswith("Project tidewater matches exclude_projects entry")
            assert sentence.count(". ") == 0 and sentence.endswith(".")
    assert JobQueue(settings).recent() == []


def test_rune_remember_refuses_exclusions_and_says_when_capture_is_paused(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from rune_mcp.cli import main
    from rune_mcp.distill import remember

    session = tmp_path / "session.json"
    session.write_text(generic_transcript(5))
    monkeypatch.setenv("RUNE_EXCLUDE_PROJECTS", "/home/dev/tidewater")
    assert main(["remember", str(session)]) == 1
    assert capsys.readouterr().err.startswith(
        "rune: Project /home/dev/tidewater matches exclude_projects entry")
    monkeypatch.delenv("RUNE_EXCLUDE_PROJECTS")
    control.pause(settings)
    learned: list[Any] = []

    def fake(settings: Settings, traj: Any, method: Any = None, progress: Any = None) -> Any:
        learned.append(traj)
        return remember.RememberResult("a" * 64, traj.id, 1, 1, 0.1, None, "lora", True, 0.0,
                                       0.0, {})

    monkeypatch.setattr(remember, "remember_trajectory", fake)
    assert main(["remember", str(session)]) == 0
    err = capsys.readouterr().err
    assert "rune: Automatic capture is paused everywhere" in err
    assert len(learned) == 1  # asked for by name: remembered all the same


def test_status_shows_capture(settings: Settings, tmp_path: Path,
                              capsys: pytest.CaptureFixture[str],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    from rune_mcp.cli import main

    monkeypatch.setenv("RUNE_EXCLUDE_PROJECTS", "/srv/*")
    control.pause(settings, tmp_path)
    assert main(["status", "--json"]) == 0
    capture = json.loads(capsys.readouterr().out)["capture"]
    assert capture["paused_everywhere"] is False
    assert [p["project"] for p in capture["paused_projects"]] == [str(tmp_path)]
    assert capture["exclude_projects"] == ["/srv/*"]
    assert main(["status"]) == 0
    assert (f"capture: automatic capture on, paused for {tmp_path}; never remembered: /srv/*."
            in capsys.readouterr().out)
