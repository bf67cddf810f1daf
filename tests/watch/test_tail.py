"""The tailer: complete lines only, offsets that persist, rotation, truncation and rewrites."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from rune_mcp.watch.tail import Chunk, Tailer, WatchDB


class Collect:
    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.chunks: list[Chunk] = []

    def __call__(self, chunk: Chunk, tx: sqlite3.Connection) -> None:
        self.chunks.append(chunk)
        self.lines.extend(chunk.lines)


def _db(tmp_path: Path) -> WatchDB:
    return WatchDB(tmp_path / "state" / "watch.sqlite3")


def _append(path: Path, data: bytes) -> None:
    with path.open("ab") as handle:
        handle.write(data)


def test_only_complete_lines_are_consumed(tmp_path: Path) -> None:
    log = tmp_path / "a.jsonl"
    db, got = _db(tmp_path), Collect()
    tailer = Tailer(db)
    _append(log, b"one\ntw")
    assert tailer.poll(log, got) == 1
    _append(log, b"o\nthr")
    assert tailer.poll(log, got) == 1
    assert tailer.poll(log, got) == 0
    _append(log, b"ee\n")
    tailer.poll(log, got)
    assert got.lines == [b"one", b"two", b"three"]
    assert [c.offsets for c in got.chunks if c.lines] == [[0], [4], [8]]


def test_offsets_survive_a_restart(tmp_path: Path) -> None:
    log = tmp_path / "a.jsonl"
    _append(log, b"1\n2\n")
    first = Collect()
    db = _db(tmp_path)
    Tailer(db).poll(log, first)
    db.close()
    _append(log, b"3\n")
    second = Collect()
    Tailer(_db(tmp_path)).poll(log, second)
    assert first.lines == [b"1", b"2"]
    assert second.lines == [b"3"]
    assert second.chunks[0].file_id == first.chunks[0].file_id


def test_handler_failure_rolls_back_the_offset(tmp_path: Path) -> None:
    log = tmp_path / "a.jsonl"
    _append(log, b"1\n2\n")
    tailer = Tailer(_db(tmp_path))

    def boom(chunk: Chunk, tx: sqlite3.Connection) -> None:
        raise RuntimeError("handler crashed")

    with pytest.raises(RuntimeError):
        tailer.poll(log, boom)
    got = Collect()
    tailer.poll(log, got)
    assert got.lines == [b"1", b"2"]


def test_truncation_is_detected_even_after_the_file_regrew(tmp_path: Path) -> None:
    log = tmp_path / "a.jsonl"
    tailer, got = Tailer(_db(tmp_path)), Collect()
    _append(log, b"old-1\nold-2\n")
    tailer.poll(log, got)
    inode = log.stat().st_ino
    with log.open("r+b") as handle:
        handle.truncate(0)
    _append(log, b"new-1 is longer\nnew-2 is longer too\n")  # past the old offset already
    assert log.stat().st_ino == inode
    tailer.poll(log, got)
    assert got.lines == [b"old-1", b"old-2", b"new-1 is longer", b"new-2 is longer too"]
    assert got.chunks[-1].reset and got.chunks[-1].file_id == got.chunks[0].file_id


def test_shrinking_file_restarts_from_zero(tmp_path: Path) -> None:
    log = tmp_path / "a.jsonl"
    tailer, got = Tailer(_db(tmp_path)), Collect()
    _append(log, b"aaaaaaaa\nbbbbbbbb\n")
    tailer.poll(log, got)
    log.write_bytes(b"c\n")
    tailer.poll(log, got)
    assert got.lines == [b"aaaaaaaa", b"bbbbbbbb", b"c"]


def test_rotation_by_rename_loses_nothing(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    tailer, got = Tailer(_db(tmp_path)), Collect()
    _append(log, b"1\n")
    tailer.poll(log, got)
    _append(log, b"2\n")  # written, not yet read, then rotated away
    log.rename(tmp_path / "a.log.1")
    _append(log, b"3\n")
    tailer.poll(log, got)  # the new file first: a new identity, read from 0
    tailer.poll(tmp_path / "a.log.1", got)  # the old inode resumes after "1"
    assert sorted(got.lines) == [b"1", b"2", b"3"]


def test_rewrite_that_keeps_the_prefix_continues(tmp_path: Path) -> None:
    log = tmp_path / "a.jsonl"
    tailer, got = Tailer(_db(tmp_path)), Collect()
    _append(log, b"1\n2\n")
    tailer.poll(log, got)
    tmp = tmp_path / "a.jsonl.tmp"
    tmp.write_bytes(b"1\n2\n3\n")
    os.replace(tmp, log)  # a new inode with the same first bytes
    tailer.poll(log, got)
    assert got.lines == [b"1", b"2", b"3"]
    assert not got.chunks[-1].reset


def test_rewrite_with_other_content_reads_again(tmp_path: Path) -> None:
    log = tmp_path / "a.jsonl"
    tailer, got = Tailer(_db(tmp_path)), Collect()
    _append(log, b"1\n2\n")
    tailer.poll(log, got)
    tmp = tmp_path / "a.jsonl.tmp"
    tmp.write_bytes(b"x\ny\nz\n")
    os.replace(tmp, log)
    tailer.poll(log, got)
    assert got.lines == [b"1", b"2", b"x", b"y", b"z"]


def test_a_line_longer_than_the_read_block(tmp_path: Path) -> None:
    log = tmp_path / "a.jsonl"
    tailer, got = Tailer(_db(tmp_path), read_block=16), Collect()
    long = b"x" * 100
    _append(log, b"a\n" + long + b"\nb\n")
    tailer.poll(log, got)
    assert got.lines == [b"a", long, b"b"]


def test_missing_and_special_files_yield_nothing(tmp_path: Path) -> None:
    tailer, got = Tailer(_db(tmp_path)), Collect()
    assert tailer.poll(tmp_path / "absent.jsonl", got) == 0
    assert tailer.poll(tmp_path, got) == 0
    assert got.chunks == []


def test_unknown_schema_version_is_a_clear_error(tmp_path: Path) -> None:
    from rune_mcp.errors import LibraryError

    db = _db(tmp_path)
    db.meta_set("schema_version", "99")
    db.close()
    with pytest.raises(LibraryError, match="schema version 99"):
        _db(tmp_path)


def test_rewrite_that_changes_only_later_bytes_reads_again(tmp_path: Path) -> None:
    """The first kilobyte alone does not prove continuity: the bytes before the offset must
    match too."""
    log = tmp_path / "a.jsonl"
    tailer, got = Tailer(_db(tmp_path)), Collect()
    header = b"h" * 1500 + b"\n"
    _append(log, header + b"old\n")
    tailer.poll(log, got)
    with log.open("r+b") as handle:
        handle.truncate(0)
    _append(log, header + b"new\nmore\n")
    tailer.poll(log, got)
    assert got.lines == [header[:-1], b"old", header[:-1], b"new", b"more"]
