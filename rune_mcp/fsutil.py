"""Crash-safe file writing and cross-process locks.

Each Claude Code session starts its own MCP server on the same library, and any of them can be
killed at any moment, so every file Rune writes goes to a temporary name in the same folder,
is fsynced, and is renamed into place: a reader sees the old file or the new one, never half.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from rune_mcp.errors import LibraryError


def fsync_dir(path: Path) -> None:
    """Persist a rename or creation inside `path` (a no-op where directories can't be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes as hex, streamed (`hashlib.file_digest`), never read whole."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def atomic_write_bytes(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write `data` to `path` so that a crash leaves either the old or the new content."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


@contextlib.contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A new temporary file beside `path` for a writer that needs a file name of its own; on
    leaving the `with` it is fsynced and renamed to `path`, or removed if the block raised."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with tmp.open("rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str, mode: int = 0o644) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), mode)


def atomic_write_json(path: Path, obj: Any, mode: int = 0o644) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n", mode)


@contextlib.contextmanager
def locked(path: Path, timeout: float = 600.0) -> Iterator[None]:
    """Hold an exclusive cross-process lock on `path` (a `.lock` file) for the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path), timeout=timeout)
    try:
        with lock:
            yield
    except Timeout as exc:
        raise LibraryError(
            f"{path} stayed locked for {timeout:.0f} s; another Rune process is busy, try again."
        ) from exc
