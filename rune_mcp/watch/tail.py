"""Tailing transcripts: each appended line read exactly once, across crashes, rotation, truncation.

Agents append one JSON line at a time to their transcripts, so the watcher reads only what is
new. For every file it keeps, in one SQLite file under RUNE_HOME (`watch/state.sqlite3`):
the byte offset just after the last complete line it consumed, the file's identity (device and
inode), and two fingerprints: a hash of the file's first bytes and a hash of the bytes just
before the offset. The lines handed to a handler and the new offset are committed in the same
transaction, so a watcher killed at any instant neither loses nor repeats a line.

- Only complete lines are consumed: a last line still being written waits for its newline.
- Rename (rotation): the state follows the inode, so a file moved aside keeps its offset and a
  new file at the old name starts at 0.
- Truncation or rewrite (same inode, or a new inode at the same path): when the fingerprints no
  longer match the bytes on disk, the file is read again from 0 (and the handler is told), even
  when it has already grown past the old offset again. A new inode whose bytes still match (a
  file rewritten by rename with the same prefix) continues where it was.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sqlite3
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rune_mcp import heal, sqlite
from rune_mcp.heal import StateFile

log = logging.getLogger(__name__)

STATE_DB = Path("watch") / "state.sqlite3"  # under RUNE_HOME
SCHEMA_VERSION = 1
HEAD_BYTES = 1024  # identity fingerprint: hash of the first bytes consumed
TAIL_BYTES = 64  # continuity fingerprint: hash of the bytes just before the offset
READ_BLOCK = 8 << 20  # a poll reads at most this much before committing, to bound memory
RESTART_COST = (
    "the watcher starts afresh and reads every transcript in its folders again from the start "
    "(sessions last written before the backfill window count as history; the others are "
    "queued again, and one already remembered is not trained twice)"
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    path TEXT NOT NULL,
    dev INTEGER NOT NULL,
    ino INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    size INTEGER NOT NULL,
    head_len INTEGER NOT NULL,
    head_hash TEXT NOT NULL,
    tail_hash TEXT NOT NULL,
    mtime REAL NOT NULL,
    updated REAL NOT NULL,
    UNIQUE (dev, ino)
);
CREATE INDEX IF NOT EXISTS files_path ON files (path);
"""


@dataclass(frozen=True)
class FileState:
    """What the watcher remembers about one file (one row of `files`)."""

    id: int
    path: str
    dev: int
    ino: int
    offset: int
    size: int
    head_len: int
    head_hash: str
    tail_hash: str
    mtime: float
    updated: float


@dataclass(frozen=True)
class Chunk:
    """Complete lines newly read from one file.

    `lines[i]` (without its newline) starts at byte `offsets[i]`; `end` is the offset after
    the last newline. `reset` says the file was truncated or rewritten and is read from 0 again;
    `file_id` stays the same across renames, truncation and rewrites of one file.
    """

    file_id: int
    path: Path
    start: int
    end: int
    lines: list[bytes]
    offsets: list[int]
    reset: bool
    new_file: bool
    mtime: float


Handler = Callable[[Chunk, sqlite3.Connection], None]


def state_file(path: Path, extra_schema: str = "") -> StateFile:
    """The watcher's state as `rune_mcp.heal` sees it. A damaged one is not salvaged: offsets
    and sessions are committed together, and a partial copy could hold an offset past lines
    whose session it lost. Starting afresh instead costs one more read of every transcript."""
    return StateFile(
        path=path,
        what=f"the watcher state {path}",
        schema=_SCHEMA + extra_schema,
        version=SCHEMA_VERSION,
        fix="upgrade Rune or delete the file to start over.",
        cost=RESTART_COST,
    )


def _hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


