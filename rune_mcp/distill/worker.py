"""The worker: the one process per library that takes queued jobs one by one and distills them.

It is elected by a file lock, so any process may try to become it (`rune serve` after an
enqueue, the watcher, `rune jobs work`); the others return at once and leave the jobs to it.

Failures are retried with exponential backoff, except the ones that cannot change on a retry
(an unparsable transcript, too little to learn). A worker killed mid-job leaves a `running` row;
the next worker to take the lock puts it back in the queue.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypedDict

from filelock import FileLock, Timeout

from rune_mcp.config import Settings
from rune_mcp.distill.job import backoff_seconds
from rune_mcp.errors import (
    ConfigError,
    InputError,
    ParseError,
    RuneError,
    TrainingError,
    UsageError,
)

if TYPE_CHECKING:
    from rune_mcp.distill.queue import JobQueue

log = logging.getLogger(__name__)

# Errors that a retry cannot fix: the same input gives the same answer.
PERMANENT_ERRORS: tuple[type[RuneError], ...] = (
    ParseError,
    InputError,
    UsageError,
    ConfigError,
    TrainingError,
)
PROGRESS_EVERY_S = 0.5


class WorkOptions(TypedDict, total=False):
    """The keyword arguments of `Worker.run` (and `JobQueue.work`, which passes them on)."""

    once: bool
    stop: threading.Event | None
    wait_for_delayed: bool
    nice: int
    max_sleep: float


class Worker:
    """Runs the jobs of one queue; `run` holds the library's worker lock while it does."""

    def __init__(self, jobs: JobQueue) -> None:
        self.jobs = jobs

    def _heartbeat(self, conn: sqlite3.Connection | None = None) -> None:
        value = json.dumps({"pid": os.getpid(), "beat": time.time()})
        sql = "INSERT OR REPLACE INTO meta (key, value) VALUES ('worker', ?)"
        if conn is not None:
            conn.execute(sql, (value,))
            return
        with self.jobs.connect() as own:
            own.execute(sql, (value,))

    def _recover_orphans(self) -> None:
        """Put back jobs left `running` by a worker that died (only the lock holder calls this,
        so no live worker owns them)."""
        now = time.time()
        with self.jobs.write() as conn:
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
        with self.jobs.write() as conn:
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
        with self.jobs.connect() as conn:
            row = conn.execute(
                "SELECT MIN(not_before) AS t FROM jobs WHERE state = 'queued'"
            ).fetchone()
        return None if row["t"] is None else float(row["t"])

    def run(
        self,
        once: bool = False,
        stop: threading.Event | None = None,
        wait_for_delayed: bool = True,
        nice: int = 10,
        max_sleep: float = 5.0,
    ) -> int | None:
        """Become the library's worker and run jobs until the queue is empty.

        Returns how many jobs ran, or None when another process is already the worker (it
        will take the new jobs). `once` runs at most one ready job; `wait_for_delayed` keeps
        the worker alive (sleeping) while delayed or backing-off jobs remain.
        """
        lock = FileLock(str(self.jobs.lock_path), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            return None
        try:
            lower_priority(nice)
            self._recover_orphans()
            return self._loop(once, stop, wait_for_delayed, max_sleep)
        finally:
            with self.jobs.connect() as conn:
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
        with self.jobs.write() as conn:
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
        with self.jobs.write() as conn:
            if retry:
                delay = backoff_seconds(row["attempts"], self.jobs.backoff_s)
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
            with self.jobs.connect() as conn:
                conn.execute(
                    "UPDATE jobs SET progress_step = ?, progress_total = ?, "
                    "progress_message = ?, updated = ? WHERE id = ?",
                    (int(step), int(total), str(message)[:300], time.time(), job_id),
                )

        return report

    def _execute(self, row: sqlite3.Row) -> dict[str, Any]:
        """Read the job's trajectory, skip what is already remembered, then distill."""
        from rune_mcp.capture.control import check
        from rune_mcp.distill.job import EVOLVE_FORMAT
        from rune_mcp.trajectory import Trajectory

        if row["fmt"] == EVOLVE_FORMAT:  # a project's adapters to evolve, not a session
            from rune_mcp.distill.evolvejob import run_evolve_job

            return run_evolve_job(self.jobs.settings, row, self._progress_callback(row["id"]))
        if not row["trajectory_json"]:
            # Jobs carry their parsed transcript; the worker never opens a path, which could
            # name another file by now than the one checked when the job was queued.
            raise InputError(f"job {row['id']} holds no trajectory (it was queued by an older "
                             "Rune); remember the session again.")
        traj = Trajectory.from_json(row["trajectory_json"], f"job {row['id']}'s trajectory")
        # Checked again: a hook's job waits for the session to go quiet, and capture may have
        # been paused, or the project excluded, since it was queued.
        check(self.jobs.settings, traj.project, row["source"], [row["path"]])
        self._record_trajectory(row["id"], traj.id)
        earlier = self._done_for_trajectory(traj.id, row["id"])
        if earlier is not None:
            return earlier
        from rune_mcp.distill.remember import remember_trajectory

        progress = self._progress_callback(row["id"])
        res = remember_trajectory(self.jobs.settings, traj, progress=progress)
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

    def _record_trajectory(self, job_id: str, trajectory_id: str) -> None:
        with self.jobs.connect() as conn:
            conn.execute(
                "UPDATE jobs SET trajectory_id = ? WHERE id = ?", (trajectory_id, job_id)
            )

    def _done_for_trajectory(self, trajectory_id: str, job_id: str) -> dict[str, Any] | None:
        """The result of an earlier job that already remembered this trajectory, if any."""
        with self.jobs.connect() as conn:
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


def _count(value: Any) -> int:
    """A count that a result may carry as a number or as the list itself."""
    return len(value) if isinstance(value, list | tuple) else int(value or 0)


def lower_priority(nice: int) -> None:
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

    from rune_mcp.distill.queue import JobQueue

    def target() -> None:
        try:
            JobQueue(settings).work()
        except Exception:  # a worker thread must never take its host process down
            log.exception("the job worker stopped on an error")

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    return thread
