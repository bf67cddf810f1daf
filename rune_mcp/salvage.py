"""Copying the rows a damaged SQLite file still holds into a fresh one.

A damaged file is only partly lost as a rule: a truncated file keeps its first pages, a page
of garbage spoils only the rows on it. The file (already moved aside) is copied to a scratch
folder, never opened in place, so the copy kept for the user is not touched, not even by
SQLite's WAL recovery. A copy shorter than its header says is padded with zero pages: SQLite
then reads every page that is there and reports the rest as damaged, instead of refusing the
whole file. Each table is read in rowid order up to the first damaged page, then backwards
from the end down to it, so rows on both sides of a damaged stretch are kept.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rune_mcp import sqlite

log = logging.getLogger(__name__)

HEADER = b"SQLite format 3\x00"


@dataclass
class Salvaged:
    """How many rows of each table were copied, and whether every row of it was."""

    rows: dict[str, int] = field(default_factory=dict)
    whole: dict[str, bool] = field(default_factory=dict)

    def count(self, table: str) -> int:
        return self.rows.get(table, 0)

    def complete(self, table: str) -> bool:
        """Every row of `table` was read and copied (False when nothing could be read)."""
        return self.whole.get(table, False)


def copy_readable(damaged: Path, into: sqlite3.Connection, tables: Sequence[str]) -> Salvaged:
    """Copy every readable row of `tables` from the file `damaged` into `into` (one
    transaction; rows already there are kept, `INSERT OR IGNORE`). Columns are matched by
    name, so a table missing some columns gives what the others hold."""
    result = Salvaged()
    if not damaged.is_file():
        return result
    with _scratch_copy(damaged) as source:
        if source is None:
            return result
        with sqlite.transaction(into):
            for table in tables:
                result.rows[table], result.whole[table] = _copy_table(source, into, table)
    return result


@contextlib.contextmanager
def _scratch_copy(damaged: Path) -> Iterator[sqlite3.Connection | None]:
    """A connection to a padded copy of `damaged` (and its WAL), or None if it has no
    SQLite header at all (nothing in it can be read)."""
    with tempfile.TemporaryDirectory(prefix=".salvage-", dir=damaged.parent) as scratch:
        copy = Path(scratch) / "copy.sqlite3"
        shutil.copyfile(damaged, copy)
        wal = damaged.with_name(damaged.name + "-wal")
        if wal.is_file():
            shutil.copyfile(wal, copy.with_name(copy.name + "-wal"))
        if not _pad(copy):
            yield None
            return
        try:
            conn = sqlite3.connect(copy, isolation_level=None)
        except sqlite3.Error:
            yield None
            return
        try:
            yield conn
        finally:
            conn.close()


def _pad(copy: Path) -> bool:
    """Extend a truncated copy with zero pages up to the size its header records; False when
    the file is not SQLite at all."""
    with copy.open("r+b") as handle:
        header = handle.read(100)
        if len(header) < 100 or not header.startswith(HEADER):
            return False
        page_size = int.from_bytes(header[16:18], "big")
        page_size = 65536 if page_size == 1 else page_size
        pages = int.from_bytes(header[28:32], "big")
        valid = header[24:28] == header[92:96]  # the header's page count is current
        size = handle.seek(0, 2)
        if valid and size < pages * page_size:
            handle.truncate(pages * page_size)  # the new bytes read as zeros
        elif size % page_size:
            handle.truncate(size + page_size - size % page_size)
    return True


def _columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [str(c[1]) for c in conn.execute(f'PRAGMA table_info("{table}")')]


def _copy_table(
    source: sqlite3.Connection, into: sqlite3.Connection, table: str
) -> tuple[int, bool]:
    """(rows copied, whether every row was read and copied)."""
    try:
        have = set(_columns(source, table))
    except sqlite3.DatabaseError:
        return 0, False
    names = [c for c in _columns(into, table) if c in have]
    if not names:
        return 0, not have  # a table the damaged file never had loses nothing
    cols = ", ".join(f'"{c}"' for c in names)
    insert = (f'INSERT OR IGNORE INTO "{table}" ({cols}) '
              f"VALUES ({', '.join('?' for _ in names)})")
    copied = 0
    whole = True

    def keep(values: tuple[object, ...]) -> None:
        nonlocal copied, whole
        try:
            copied += into.execute(insert, values).rowcount
        except sqlite3.IntegrityError:  # a required column the damaged table lacked
            whole = False

    last, forward_whole = _scan(source, f'SELECT rowid, {cols} FROM "{table}" ORDER BY rowid',
                                (), keep)
    if not forward_whole:
        whole = False
        _scan(source, f'SELECT rowid, {cols} FROM "{table}" WHERE rowid > ? ORDER BY rowid DESC',
              (last,), keep)
    return copied, whole


def _scan(
    source: sqlite3.Connection,
    query: str,
    params: tuple[object, ...],
    keep: Callable[[tuple[object, ...]], None],
) -> tuple[int, bool]:
    """Hand each row (without its rowid) to `keep` until the query ends or meets a damaged
    page; returns (the last rowid read, whether it ended cleanly)."""
    last = 0
    try:
        for row in source.execute(query, params):
            last = int(row[0])
            keep(tuple(row[1:]))
    except sqlite3.DatabaseError as exc:
        log.debug("salvage stopped after rowid %d: %s", last, exc)
        return last, False
    return last, True
