"""The note a coding agent reads when a session starts: what Rune remembers of this project.

`rune hook <agent>` answers the agent's session-start event (Claude Code's `SessionStart`,
whatever its `source`: startup, resume, clear or compact) with a few words added to the
model's context, for example:

    Rune remembers 4 sessions of this project, latest "add retry to the upload client";
    "fix the failing login test". The MCP tool run_with_memory answers from them.

- **Which tasks.** The latest ones, newest first. When a session starts nothing is known of
  what it will be about (the event carries no prompt), so there is nothing to rank by
  similarity; the sessions just before are the likeliest to be continued. Ranking by
  similarity is what `recall_adapter` and `run_with_memory` do once there is a question.
- **Which sessions.** Adapters whose recorded project is the session's folder, counted once
  per session id (a session that grew and was learned again is one session).
- **Size.** At most `MAX_TOKENS` (80) by `count_tokens`, a deliberately pessimistic counter
  (see there) that tests check against the base model's tokenizer; tasks are shortened, then
  dropped, until the note fits (a typical note is 40 to 50 real tokens).
- **Nothing at all** when the project has no memory or is excluded from capture.
- **Speed.** A hook runs inside the agent's start-up, so this module reads the adapters'
  `manifest.json` files directly: no index, no embedder, no torch, transformers or chromadb
  (importing `rune_mcp.library` would load the embedder's modules).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from dataclasses import dataclass
from typing import IO, Any

from rune_mcp.config import Settings

log = logging.getLogger(__name__)

MAX_TOKENS = 80
MAX_TASKS = 3
# The library's layout (rune_mcp/library/, docs/library.md), restated because importing that
# package loads the embedder's modules; a test keeps them equal. The fields read
# (`source.project`, `source.session_id`, `task`, `created_at`) are in every format version,
# and each is read defensively: a manifest without them only goes unmentioned.
ADAPTERS_DIR = "adapters"
MANIFEST = "manifest.json"
_ID = re.compile(r"^[0-9a-f]{64}$")

_PIECE = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])| (?=[A-Za-z])|.", re.DOTALL)
_CLUSTER = re.compile(r"[^aeiouy]{4}", re.IGNORECASE)
_VOWEL = re.compile(r"[aeiouy]", re.IGNORECASE)


def count_tokens(text: str) -> int:
    """A pessimistic token count for text made of words and code, so that a note it passes
    is within budget for a real tokenizer.

    Letters are split into words at case changes (`getUserById` -> get, User, By, Id). A word
    that reads like one (at most 15 letters, a vowel, never four consonants in a row, not all
    capitals) counts a token per three letters, rounded up; any other run of letters (`MCP`,
    `xkcd`, a hash) a token per letter. A single space before a word is free (tokenizers glue
    it to the word); every other space, digit and punctuation mark counts one; any other
    character counts its UTF-8 bytes (a byte-level tokenizer never needs more).

    Checked against the base model's tokenizer (SmolLM2) on the prompts and replies of real
    sessions: never under, 1.6 times over on average (tests/test_note.py). What it can
    under-count is made-up text that reads like words without being any ("xohevebewu").
    """
    total = 0
    for piece in _PIECE.findall(text):
        if piece == " ":
            continue
        if piece.isascii() and piece.isalpha():
            wordy = (len(piece) <= 15 and not piece.isupper() and _VOWEL.search(piece)
                     and not _CLUSTER.search(piece))
            total += math.ceil(len(piece) / 3) if wordy else len(piece)
        else:
            total += len(piece.encode("utf-8"))
    return total


# --- what the library remembers of a project ----------------------------------------------


@dataclass(frozen=True)
class Remembered:
    """The adapters of one project, as the note needs them."""

    sessions: int
    tasks: list[str]  # newest first, each once


def _manifests(settings: Settings) -> list[dict[str, Any]]:
    root = settings.home / ADAPTERS_DIR
    try:
        names = [n for n in os.listdir(root) if _ID.match(n)]
    except OSError:
        return []
    found = []
    for name in names:
        try:
            data = json.loads((root / name / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # being written, removed, or damaged: `rune adapters verify` reports it
        if isinstance(data, dict):
            found.append(data)
    return found


def _same_folder(recorded: Any, project: str) -> bool:
    return isinstance(recorded, str) and bool(recorded) and os.path.normpath(recorded) == project


def remembered(settings: Settings, project: str) -> Remembered:
    """How many sessions of `project` the library holds and their tasks, newest first."""
    folder = os.path.normpath(project)
    mine = []
    for manifest in _manifests(settings):
        source = manifest.get("source")
        if isinstance(source, dict) and _same_folder(source.get("project"), folder):
            mine.append((str(manifest.get("created_at") or ""), manifest, source))
    mine.sort(key=lambda item: item[0], reverse=True)
    sessions = {str(src.get("session_id") or m.get("adapter_id")) for _, m, src in mine}
    tasks: list[str] = []
    for _, manifest, _ in mine:
        task = _one_line(manifest.get("task"))
        if task and task not in tasks:
            tasks.append(task)
    return Remembered(len(sessions), tasks)


def _one_line(value: Any) -> str:
    """A task as one line of plain words: control characters and quotes would let a
    remembered prompt pose as Rune's own words."""
    if not isinstance(value, str):
        return ""
    text = "".join(c if c.isprintable() else " " for c in value).replace('"', "'")
    return " ".join(text.split())


