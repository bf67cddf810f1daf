"""End to end: a Claude Code session written under ~/.claude/projects becomes exactly one
adapter after the idle timeout, with `rune watch` running and no tool call from anyone.

HOME points at a temporary folder (the autouse fixture), so `claude_dir` takes its default,
`~/.claude`, exactly as for a user. Training uses the embedded base model with one optimizer
step: the point is the path from a file on disk to an adapter in the library.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rune_mcp.config import load_settings
from rune_mcp.distill.queue import JobQueue
from rune_mcp.watch import watch_status
from watch.sessions import claude_lines

pytestmark = pytest.mark.slow


def _wait(condition: object, what: str, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; log:\n{log.read_text()[-4000:]}")
        time.sleep(0.25)


def test_a_session_on_disk_becomes_exactly_one_adapter(tmp_path: Path) -> None:
    home = Path(os.environ["HOME"])
    env = {
        **os.environ,
        "RUNE_IDLE_SECONDS": "1.5",
        "RUNE_TRAIN_STEPS": "1",
        "RUNE_MIN_SESSION_STEPS": "4",
    }
    settings = load_settings(env)
    assert settings.claude_dir == home / ".claude"
    log = tmp_path / "watch.log"
    with log.open("wb") as err:
        watcher = subprocess.Popen(
            [sys.executable, "-m", "rune_mcp", "watch"], env=env,
            stdout=subprocess.DEVNULL, stderr=err,
        )
    try:
        _wait(lambda: watch_status(settings)["pid"] == watcher.pid, "the watcher", 60, log)
        session = home / ".claude" / "projects" / "-home-dev-acme" / "4f1c-e2e.jsonl"
        session.parent.mkdir(parents=True)
        lines = claude_lines("make the acme build pass", turns=3, session="4f1c-e2e")
        with session.open("a", encoding="utf-8") as handle:  # written as an agent would
            for line in lines:
                handle.write(line + "\n")
                handle.flush()
                time.sleep(0.05)
        jobs = JobQueue(settings)
        _wait(lambda: any(j.terminal for j in jobs.recent()), "the job to finish", 900, log)
        time.sleep(3 * 1.5)  # several idle timeouts more: nothing may be queued again
        watcher.send_signal(signal.SIGTERM)
        assert watcher.wait(timeout=60) == 0, log.read_text()[-4000:]
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()

    done = jobs.recent()
    assert len(done) == 1, [j.to_dict() for j in done]
    job = done[0]
    assert job.state == "done", job.error
    assert job.source == "watcher" and job.path == str(session)

    from rune_mcp.library import Library

    with Library.open(settings) as library:
        adapters = library.list()
    assert [a.adapter_id for a in adapters] == [job.adapter_id]
    assert adapters[0].session_id == "4f1c-e2e"
    assert adapters[0].trajectory_id == job.trajectory_id
    status = watch_status(settings)
    assert status["sessions"] == {"queued": 1} and status["running"] is False
