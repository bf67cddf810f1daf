"""Checks on everything a tool caller hands to Rune, before it touches a file or the library.

An MCP client is an agent acting on text it read elsewhere, so a tool argument may be wrong or
hostile: a path that climbs out with `..`, a symlink planted inside an allowed folder that
points at `~/.ssh`, a NUL byte that truncates a path in C code, a megabyte-long id. Every
refusal is an `InputError` whose one sentence says what to change, and never echoes more of a
path than the caller already sent.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from rune_mcp.agents import AGENTS
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


def _within(path: Path, roots: Sequence[Path]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in roots)


def resolve_transcript(
    raw: str, settings: Settings, workspace_roots: Sequence[Path] = ()
) -> Path:
    """Turn a caller's transcript path into a real file inside the allowed roots.

    Refuses NUL bytes, control characters, `..` components, relative paths with no workspace
    root to anchor them, and any path whose real location (after following every symlink) lies
    outside the allowed roots.
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
    roots = allowed_roots(settings, workspace_roots)
    try:
        # strict=False still follows every symlink that exists; checking the roots before
        # existence keeps the tool from telling which files exist outside them.
        real = candidate.resolve(strict=False)
    except (OSError, RuntimeError) as exc:  # a symlink loop
        raise InputError("transcript_path cannot be resolved; check the path.") from exc
    if not _within(real, roots):
        raise InputError(
            "transcript_path is outside the folders Rune may read (the agents' transcript "
            "folders, the workspace roots and allowed_roots); add its folder to allowed_roots."
        )
    if not real.is_file():
        raise InputError(f"no transcript file at {raw[:200]}; check the path.")
    return real


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
            if real.is_file() and _within(real, roots):
                return real
    raise InputError(
        f"no transcript for session {session_id} was found in the agents' transcript folders; "
        "pass transcript_path instead."
    )
