"""`rune watch` on the command line: --once for cron, bad arguments, one watcher per library."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from rune_mcp.cli import main
from rune_mcp.config import load_settings
from rune_mcp.distill.queue import JobQueue
from rune_mcp.watch import Watcher
from watch.sessions import claude_lines, write_lines


def _session(home: Path, name: str, age: float) -> Path:
    path = home / ".claude" / "projects" / "-home-dev-acme" / f"{name}.jsonl"
    write_lines(path, claude_lines(f"task {name}", session=name))
    t = time.time() - age
    os.utime(path, (t, t))
    return path


def test_once_queues_finished_sessions_and_exits(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    home = Path(os.environ["HOME"])
    done = _session(home, "done", age=600)
    _session(home, "live", age=0)  # still being written: left for a later run
    monkeypatch.setenv("RUNE_MIN_SESSION_STEPS", "4")
    assert main(["watch", "--once", "--no-train", "--idle-seconds", "120", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary == {"files_read": 2, "queued": 1, "jobs_run": None}
    jobs = JobQueue(load_settings()).recent()
    assert [(j.path, j.source, j.state) for j in jobs] == [(str(done), "watcher", "queued")]
    # A second run reads nothing new and queues nothing again.
    assert main(["watch", "--once", "--no-train", "--idle-seconds", "120", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["queued"] == 0
    assert len(JobQueue(load_settings()).recent()) == 1


def test_bad_idle_seconds_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["watch", "--once", "--idle-seconds", "0"]) == 2
    assert "--idle-seconds must be a positive" in capsys.readouterr().err


def test_one_watcher_per_library(capsys: pytest.CaptureFixture[str]) -> None:
    first = Watcher(load_settings(), enqueue=lambda **_kw: "job", train=False)
    from rune_mcp.watch import _single_watcher

    with _single_watcher(first.settings):
        assert main(["watch", "--once", "--no-train"]) == 2
    assert "another `rune watch` is already running" in capsys.readouterr().err
    first.close()
