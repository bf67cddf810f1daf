"""`rune status --watch`: the live view rendered from made-up snapshots, and its loop."""

from __future__ import annotations

import io
from typing import Any

import pytest
from rich.console import Console
from rich.progress_bar import ProgressBar

from rune_mcp.cli import main
from rune_mcp.cli.live import _job_bar, render, watch_live
from rune_mcp.config import load_settings
from rune_mcp.errors import UsageError
from rune_mcp.server.models import StatusResult


def _status(step: int = 12, **overrides: Any) -> StatusResult:
    fields: dict[str, Any] = {
        "version": "0.1.0", "adapters": 12,
        "jobs": {"queued": 2, "running": 2, "done": 7, "failed": 1},
        "running": [
            {"id": "job-train", "transcript": "/x/session-a.jsonl", "message": "training",
             "progress": {"step": step, "total": 30}},
            {"id": "job-load", "transcript": None, "message": "loading the base model",
             "progress": None},
        ],
        "queued": [{"id": "job-wait", "transcript": "session-b.jsonl", "source": "watch",
                    "attempts": 1, "ready_in_s": 42.0}],
        "recent_failures": [{"id": "job-bad", "transcript": "session-c.jsonl",
                             "error": "too little to learn from this session."}],
        "worker_active": True, "base_model": {"name": "SmolLM2-135M-Instruct"},
        "backend": "llama.cpp", "problems": [],
    }
    fields.update(overrides)
    return StatusResult(**fields)


def _watcher(running: bool = True) -> dict[str, Any]:
    return {
        "running": running, "pid": 4242 if running else None, "files": 2,
        "bytes_pending": 3072,
        "offsets": [{"path": "/logs/behind.jsonl", "offset": 1024, "size": 4096},
                    {"path": "/logs/caught-up.jsonl", "offset": 500, "size": 500}],
        "roots": [{"agent": "claude-code", "path": "/home/me/.claude/projects", "exists": True,
                   "mode": "inotify"}],
        "sessions": {"finished": 3, "open": 1},
    }


def _text(renderable: Any, width: int = 140) -> str:
    buffer = io.StringIO()
    Console(file=buffer, width=width, color_system=None).print(renderable)
    return buffer.getvalue()


def test_render_shows_jobs_with_progress_and_the_watcher() -> None:
    text = _text(render(_status(), _watcher(), now=0.0))
    assert "Rune 0.1.0" in text and "12 adapters" in text and "worker active" in text
    assert "queued 2  running 2  done 7  failed 1" in text
    assert "job-train" in text and "session-a.jsonl" in text and "12/30 40%" in text
    assert "━" in text  # the bars themselves
    assert "job-load" in text and "working" in text and "loading the base model" in text
    assert "job-wait" in text and "42 s" in text
    assert "job-bad" in text and "too little to learn" in text
    assert "running (pid 4242)" in text and "3.0 KiB not yet read" in text
    assert "behind.jsonl" in text and "1.0 KiB / 4.0 KiB" in text
    assert "caught-up.jsonl" not in text  # read to the end: no bar
    assert "inotify" in text and "sessions: 3 finished, 1 open" in text
    assert "Ctrl-C stops" in text


def test_render_of_an_idle_library_and_a_stopped_watcher() -> None:
    idle = _status(jobs={"queued": 0, "running": 0, "done": 0, "failed": 0}, running=[],
                   queued=[], recent_failures=[], worker_active=False, adapters=None,
                   base_model=None, problems=["the base model is missing; fix RUNE_BASE_MODEL."])
    watcher = {**_watcher(running=False), "offsets": [], "bytes_pending": 0}
    text = _text(render(idle, watcher, now=0.0))
    assert "? adapters" in text and "base unavailable" in text and "no worker running" in text
    assert "problem: the base model is missing" in text
    assert "job-" not in text and "reading" not in text
    assert "not running" in text and "`rune watch` starts it" in text


def test_job_bar_follows_the_steps() -> None:
    bar, label = _job_bar({"step": 15, "total": 60})
    assert (bar.completed, bar.total, label) == (15, 60, "15/60 25%")
    pulse, label = _job_bar(None)
    assert isinstance(pulse, ProgressBar) and pulse.total is None and label == "working"
    assert _job_bar({"step": 0, "total": 0})[1] == "working"


def test_watch_live_redraws_until_ctrl_c() -> None:
    steps = iter([10, 20, 30])
    calls: list[float] = []

    def gather() -> tuple[StatusResult, dict[str, Any]]:
        return _status(step=next(steps)), _watcher()

    def sleep(seconds: float) -> None:
        calls.append(seconds)
        if len(calls) == 3:
            raise KeyboardInterrupt

    buffer = io.StringIO()
    console = Console(file=buffer, width=140, force_terminal=True, color_system=None)
    assert watch_live(load_settings(), console=console, gather=gather, sleep=sleep) == 0
    assert calls == [1.0, 1.0, 1.0]
    out = buffer.getvalue()
    assert "10/30 33%" in out and "20/30 66%" in out and "30/30 100%" in out


def test_watch_needs_a_terminal_and_no_json(capsys: pytest.CaptureFixture[str]) -> None:
    console = Console(file=io.StringIO(), force_terminal=False)
    with pytest.raises(UsageError, match="needs a terminal"):
        watch_live(load_settings(), console=console, gather=lambda: (_status(), _watcher()))
    assert main(["status", "--watch", "--json"]) == 2
    assert "use --json alone" in capsys.readouterr().err
    assert main(["status", "--watch"]) == 2  # stdout is captured here, not a terminal
    assert "needs a terminal" in capsys.readouterr().err
