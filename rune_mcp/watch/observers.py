"""File-system events: observers, debouncing, the reconciliation scan and the sleep between.

`FileWatcher` turns watchdog events (inotify, or polling when inotify runs out of watches) into
debounced polls of the `Tailer`, and scans periodically because the kernel drops events
silently when its queue overflows.
"""

from __future__ import annotations

import errno
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from rune_mcp.errors import RuneError
from rune_mcp.watch.sources import Match, Source
from rune_mcp.watch.tail import Chunk, Tailer, WatchDB

log = logging.getLogger(__name__)

DEBOUNCE_S = 0.25  # events for one file within this window become one read
_STOP = "\0stop"
_RESCAN = "\0rescan"
_WATCHDOG_LOGGERS = ("watchdog.observers.inotify_c", "watchdog.observers.inotify")


def _holds(path: str, dev: int, ino: int) -> bool:
    """Whether `path` is still the file with this identity."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


def _event_handler(put: Callable[[str], None]) -> Any:
    from watchdog.events import FileSystemEvent, FileSystemEventHandler

    class Forward(FileSystemEventHandler):
        """Forwards changed paths to the watcher's queue; runs in watchdog's thread."""

        def on_any_event(self, event: FileSystemEvent) -> None:
            if event.event_type in ("opened", "closed_no_write"):
                return  # our own reads
            put(os.fsdecode(event.src_path))
            if event.dest_path:
                put(os.fsdecode(event.dest_path))

    return Forward()


def _event_filter() -> list[Any]:
    from watchdog import events as ev

    return [
        ev.FileCreatedEvent, ev.FileModifiedEvent, ev.FileMovedEvent, ev.FileDeletedEvent,
        ev.FileClosedEvent, ev.DirCreatedEvent, ev.DirMovedEvent,
    ]


@dataclass
class _Observers:
    """inotify (or the platform's native API) first; polling for folders it cannot watch."""

    put: Callable[[str], None]
    polling_only: bool
    poll_interval: float
    modes: dict[str, str] = field(default_factory=dict)
    native: Any = None
    polling: Any = None

    def watch(self, folder: Path, recursive: bool) -> None:
        key = str(folder)
        if key in self.modes:
            return
        handler = _event_handler(self.put)
        if not self.polling_only:
            try:
                self._native().schedule(
                    handler, key, recursive=recursive, event_filter=_event_filter()
                )
                self.modes[key] = "native"
                return
            except OSError as exc:
                if exc.errno not in (errno.ENOSPC, errno.EMFILE):
                    log.warning("cannot watch %s (%s); it is only scanned", folder, exc)
                    return
                log.warning("%s (%s); polling %s every %.0f s instead (raise "
                            "fs.inotify.max_user_watches to avoid this)",
                            exc.strerror or exc, exc.errno, folder, self.poll_interval)
        self._polling().schedule(handler, key, recursive=recursive, event_filter=_event_filter())
        self.modes[key] = "polling"

    def _native(self) -> Any:
        if self.native is None:
            from watchdog.observers import Observer

            self.native = Observer()
            self.native.daemon = True
            self.native.start()
        return self.native

    def _polling(self) -> Any:
        if self.polling is None:
            from watchdog.observers.polling import PollingObserver

            self.polling = PollingObserver(timeout=self.poll_interval)
            self.polling.daemon = True
            self.polling.start()
        return self.polling

    def stop(self) -> None:
        for observer in (self.native, self.polling):
            if observer is not None:
                observer.stop()
        for observer in (self.native, self.polling):
            if observer is not None:
                observer.join(timeout=5)
        self.native = self.polling = None
        self.modes.clear()


class _OverflowAlarm(logging.Handler):
    """watchdog only logs when the kernel's inotify queue overflows; this turns that log
    record into an immediate reconciliation scan instead of waiting for the next one."""

    def __init__(self, put: Callable[[str], None]) -> None:
        super().__init__(logging.WARNING)
        self.put = put

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            self.put(_RESCAN)


class Sink(Protocol):
    """Where the file watcher delivers lines and asks what is due."""

    def on_chunk(self, chunk: Chunk, match: Match, tx: sqlite3.Connection) -> None: ...

    def on_gone(self, file_id: int) -> None: ...

    def on_touch(self, path: Path, match: Match) -> None: ...

    def settle(self, now: float) -> float | None: ...


class FileWatcher:
    """Observers, debouncing, the reconciliation scan and the sleep between them."""

    def __init__(
        self,
        db: WatchDB,
        sources: list[Source],
        sink: Sink,
        rescan_seconds: float,
        *,
        accept: Callable[[Match], bool] = lambda _m: True,
        polling_only: bool = False,
        poll_interval: float = 5.0,
        debounce: float = DEBOUNCE_S,
    ) -> None:
        self.db = db
        self.sources = sources
        self.sink = sink
        self.accept = accept
        self.tailer = Tailer(db)
        self.rescan_seconds = rescan_seconds
        self.debounce = debounce
        self.events: queue.Queue[str] = queue.Queue()
        self.observers = _Observers(self.events.put, polling_only, poll_interval)
        self.scans = 0
        self._stop = threading.Event()

    # --- reading files ------------------------------------------------------------------

    def _source_for(self, path: Path) -> tuple[Source, Match] | None:
        for source in self.sources:
            found = source.matches(path)
            if found is not None and self.accept(found):
                return source, found
        return None

    def poll(self, path: Path) -> int:
        """Read what is new in one file (or, for a folder, in the files below it)."""
        if path.is_dir():
            return sum(self.poll(p) for p in self._files_below(path))
        found = self._source_for(path)
        if found is None:
            return 0
        return self._tail(path, found[1])

    def _tail(self, path: Path, match: Match) -> int:
        if match.kind == "database":  # SQLite, not lines: the sink reads it when it settles
            self.sink.on_touch(path, match)
            return 0

        def handle(chunk: Chunk, tx: sqlite3.Connection) -> None:
            self.sink.on_chunk(chunk, match, tx)

        return self.tailer.poll(path, handle)

    def _files_below(self, folder: Path) -> Iterator[Path]:
        for source in self.sources:
            if folder == source.root or source.root in folder.parents:
                for path, match in source.files():
                    if (folder in path.parents) and self.accept(match):
                        yield path

    def scan(self) -> int:
        """Reconciliation: read every file whose size, time or identity changed since it was
        last read (events may have been dropped), and forget files that are gone."""
        known = {(f.dev, f.ino): f for f in self.db.files()}
        seen: set[tuple[int, int]] = set()
        polled = 0
        for source in self.sources:
            if self._observing:
                for folder, recursive in source.folders():
                    self.observers.watch(folder, recursive)
            for path, match in source.files():
                if not self.accept(match):
                    continue
                if match.kind == "database":
                    self.sink.on_touch(path, match)
                    continue
                try:
                    st = path.stat()
                except OSError:
                    continue
                seen.add((st.st_dev, st.st_ino))
                row = known.get((st.st_dev, st.st_ino))
                if row and row.path == str(path) and row.size == st.st_size \
                        and row.mtime == st.st_mtime:
                    continue
                polled += 1
                self._tail(path, match)
        for row in known.values():
            if (row.dev, row.ino) not in seen and not _holds(row.path, row.dev, row.ino):
                with self.db.transaction():
                    self.db.forget_file(row.id)
                self.sink.on_gone(row.id)
        self.scans += 1
        return polled

    # --- the loop -----------------------------------------------------------------------

    _observing = False

    def stop(self) -> None:
        """Ask `run` to return (safe from any thread or a signal handler)."""
        self._stop.set()
        self.events.put(_STOP)

    def _collect(self, timeout: float) -> set[str]:
        """Block until an event arrives (or `timeout`), then gather the burst that follows."""
        try:
            first = self.events.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return set()
        paths = {first}
        until = time.monotonic() + self.debounce
        while (left := until - time.monotonic()) > 0:
            try:
                paths.add(self.events.get(timeout=left))
            except queue.Empty:
                break
        return paths

    def run(self, on_wake: Callable[[], None] | None = None) -> None:
        """Watch until `stop()`: observers first (so nothing written during the first scan is
        missed), then the scan, then sleep until an event, an idle deadline or a rescan."""
        self._observing = True
        alarm = _OverflowAlarm(self.events.put)
        for name in _WATCHDOG_LOGGERS:
            logging.getLogger(name).addHandler(alarm)
        try:
            self.scan()
            next_scan = time.monotonic() + self.rescan_seconds
            while not self._stop.is_set():
                deadline = self.sink.settle(time.time())
                if on_wake is not None:
                    on_wake()
                timeout = next_scan - time.monotonic()
                if deadline is not None:
                    timeout = min(timeout, deadline - time.time() + 0.05)
                paths = self._collect(timeout)
                for name in sorted(paths - {_STOP, _RESCAN}):
                    self._poll_logged(Path(name))
                if _RESCAN in paths or time.monotonic() >= next_scan:
                    self.scan()
                    next_scan = time.monotonic() + self.rescan_seconds
        finally:
            self._observing = False
            for name in _WATCHDOG_LOGGERS:
                logging.getLogger(name).removeHandler(alarm)
            self.observers.stop()

    def _poll_logged(self, path: Path) -> None:
        try:
            self.poll(path)
        except RuneError:
            raise
        except Exception:  # one odd file must not stop the watcher; the next scan retries
            log.exception("error while reading %s", path)
