"""Opening Rune's own SQLite state files (the job queue, the watcher's offsets) one way.

Several processes write them at once (one `rune serve` per editor window, hooks, the watcher),
so every connection gets:
- WAL journal (set once, with the schema; it is a property of the file): readers never block
  the writer, and a crash leaves the last committed transaction intact;
- a 30 s busy timeout: a writer waits for another one instead of failing at once;
- `synchronous = NORMAL`: in WAL mode a crash cannot corrupt the file, only lose the last
  transactions before a checkpoint, at a fraction of the cost of FULL;
- autocommit (`isolation_level=None`): transactions are explicit `transaction()` blocks, never
  ones the `sqlite3` module opens behind the caller's back;
- `sqlite3.Row` rows, read by column name.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from rune_mcp.errors import LibraryError

BUSY_TIMEOUT_S = 30.0


def connect(path: Path, *, what: str, check_same_thread: bool = True) -> sqlite3.Connection:
    """A connection to the state file at `path`; `what` names it in the error message.

    `check_same_thread=False` for a connection that one thread at a time uses, but not always
    the thread that opened it.
    """
    try:
        conn = sqlite3.connect(
            path, timeout=BUSY_TIMEOUT_S, isolation_level=None,
            check_same_thread=check_same_thread,
        )
    except sqlite3.Error as exc:
        raise _cannot_open(what, exc) from exc
    try:
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        conn.execute("PRAGMA synchronous = NORMAL")
    except sqlite3.Error as exc:
        conn.close()
        raise _cannot_open(what, exc) from exc
    return conn


def _cannot_open(what: str, exc: sqlite3.Error) -> LibraryError:
    return LibraryError(f"cannot open {what} ({exc}); check that RUNE_HOME is writable.")


def connect_readonly(path: Path, timeout: float = 5.0) -> sqlite3.Connection:
    """A read-only connection that never creates `path` (for status readers and databases
    other programs own); raises `sqlite3.Error` when it cannot be opened."""
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=timeout)
    conn.row_factory = sqlite3.Row
    return conn


def ensure_schema(
    conn: sqlite3.Connection, script: str, version: int, *, what: str, fix: str
) -> None:
    """Switch the file to WAL, create the tables of `script` (which must include a
    `meta (key, value)` table) and check the schema version this Rune reads.

    A newer file is refused rather than misread: `fix` says what to do about it.
    """
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.executescript(script)
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if row is None:
            conn.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)",
                (str(version),),
            )
    except sqlite3.Error as exc:
        raise _cannot_open(what, exc) from exc
    if row is not None and str(row[0]) != str(version):
        raise LibraryError(
            f"{what} has schema version {row[0]} but this Rune reads version {version}; {fix}"
        )


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """`BEGIN IMMEDIATE ... COMMIT`: the write lock is taken up front, so two processes never
    both read a row and then both act on it, and a crash inside leaves nothing half-written."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
