"""The text an adapter is indexed by: its task, then a short digest of what the session learned.

A later task is phrased like a task ("the login test fails with KeyError"), so the task text
leads; the digest adds the words such a task tends to share with the session: the errors met
and fixed, the files and commands touched. It is kept short, because the embedding model reads
only its first ~256 word pieces and a long tail would drown the task.
"""

from __future__ import annotations

import re
from typing import Any

from rune_mcp.trajectory import Trajectory

TASK_CHARS = 500
DIGEST_CHARS = 500
_PATH_KEYS = ("file_path", "path", "filename", "notebook_path")
_COMMAND_KEYS = ("command", "cmd")


def _first_line(text: str, limit: int = 120) -> str:
    """`"Traceback...\\n  File x\\nKeyError: 'a'"` -> `"KeyError: 'a'"` (last error-like line)."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if not lines:
        return ""
    errorish = [ln for ln in lines if re.search(r"(Error|Exception|error:|FAILED|failed)", ln)]
    line = (errorish[-1] if errorish else lines[0])[:limit]
    return line


def _touched(traj: Trajectory) -> tuple[list[str], list[str]]:
    """Distinct file names and command heads touched by tool calls, in first-seen order."""
    files: dict[str, None] = {}
    commands: dict[str, None] = {}
    for step in traj.steps:
        args: dict[str, Any] = step.input or {}
        for key in _PATH_KEYS:
            value = args.get(key)
            if isinstance(value, str) and value:
                files[value.replace("\\", "/").rsplit("/", 1)[-1]] = None
        for key in _COMMAND_KEYS:
            value = args.get(key)
            if isinstance(value, str) and value.strip():
                commands[" ".join(value.split()[:3])[:60]] = None
    return list(files), list(commands)


def embed_text_for(traj: Trajectory) -> str:
    """Task plus digest, e.g. `"fix the db test\\nerrors: AttributeError: ... \\nfiles: db.py"`."""
    parts = [" ".join(traj.task.split())[:TASK_CHARS]]
    errors = [_first_line(e.error) for e in traj.episodes if e.error]
    fixes = [_first_line(e.fix, 80) for e in traj.episodes if e.fix]
    files, commands = _touched(traj)
    digest = []
    if errors:
        digest.append("errors: " + "; ".join(dict.fromkeys(e for e in errors if e)))
    if fixes:
        digest.append("fixes: " + "; ".join(dict.fromkeys(f for f in fixes if f)))
    if files:
        digest.append("files: " + ", ".join(files[:12]))
    if commands:
        digest.append("commands: " + "; ".join(commands[:6]))
    tail = "\n".join(digest)[:DIGEST_CHARS]
    return "\n".join(p for p in (parts[0], tail) if p)
