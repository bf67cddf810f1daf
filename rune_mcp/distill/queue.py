"""The job queue: sessions waiting to be distilled, shared by every Rune process on a library.

Each Claude Code window starts its own `rune serve`, hooks fire from yet other processes and the
watcher runs beside them, yet a CPU can train only one adapter at a time. So every request to
remember a session becomes a row in one SQLite file (`RUNE_HOME/jobs.sqlite3`, WAL mode, busy
timeout), and a single worker per library, elected by a file lock, takes rows one by one.

Every job holds the redacted trajectory it will learn, parsed when it is queued; the worker
never opens a transcript. A file checked at enqueue time and opened again minutes later could
be another file by then (a symlink or hard link swapped in), so a transcript is read once,
through the descriptor that was checked (`rune_mcp.capture.transcript_file`), and what is
stored is parsed from those bytes. No unredacted secret ever lands in the queue.

Deduplication:
- a transcript *file* is keyed by its real path; while a job for that path is still queued,
  enqueueing it again returns the same job with the newer content (a Claude Code `Stop` hook
  fires after every turn: one job, pushed back by `delay`), and an unchanged file (same
  SHA-256) is not parsed again. When the last job for the path is done and the file is
  unchanged, that done job is returned.
- raw *text* is keyed by its trajectory id.
- a job that holds no transcript (an evolve job) is keyed by what it works on
  (`enqueue_keyed`): while one of a key waits, queueing it again returns that one.
The worker records the trajectory id, and a trajectory already in the library (or already done
by another job) is reused, never trained twice.

The row itself is `distill/job.py`; running the jobs (retries, backoff, priority) is
`distill/worker.py`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Unpack

from rune_mcp import heal, sqlite
from rune_mcp.capture import database_magic, parse_file
from rune_mcp.capture.control import check
from rune_mcp.capture.transcript_file import TranscriptFile, read_transcript
from rune_mcp.config import Settings
from rune_mcp.distill.job import (
    MAX_BACKOFF_S,
    SCHEMA_VERSION,
    SOURCES,
    STATES,
    Job,
    JobState,
    backoff_seconds,
    brief,
    job_from_row,
    queue_file,
)
from rune_mcp.distill.worker import PERMANENT_ERRORS, Worker, WorkOptions, start_worker_thread
from rune_mcp.errors import UsageError
from rune_mcp.trajectory import Trajectory

# Importers take the queue's names from here.
__all__ = [
    "DB_NAME",
    "LOCK_NAME",
    "MAX_BACKOFF_S",
    "PERMANENT_ERRORS",
    "SCHEMA_VERSION",
    "SOURCES",
    "STATES",
    "Job",
    "JobQueue",
    "JobState",
    "backoff_seconds",
    "start_worker_thread",
]

log = logging.getLogger(__name__)

DB_NAME = "jobs.sqlite3"
LOCK_NAME = "jobs.worker.lock"


class JobQueue:
    """The persistent queue of one library (`settings.home`)."""

    def __init__(
        self, settings: Settings, max_attempts: int = 3, backoff_s: float = 30.0
    ) -> None:
        self.settings = settings
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.db_path = settings.home / DB_NAME
        self.lock_path = settings.home / LOCK_NAME
        self.state = queue_file(self.db_path)
        settings.home.mkdir(parents=True, exist_ok=True)
        self._init_db()

    # --- storage ------------------------------------------------------------------------

    def connect(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """A short-lived connection (closed on leaving the `with`): every process opens its
        own, so none is shared across threads. A damaged page met by a query raises
        `StateDamaged`, which names the file and `rune doctor --repair`."""
        return sqlite.guarded(heal.connect(self.state), what=self.state.what)

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction taken up front (BEGIN IMMEDIATE), so two processes never both
        read the same queued row and then both claim it."""
        with self.connect() as conn, sqlite.transaction(conn):
            yield conn

    def _init_db(self) -> None:
        # A file found damaged here is moved aside and its readable jobs kept (`rune_mcp.heal`).
        heal.open_state(self.state).close()

    def work(self, **options: Unpack[WorkOptions]) -> int | None:
        """Become this library's worker and run jobs until the queue is empty (`Worker.run`
        says how, and what the options do)."""
        return Worker(self).run(**options)

    # --- enqueue ------------------------------------------------------------------------

    def enqueue(
        self,
        path: Path | TranscriptFile | None = None,
        text: str | None = None,
        *,
        fmt: str = "auto",
        source: str = "manual",
        session_id: str | None = None,
        delay: float = 0.0,
        roots: Sequence[Path] | None = None,
    ) -> Job:
        """Queue one session (a transcript file or raw text) and return its job at once.

        `path` is a file already read and checked (`read_transcript`, as the tools and hooks
        do) or a path, read here: inside `roots` only, when given (None: a path the user named
        on the command line). `delay` holds the job back that many seconds; enqueueing the
        same path again while it waits pushes it back again (a debounce for hooks that fire
        after every turn), and a call with `delay=0` makes it ready now.
        """
        if (path is None) == (text is None):
            raise UsageError("give exactly one of a transcript path or text to remember.")
        if path is not None:
            if not isinstance(path, TranscriptFile):
                path = read_transcript(Path(path), roots, database_magic=database_magic())
            return self._enqueue_file(path, fmt, source, session_id, delay)
        assert text is not None
        return self._enqueue_text(text, fmt, source, session_id, delay)

    def _last(self, conn: sqlite3.Connection, key: str) -> sqlite3.Row | None:
        row: sqlite3.Row | None = conn.execute(
            "SELECT * FROM jobs WHERE key = ? ORDER BY created DESC, rowid DESC LIMIT 1", (key,)
        ).fetchone()
        return row

    def _enqueue_file(
        self, file: TranscriptFile, fmt: str, source: str, session_id: str | None, delay: float
    ) -> Job:
        key = f"path:{file.path}"
        with self.connect() as conn:
            last = self._last(conn, key)
        # Parsed outside any transaction (it may take a while), unless the file is unchanged.
        traj = None if _unchanged(last, file) else self._parse(file, fmt, source)
        now = time.time()
        with self.write() as conn:
            last = self._last(conn, key)
            if last is not None and last["state"] == "done" and _unchanged(last, file):
                return job_from_row(last)
            if traj is None and not _unchanged(last, file):  # another process got in between
                traj = self._parse(file, fmt, source)
            fresh = (None, None) if traj is None else (traj.to_json(), traj.id)
            if last is not None and last["state"] == "queued":
                not_before = now if delay <= 0 else max(last["not_before"], now + delay)
                conn.execute(
                    "UPDATE jobs SET not_before = ?, content_sha = ?, updated = ?, "
                    "trajectory_json = COALESCE(?, trajectory_json), "
                    "trajectory_id = COALESCE(?, trajectory_id), "
                    "session_id = COALESCE(session_id, ?) WHERE id = ?",
                    (not_before, file.sha256, now, *fresh, session_id, last["id"]),
                )
                return self._get(conn, last["id"])
            if traj is None:  # the last job is running or failed: this one needs its own
                traj = self._parse(file, fmt, source)
            job_id = self._insert(
                conn, key, fmt=fmt, source=source, session_id=session_id or traj.session_id,
                not_before=now + max(0.0, delay), path=str(file.path), content_sha=file.sha256,
                trajectory_json=traj.to_json(), trajectory_id=traj.id,
            )
            return self._get(conn, job_id)

    def _enqueue_text(
        self, text: str, fmt: str, source: str, session_id: str | None, delay: float
    ) -> Job:
        from rune_mcp.capture import parse_text

        traj = parse_text(text, fmt=fmt)
        check(self.settings, traj.project, source)  # refused before anything is stored
        key = f"trajectory:{traj.id}"
        now = time.time()
        with self.write() as conn:
            last = conn.execute(
                "SELECT * FROM jobs WHERE key = ? AND state != 'failed' "
                "ORDER BY created DESC, rowid DESC LIMIT 1",
                (key,),
            ).fetchone()
            if last is not None:
                return job_from_row(last)
            job_id = self._insert(
                conn, key, fmt=fmt, source=source, session_id=session_id or traj.session_id,
                not_before=now + max(0.0, delay), trajectory_json=traj.to_json(),
                trajectory_id=traj.id,
            )
            return self._get(conn, job_id)

    def enqueue_keyed(self, key: str, *, fmt: str, source: str, path: str | None = None) -> Job:
        """Queue a job that holds no transcript, ready now: `fmt` names the hook that runs
        it (an evolve job, `rune_mcp.distill.evolvejob`) and `path` what it works on. While
        a job of the same `key` waits in the queue, that job is returned and nothing is
        added; one that is running or finished does not count, so a new one is queued."""
        with self.write() as conn:
            row = conn.execute(
                "SELECT * FROM jobs WHERE key = ? AND state = 'queued' "
                "ORDER BY created DESC, rowid DESC LIMIT 1", (key,),
            ).fetchone()
            if row is not None:
                return job_from_row(row)
            job_id = self._insert(conn, key, fmt=fmt, source=source, session_id=None,
                                  not_before=time.time(), path=path)
            return self._get(conn, job_id)

    def _parse(self, file: TranscriptFile, fmt: str, source: str) -> Trajectory:
        """The file's trajectory; a session of an excluded project, or one from the watcher
        or a hook while capture is paused, is refused before anything is stored
        (`rune_mcp/capture/control.py`)."""
        traj = parse_file(file, fmt)
        check(self.settings, traj.project, source, [file.path])
        return traj

    def _insert(
        self,
        conn: sqlite3.Connection,
        key: str,
        *,
        fmt: str,
        source: str,
        session_id: str | None,
        not_before: float,
        path: str | None = None,
        content_sha: str | None = None,
        trajectory_json: str | None = None,
        trajectory_id: str | None = None,
    ) -> str:
        job_id = secrets.token_hex(6)
        now = time.time()
        conn.execute(
            "INSERT INTO jobs (id, key, state, source, fmt, path, trajectory_json, session_id, "
            "content_sha, trajectory_id, max_attempts, not_before, created, updated) "
            "VALUES (?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                job_id, key, source, fmt, path, trajectory_json, session_id, content_sha,
                trajectory_id, self.max_attempts, not_before, now, now,
            ),
        )
        log.info("queued job %s (%s, source %s)", job_id, key[:80], source)
        return job_id

    # --- reading ------------------------------------------------------------------------

    @staticmethod
    def _get(conn: sqlite3.Connection, job_id: str) -> Job:
        row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise UsageError(f"no job has id {job_id!r}; `rune status` lists the jobs.")
        return job_from_row(row)

    def get(self, job_id: str) -> Job:
        with self.connect() as conn:
            return self._get(conn, job_id)

    def recent(self, state: str | None = None, limit: int = 50) -> list[Job]:
        """Most recent jobs first, optionally only those in one state."""
        query = "SELECT * FROM jobs"
        params: list[Any] = []
        if state is not None:
            query += " WHERE state = ?"
            params.append(state)
        query += " ORDER BY created DESC, rowid DESC LIMIT ?"
        params.append(limit)
        with self.connect() as conn:
            return [job_from_row(r) for r in conn.execute(query, params).fetchall()]

    def counts(self) -> dict[str, int]:
        with self.connect() as conn:
            rows = conn.execute("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state").fetchall()
        found = {r["state"]: r["n"] for r in rows}
        return {state: int(found.get(state, 0)) for state in STATES}

    def status(self) -> dict[str, Any]:
        """What `memory_status` and `rune status` show about the queue."""
        with self.connect() as conn:
            worker = conn.execute(
                "SELECT value FROM meta WHERE key = 'worker'"
            ).fetchone()
        heartbeat: dict[str, Any] = json.loads(worker["value"]) if worker else {}
        alive = bool(heartbeat) and time.time() - float(heartbeat["beat"]) < 60
        return {
            "counts": self.counts(),
            "running": [brief(j) for j in self.recent("running", limit=5)],
            "queued": [brief(j) for j in self.recent("queued", limit=10)],
            "recent_failures": [brief(j) for j in self.recent("failed", limit=5)],
            "worker": {"active": alive, "pid": heartbeat.get("pid")},
        }

    def wait(
        self,
        job_id: str,
        timeout: float,
        on_update: Callable[[Job], None] | None = None,
        poll: float = 0.5,
    ) -> Job:
        """Poll a job until it is done or failed, or `timeout` seconds pass; returns the job."""
        deadline = time.monotonic() + timeout
        job = self.get(job_id)
        while not job.terminal and time.monotonic() < deadline:
            if on_update is not None:
                on_update(job)
            time.sleep(poll)
            job = self.get(job_id)
        return job

    def cancel_session(self, session_id: str) -> list[str]:
        """Cancel the queued jobs of a session being forgotten, so it is not learned again."""
        now = time.time()
        with self.write() as conn:
            rows = conn.execute(
                "SELECT id FROM jobs WHERE state = 'queued' AND session_id = ?", (session_id,)
            ).fetchall()
            ids = [r["id"] for r in rows]
            conn.executemany(
                "UPDATE jobs SET state = 'failed', finished = ?, updated = ?, "
                "error = 'cancelled: the session was forgotten.', trajectory_json = NULL "
                "WHERE id = ?",
                [(now, now, job_id) for job_id in ids],
            )
        return ids

    def prune(self, older_than_s: float = 30 * 86400.0) -> int:
        """Delete finished jobs older than `older_than_s`; returns how many went."""
        cutoff = time.time() - older_than_s
        with self.write() as conn:
            cur = conn.execute(
                "DELETE FROM jobs WHERE state IN ('done', 'failed') AND finished < ?", (cutoff,)
            )
            return int(cur.rowcount)


def _unchanged(row: sqlite3.Row | None, file: TranscriptFile) -> bool:
    """Whether the last job of this path already holds (or, done, has learned) exactly this
    content, so the file need not be parsed again."""
    if row is None or row["content_sha"] != file.sha256:
        return False
    return row["state"] == "done" or (row["state"] == "queued" and bool(row["trajectory_json"]))
