"""`rune hook <agent>`: queue a session when the agent says it ended.

An agent waits for its hooks, so a hook must return quickly and must never fail the agent: it
reads the event from stdin, reads and parses the transcript once (redacted, as every queued
trajectory is; no training), queues it, makes sure a worker will run, and exits 0 whatever
happened, logging problems to `RUNE_HOME/logs/rune.log`.

Which events end a session, and how soon the job may run, is each agent's `hook`
(`rune_mcp/agents/`): an event that closes the session makes the job ready at once; one that
only ends a turn (the user may go on) makes it wait `idle_seconds`, and every later turn
pushes it back, so one session is queued once and learned after it goes quiet.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from dataclasses import replace
from typing import IO, Any

from rune_mcp import agents
from rune_mcp.agents.base import HookJob, SkipEventError
from rune_mcp.config import Settings
from rune_mcp.errors import RuneError

log = logging.getLogger(__name__)

MAX_HOOK_INPUT = 1_000_000


def read_event(stream: IO[str]) -> dict[str, Any]:
    """The hook's JSON object from stdin; anything else is a RuneError-free empty dict."""
    raw = stream.read(MAX_HOOK_INPUT + 1)
    if len(raw) > MAX_HOOK_INPUT:
        log.warning("hook input larger than %d bytes ignored", MAX_HOOK_INPUT)
        return {}
    try:
        data = json.loads(raw) if raw.strip() else {}
    except json.JSONDecodeError:
        log.warning("hook input is not JSON; ignored")
        return {}
    return data if isinstance(data, dict) else {}


def run_hook(agent: str, stream: IO[str], settings: Settings, spawn: bool = True) -> int:
    """Handle one hook call; always returns 0 so the agent is never blocked or failed."""
    try:
        event = read_event(stream)
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
    from rune_mcp.distill.queue import JobQueue
    from rune_mcp.server.safety import open_transcript

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
