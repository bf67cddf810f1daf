"""Checks on everything a tool caller hands to Rune, before it touches a file or the library.

An MCP client is an agent acting on text it read elsewhere, so a tool argument may be wrong or
hostile: a path that climbs out with `..`, a symlink planted inside an allowed folder that
points at `~/.ssh` (or swapped in after the path was checked), a hard link to a file elsewhere,
a FIFO that blocks whoever opens it, a NUL byte that truncates a path in C code, a
megabyte-long id. A transcript is checked and read once (`open_transcript`); every refusal is
an `InputError` whose one sentence says what to change, and never echoes more of a path than
the caller already sent.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from rune_mcp.agents import AGENTS
from rune_mcp.capture import database_magic
from rune_mcp.capture.transcript_file import TranscriptFile, read_transcript, within
from rune_mcp.config import Settings
from rune_mcp.errors import InputError

MAX_PATH_CHARS = 4096
# Ids are short tokens; anything else (slashes, dots-only, control characters) is refused.
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_size(text: str, settings: Settings, what: str = "text") -> str:
    """Refuse text longer than `settings.max_request_bytes` once encoded as UTF-8."""
    if len(text) > settings.max_request_bytes or (
        len(text.encode("utf-8", "surrogatepass")) > settings.max_request_bytes
    ):
        raise InputError(
            f"{what} is larger than the {settings.max_request_bytes} bytes Rune accepts; "
            "send a smaller one or raise max_request_bytes."
        )
    return text


def check_no_nul(text: str, what: str) -> str:
    if "\x00" in text:
        raise InputError(f"{what} contains a NUL byte; send plain text.")
    return text


def check_identifier(value: str, what: str) -> str:
    """An adapter id, session id or job id: letters, digits and `_.:-`, at most 128 chars.

    `check_identifier("4f1c-9e", "session_id")` -> "4f1c-9e"
    """
    check_no_nul(value, what)
    if not _ID.match(value) or ".." in value:
        raise InputError(
            f"{what} must be 1 to 128 letters, digits or '_.:-' characters; got an invalid value."
        )
    return value


def check_text_arg(value: str, settings: Settings, what: str, max_chars: int | None = None) -> str:
    """A free-text argument (a task, a prompt): not empty, no NUL, within the size limit."""
    check_no_nul(value, what)
    if not value.strip():
        raise InputError(f"{what} is empty; describe it in a few words.")
    if max_chars is not None and len(value) > max_chars:
        raise InputError(f"{what} is longer than {max_chars} characters; shorten it.")
    return check_size(value, settings, what)


def allowed_roots(settings: Settings, workspace_roots: Iterable[Path] = ()) -> list[Path]:
    """The folders tools may read transcripts from, resolved (symlinks followed).

    The agents' own transcript folders (each agent's `roots`), the folders in
    `settings.allowed_roots`, and the workspace roots the MCP client announced.
    """
    candidates = [
        *(root for agent in AGENTS for root in agent.roots(settings)),
        *settings.allowed_roots,
        *workspace_roots,
    ]
    roots: list[Path] = []
    for root in candidates:
        resolved = root.expanduser().resolve()
        if resolved not in roots:
            roots.append(resolved)
    return roots


def transcript_candidate(raw: str, workspace_roots: Sequence[Path] = ()) -> Path:
    """The caller's transcript path as an absolute path, refused when malformed.

    Refuses NUL bytes, control characters, `..` components, and relative paths with no
    workspace root to anchor them.
    """
    check_no_nul(raw, "transcript_path")
    if not raw.strip():
        raise InputError("transcript_path is empty; give the path of a transcript file.")
    if len(raw) > MAX_PATH_CHARS or _CONTROL.search(raw):
        raise InputError("transcript_path is not a valid path; give the path of a transcript file.")
    candidate = Path(raw).expanduser()
    if ".." in candidate.parts:
        raise InputError("transcript_path may not contain '..'; give the file's full path.")
    if not candidate.is_absolute():
        if not workspace_roots:
            raise InputError("transcript_path is relative; give the file's absolute path.")
        candidate = Path(workspace_roots[0]) / candidate
    return candidate


def open_transcript(
    raw: str,
    settings: Settings,
    workspace_roots: Sequence[Path] = (),
    what: str = "transcript_path",
) -> TranscriptFile:
    """Check a caller's transcript path and read the file once, through one descriptor.

    Beyond `transcript_candidate`: the real location (every symlink followed) must lie inside
    the allowed roots, and the opened file must be a regular file with one name (a hard link
    may lead anywhere), no larger than a transcript may be (`read_transcript`). What is
    queued is parsed from these bytes, so nothing swapped in later is ever read.
    """
    return read_transcript(
        transcript_candidate(raw, workspace_roots),
        allowed_roots(settings, workspace_roots),
        label=what,
        database_magic=database_magic(),
    )


def find_session_transcript(session_id: str, settings: Settings) -> Path:
    """Find a session's transcript by its id in the agents' folders (each agent's
    `session_globs`, e.g. Claude Code's `<claude_dir>/projects/*/<id>.jsonl`)."""
    check_identifier(session_id, "session_id")  # before it goes into a glob pattern
    patterns = [glob for agent in AGENTS for glob in agent.session_globs(settings, session_id)]
    roots = allowed_roots(settings)
    for folder, pattern in patterns:
        if not folder.is_dir():
            continue
        for match in sorted(folder.glob(pattern)):
            real = match.resolve()
            if real.is_file() and within(real, roots):
                return real
    raise InputError(
        f"no transcript for session {session_id} was found in the agents' transcript folders; "
        "pass transcript_path instead."
    )


def open_session_transcript(session_id: str, settings: Settings) -> TranscriptFile:
    """The transcript of a session id (`find_session_transcript`), read like `open_transcript`."""
    path = find_session_transcript(session_id, settings)
    return open_transcript(str(path), settings, what=f"the transcript of session {session_id}")
