"""Capture: agent transcripts in, redacted trajectories out.

`parse_path(path)` and `parse_text(text)` pick the format from the content (or take it from
`fmt`), parse it with the matching module of this package, and return a `Trajectory` whose
every string is already size-budgeted and redacted. Supported formats are `FORMATS`.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rune_mcp.capture import aider, claude_code, codex, cursor, generic
from rune_mcp.capture.base import decode, read_jsonl
from rune_mcp.errors import ParseError
from rune_mcp.trajectory import Trajectory

FORMATS: tuple[str, ...] = ("claude-code", "codex", "cursor", "aider", "generic")
MAX_FILE_BYTES = 512 * 1024 * 1024

Parser = Callable[[str, str, Path | None], Trajectory]
PARSERS: dict[str, Parser] = {
    "claude-code": claude_code.parse,
    "codex": codex.parse,
    "cursor": cursor.parse,
    "aider": aider.parse,
    "generic": generic.parse,
}

__all__ = ["FORMATS", "detect_format", "parse_path", "parse_text"]


def _supported() -> str:
    return "auto, " + ", ".join(FORMATS)


def detect_format(text: str, name: str = "<text>") -> str:
    """The format of a transcript from its content: `'{"type":"session_meta",...}'` -> codex."""
    stripped = text.lstrip("\ufeff \t\r\n")
    if not stripped:
        raise ParseError(f"no task found in {name}: it is empty.")
    if stripped.startswith("{") and '"steps"' in stripped[:2_000_000]:
        try:
            if generic.looks_like(json.loads(stripped)):
                return "generic"
        except (ValueError, RecursionError):
            pass
    sample = _sample_records(stripped)
    for fmt, looks in (("claude-code", claude_code.looks_like), ("codex", codex.looks_like),
                       ("cursor", cursor.looks_like)):
        if sample and looks(sample):
            return fmt
    if aider.looks_like(stripped):
        return "aider"
    raise ParseError(f"cannot tell the format of {name}; supported formats are "
                     f"{_supported()}: pass --format to choose one.")


def _sample_records(text: str) -> list[dict[str, Any]]:
    """The first parsable JSON lines, enough to recognise a JSONL format."""
    head = text[:1_000_000]
    if not head.startswith("{"):
        return []
    lines = head.split("\n")
    if len(head) < len(text):
        lines = lines[:-1]  # the cut may fall inside a line
    sample: list[dict[str, Any]] = []
    for rec in read_jsonl("\n".join(lines[:200]), Counter()):
        sample.append(rec)
        if len(sample) >= 50:
            break
    return sample


def _check_format(fmt: str) -> str:
    if fmt != "auto" and fmt not in FORMATS:
        raise ParseError(f"unknown transcript format {fmt!r}; supported formats are "
                         f"{_supported()}.")
    return fmt


def parse_text(text: str, fmt: str = "auto", name: str = "<text>") -> Trajectory:
    """Parse transcript text; `fmt` is one of FORMATS or "auto" (detect from content)."""
    fmt = _check_format(fmt)
    if fmt == "auto":
        fmt = detect_format(text, name)
    return PARSERS[fmt](text, name, None)


def parse_path(path: Path, fmt: str = "auto") -> Trajectory:
    """Parse a transcript file (Claude Code subagents beside it are attached; a Cursor
    `state.vscdb` is opened read-only)."""
    fmt = _check_format(fmt)
    path = Path(path)
    if not path.is_file():
        raise ParseError(f"no transcript at {path}: the file does not exist or is not a file.")
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ParseError(f"{path} is {size // 2**20} MiB, over the {MAX_FILE_BYTES // 2**20}"
                             " MiB a transcript may have; split it or pass a smaller file.")
        with path.open("rb") as fh:
            magic = fh.read(len(cursor.SQLITE_MAGIC))
        if magic == cursor.SQLITE_MAGIC and fmt in ("auto", "cursor"):
            return cursor.parse_vscdb(path)
        data = path.read_bytes()
    except OSError as exc:
        raise ParseError(f"cannot read {path} ({exc.strerror or exc}).") from None
    stats: Counter[str] = Counter()
    text = decode(data, stats)
    if fmt == "auto":
        fmt = detect_format(text, str(path))
    traj = PARSERS[fmt](text, str(path), path)
    if stats:
        traj.stats.update(stats)
        traj.stats = dict(sorted(traj.stats.items()))
    return traj
