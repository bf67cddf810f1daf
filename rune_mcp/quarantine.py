"""Damaged state is moved aside, never deleted: `jobs.sqlite3` -> `jobs.sqlite3.damaged-<UTC>`.

When one of Rune's own state files (the job queue, the watcher's state, the adapter index) is
found damaged, it is renamed in its own folder to a name carrying the UTC time, e.g.
`jobs.sqlite3.damaged-20261202T071500Z`, together with its SQLite companions (`-wal`, `-shm`,
`-journal`, renamed to the new name plus the same suffix, so SQLite still pairs them), and a
note beside it (`<new name>.json`) says what it was, why it was moved and what became of what
it held. `rune status` and `rune doctor` name every such file until the user deletes it.

Renames are atomic; callers hold the lock that guards the file (see `rune_mcp/heal.py` and the
library lock for the index), so two processes never both move it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from rune_mcp.fsutil import atomic_write_json, fsync_dir

MARK = ".damaged-"
COMPANIONS = ("-wal", "-shm", "-journal")
# The folders under RUNE_HOME that hold state files: RUNE_HOME itself, the watcher's, the index's.
PLACES = ("", "watch", "index")
_NAME = re.compile(r"^(?P<original>.+)\.damaged-(?P<stamp>\d{8}T\d{6}Z)(?:\.\d+)?$")
_WHAT = {
    "jobs.sqlite3": "the job queue",
    "state.sqlite3": "the watcher's state",
    "chroma": "the adapter index",
    "index": "the adapter index folder",
}


@dataclass(frozen=True)
class Quarantined:
    """One damaged file or folder that was moved aside, and its note."""

    path: Path
    what: str
    reason: str
    outcome: str
    moved_at: str

    def sentence(self) -> str:
        """One sentence for `rune status` and `rune doctor`."""
        outcome = f"; {self.outcome}" if self.outcome else ""
        return (
            f"{self.what} was damaged ({self.reason}) and was moved aside to {self.path}"
            f"{outcome}; delete it once nothing in it is needed."
        )

    def to_dict(self) -> dict[str, str]:
        return {**asdict(self), "path": str(self.path)}


def quarantine(path: Path, *, what: str, reason: str, outcome: str = "") -> Quarantined:
    """Rename `path` (a file or a folder) and its companions aside and write the note.

    The caller holds the lock guarding `path`. Companions go first: a connection opening the
    fresh file at the old name must never find the damaged file's WAL and replay it.
    """
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = _free_name(path, stamp)
    for suffix in COMPANIONS:
        with contextlib.suppress(FileNotFoundError):
            os.rename(_with_suffix(path, suffix), _with_suffix(target, suffix))
    os.rename(path, target)
    fsync_dir(path.parent)
    moved = Quarantined(target, what, _one_line(reason), outcome,
                        time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    _write_note(moved)
    return moved


def record_outcome(moved: Quarantined, outcome: str) -> Quarantined:
    """Say in the note what became of what the file held (known once it was salvaged)."""
    done = Quarantined(moved.path, moved.what, moved.reason, outcome, moved.moved_at)
    _write_note(done)
    return done


def quarantined(home: Path) -> list[Quarantined]:
    """Every file moved aside under `home`, oldest first."""
    found: list[Quarantined] = []
    for place in PLACES:
        folder = home / place if place else home
        try:
            names = sorted(os.listdir(folder))
        except OSError:  # absent, or itself a file
            continue
        for name in names:
            match = _NAME.match(name)
            if match is not None:
                found.append(_read_note(folder / name, match["original"]))
    return sorted(found, key=lambda q: (q.moved_at, str(q.path)))


def _free_name(path: Path, stamp: str) -> Path:
    target = path.with_name(f"{path.name}{MARK}{stamp}")
    n = 1
    while _exists(target) or _exists(_note_path(target)):
        n += 1
        target = path.with_name(f"{path.name}{MARK}{stamp}.{n}")
    return target


def _exists(path: Path) -> bool:
    return os.path.lexists(path)


def _with_suffix(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def _note_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _one_line(text: str, limit: int = 300) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _iso(stamp: str) -> str:
    """`20261202T071500Z` -> `2026-12-02T07:15:00Z`."""
    return f"{stamp[:4]}-{stamp[4:6]}-{stamp[6:8]}T{stamp[9:11]}:{stamp[11:13]}:{stamp[13:15]}Z"


def _write_note(moved: Quarantined) -> None:
    atomic_write_json(_note_path(moved.path), moved.to_dict())


def _read_note(path: Path, original: str) -> Quarantined:
    """The note beside `path`; a missing or unreadable note still names the file."""
    try:
        data = json.loads(_note_path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = {}
    if not isinstance(data, dict):
        data = {}
    stamp = _NAME.match(path.name)
    return Quarantined(
        path=path,
        what=str(data.get("what") or _WHAT.get(original, original)),
        reason=str(data.get("reason") or "reason not recorded"),
        outcome=str(data.get("outcome") or ""),
        moved_at=str(data.get("moved_at") or (_iso(stamp["stamp"]) if stamp else "")),
    )