class WatchDB:
    """The watcher's SQLite state: file offsets (here) plus tables other modules add.

    One connection, used by one thread. `transaction()` is `BEGIN IMMEDIATE ... COMMIT`, so
    a crash inside it leaves nothing half-written.
    """

    def __init__(self, path: Path, extra_schema: str = "") -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        # One thread at a time, but not always the one that opened it (tests, the CLI). A
        # damaged file is moved aside and started afresh (`rune_mcp.heal`).
        self.conn = heal.open_state(state_file(path, extra_schema), check_same_thread=False)

    def close(self) -> None:
        self.conn.close()

    def transaction(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return sqlite.transaction(self.conn)

    def meta_get(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row["value"])

    def meta_set(self, key: str, value: str) -> None:
        self.conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def file_by_inode(self, dev: int, ino: int) -> FileState | None:
        row = self.conn.execute(
            "SELECT * FROM files WHERE dev = ? AND ino = ?", (dev, ino)
        ).fetchone()
        return None if row is None else FileState(**dict(row))

    def files_by_path(self, path: str) -> list[FileState]:
        rows = self.conn.execute(
            "SELECT * FROM files WHERE path = ? ORDER BY updated DESC", (path,)
        ).fetchall()
        return [FileState(**dict(r)) for r in rows]

    def files(self) -> list[FileState]:
        return [FileState(**dict(r)) for r in self.conn.execute("SELECT * FROM files")]

    def forget_file(self, file_id: int) -> None:
        self.conn.execute("DELETE FROM files WHERE id = ?", (file_id,))


def _pread(fd: int, start: int, length: int) -> bytes:
    """Exactly `length` bytes from `start`, or fewer when the file is shorter."""
    parts: list[bytes] = []
    while length > 0:
        data = os.pread(fd, length, start)
        if not data:
            break
        parts.append(data)
        start += len(data)
        length -= len(data)
    return b"".join(parts)


@dataclass
class _Position:
    """Where reading resumes in an open file, with the bytes needed for new fingerprints."""

    row: FileState | None
    offset: int
    head: bytes  # the first min(offset, HEAD_BYTES) bytes
    tail: bytes  # the TAIL_BYTES bytes before offset
    reset: bool


class Tailer:
    """Reads new complete lines of files and records how far it got in a `WatchDB`."""

    def __init__(self, db: WatchDB, read_block: int = READ_BLOCK) -> None:
        self.db = db
        self.read_block = read_block

    def poll(self, path: Path, handler: Handler) -> int:
        """Hand every new complete line of `path` to `handler` once; returns how many.

        A missing or unreadable file yields 0 (the caller's scan notices deletions).
        """
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            return 0
        except OSError as exc:
            log.warning("cannot read %s (%s); skipping it", path, exc.strerror)
            return 0
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return 0
            total = 0
            pos = self._position(fd, str(path), st)
            while True:
                delivered, pos = self._read_once(fd, path, st, pos, handler)
                total += delivered
                if delivered == 0 or pos.offset >= os.fstat(fd).st_size:
                    return total
                st = os.fstat(fd)
        finally:
            os.close(fd)

    # --- finding where to resume -------------------------------------------------------

    def _matches(self, fd: int, row: FileState, size: int) -> _Position | None:
        """The resume position if the file's bytes still match `row`'s fingerprints."""
        if size < row.offset:
            return None
        head = _pread(fd, 0, row.head_len)
        if _hash(head) != row.head_hash:
            return None
        tail_start = max(0, row.offset - TAIL_BYTES)
        tail = _pread(fd, tail_start, row.offset - tail_start)
        if _hash(tail) != row.tail_hash:
            return None
        return _Position(row=row, offset=row.offset, head=head, tail=tail, reset=False)

    def _position(self, fd: int, path: str, st: os.stat_result) -> _Position:
        row = self.db.file_by_inode(st.st_dev, st.st_ino)
        if row is not None:
            pos = self._matches(fd, row, st.st_size)
            if pos is not None:
                return pos
            if row.path == path:
                log.info("%s was truncated or rewritten; reading it again from the start", path)
                return _Position(row=row, offset=0, head=b"", tail=b"", reset=True)
            # The inode was reused by an unrelated file: the old row means nothing now.
            with self.db.transaction():
                self.db.forget_file(row.id)
        for old in self.db.files_by_path(path):
            # A new inode at a known path: a rewrite that kept the content continues.
            pos = self._matches(fd, old, st.st_size)
            if pos is not None:
                return pos
        return _Position(row=None, offset=0, head=b"", tail=b"", reset=False)

    # --- reading and committing ---------------------------------------------------------

    def _read_once(
        self, fd: int, path: Path, st: os.stat_result, pos: _Position, handler: Handler
    ) -> tuple[int, _Position]:
        data = self._read_span(fd, pos.offset, st.st_size)
        cut = data.rfind(b"\n") + 1
        if cut == 0 and not (pos.row is None or pos.reset):
            return 0, pos
        consumed = data[:cut]
        lines = consumed.split(b"\n")[:-1]
        offsets: list[int] = []
        at = pos.offset
        for line in lines:
            offsets.append(at)
            at += len(line) + 1
        end = pos.offset + cut
        head = (pos.head + consumed)[:HEAD_BYTES] if len(pos.head) < HEAD_BYTES else pos.head
        tail = (pos.tail + consumed)[-TAIL_BYTES:] if cut else pos.tail
        with self.db.transaction() as tx:
            file_id = self._store(
                tx, row=pos.row, path=str(path), st=st, offset=end, head=head, tail=tail
            )
            if lines or pos.reset or pos.row is None:
                chunk = Chunk(
                    file_id=file_id, path=path, start=pos.offset, end=end, lines=lines,
                    offsets=offsets, reset=pos.reset, new_file=pos.row is None,
                    mtime=st.st_mtime,
                )
                handler(chunk, tx)
        row = self.db.file_by_inode(st.st_dev, st.st_ino)
        return len(lines), _Position(row=row, offset=end, head=head, tail=tail, reset=False)

    def _read_span(self, fd: int, start: int, size: int) -> bytes:
        """Up to `read_block` bytes from `start`, more only when one line is longer than that."""
        data = _pread(fd, start, min(self.read_block, max(0, size - start)))
        while b"\n" not in data and start + len(data) < size:
            more = _pread(fd, start + len(data), min(self.read_block, size - start - len(data)))
            if not more:
                break
            data += more
        return data

    @staticmethod
    def _store(
        tx: sqlite3.Connection,
        *,
        row: FileState | None,
        path: str,
        st: os.stat_result,
        offset: int,
        head: bytes,
        tail: bytes,
    ) -> int:
        values = (
            path, st.st_dev, st.st_ino, offset, st.st_size, len(head), _hash(head),
            _hash(tail), st.st_mtime, time.time(),
        )
        if row is None:
            cur = tx.execute(
                "INSERT INTO files (path, dev, ino, offset, size, head_len, head_hash, "
                "tail_hash, mtime, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                values,
            )
            return int(cur.lastrowid or 0)
        # Another row may still hold this inode (a reused inode found under another name).
        tx.execute("DELETE FROM files WHERE dev = ? AND ino = ? AND id != ?",
                   (st.st_dev, st.st_ino, row.id))
        tx.execute(
            "UPDATE files SET path = ?, dev = ?, ino = ?, offset = ?, size = ?, head_len = ?, "
            "head_hash = ?, tail_hash = ?, mtime = ?, updated = ? WHERE id = ?",
            (*values, row.id),
        )
        return row.id
