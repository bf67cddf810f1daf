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

A file that is not a database, is malformed, lacks columns of the schema, or is a directory
raises `StateDamaged`, never a bare `sqlite3` error: `rune_mcp/heal.py` moves it aside and
starts it afresh. Other failures (locked, read-only, a newer schema) are not damage and are
never "repaired".
"""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

from rune_mcp.errors import LibraryError

BUSY_TIMEOUT_S = 30.0
# SQLITE_CORRUPT and SQLITE_NOTADB (primary codes; the extended ones keep them in the low byte).
_DAMAGE_CODES = frozenset({11, 26})


class StateDamaged(LibraryError):
    """A state file is damaged: unreadable, malformed, the wrong shape or not a file at all."""

    def __init__(self, what: str, reason: str) -> None:
        super().__init__(
            f"{what} is damaged ({reason}); run `rune doctor --repair` to move it aside and "
            "start it afresh."
        )
        self.what = what
        self.reason = reason


def is_damage(exc: sqlite3.Error) -> bool:
    """Whether the error says the file itself is broken (not locked, not read-only)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in _DAMAGE_CODES


def not_a_file(path: Path) -> str | None:
    """Why `path` cannot be a database file (a directory, a socket ...), or None."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"it cannot be examined: {exc.strerror}"
    if stat.S_ISREG(mode):
        return None
    kind = "a directory" if stat.S_ISDIR(mode) else "something other than a file"
    return f"{kind} stands where the database file should be"


def connect(path: Path, *, what: str, check_same_thread: bool = True) -> sqlite3.Connection:
    """A connection to the state file at `path`; `what` names it in the error message.

    `check_same_thread=False` for a connection that one thread at a time uses, but not always
    the thread that opened it.
    """
    wrong = not_a_file(path)
    if wrong is not None:
        raise StateDamaged(what, wrong)
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
        # Read now: SQLite opens the -wal and -shm files (by name) at the first read, and from
        # then on the connection holds all three, whatever is renamed (see `rune_mcp.heal`).
        conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as exc:
        conn.close()
        raise _cannot_open(what, exc) from exc
    return conn


def _cannot_open(what: str, exc: sqlite3.Error) -> LibraryError:
    if is_damage(exc):
        return StateDamaged(what, str(exc))
    return LibraryError(f"cannot open {what} ({exc}); check that RUNE_HOME is writable.")


@contextlib.contextmanager
def guarded(conn: sqlite3.Connection, *, what: str) -> Iterator[sqlite3.Connection]:
    """Use and close `conn`; a query that meets a damaged page raises `StateDamaged` naming
    the file, instead of a bare `sqlite3.DatabaseError`."""
    try:
        yield conn
    except sqlite3.DatabaseError as exc:
        if is_damage(exc):
            raise StateDamaged(what, str(exc)) from exc
        raise
    finally:
        conn.close()


def connect_readonly(path: Path, timeout: float = 5.0) -> sqlite3.Connection:
    """A read-only connection that never creates `path` (for status readers and databases
    other programs own); raises `sqlite3.Error` when it cannot be opened."""
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=timeout)
    conn.row_factory = sqlite3.Row
    return conn


@functools.lru_cache(maxsize=16)
def schema_columns(script: str) -> dict[str, tuple[str, ...]]:
    """The columns of every table `script` creates, read from an in-memory database."""
    conn = sqlite3.connect(":memory:")
    try:
        conn.executescript(script)
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {
            name: tuple(str(c[1]) for c in conn.execute(f'PRAGMA table_info("{name}")'))
            for name in names if not name.startswith("sqlite_")
        }
    finally:
        conn.close()


def missing_columns(conn: sqlite3.Connection, script: str) -> str | None:
    """`table jobs has no column trajectory_json, error` for the first table of `script` that
    exists in `conn` without all its columns, or None. Extra columns are not damage."""
    existing = {
        r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    }
    for table, wanted in schema_columns(script).items():
        if table not in existing:
            continue
        present = {str(c[1]) for c in conn.execute(f'PRAGMA table_info("{table}")')}
        lacking = [c for c in wanted if c not in present]
        if lacking:
            return f"table {table} has no column {', '.join(lacking)}"
    return None


def stored_version(conn: sqlite3.Connection) -> str | None:
    """The schema version the file records, or None (no `meta` table, or one without it)."""
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    except sqlite3.OperationalError as exc:
        if str(exc).startswith("no such"):  # no meta table, or one of another shape
            return None
        raise
    return None if row is None else str(row[0])


def ensure_schema(
    conn: sqlite3.Connection, script: str, version: int, *, what: str, fix: str
) -> None:
    """Switch the file to WAL, create the tables of `script` (which must include a
    `meta (key, value)` table) and check the schema version this Rune reads.

    A newer file is refused rather than misread: `fix` says what to do about it. It is checked
    before the columns, so a file a newer Rune reshaped is never taken for a damaged one.
    """
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        stored = stored_version(conn)
        if stored is not None and stored != str(version):
            raise LibraryError(
                f"{what} has schema version {stored} but this Rune reads version {version}; "
                f"{fix}"
            )
        lacking = missing_columns(conn, script)
        if lacking is not None:
            raise StateDamaged(what, lacking)
        conn.executescript(script)
        if stored is None:
            conn.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)",
                (str(version),),
            )
    except sqlite3.Error as exc:
        raise _cannot_open(what, exc) from exc


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
