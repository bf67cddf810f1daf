"""Damaged SQLite state files heal on open: moved aside, started afresh, readable rows kept.

The job queue and the watcher's state are Rune's own files; a crash cannot corrupt them (WAL,
`rune_mcp/sqlite.py`), but a disk, a backup tool or a person can. When opening one raises
`StateDamaged` (not a database, malformed, columns missing, a directory in its place), the
opener takes the file's lock (`<file>.lock`), checks the file again, thoroughly
(`PRAGMA quick_check`), and only if it is still damaged moves it aside
(`rune_mcp/quarantine.py`), creates it afresh and copies in every row still readable
(`rune_mcp/salvage.py`), or, for a file whose rows are not worth keeping, says what starting
over costs. A warning is logged and the note beside the moved file says what was kept.

Several processes can find the same file damaged at once: the lock lets one heal it, and the
others, checking again under the lock, find the fresh file healthy and leave it alone. Every
connection is opened under the same lock (`connect`), so none is ever half on the damaged
file and half on its replacement. A connection opened before the move keeps the moved files:
for damage found on opening nobody could write to them anyway; for `rune doctor --repair` of
a file still partly usable, a statement in flight at that instant (queue connections live for
milliseconds) ends in the moved file. `rune doctor` runs the same check on demand
and `rune doctor --repair` the same repair, for damage met after opening.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from rune_mcp import sqlite
from rune_mcp.errors import LibraryError
from rune_mcp.fsutil import locked
from rune_mcp.quarantine import Quarantined, quarantine, record_outcome
from rune_mcp.salvage import copy_readable
from rune_mcp.sqlite import StateDamaged

log = logging.getLogger(__name__)

LOCK_TIMEOUT_S = 120.0  # copying the readable rows of a large queue takes a while


@dataclass(frozen=True)
class StateFile:
    """One SQLite state file and what healing it means.

    `keep` lists the tables whose readable rows are copied into the fresh file (the first is
    the one that matters, counted in the note as `noun`); with none, the fresh file starts
    empty and `cost` says what that costs. For kept rows, `cost` says what to do about the
    ones that could not be read.
    """

    path: Path
    what: str
    schema: str
    version: int
    fix: str
    keep: tuple[str, ...] = ()
    noun: str = "rows"
    cost: str = ""

    @property
    def lock(self) -> Path:
        """Held to open a connection, and to check and move the file aside."""
        return self.path.with_name(self.path.name + ".lock")


def connect(state: StateFile, *, check_same_thread: bool = True) -> sqlite3.Connection:
    """A connection to the file as it is now, opened under the file's lock.

    SQLite opens a database's `-wal` and `-shm` by name at the first read, not with the file
    itself: a connection opened just before `heal` renames the damaged file and its companions
    could pair the old file with the new file's WAL. Opening (and reading once) under the lock
    `heal` holds rules that out; once open, a connection keeps the files it has.
    """
    with locked(state.lock, timeout=LOCK_TIMEOUT_S):
        return sqlite.connect(state.path, what=state.what, check_same_thread=check_same_thread)


def open_state(state: StateFile, *, check_same_thread: bool = True) -> sqlite3.Connection:
    """A connection with the schema in place; a damaged file is healed first."""
    try:
        with locked(state.lock, timeout=LOCK_TIMEOUT_S):
            return _open(state, check_same_thread)
    except StateDamaged:
        heal(state)
    with locked(state.lock, timeout=LOCK_TIMEOUT_S):
        return _open(state, check_same_thread)


def _open(state: StateFile, check_same_thread: bool) -> sqlite3.Connection:
    """Connect and ensure the schema (the caller holds the lock)."""
    conn = sqlite.connect(state.path, what=state.what, check_same_thread=check_same_thread)
    try:
        sqlite.ensure_schema(conn, state.schema, state.version, what=state.what, fix=state.fix)
    except BaseException:
        conn.close()
        raise
    return conn


def diagnose(state: StateFile) -> str | None:
    """Why the file is damaged, or None (healthy, absent, or a newer schema, which is no
    damage). Reads every page (`PRAGMA quick_check`) and never writes."""
    return _diagnose(state.path, state.schema, state.version)


def integrity(path: Path) -> str | None:
    """Why the SQLite file at `path` (any database, of Rune's or another program's) is
    damaged, or None; reads every page and never writes."""
    return _diagnose(path, "", None)


def _diagnose(path: Path, schema: str, version: int | None) -> str | None:
    wrong = sqlite.not_a_file(path)
    if wrong is not None:
        return wrong
    if not path.exists():
        return None
    try:
        conn = sqlite.connect_readonly(path)
    except sqlite3.Error as exc:
        return str(exc) if sqlite.is_damage(exc) else None
    try:
        if version is not None:
            stored = sqlite.stored_version(conn)
            if stored is not None and stored != str(version):
                return None
        lacking = sqlite.missing_columns(conn, schema) if schema else None
        if lacking is not None:
            return lacking
        found = [str(r[0]) for r in conn.execute("PRAGMA quick_check").fetchall()]
    except sqlite3.Error as exc:
        return str(exc) if sqlite.is_damage(exc) else None
    finally:
        conn.close()
    return None if found == ["ok"] else f"integrity check: {found[0]}"


def heal(state: StateFile) -> Quarantined | None:
    """Move the file aside and start it afresh if it is (still) damaged; None when there was
    nothing to heal (healthy after all, or another process healed it first)."""
    with locked(state.lock, timeout=LOCK_TIMEOUT_S):
        reason = diagnose(state)
        if reason is None:
            return None
        was_file = state.path.is_file()
        try:
            moved = quarantine(state.path, what=state.what, reason=reason,
                               outcome="its readable content was being copied when Rune stopped")
        except OSError as exc:
            raise LibraryError(
                f"{state.what} is damaged ({reason}) and cannot be moved aside "
                f"({exc.strerror}); check that {state.path.parent} is writable."
            ) from exc
        conn = _open(state, True)
        try:
            outcome = _refill(state, moved.path, conn, was_file)
        finally:
            conn.close()
        moved = record_outcome(moved, outcome)
    log.warning("%s", moved.sentence())
    return moved


def _refill(state: StateFile, damaged: Path, conn: sqlite3.Connection, was_file: bool) -> str:
    """Copy what can be kept into the fresh file; the sentence saying what became of it."""
    if not state.keep:
        return state.cost
    if not was_file:
        return f"it was no database, so no {state.noun} were lost; a new empty file took its place"
    salvaged = copy_readable(damaged, conn, state.keep)
    table = state.keep[0]
    kept = salvaged.count(table)
    if salvaged.complete(table):
        if kept == 0:
            return f"it held no {state.noun}; a new empty file took its place"
        return f"all {kept} {state.noun} it held were copied into a new file"
    if kept == 0:
        return f"nothing in it could be read, so the {state.noun} it held are lost; {state.cost}"
    return (f"{kept} {state.noun} were copied into a new file and those in its unreadable part "
            f"are lost; {state.cost}")
