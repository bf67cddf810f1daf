"""Capture: agent transcripts in, redacted trajectories out.

`parse_path(path)` and `parse_text(text)` pick the format from the content (or take it from
`fmt`), parse it with that agent's parser (`rune_mcp.agents`), and return a `Trajectory` whose
every string is already size-budgeted and redacted. Supported formats are `FORMATS`, one per
agent. This package holds what every parser shares: tolerant reading and the trajectory
builder (`base`), the kept branch of a tree of records (`chain`), why a file holds no
readable text (`sniff`), the size budget, redaction, tool families and episode detection.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

# The module, not its names: the agents' parsers import this package's modules, so the
# registry may still be loading when this package is (its names are read at call time).
from rune_mcp import agents
from rune_mcp.capture import sniff
from rune_mcp.capture.base import decode
from rune_mcp.capture.transcript_file import (
    MAX_FILE_BYTES,
    TranscriptFile,
    read_transcript,
    still_names,
)
from rune_mcp.errors import ParseError, RuneError
from rune_mcp.trajectory import Trajectory

_MAGIC_BYTES = 64  # enough of a file's start to recognise a database or a compressor
_BLANK = " \t\r\n\ufeff\x00"

__all__ = [
    "FORMATS",
    "MAX_FILE_BYTES",
    "TranscriptFile",
    "database_magic",
    "detect_format",
    "parse_file",
    "parse_path",
    "parse_text",
    "read_transcript",
]


def __getattr__(name: str) -> tuple[str, ...]:
    # `FORMATS` is the registry's list of names, read when first asked for (see the import).
    if name == "FORMATS":
        return agents.names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _supported() -> str:
    return "auto, " + ", ".join(agents.names())


def detect_format(text: str, name: str = "<text>") -> str:
    """The format of a transcript from its content: `'{"type":"session_meta",...}'` -> codex."""
    sample = agents.base.Sample(text)
    if not sample.text:
        raise ParseError(f"no task found in {name}: it is empty.")
    for agent in agents.AGENTS:
        if agent.looks_like(sample):
            return agent.name
    raise ParseError(f"cannot tell the format of {name}; supported formats are "
                     f"{_supported()}: pass --format to choose one.")


def _check_format(fmt: str) -> str:
    if fmt != "auto" and fmt not in agents.names():
        raise ParseError(f"unknown transcript format {fmt!r}; supported formats are "
                         f"{_supported()}.")
    return fmt


def parse_text(text: str, fmt: str = "auto", name: str = "<text>") -> Trajectory:
    """Parse transcript text; `fmt` is one of FORMATS or "auto" (detect from content)."""
    fmt = _check_format(fmt)
    if fmt == "auto":
        fmt = detect_format(text, name)
    return agents.get(fmt).parse(text, name, None)


def _database_trajectory(
    file: TranscriptFile, fmt: str, error: type[RuneError]
) -> Trajectory | None:
    """A chat database some agent keeps (Cursor's `state.vscdb`), opened read-only.

    SQLite opens the file by its path itself, so the checked location must still hold the
    file that was checked once it has been read.
    """
    for agent in agents.AGENTS:
        db = agent.database
        if db is not None and file.data.startswith(db.magic) and fmt in ("auto", agent.name):
            traj = db.parse(file.path, None)
            if not still_names(file):
                raise error(f"{file.path} changed while Rune read it; try again.")
            return traj
    return None


def database_magic() -> tuple[bytes, ...]:
    """The first bytes of every chat database an agent keeps (its bytes are not kept)."""
    return tuple(a.database.magic for a in agents.AGENTS if a.database is not None)


def parse_path(path: Path, fmt: str = "auto") -> Trajectory:
    """Parse a transcript file (Claude Code subagents beside it are attached; a Cursor
    `state.vscdb` is opened read-only). The file is read once (`read_transcript`)."""
    fmt = _check_format(fmt)
    file = read_transcript(Path(path), error=ParseError, database_magic=database_magic())
    return parse_file(file, fmt)


def parse_file(file: TranscriptFile, fmt: str = "auto") -> Trajectory:
    """Parse the bytes of a transcript already read (`read_transcript`); `file.path` names it
    and anchors the files an agent keeps beside it."""
    fmt = _check_format(fmt)
    path = file.path
    traj = _database_trajectory(file, fmt, ParseError)
    if traj is not None:
        return traj
    packed = sniff.compressed(path, file.data[:_MAGIC_BYTES])
    if packed is not None:
        raise ParseError(packed)
    if not file.complete:
        raise ParseError(f"{path} is a chat database, not a {fmt} transcript; pass the "
                         "format auto.")
    stats: Counter[str] = Counter()
    text = decode(file.data, stats)
    try:
        if not text.strip(_BLANK):
            raise ParseError(f"no task found in {path}: it is empty.")
        if fmt == "auto":
            fmt = detect_format(text, str(path))
        traj = agents.get(fmt).parse(text, str(path), path)
    except ParseError:
        # Nothing readable came out: say why (binary, UTF-16, another encoding) if it is so.
        problem = sniff.unreadable(path, file.data, text, stats)
        if problem is not None:
            raise ParseError(problem) from None
        raise
    if stats:
        traj.stats.update(stats)
        traj.stats = dict(sorted(traj.stats.items()))
    return traj
