"""`rune hook <agent>`: queue a session when the agent says it ended, and answer the event that
starts one with Rune's note (`rune_mcp/note.py`).

An agent waits for its hooks, so a hook must return quickly and must never fail the agent: it
reads the event from stdin, reads and parses the transcript once (redacted, as every queued
trajectory is; no training), queues it, makes sure a worker will run, and exits 0 whatever
happened, logging problems to `RUNE_HOME/logs/rune.log`.

Which events end a session, and how soon the job may run, is each agent's `hook`
(`rune_mcp/agents/`): an event that closes the session makes the job ready at once; one that
only ends a turn (the user may go on) makes it wait `idle_seconds`, and every later turn
pushes it back, so one session is queued once and learned after it goes quiet. A session of
an excluded project, or any while automatic capture is paused (`rune_mcp/capture/control.py`),
is not queued.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import replace
from typing import IO, Any

from rune_mcp import agents
from rune_mcp.agents.base import MAX_HOOK_INPUT, HookJob, SkipEventError, read_event
from rune_mcp.config import Settings
from rune_mcp.errors import RuneError

log = logging.getLogger(__name__)

__all__ = ["MAX_HOOK_INPUT", "queue_event", "read_event", "run_hook"]


def run_hook(
    agent: str, stream: IO[str], settings: Settings, spawn: bool = True, out: IO[str] | None = None
) -> int:
    """Handle one hook call; always returns 0 so the agent is never blocked or failed. A
    session-start event is answered with the note on `out` (stdout); any other may queue."""
    from rune_mcp import note

    try:
        event = read_event(stream)
        start = note.is_start(agent, event)
    except Exception:  # unreadable stdin (not UTF-8, closed): nothing to answer or queue
        log.exception("hook %s: could not read the event", agent)
        return 0
    if start:
        return note.answer_start(agent, event, settings, out or sys.stdout)
    return queue_event(agent, event, settings, spawn)


def queue_event(agent: str, event: dict[str, Any], settings: Settings, spawn: bool = True) -> int:
    """Queue the session an end-of-turn or end-of-session event names; always returns 0."""
    try:
        found = _job(agent, event, settings)
        job = _enqueue(settings, found)
        log.info("hook %s: job %s (%s) for session %s", agent, job.id, job.state,
                 found.session_id)
        if spawn and not job.terminal:
            _ensure_worker(settings)
    except SkipEventError as why:
        log.info("hook %s: nothing queued (%s)", agent, why)
    except RuneError as exc:
        log.warning("hook %s: %s", agent, exc)
    except Exception:  # a hook never fails its agent; the traceback goes to the log
        log.exception("hook %s failed", agent)
    return 0


def _job(agent: str, event: dict[str, Any], settings: Settings) -> HookJob:
    """The agent's reading of the event, with the transcript found when it names only the
    session."""
    hook = agents.get(agent).hook
    if hook is None:
        raise SkipEventError(f"{agent} has no hooks")
    job = hook(event, settings)
    if job.path is not None:
        return job
    from rune_mcp.server.safety import find_session_transcript

    try:
        path = find_session_transcript(job.session_id or "", settings)
    except RuneError:
        raise SkipEventError("no transcript for this session in the agents' folders; the "
                             "watcher reads the agent's history") from None
    return replace(job, path=path)


def _enqueue(settings: Settings, job: HookJob) -> Any:
    """Check and read the transcript once, as a tool call does, and queue what was read: the
    event comes from whatever wrote the agent's hook input, and the file may change later."""
    from rune_mcp.capture.control import check
    from rune_mcp.distill.queue import JobQueue
    from rune_mcp.server.safety import open_transcript

    check(settings, job.project, "hook", [job.path])  # the queue checks what the file names
    file = open_transcript(str(job.path), settings)
    return JobQueue(settings).enqueue(
        path=file, fmt=job.fmt, source="hook", session_id=job.session_id, delay=job.delay
    )


def _ensure_worker(settings: Settings) -> None:
    """Start a detached `rune jobs work` unless a worker is already alive.

    The hook returns at once; the worker waits out a debounce delay, trains at low priority,
    and exits when the queue is empty. Two of them cannot both train: the worker lock lets
    only one run and the other exits.
    """
    from rune_mcp.distill.queue import JobQueue

    if JobQueue(settings).status()["worker"]["active"]:
        return
    log_dir = settings.home / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    with (log_dir / "worker.out").open("ab") as out:
        subprocess.Popen(
            [sys.executable, "-m", "rune_mcp", "jobs", "work"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
            env={**os.environ, "RUNE_HOME": str(settings.home)},
            close_fds=True,
        )
