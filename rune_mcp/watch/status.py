"""What `rune status` shows about the watcher, read from its state file without writing it."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import psutil

from rune_mcp import sqlite
from rune_mcp.config import Settings
from rune_mcp.watch.sources import sources_for
from rune_mcp.watch.tail import STATE_DB


def _pid_alive(pid: int) -> bool:
    """Whether a process with this id exists, on Linux, macOS and Windows (where
    `os.kill(pid, 0)` would end the process instead of probing it). A process of another user
    exists too, even though this one may not signal it."""
    return bool(psutil.pid_exists(pid))


def watch_status(settings: Settings, limit: int = 10) -> dict[str, Any]:
    """What `rune status` shows about the watcher: roots, whether it runs, offsets, sessions.

    Reads the state file read-only and never creates it.
    """
    roots = [
        {"agent": s.agent, "path": str(s.root), "exists": s.root.is_dir()}
        for s in sources_for(settings)
    ]
    out: dict[str, Any] = {
        "state_file": str(settings.home / STATE_DB), "roots": roots, "running": False,
        "pid": None, "files": 0, "bytes_pending": 0, "offsets": [], "sessions": {},
        "recent_sessions": [],
    }
    path = settings.home / STATE_DB
    if not path.exists():
        return out
    try:
        conn = sqlite.connect_readonly(path)
    except sqlite3.Error:
        return out
    try:
        _status_from(conn, out, limit)
    except sqlite3.Error as exc:
        out["error"] = _unreadable(path, exc)
    finally:
        conn.close()
    return out


def _unreadable(path: Path, exc: sqlite3.Error) -> str:
    if sqlite.is_damage(exc):
        return (f"the watcher state {path} is damaged ({exc}); `rune watch` moves it aside and "
                "starts afresh, or run `rune doctor --repair`.")
    return f"cannot read the watcher state ({exc})"


def _status_from(conn: sqlite3.Connection, out: dict[str, Any], limit: int) -> None:
    meta = conn.execute("SELECT value FROM meta WHERE key = 'watcher'").fetchone()
    info = json.loads(meta["value"]) if meta else {}
    pid = info.get("pid")
    out["running"] = isinstance(pid, int) and _pid_alive(pid)
    out["pid"] = pid if out["running"] else None
    observers = info.get("observers", {}) if out["running"] else {}
    for root in out["roots"]:
        root["mode"] = observers.get(root["path"], "not watched")
    row = conn.execute(
        "SELECT COUNT(*) AS n, COALESCE(SUM(MAX(size - offset, 0)), 0) AS behind FROM files"
    ).fetchone()
    out["files"], out["bytes_pending"] = int(row["n"]), int(row["behind"])
    out["offsets"] = [
        {"path": r["path"], "offset": r["offset"], "size": r["size"]}
        for r in conn.execute(
            "SELECT path, offset, size FROM files ORDER BY updated DESC LIMIT ?", (limit,)
        )
    ]
    out["sessions"] = {
        r["state"]: r["n"]
        for r in conn.execute("SELECT state, COUNT(*) AS n FROM sessions GROUP BY state")
    }
    out["recent_sessions"] = [
        {
            "transcript": Path(r["path"]).name, "agent": r["agent"], "state": r["state"],
            "reason": r["reason"], "job_id": r["job_id"], "steps": r["steps"],
        }
        for r in conn.execute(
            "SELECT * FROM sessions WHERE state != 'historic' "
            "ORDER BY COALESCE(finished_at, last_growth) DESC LIMIT ?",
            (limit,),
        )
    ]
