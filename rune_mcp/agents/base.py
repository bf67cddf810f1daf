"""The descriptor of a coding agent: everything Rune knows about one agent, in one value.

Capture, the watcher, the server's path checks, the hooks and `rune install` never name an
agent; they walk the registry (`rune_mcp.agents.AGENTS`) and ask each `Agent` what they need:

- `looks_like(sample)` / `parse(text, name, source)`: recognise and read its transcripts;
- `places(settings)`: the folders `rune watch` follows, each with a matcher that says what a
  file in it is (`Match`); `lines` and `runs` say how a growing transcript is counted;
- `roots(settings)`: the folders MCP tools may read its transcripts from;
- `session_globs(settings, session_id)`: where the transcript of one session id lies;
- `hook`: how one of its hook events becomes a queued job (None: it has no hooks);
- `start_note`: how it takes Rune's note into the model's context when a session starts
  (None: it has no such event; `rune_mcp/note.py` writes the note);
- `installer`: how Rune's server and hooks are written into its config (None: not supported);
- `database`: a SQLite file it keeps every chat in (None: plain transcript files only).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import IO, Any

from rune_mcp.capture.base import read_jsonl
from rune_mcp.config import Settings
from rune_mcp.trajectory import Trajectory

log = logging.getLogger(__name__)

# --- recognising and reading transcripts ------------------------------------------------

_HEAD_CHARS = 1_000_000  # how much of a transcript detection reads, past it only a first line


class Sample:
    """The start of a transcript as detection sees it: the text (BOM and leading blanks
    removed), its first JSON lines, and the whole text as one JSON value when it may be one."""

    def __init__(self, text: str) -> None:
        self.text = text.lstrip("\ufeff \t\r\n")

    @cached_property
    def records(self) -> list[dict[str, Any]]:
        """The first parsable JSON lines, enough to recognise a JSONL format ([] if none).
        The first line is read whole however long it is (a pasted log can make it tens of
        MB), so a format is told from at least one complete record."""
        text = self.text
        if not text.startswith("{"):
            return []
        end = min(len(text), _HEAD_CHARS)
        if end < len(text):  # the cut may fall inside a line: end at the last whole one
            end = text.rfind("\n", 0, end)
            if end < 0:
                end = text.find("\n", _HEAD_CHARS)
            end = len(text) if end < 0 else end
        cut = 0
        for _ in range(200):
            cut = text.find("\n", cut, end) + 1
            if cut <= 0:
                cut = end
                break
        sample: list[dict[str, Any]] = []
        for rec in read_jsonl(text[:cut], Counter()):
            sample.append(rec)
            if len(sample) >= 50:
                break
        return sample

    @cached_property
    def document(self) -> Any:
        """The text as one JSON value, when it is a JSON object mentioning `"steps"` (the
        only single-document format); None otherwise."""
        if not (self.text.startswith("{") and '"steps"' in self.text[:2_000_000]):
            return None
        try:
            return json.loads(self.text)
        except (ValueError, RecursionError):
            return None


Parse = Callable[[str, str, Path | None], Trajectory]


@dataclass(frozen=True)
class Database:
    """A SQLite file in which an agent keeps all its chats (Cursor's `state.vscdb`).

    `fmt` names it in the watcher's state (sessions are keyed `<fmt>:<conversation id>`);
    `magic` is how `parse_path` recognises the file; `parse(path, conversation)` reads one
    conversation (None: the latest); `conversations(path)` lists `(id, messages, updated)`
    for the watcher, `updated` in seconds since the epoch or None.
    """

    fmt: str
    magic: bytes
    locate: Callable[[Settings], Path]
    parse: Callable[[Path, str | None], Trajectory]
    conversations: Callable[[Path], list[tuple[str, int, float | None]]]


# --- where transcripts live ---------------------------------------------------------------


@dataclass(frozen=True)
class Match:
    """What a watched file is: which agent wrote it, in which format, and for which project.

    `group` identifies the project for "a new session started in the same project" (None when
    only the transcript's lines name it); `kind` is `main`, `subagent`, `compaction` or
    `database`.
    """

    agent: str
    fmt: str
    kind: str
    group: str | None


Matcher = Callable[[Path, Path], Match | None]


@dataclass(frozen=True)
class Place:
    """One folder where an agent writes transcripts. `depth` None: the whole tree; 0: the
    folder itself; 1: the folder and its direct sub-folders (Aider histories sit in project
    roots). `label` is what `rune status` calls it."""

    label: str
    root: Path
    depth: int | None
    match: Matcher


LineFacts = Callable[[dict[str, Any]], tuple[bool, str | None]]


def conversation_line(record: dict[str, Any]) -> tuple[bool, str | None]:
    """The default `Agent.lines`: a line with a user or assistant `role` is conversation;
    no line names the project."""
    return record.get("role") in ("user", "assistant"), None


@dataclass(frozen=True)
class Runs:
    """A history file that appends one session after another, each opened by a line that
    starts with `header`; `started(line)` is that session's start time (None if unreadable)."""

    header: bytes
    started: Callable[[bytes], float | None]


# --- hooks ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HookJob:
    """What one hook event queues: a transcript (None: find it by `session_id`), how long to
    wait before learning it, and the format to parse it with."""

    path: Path | None
    session_id: str | None
    delay: float
    fmt: str = "auto"
    project: str | None = None  # the folder the event names, checked against exclusions


class SkipEventError(Exception):
    """The event carries nothing to queue; logged at info, not an error."""


MAX_HOOK_INPUT = 1_000_000


def read_event(stream: IO[str]) -> dict[str, Any]:
    """The JSON object a hook gets on stdin; anything else (too large, not JSON, not an
    object, not UTF-8) is logged and read as an empty dict, never raised."""
    try:
        raw = stream.read(MAX_HOOK_INPUT + 1)
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("hook input unreadable (%s); ignored", exc)
        return {}
    if len(raw) > MAX_HOOK_INPUT:
        log.warning("hook input larger than %d bytes ignored", MAX_HOOK_INPUT)
        return {}
    try:
        data = json.loads(raw) if raw.strip() else {}
    except (ValueError, RecursionError):
        log.warning("hook input is not JSON; ignored")
        return {}
    return data if isinstance(data, dict) else {}


HookMap = Callable[[dict[str, Any], Settings], HookJob]


@dataclass(frozen=True)
class StartNote:
    """How an agent's session-start hook hands text to the model: which `hook_event_name`s
    open a session, the project folder an event names (None: unknown), and what the hook
    prints for `note` (`render(note, event)`)."""

    events: frozenset[str]
    project: Callable[[dict[str, Any]], str | None]
    render: Callable[[str, dict[str, Any]], str]


def event_folder(key: str) -> Callable[[dict[str, Any]], str | None]:
    """Reads an absolute folder from `event[key]`: a string, or the first of a list of them."""
    def read(event: dict[str, Any]) -> str | None:
        value = event.get(key)
        value = value[0] if isinstance(value, list) and value else value
        ok = isinstance(value, str) and value.strip() and Path(value).is_absolute()
        return value if ok and isinstance(value, str) else None

    return read


def additional_context(note: str, event: dict[str, Any]) -> str:
    """Claude Code's reply that adds `note` to the model's context: a JSON object whose
    `hookSpecificOutput.additionalContext` it reads from the hook's stdout on exit 0."""
    name = event.get("hook_event_name")
    return json.dumps({"hookSpecificOutput": {
        "hookEventName": name if isinstance(name, str) else "SessionStart",
        "additionalContext": note,
    }}, ensure_ascii=False)


# Claude Code's `SessionStart` (its `source` is startup, resume, clear or compact): the event
# names the session's folder as `cwd`, and the reply is `additional_context`.
CLAUDE_START = StartNote(frozenset({"SessionStart"}), event_folder("cwd"), additional_context)


# --- install ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class InstallTarget:
    """Where one `rune install` / `rune uninstall` acts: a scope the agent has (checked by
    `rune_mcp.server.install`), the project folder (resolved), and whether to register through
    the agent's own CLI (None: when it is on PATH; agents without one ignore it)."""

    settings: Settings
    scope: str
    project: Path
    use_cli: bool | None = None


# Install into, or remove from, one scope; returns what was done, one line each.
InstallStep = Callable[[InstallTarget], list[str]]


def _no_notice(scope: str) -> str | None:
    return None


@dataclass(frozen=True)
class Installer:
    """How `rune install` / `rune uninstall` reach one agent.

    `scopes` are the config levels it has, the default first; `cli_help`, when set, offers
    `--no-cli` (edit the files even when the agent's own CLI could register the server);
    `notice(scope)` is a line printed after installing (None: nothing to add).
    """

    scopes: tuple[str, ...]
    install: InstallStep
    uninstall: InstallStep
    cli_help: str | None = None
    notice: Callable[[str], str | None] = _no_notice


# --- the descriptor --------------------------------------------------------------------------


def _nowhere(settings: Settings) -> list[Any]:
    return []


def _no_sessions(settings: Settings, session_id: str) -> list[tuple[Path, str]]:
    return []


@dataclass(frozen=True)
class Agent:
    """One coding agent (see the module docstring for what each field is for)."""

    name: str  # the format name too: `rune parse --format claude-code`
    title: str  # for people: "Claude Code"
    looks_like: Callable[[Sample], bool]
    parse: Parse
    places: Callable[[Settings], list[Place]] = _nowhere
    roots: Callable[[Settings], list[Path]] = _nowhere
    session_globs: Callable[[Settings, str], list[tuple[Path, str]]] = _no_sessions
    lines: LineFacts = conversation_line
    runs: Runs | None = None
    hook: HookMap | None = None
    start_note: StartNote | None = None
    installer: Installer | None = None
    database: Database | None = None
