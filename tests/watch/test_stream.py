"""The file watcher under load: random appends, rotation, truncation, dropped events, polling.

Each test runs a `FileWatcher` in a thread on a temporary folder, with a sink that records
every line it is given, and checks that exactly the written lines arrive: none lost, none twice.
"""

from __future__ import annotations

import errno
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rune_mcp.watch.observers import FileWatcher, _Observers
from rune_mcp.watch.sources import Match, Source
from rune_mcp.watch.tail import Chunk, WatchDB

WAIT_S = 60.0


def _any_file(root: Path, path: Path) -> Match | None:
    return Match("test", "test", "main", None)


class Recorder:
    """A sink that keeps every line it gets (thread-safe enough: one writer thread)."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.by_file: dict[int, list[bytes]] = {}
        self.resets = 0

    def on_chunk(self, chunk: Chunk, match: Match, tx: sqlite3.Connection) -> None:
        self.lines.extend(chunk.lines)
        self.by_file.setdefault(chunk.file_id, []).extend(chunk.lines)
        self.resets += chunk.reset

    def on_gone(self, file_id: int) -> None:
        pass

    def on_touch(self, path: Path, match: Match) -> None:
        pass

    def settle(self, now: float) -> float | None:
        return None


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Callable[..., tuple[FileWatcher, Recorder]]]:
    """Start a watcher on `tmp_path/watched`; stopped and joined after the test."""
    started: list[tuple[FileWatcher, threading.Thread]] = []

    def start(
        rescan: float = 3600.0, drop_events: bool = False, polling: bool = False
    ) -> tuple[FileWatcher, Recorder]:
        root = tmp_path / "watched"
        root.mkdir(exist_ok=True)
        sink = Recorder()
        db = WatchDB(tmp_path / "state.sqlite3")
        watcher = FileWatcher(
            db, [Source("test", root, None, _any_file)], sink, rescan,
            polling_only=polling, poll_interval=0.2, debounce=0.05,
        )
        if drop_events:  # every file-system event is lost, as on a kernel queue overflow
            watcher.observers.put = lambda _path: None
        thread = threading.Thread(target=watcher.run, daemon=True)
        thread.start()
        started.append((watcher, thread))
        _wait_for(lambda: watcher.scans >= 1, "the first scan")
        return watcher, sink

    yield start
    for watcher, thread in started:
        watcher.stop()
        thread.join(timeout=10)
        assert not thread.is_alive()
        watcher.db.close()


def _lines(rng: random.Random, count: int, tag: str) -> list[bytes]:
    """Unique lines of random length (0-2,000 payload bytes, some multi-byte UTF-8)."""
    out = []
    for i in range(count):
        payload = "".join(rng.choice("abcdefé€ {}\":,") for _ in range(rng.randint(0, 400)))
        out.append(f'{{"tag":"{tag}","i":{i},"p":"{payload}"}}'.encode())
    return out


def _write_in_random_chunks(path: Path, data: bytes, rng: random.Random) -> None:
    """Append `data` in chunks of 1 B to 64 KB, sometimes pausing so the watcher interleaves."""
    with path.open("ab", buffering=0) as handle:
        at = 0
        while at < len(data):
            size = rng.randint(1, 65536) if rng.random() < 0.5 else rng.randint(1, 64)
            handle.write(data[at : at + size])
            at += size
            if rng.random() < 0.05:
                time.sleep(rng.random() * 0.01)


def test_10000_lines_in_random_chunks_arrive_exactly_once(running: Callable[..., Any]) -> None:
    watcher, sink = running()
    rng = random.Random(8)
    expected = _lines(rng, 10_000, "stream")
    path = watcher.sources[0].root / "session.jsonl"
    _write_in_random_chunks(path, b"".join(line + b"\n" for line in expected), rng)
    _wait_for(lambda: len(sink.lines) >= len(expected), "all 10,000 lines")
    time.sleep(0.3)  # anything extra (a duplicate) would arrive now
    assert sink.lines == expected
    assert watcher.scans == 1  # events alone did it: the watcher never needed a rescan


def test_50_cycles_of_rotation_and_truncation(running: Callable[..., Any]) -> None:
    watcher, sink = running()
    rng = random.Random(50)
    root = watcher.sources[0].root
    path = root / "agent.log"
    expected: list[bytes] = []
    truncations = 0
    for cycle in range(50):
        batch = _lines(rng, rng.randint(5, 60), f"c{cycle}")
        expected.extend(batch)
        _write_in_random_chunks(path, b"".join(line + b"\n" for line in batch), rng)
        if cycle % 2 == 0:
            # Rotation: moved aside while perhaps only partly read; the new file starts empty.
            path.rename(root / f"agent.log.{cycle}")
        else:
            # Truncation: what is on disk has been read, then the file starts over. Half the
            # time it regrows past the old offset before the watcher looks again.
            _wait_for(lambda: len(sink.lines) >= len(expected), f"cycle {cycle}")
            with path.open("r+b") as handle:
                handle.truncate(0)
            truncations += 1
            if rng.random() < 0.5:
                extra = _lines(rng, 80, f"c{cycle}-regrow")
                expected.extend(extra)
                with path.open("ab") as handle:
                    handle.write(b"".join(line + b"\n" for line in extra))
    _wait_for(lambda: len(sink.lines) >= len(expected), "every line of 50 cycles")
    time.sleep(0.3)
    assert sorted(sink.lines) == sorted(expected)
    assert len(sink.lines) == len(set(sink.lines))
    assert sink.resets >= 1  # truncations were noticed as such


def test_1000_files_with_dropped_events_are_found_by_the_scan(
    running: Callable[..., Any],
) -> None:
    watcher, sink = running(rescan=0.5, drop_events=True)
    root = watcher.sources[0].root
    expected = []
    for i in range(1000):
        folder = root / f"project-{i % 37}"
        folder.mkdir(exist_ok=True)
        line = f'{{"file":{i}}}'.encode()
        (folder / f"s{i}.jsonl").write_bytes(line + b"\n")
        expected.append(line)
    _wait_for(lambda: len(sink.lines) >= 1000, "the scan to find 1,000 files")
    time.sleep(0.6)  # one more scan: it must not read anything twice
    assert sorted(sink.lines) == sorted(expected)
    assert len(sink.by_file) == 1000
    assert watcher.scans >= 2


def test_polling_takes_over_when_inotify_is_out_of_watches(
    running: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_watches(self: _Observers) -> Any:
        class Refuses:
            def schedule(self, *args: object, **kwargs: object) -> None:
                raise OSError(errno.ENOSPC, "inotify watch limit reached")

        return Refuses()

    monkeypatch.setattr(_Observers, "_native", no_watches)
    watcher, sink = running()
    assert set(watcher.observers.modes.values()) == {"polling"}
    path = watcher.sources[0].root / "s.jsonl"
    path.write_bytes(b"a\nb\n")
    _wait_for(lambda: len(sink.lines) == 2, "the polling observer")
    assert sink.lines == [b"a", b"b"]
    assert watcher.scans == 1


def test_forced_polling_setting(running: Callable[..., Any]) -> None:
    watcher, sink = running(polling=True)
    assert set(watcher.observers.modes.values()) == {"polling"}
    (watcher.sources[0].root / "x.jsonl").write_bytes(b"1\n")
    _wait_for(lambda: sink.lines == [b"1"], "a polled line")


def test_idle_watcher_does_not_wake_up(running: Callable[..., Any]) -> None:
    """Between events the loop blocks: no scans, no polls, while nothing happens."""
    watcher, _sink = running()
    polls: list[Path] = []
    original = watcher.tailer.poll

    def counting(path: Path, handler: Any) -> int:
        polls.append(path)
        return int(original(path, handler))

    watcher.tailer.poll = counting
    time.sleep(1.0)
    assert polls == [] and watcher.scans == 1


def test_files_that_vanish_are_forgotten(running: Callable[..., Any]) -> None:
    watcher, sink = running(rescan=0.3)
    path = watcher.sources[0].root / "gone.jsonl"
    path.write_bytes(b"1\n")
    _wait_for(lambda: sink.lines == [b"1"], "the first line")
    os.unlink(path)
    scans = watcher.scans
    _wait_for(lambda: watcher.scans >= scans + 2, "two more scans")
    rows = WatchDB(watcher.db.path).files()
    assert [r.path for r in rows] == []

