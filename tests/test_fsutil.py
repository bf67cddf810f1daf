"""Atomic writes leave the old or the new file, never a torn one or a stray temp file."""

from __future__ import annotations

import json
import multiprocessing
import time
from pathlib import Path

import pytest

from rune_mcp.errors import LibraryError
from rune_mcp.fsutil import atomic_write_json, atomic_write_text, locked, replacing


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "a" / "f.json"
    atomic_write_json(target, {"x": 1})
    atomic_write_json(target, {"x": 2})
    assert json.loads(target.read_text()) == {"x": 2}
    assert [p.name for p in target.parent.iterdir()] == ["f.json"]


def test_failed_write_keeps_old_content(tmp_path: Path) -> None:
    target = tmp_path / "f.txt"
    atomic_write_text(target, "old")
    with pytest.raises(TypeError):
        atomic_write_json(target, {"x": object()})
    assert target.read_text() == "old"


def test_replacing_renames_the_written_file_into_place(tmp_path: Path) -> None:
    target = tmp_path / "out" / "adapter.gguf"
    with replacing(target) as tmp:
        assert tmp.parent == target.parent and not target.exists()
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    assert [p.name for p in target.parent.iterdir()] == ["adapter.gguf"]


def test_replacing_keeps_the_old_file_and_no_temp_when_the_writer_fails(tmp_path: Path) -> None:
    target = tmp_path / "adapter.gguf"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), replacing(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("the writer died")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["adapter.gguf"]


def _hold(path: str, seconds: float) -> None:
    with locked(Path(path)):
        time.sleep(seconds)


def test_lock_times_out_with_a_clear_error(tmp_path: Path) -> None:
    lock = tmp_path / "lib.lock"
    child = multiprocessing.get_context("spawn").Process(target=_hold, args=(str(lock), 5.0))
    child.start()
    try:
        deadline = time.monotonic() + 10
        while not lock.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        with pytest.raises(LibraryError, match="locked"), locked(lock, timeout=0.2):
            pass
    finally:
        child.join()
