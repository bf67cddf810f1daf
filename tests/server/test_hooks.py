"""`rune hook`: queue each session once, never fail or block the agent."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from watch.sessions import claude_lines, cursor_lines, write_lines

from rune_mcp.config import Settings
from rune_mcp.distill.queue import JobQueue
from rune_mcp.server.hooks import run_hook

REPO = Path(__file__).resolve().parents[2]


def _event(path: Path, name: str, session: str = "s-1") -> io.StringIO:
    return io.StringIO(json.dumps({
        "session_id": session, "transcript_path": str(path), "cwd": "/home/dev/app",
        "hook_event_name": name, "reason": "other",
    }))


def _session(settings: Settings, name: str = "s-1", turns: int = 2) -> Path:
    """A Claude Code transcript (hooks parse it when they queue it)."""
    path = settings.claude_dir / "projects" / "-home-dev-app" / f"{name}.jsonl"
    return write_lines(path, claude_lines(f"fix the build ({name})", turns=turns, session=name))


def test_turns_queue_one_debounced_job_and_session_end_makes_it_ready(settings: Settings) -> None:
    path = _session(settings)
    for name in ("Stop", "PreCompact", "Stop"):
        assert run_hook("claude-code", _event(path, name), settings, spawn=False) == 0
    queue = JobQueue(settings)
    [job] = queue.recent()
    assert job.state == "queued" and job.source == "hook" and job.session_id == "s-1"
    assert job.not_before > time.time() + settings.idle_seconds - 30
    assert run_hook("claude-code", _event(path, "SessionEnd"), settings, spawn=False) == 0
    [ready] = queue.recent()
    assert ready.id == job.id and ready.not_before <= time.time()


def test_bad_input_never_fails_the_agent(settings: Settings, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.jsonl"
    outside.write_text("{}\n")
    for stdin in ["", "not json", "[1, 2]", "{}", json.dumps({"hook_event_name": "Stop"}),
                  json.dumps({"hook_event_name": "UserPromptSubmit", "transcript_path": "x"}),
                  "x" * 2_000_000]:
        assert run_hook("claude-code", io.StringIO(stdin), settings, spawn=False) == 0
    assert run_hook("claude-code", _event(outside, "SessionEnd"), settings, spawn=False) == 0
    assert run_hook("claude-code", _event(tmp_path / "gone.jsonl", "SessionEnd"), settings,
                    spawn=False) == 0
    assert JobQueue(settings).counts()["queued"] == 0


def test_cursor_stop_hook_finds_the_agent_transcript(settings: Settings) -> None:
    conversation = "0f9a6c1e-1111-2222-3333-444455556666"
    path = (settings.cursor_dir / "projects" / "home-dev-app" / "agent-transcripts"
            / conversation / f"{conversation}.jsonl")
    write_lines(path, cursor_lines("rename the settings page"))
    stdin = io.StringIO(json.dumps({
        "conversation_id": conversation, "generation_id": "g", "hook_event_name": "stop",
        "workspace_roots": ["/home/dev/app"], "status": "completed",
    }))
    assert run_hook("cursor", stdin, settings, spawn=False) == 0
    [job] = JobQueue(settings).recent()
    assert job.path == str(path.resolve()) and job.session_id == conversation


def test_hook_command_returns_fast_and_starts_one_worker(settings: Settings) -> None:
    """The real command: exit 0 at once; the detached worker it starts runs the job (here a
    session with nothing to learn, so it fails fast) and exits."""
    path = _session(settings, "s-2", turns=0)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNE_")}
    env.update(RUNE_HOME=str(settings.home), RUNE_CACHE_DIR=str(settings.cache_dir),
               PYTHONPATH=str(REPO), HOME=str(Path.home()))
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "rune_mcp", "hook", "claude-code"],
        input=_event(path, "SessionEnd", "s-2").getvalue(), text=True, env=env,
        capture_output=True, timeout=120, check=False,
    )
    took = time.monotonic() - start
    assert proc.returncode == 0 and proc.stdout == "", proc.stderr
    queue = JobQueue(settings)
    deadline = time.monotonic() + 120
    while queue.counts()["failed"] == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    [job] = queue.recent()
    status = queue.status()["worker"]
    if status["pid"]:  # never leave the worker behind, even when the test fails
        os.kill(status["pid"], signal.SIGTERM)
    assert job.state == "failed" and job.attempts == 1
    assert took < 30  # generous: the point is that it does not wait for the worker
