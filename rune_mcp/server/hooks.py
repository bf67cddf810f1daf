"""`rune hook claude-code` and `rune hook cursor`: queue a session when the agent says it ended.

An agent waits for its hooks, so a hook must return in a fraction of a second and must never
fail the agent: it reads the event from stdin, queues the transcript (no parsing, no
training), makes sure a worker will run, and exits 0 whatever happened, logging problems to
`RUNE_HOME/logs/rune.log`.

Events and what they mean for memory:
- Claude Code `SessionEnd`: the session is over; the job is ready at once.
- Claude Code `Stop` / `PreCompact` and Cursor `stop`: the agent finished a turn but the user
  may go on, so the job waits `idle_seconds`; every later turn pushes it back. One session
  is therefore queued once, and learned after it goes quiet (Ctrl+C fires no `SessionEnd`).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

from rune_mcp.config import Settings
from rune_mcp.errors import RuneError

log = logging.getLogger(__name__)

MAX_HOOK_INPUT = 1_000_000
IMMEDIATE_EVENTS = {"SessionEnd"}
DEBOUNCED_EVENTS = {"Stop", "PreCompact", "SubagentStop", "stop", "sessionEnd"}


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


def claude_code_job(event: dict[str, Any], settings: Settings) -> tuple[Path, str | None, float]:
    """(transcript path, session id, delay) for a Claude Code hook event."""
    name = str(event.get("hook_event_name") or "")
    if name not in IMMEDIATE_EVENTS | DEBOUNCED_EVENTS:
        raise SkipEventError(f"event {name or '?'} does not end a session")
    raw = event.get("transcript_path")
    if name == "SubagentStop" and settings.watch_subagents:
        raw = event.get("agent_transcript_path") or raw
    if not isinstance(raw, str) or not raw:
        raise SkipEventError(f"{name} event without transcript_path")
    session_id = event.get("session_id")
    delay = 0.0 if name in IMMEDIATE_EVENTS else settings.idle_seconds
    return Path(raw), session_id if isinstance(session_id, str) else None, delay


def cursor_job(event: dict[str, Any], settings: Settings) -> tuple[Path, str | None, float]:
    """(transcript path, conversation id, delay) for a Cursor `stop` hook event."""
    name = str(event.get("hook_event_name") or "stop")
    if name not in DEBOUNCED_EVENTS:
        raise SkipEventError(f"event {name} does not end a session")
    conversation = event.get("conversation_id")
    conversation = conversation if isinstance(conversation, str) else None
    raw = event.get("transcript_path")
    if isinstance(raw, str) and raw:
        return Path(raw), conversation, settings.idle_seconds
    if conversation:
        from rune_mcp.server.safety import find_session_transcript

        try:
            return find_session_transcript(conversation, settings), conversation, (
                settings.idle_seconds
            )
        except RuneError:
            pass
    raise SkipEventError("no agent transcript for this conversation; the watcher reads Cursor's history")


class SkipEventError(Exception):
    """The event carries nothing to queue; logged at info, not an error."""


def run_hook(agent: str, stream: IO[str], settings: Settings, spawn: bool = True) -> int:
    """Handle one hook call; always returns 0 so the agent is never blocked or failed."""
    try:
        event = read_event(stream)
        pick = claude_code_job if agent == "claude-code" else cursor_job
        path, session_id, delay = pick(event, settings)
        job = _enqueue(settings, path, session_id, delay, agent)
        log.info("hook %s: job %s (%s) for session %s", agent, job.id, job.state, session_id)
        if spawn and not job.terminal:
            _ensure_worker(settings)
    except SkipEventError as why:
        log.info("hook %s: nothing queued (%s)", agent, why)
    except RuneError as exc:
        log.warning("hook %s: %s", agent, exc)
    except Exception:  # a hook never fails its agent; the traceback goes to the log
        log.exception("hook %s failed", agent)
    return 0


def _enqueue(
    settings: Settings, path: Path, session_id: str | None, delay: float, agent: str
) -> Any:
    from rune_mcp.distill.queue import JobQueue
    from rune_mcp.server.safety import resolve_transcript

    real = resolve_transcript(str(path), settings)
    fmt = "claude-code" if agent == "claude-code" else "auto"
    return JobQueue(settings).enqueue(
        path=real, fmt=fmt, source="hook", session_id=session_id, delay=delay
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
