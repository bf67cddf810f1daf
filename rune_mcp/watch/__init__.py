"""Automatic capture: watch the agents' transcript folders and queue every finished session once.

Hooks miss sessions (Ctrl+C fires no Claude Code `SessionEnd`), so `rune watch` follows the
folders where Claude Code, Codex, Cursor and Aider write their transcripts:

- `FileWatcher` turns file-system events (watchdog: inotify, or polling when inotify runs out
  of watches) into debounced polls of the `Tailer`, and runs a periodic reconciliation scan
  because the kernel drops events silently when its queue overflows.
- `SessionTracker` receives every new complete line exactly once (in the same transaction as
  the offset) and keeps one row per session: its project, how much content it has, when it
  last grew. A session is finished when it has been idle for `idle_seconds`, or when the agent
  started a new session in the same project; it is then parsed, filtered (too small, opted-out
  project) and queued once in the job queue. A session that grows again is queued again only
  when it gained at least `min_session_steps` new content lines.

The watcher sleeps in a blocking queue wait between events; its only timer is the next idle
deadline or the next reconciliation scan.

The data flows through the modules in this order: `sources` (which folders, what each file
is), `tail` (new complete lines, offsets in SQLite), `observers` (events and scans that drive
the tailer), `sessions` (lines to sessions to queued jobs); `status` reads the result for
`rune status`. This module wires them into `Watcher`.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rune_mcp.config import Settings
from rune_mcp.errors import UsageError
from rune_mcp.watch.observers import DEBOUNCE_S, FileWatcher, Sink
from rune_mcp.watch.sessions import SESSIONS_SCHEMA, Enqueue, SessionTracker, job_queue_enqueue
from rune_mcp.watch.sources import Match, Source, sources_for, wanted
from rune_mcp.watch.status import watch_status
from rune_mcp.watch.tail import STATE_DB, WatchDB

__all__ = [
    "DEBOUNCE_S",
    "LOCK_FILE",
    "STATE_DB",
    "Enqueue",
    "FileWatcher",
    "Match",
    "SessionTracker",
    "Sink",
    "Source",
    "Watcher",
    "job_queue_enqueue",
    "sources_for",
    "wanted",
    "watch_status",
]

LOCK_FILE = Path("watch") / "watcher.lock"


@contextlib.contextmanager
def _single_watcher(settings: Settings) -> Iterator[None]:
    """One `rune watch` per library: a second one would race the first for the same files."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(settings.home / LOCK_FILE), timeout=0)
    try:
        lock.acquire()
    except Timeout as exc:
        raise UsageError(
            "another `rune watch` is already running for this library; stop it first "
            "(`rune status` shows its pid)."
        ) from exc
    try:
        yield
    finally:
        lock.release()


class Watcher:
    """`rune watch`: a `FileWatcher` feeding a `SessionTracker`, plus the job worker."""

    def __init__(
        self,
        settings: Settings,
        enqueue: Enqueue | None = None,
        train: bool = True,
        debounce: float = DEBOUNCE_S,
    ) -> None:
        self.settings = settings
        self.train = train
        self.db = WatchDB(settings.home / STATE_DB, SESSIONS_SCHEMA)
        self.enqueue = enqueue or job_queue_enqueue(settings)
        self.tracker = SessionTracker(settings, self.db, self.enqueue, self._cutoff())
        self.sources = sources_for(settings)
        self.files = FileWatcher(
            self.db, self.sources, self.tracker, settings.watch_rescan_seconds,
            accept=lambda m: wanted(settings, m), polling_only=settings.watch_polling,
            poll_interval=max(1.0, min(30.0, settings.idle_seconds / 4)), debounce=debounce,
        )
        self._worker: threading.Thread | None = None
        self._worked_for = 0

    def _cutoff(self) -> float:
        """Transcripts last written before the watcher's first start minus the backfill
        window are history: recorded, not remembered (unless they grow)."""
        first = self.db.meta_get("first_start")
        if first is None:
            first = str(time.time())
            self.db.meta_set("first_start", first)
        return float(first) - self.settings.watch_backfill_hours * 3600.0

    def _heartbeat(self, mode: str) -> None:
        self.db.meta_set(
            "watcher",
            json.dumps({
                "pid": os.getpid(), "mode": mode, "beat": time.time(),
                "observers": dict(self.files.observers.modes), "scans": self.files.scans,
            }),
        )

    def _maybe_work(self) -> None:
        """Start the library's job worker in a thread when this watcher queued something."""
        if not self.train or self.tracker.queued_now == self._worked_for:
            return
        if self._worker is not None and self._worker.is_alive():
            return
        from rune_mcp.distill.queue import start_worker_thread

        self._worked_for = self.tracker.queued_now
        self._worker = start_worker_thread(self.settings, name="rune-watch-jobs")

    def once(self) -> dict[str, Any]:
        """Scan, queue what is finished, and (when training) run the queue to the end."""
        with _single_watcher(self.settings):
            self._heartbeat("once")
            polled = self.files.scan()
            self.tracker.settle(time.time())
            self.db.meta_set("watcher", json.dumps({"pid": None, "last_once": time.time()}))
        ran = None
        if self.train and self.tracker.queued_now:
            from rune_mcp.distill.queue import JobQueue

            ran = JobQueue(self.settings).work()
        return {"files_read": polled, "queued": self.tracker.queued_now, "jobs_run": ran}

    def run(self) -> None:
        """Watch in the foreground until `stop()` (or SIGINT/SIGTERM in the CLI)."""
        with _single_watcher(self.settings):
            def wake() -> None:
                self._heartbeat("watch")
                self._maybe_work()

            try:
                self.files.run(on_wake=wake)
            finally:
                with contextlib.suppress(sqlite3.Error):
                    self.db.meta_set("watcher", json.dumps({"pid": None, "stopped": time.time()}))

    def stop(self) -> None:
        self.files.stop()

    def close(self) -> None:
        self.db.close()
