"""The job queue: sessions waiting to be distilled, shared by every Rune process on a library.

Each Claude Code window starts its own `rune serve`, hooks fire from yet other processes and the
watcher runs beside them, yet a CPU can train only one adapter at a time. So every request to
remember a session becomes a row in one SQLite file (`RUNE_HOME/jobs.sqlite3`, WAL mode, busy
timeout), and a single worker per library, elected by a file lock, takes rows one by one.

Deduplication, decided so that a hook stays well under a second:
- a transcript *path* is keyed by its resolved path and not parsed at enqueue time; while a job
  for that path is still queued, enqueueing it again returns the same job (a Claude Code `Stop`
  hook fires after every turn: one job, pushed back by `delay`). When the last job for the path
  is done and the file's SHA-256 is unchanged, that done job is returned. The worker parses the
  file, records the trajectory id, and a trajectory already in the library (or already done by
  another job) is reused, never trained twice.
- raw *text* is parsed (and so redacted) at enqueue time, keyed by its trajectory id, and only the
  redacted trajectory JSON is stored: no unredacted secret ever lands in the queue.

Failures are retried with exponential backoff, except the ones that cannot change on a retry
(an unparsable transcript, too little to learn). A worker killed mid-job leaves a `running` row;
the next worker to take the lock puts it back in the queue.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from filelock import FileLock, Timeout

from rune_mcp import sqlite
from rune_mcp.config import Settings
from rune_mcp.errors import (
    ConfigError,
    InputError,
    ParseError,
    RuneError,
    TrainingError,
    UsageError,
)
from rune_mcp.fsutil import file_digest

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
DB_NAME = "jobs.sqlite3"
LOCK_NAME = "jobs.worker.lock"
JobState = Literal["queued", "running", "done", "failed"]
STATES: tuple[JobState, ...] = ("queued", "running", "done", "failed")
SOURCES = ("manual", "mcp", "hook", "watcher", "cli")
# Errors that a retry cannot fix: the same input gives the same answer.
PERMANENT_ERRORS: tuple[type[RuneError], ...] = (
    ParseError,
    InputError,
    UsageError,
    ConfigError,
    TrainingError,
)
MAX_BACKOFF_S = 3600.0
PROGRESS_EVERY_S = 0.5

_SCHEMA = """
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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _row_to_job(row: sqlite3.Row) -> Job:
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
        settings.home.mkdir(parents=True, exist_ok=True)
        self._init_db()

    # --- storage ------------------------------------------------------------------------

    def _connect(self) -> contextlib.closing[sqlite3.Connection]:
        return contextlib.closing(sqlite.connect(self.db_path, what=f"the job queue {self.db_path}"))

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction taken up front (BEGIN IMMEDIATE), so two processes never both
        read the same queued row and then both claim it."""
        with self._connect() as conn, sqlite.transaction(conn):
            yield conn

    def _init_db(self) -> None:
        with self._connect() as conn:
            sqlite.ensure_schema(
                conn, _SCHEMA, SCHEMA_VERSION, what=f"the job queue {self.db_path}",
                fix="upgrade Rune.",
            )

    # --- enqueue ------------------------------------------------------------------------

    def enqueue(
        self,
        path: Path | None = None,
        text: str | None = None,
        *,
        fmt: str = "auto",
        source: str = "manual",
        session_id: str | None = None,
        delay: float = 0.0,
    ) -> Job:
        """Queue one session (a transcript file or raw text) and return its job at once.

        `delay` holds the job back that many seconds; enqueueing the same path again while it
        waits pushes it back again (a debounce for hooks that fire after every turn), and a
        call with `delay=0` makes it ready now.
        """
        if (path is None) == (text is None):
            raise UsageError("give exactly one of a transcript path or text to remember.")
        if path is not None:
            return self._enqueue_path(Path(path), fmt, source, session_id, delay)
        assert text is not None
        return self._enqueue_text(text, fmt, source, session_id, delay)

    def _enqueue_path(
        self, path: Path, fmt: str, source: str, session_id: str | None, delay: float
    ) -> Job:
        resolved = path.expanduser().resolve()
        if not resolved.is_file():
            raise InputError(f"transcript {path} does not exist or is not a file; check the path.")
        try:
            sha = file_digest(resolved)
        except OSError as exc:
            raise InputError(
                f"cannot read transcript {path} ({exc.strerror}); check its permissions."
            ) from exc
        key = f"path:{resolved}"
        now = time.time()
        with self._write() as conn:
            last = conn.execute(
                "SELECT * FROM jobs WHERE key = ? ORDER BY created DESC, rowid DESC LIMIT 1",
                (key,),
            ).fetchone()
            if last is not None and last["state"] == "queued":
                not_before = now if delay <= 0 else max(last["not_before"], now + delay)
                conn.execute(
                    "UPDATE jobs SET not_before = ?, content_sha = ?, updated = ?, "
                    "session_id = COALESCE(session_id, ?) WHERE id = ?",
                    (not_before, sha, now, session_id, last["id"]),
                )
                return self._get(conn, last["id"])
            if last is not None and last["state"] == "done" and last["content_sha"] == sha:
                return _row_to_job(last)
            job_id = self._insert(
                conn, key, fmt=fmt, source=source, session_id=session_id,
                not_before=now + max(0.0, delay), path=str(resolved), content_sha=sha,
            )
            return self._get(conn, job_id)

    def _enqueue_text(
        self, text: str, fmt: str, source: str, session_id: str | None, delay: float
    ) -> Job:
        from rune_mcp.capture import parse_text

        traj = parse_text(text, fmt=fmt)
        key = f"trajectory:{traj.id}"
        now = time.time()
        with self._write() as conn:
            last = conn.execute(
                "SELECT * FROM jobs WHERE key = ? AND state != 'failed' "
                "ORDER BY created DESC, rowid DESC LIMIT 1",
                (key,),
            ).fetchone()
            if last is not None:
                return _row_to_job(last)
            job_id = self._insert(
                conn, key, fmt=fmt, source=source, session_id=session_id or traj.session_id,
                not_before=now + max(0.0, delay), trajectory_json=traj.to_json(),
                trajectory_id=traj.id,
            )
            return self._get(conn, job_id)

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
        return _row_to_job(row)

    def get(self, job_id: str) -> Job:
        with self._connect() as conn:
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
        with self._connect() as conn:
            return [_row_to_job(r) for r in conn.execute(query, params).fetchall()]

    def counts(self) -> dict[str, int]:
        with self._connect() as conn:
            rows = conn.execute("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state").fetchall()
        found = {r["state"]: r["n"] for r in rows}
        return {state: int(found.get(state, 0)) for state in STATES}

    def status(self) -> dict[str, Any]:
        """What `memory_status` and `rune status` show about the queue."""
        with self._connect() as conn:
            worker = conn.execute(
                "SELECT value FROM meta WHERE key = 'worker'"
            ).fetchone()
        heartbeat: dict[str, Any] = json.loads(worker["value"]) if worker else {}
        alive = bool(heartbeat) and time.time() - float(heartbeat["beat"]) < 60
        return {
            "counts": self.counts(),
            "running": [_brief(j) for j in self.recent("running", limit=5)],
            "queued": [_brief(j) for j in self.recent("queued", limit=10)],
            "recent_failures": [_brief(j) for j in self.recent("failed", limit=5)],
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

    # --- the worker ---------------------------------------------------------------------

    def _heartbeat(self, conn: sqlite3.Connection | None = None) -> None:
        value = json.dumps({"pid": os.getpid(), "beat": time.time()})
        sql = "INSERT OR REPLACE INTO meta (key, value) VALUES ('worker', ?)"
        if conn is not None:
            conn.execute(sql, (value,))
            return
        with self._connect() as own:
            own.execute(sql, (value,))

    def _recover_orphans(self) -> None:
        """Put back jobs left `running` by a worker that died (only the lock holder calls this,
        so no live worker owns them)."""
        now = time.time()
        with self._write() as conn:
            rows = conn.execute("SELECT id FROM jobs WHERE state = 'running'").fetchall()
            for row in rows:
                log.warning("job %s was interrupted; queueing it again", row["id"])
                conn.execute(
                    "UPDATE jobs SET state = 'queued', not_before = ?, updated = ?, "
                    "progress_message = 'interrupted; queued again' WHERE id = ?",
                    (now, now, row["id"]),
                )

    def _claim(self) -> sqlite3.Row | None:
        now = time.time()
        with self._write() as conn:
            row = conn.execute(
                "SELECT * FROM jobs WHERE state = 'queued' AND not_before <= ? "
                "ORDER BY not_before, created, rowid LIMIT 1",
                (now,),
            ).fetchone()
            if row is None:
                return None
            conn.execute(
                "UPDATE jobs SET state = 'running', attempts = attempts + 1, started = ?, "
                "updated = ?, error = NULL, progress_step = 0, progress_total = NULL, "
                "progress_message = 'starting' WHERE id = ?",
                (now, now, row["id"]),
            )
            self._heartbeat(conn)
            claimed: sqlite3.Row = conn.execute(
                "SELECT * FROM jobs WHERE id = ?", (row["id"],)
            ).fetchone()
            return claimed

    def _next_wakeup(self) -> float | None:
        with self._connect() as conn:
            row = conn.execute(
                "SELECT MIN(not_before) AS t FROM jobs WHERE state = 'queued'"
            ).fetchone()
        return None if row["t"] is None else float(row["t"])

    def work(
        self,
        once: bool = False,
        stop: threading.Event | None = None,
        wait_for_delayed: bool = True,
        nice: int = 10,
        max_sleep: float = 5.0,
    ) -> int | None:
        """Become this library's worker and run jobs until the queue is empty.

        Returns how many jobs ran, or None when another process is already the worker (it
        will take the new jobs). `once` runs at most one ready job; `wait_for_delayed` keeps
        the worker alive (sleeping) while delayed or backing-off jobs remain.
        """
        lock = FileLock(str(self.lock_path), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            return None
        try:
            _lower_priority(nice)
            self._recover_orphans()
            return self._loop(once, stop, wait_for_delayed, max_sleep)
        finally:
            with self._connect() as conn:
                conn.execute("DELETE FROM meta WHERE key = 'worker'")
            lock.release()

    def _loop(
        self, once: bool, stop: threading.Event | None, wait_for_delayed: bool, max_sleep: float
    ) -> int:
        ran = 0
        while stop is None or not stop.is_set():
            row = self._claim()
            if row is not None:
                self._run(row)
                ran += 1
                if once:
                    break
                continue
            wake = self._next_wakeup()
            if once or wake is None or not wait_for_delayed:
                break
            self._heartbeat()
            pause = min(max_sleep, max(0.05, wake - time.time()))
            if stop is not None:
                stop.wait(pause)
            else:
                time.sleep(pause)
        return ran

    def _run(self, row: sqlite3.Row) -> None:
        job_id = row["id"]
        log.info("job %s: started (attempt %d of %d)", job_id, row["attempts"], row["max_attempts"])
        try:
            result = self._execute(row)
        except Exception as exc:
            self._fail(row, exc)
            return
        now = time.time()
        with self._write() as conn:
            conn.execute(
                "UPDATE jobs SET state = 'done', finished = ?, updated = ?, adapter_id = ?, "
                "reused = ?, trajectory_id = COALESCE(?, trajectory_id), result = ?, "
                "trajectory_json = NULL, progress_message = 'done' WHERE id = ?",
                (
                    now, now, result.get("adapter_id"), int(bool(result.get("reused"))),
                    result.get("trajectory_id"), json.dumps(result), job_id,
                ),
            )
        log.info("job %s: done, adapter %s", job_id, result.get("adapter_id"))

    def _fail(self, row: sqlite3.Row, exc: Exception) -> None:
        job_id = row["id"]
        permanent = isinstance(exc, PERMANENT_ERRORS)
        if isinstance(exc, RuneError):
            message = str(exc)
        else:
            # A bug or an environment failure: keep the traceback in the log, not in the row.
            log.exception("job %s failed unexpectedly", job_id)
            message = f"internal error ({type(exc).__name__}); see the log under RUNE_HOME/logs."
        now = time.time()
        retry = not permanent and row["attempts"] < row["max_attempts"]
        with self._write() as conn:
            if retry:
                delay = backoff_seconds(row["attempts"], self.backoff_s)
                conn.execute(
                    "UPDATE jobs SET state = 'queued', not_before = ?, updated = ?, error = ?, "
                    "progress_message = ? WHERE id = ?",
                    (now + delay, now, message, f"retrying in {delay:.0f} s", job_id),
                )
                log.warning("job %s: %s (retry in %.0f s)", job_id, message, delay)
            else:
                conn.execute(
                    "UPDATE jobs SET state = 'failed', finished = ?, updated = ?, error = ?, "
                    "trajectory_json = NULL, progress_message = 'failed' WHERE id = ?",
                    (now, now, message, job_id),
                )
                log.warning("job %s failed: %s", job_id, message)

    def _progress_callback(self, job_id: str) -> Callable[[int, int, str], None]:
        last = [0.0]

        def report(step: int, total: int, message: str) -> None:
            now = time.monotonic()
            if now - last[0] < PROGRESS_EVERY_S and step < total:
                return
            last[0] = now
            with self._connect() as conn:
                conn.execute(
                    "UPDATE jobs SET progress_step = ?, progress_total = ?, "
                    "progress_message = ?, updated = ? WHERE id = ?",
                    (int(step), int(total), str(message)[:300], time.time(), job_id),
                )

        return report

    def _execute(self, row: sqlite3.Row) -> dict[str, Any]:
        """Parse (for path jobs), skip what is already remembered, then distill."""
        from rune_mcp.trajectory import Trajectory

        if row["trajectory_json"]:
            traj = Trajectory.from_dict(json.loads(row["trajectory_json"]))
        else:
            traj = self._parse_path(row)
        self._record_trajectory(row["id"], traj.id)
        earlier = self._done_for_trajectory(traj.id, row["id"])
        if earlier is not None:
            return earlier
        from rune_mcp.distill.remember import remember_trajectory

        progress = self._progress_callback(row["id"])
        res = remember_trajectory(self.settings, traj, progress=progress)
        return {
            "adapter_id": res.adapter_id,
            "reused": bool(res.reused),
            "trajectory_id": traj.id,
            "task": traj.task[:300],
            "lessons": _count(res.lessons),
            "examples": _count(res.examples),
            "seconds": round(float(res.seconds), 2),
            "final_loss": None if res.final_loss is None else float(res.final_loss),
            "method": res.method,
        }

    def _parse_path(self, row: sqlite3.Row) -> Any:
        from rune_mcp.capture import parse_path

        path = Path(row["path"])
        if not path.is_file():
            raise InputError(f"transcript {path.name} no longer exists; nothing to remember.")
        try:
            sha = file_digest(path)
        except OSError as exc:
            raise InputError(f"cannot read transcript {path.name} ({exc.strerror}).") from exc
        with self._connect() as conn:
            conn.execute("UPDATE jobs SET content_sha = ? WHERE id = ?", (sha, row["id"]))
        return parse_path(path, fmt=row["fmt"])

    def _record_trajectory(self, job_id: str, trajectory_id: str) -> None:
        with self._connect() as conn:
            conn.execute(
                "UPDATE jobs SET trajectory_id = ? WHERE id = ?", (trajectory_id, job_id)
            )

    def _done_for_trajectory(self, trajectory_id: str, job_id: str) -> dict[str, Any] | None:
        """The result of an earlier job that already remembered this trajectory, if any."""
        with self._connect() as conn:
            row = conn.execute(
                "SELECT result FROM jobs WHERE trajectory_id = ? AND state = 'done' AND id != ? "
                "AND adapter_id IS NOT NULL ORDER BY finished DESC LIMIT 1",
                (trajectory_id, job_id),
            ).fetchone()
        if row is None or not row["result"]:
            return None
        result = dict(json.loads(row["result"]))
        result["reused"] = True
        return result

    def cancel_session(self, session_id: str) -> list[str]:
        """Cancel the queued jobs of a session being forgotten, so it is not learned again."""
        now = time.time()
        with self._write() as conn:
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
        with self._write() as conn:
            cur = conn.execute(
                "DELETE FROM jobs WHERE state IN ('done', 'failed') AND finished < ?", (cutoff,)
            )
            return int(cur.rowcount)


def _count(value: Any) -> int:
    """A count that a result may carry as a number or as the list itself."""
    return len(value) if isinstance(value, list | tuple) else int(value or 0)


def _brief(job: Job) -> dict[str, Any]:
    """The fields of a job worth showing in a status listing."""
    return {
        "id": job.id,
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


def _lower_priority(nice: int) -> None:
    """Training should not make the user's editor stutter. On Linux `os.nice` applies to the
    calling thread, so a worker thread inside a server leaves the server's own thread alone."""
    if nice <= 0:
        return
    try:
        os.nice(nice)
    except (OSError, AttributeError):  # no nice on this platform, or not permitted
        log.debug("could not lower the worker's priority")


def start_worker_thread(settings: Settings, name: str = "rune-jobs") -> threading.Thread:
    """Run a worker in a daemon thread (used by `rune serve` and the watcher after enqueueing).

    It exits at once when another process is the worker, and when the queue is empty.
    """

    def target() -> None:
        try:
            JobQueue(settings).work()
        except Exception:  # a worker thread must never take its host process down
            log.exception("the job worker stopped on an error")

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    return thread