# --- the note --------------------------------------------------------------------------------


def _clip(task: str, words: int) -> str:
    """The first `words` words, and at most 7 characters a word (a path or a pasted token
    is one long "word")."""
    parts = task.split()
    short = " ".join(parts[:words])
    if len(short) > 7 * words:
        short = short[: 7 * words].rstrip()
    return short if short == task else short + "…"


def _compose(count: int, tasks: list[str]) -> str:
    sessions = f"{count} session{'s' if count != 1 else ''}"
    latest = "".join(f'; "{t}"' if i else f', latest "{t}"' for i, t in enumerate(tasks))
    them = "it" if count == 1 else "them"
    return (f"Rune remembers {sessions} of this project{latest}. The MCP tool run_with_memory "
            f"answers from {them}.")


# (how many tasks, how many words of each), in the order tried: three tasks told well enough
# to recognise before more of fewer.
_SHAPES = ((3, 10), (3, 7), (2, 10), (2, 7), (1, 14), (1, 10), (1, 6), (0, 0))


def compose(count: int, tasks: list[str], budget: int = MAX_TOKENS) -> str:
    """The note for `count` sessions and their tasks (newest first), within `budget` tokens:
    the first of `_SHAPES` that fits (the bare count always does: a test keeps it so)."""
    note = _compose(count, [])
    for many, words in _SHAPES:
        if many > len(tasks[:MAX_TASKS]) and many:
            continue
        note = _compose(count, [_clip(t, words) for t in tasks[:many]])
        if count_tokens(note) <= budget:
            return note
    return note


def build_note(settings: Settings, project: str | None) -> str:
    """The note for a session starting in `project`; "" when Rune remembers nothing of it,
    or the project is excluded from capture."""
    if not project:
        return ""
    from rune_mcp.capture.control import exclusion

    if exclusion(settings, project) is not None:
        return ""
    found = remembered(settings, project)
    return compose(found.sessions, found.tasks) if found.sessions else ""


# --- answering the agent's session-start event ---------------------------------------------


def is_start(agent: str, event: dict[str, Any]) -> bool:
    """Whether `event` opens a session of `agent` (one that takes a note)."""
    from rune_mcp import agents

    note = agents.get(agent).start_note
    return note is not None and event.get("hook_event_name") in note.events


def answer_start(agent: str, event: dict[str, Any], settings: Settings, out: IO[str]) -> int:
    """Write the note for a session-start event the way `agent` reads it (nothing when there
    is no memory). Always 0: a note is never worth failing the agent's start."""
    from rune_mcp import agents

    try:
        note = agents.get(agent).start_note
        if note is None:
            return 0
        text = build_note(settings, note.project(event))
        if text:
            out.write(note.render(text, event))
            out.flush()
        log.info("hook %s: session-start note of %d tokens", agent, count_tokens(text))
    except Exception:  # a note is never worth failing the agent's start; see the log
        log.exception("hook %s: no session-start note", agent)
    return 0

