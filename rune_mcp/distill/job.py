"""One job of the queue: its record, its table, and how long a failed attempt waits."""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from rune_mcp.heal import StateFile

SCHEMA_VERSION = 1
JobState = Literal["queued", "running", "done", "failed"]
STATES: tuple[JobState, ...] = ("queued", "running", "done", "failed")
SOURCES = ("manual", "mcp", "hook", "watcher", "cli", "auto")  # auto: queued by Rune itself
# A job is a session to remember, or (format `evolve`, no transcript, `path` the project)
# a project's adapters to evolve (rune_mcp.distill.evolvejob).
EVOLVE_FORMAT = "evolve"
MAX_BACKOFF_S = 3600.0

JOBS_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    key TEXT NOT NULL,
    state TEXT NOT NULL,
    source TEXT NOT NULL,
    fmt TEXT NOT NULL,
    path TEXT,
    trajectory_json TEXT,
    session_id TEXT,
    content_sha TEXT,
    trajectory_id TEXT,
    adapter_id TEXT,
    reused INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    not_before REAL NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    started REAL,
    finished REAL,
    progress_step INTEGER,
    progress_total INTEGER,
    progress_message TEXT,
    error TEXT,
    result TEXT
);
CREATE INDEX IF NOT EXISTS jobs_ready ON jobs (state, not_before);
CREATE INDEX IF NOT EXISTS jobs_key ON jobs (key, created);
CREATE INDEX IF NOT EXISTS jobs_trajectory ON jobs (trajectory_id);
"""


def queue_file(path: Path) -> StateFile:
    """The queue's file as `rune_mcp.heal` sees it: a damaged one is moved aside and every
    job still readable is copied into the fresh one (queued jobs carry their trajectory)."""
    return StateFile(
        path=path,
        what=f"the job queue {path}",
        schema=JOBS_SCHEMA,
        version=SCHEMA_VERSION,
        fix="upgrade Rune.",
        keep=("jobs", "meta"),
        noun="jobs",
        cost="queue those sessions again with `rune jobs add PATH`",
    )


@dataclass(frozen=True)
class Job:
    """One row of the queue, as callers see it (the stored trajectory JSON is left out)."""

    id: str
    state: JobState
    source: str
    fmt: str
    path: str | None
    session_id: str | None
    trajectory_id: str | None
    adapter_id: str | None
    reused: bool | None
    attempts: int
    max_attempts: int
    not_before: float
    created: float
    updated: float
    started: float | None
    finished: float | None
    progress_step: int | None
    progress_total: int | None
    progress_message: str | None
    error: str | None
    result: dict[str, Any] | None

    @property
    def finished_ok(self) -> bool:
        return self.state == "done"

    @property
    def terminal(self) -> bool:
        return self.state in ("done", "failed")

    @property
    def kind(self) -> str:
        """`remember` (a session) or `evolve` (a project's adapters)."""
        return "evolve" if self.fmt == EVOLVE_FORMAT else "remember"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def job_from_row(row: sqlite3.Row) -> Job:
    """A `jobs` row as callers see it."""
    result = json.loads(row["result"]) if row["result"] else None
    return Job(
        id=row["id"],
        state=row["state"],
        source=row["source"],
        fmt=row["fmt"],
        path=row["path"],
        session_id=row["session_id"],
        trajectory_id=row["trajectory_id"],
        adapter_id=row["adapter_id"],
        reused=None if row["reused"] is None else bool(row["reused"]),
        attempts=row["attempts"],
        max_attempts=row["max_attempts"],
        not_before=row["not_before"],
        created=row["created"],
        updated=row["updated"],
        started=row["started"],
        finished=row["finished"],
        progress_step=row["progress_step"],
        progress_total=row["progress_total"],
        progress_message=row["progress_message"],
        error=row["error"],
        result=result,
    )


def backoff_seconds(attempts: int, base: float) -> float:
    """Delay before retry number `attempts` (1-based): base, 2*base, 4*base ... capped at 1 h.

    `backoff_seconds(3, 30.0)` -> 120.0
    """
    return float(min(MAX_BACKOFF_S, base * (2 ** max(0, attempts - 1))))


def brief(job: Job) -> dict[str, Any]:
    """The fields of a job worth showing in a status listing."""
    return {
        "id": job.id,
        "kind": job.kind,
        "state": job.state,
        "source": job.source,
        "session_id": job.session_id,
        "transcript": Path(job.path).name if job.path else None,
        "attempts": job.attempts,
        "progress": (
            None
            if job.progress_total is None
            else {"step": job.progress_step, "total": job.progress_total}
        ),
        "message": job.progress_message,
        "error": job.error,
        "adapter_id": job.adapter_id,
        "ready_in_s": max(0.0, round(job.not_before - time.time(), 1)),
    }
