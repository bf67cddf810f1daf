"""Where transcripts live: the folders `rune watch` follows and what each file in them is.

A `Source` is one folder (with how deep to look); its matcher says which agent wrote a file, in
which format, and which project it belongs to (`Match`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from rune_mcp.config import Settings

AIDER_HISTORY = ".aider.chat.history.md"


@dataclass(frozen=True)
class Match:
    """What a watched file is: which agent wrote it, in which format, and for which project.

    `group` identifies the project for "a new session started in the same project"; `kind` is
    `main`, `subagent` or `compaction`.
    """

    agent: str
    fmt: str
    kind: str
    group: str | None


Matcher = Callable[[Path, Path], Match | None]


@dataclass(frozen=True)
class Source:
    """One folder to watch. `depth` None watches the whole tree, 0 the folder itself, 1 the
    folder and its direct sub-folders (Aider histories sit in project roots)."""

    agent: str
    root: Path
    depth: int | None
    match: Matcher

    def matches(self, path: Path) -> Match | None:
        try:
            rel = path.relative_to(self.root)
        except ValueError:
            return None
        if self.depth is not None and len(rel.parts) - 1 > self.depth:
            return None
        return self.match(self.root, path)

    def folders(self) -> Iterator[tuple[Path, bool]]:
        """(folder, recursive) pairs to hand to the observer."""
        if not self.root.is_dir():
            return
        yield self.root, self.depth is None
        if self.depth == 1:
            for child in _subfolders(self.root):
                yield child, False

    def files(self) -> Iterator[tuple[Path, Match]]:
        """Every matching file now on disk (for the reconciliation scan)."""
        if not self.root.is_dir():
            return
        if self.depth is None:
            for folder, dirs, names in os.walk(self.root, onerror=lambda _e: None):
                dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(folder, d))]
                yield from self._matching(Path(folder), names)
            return
        yield from self._matching(self.root, _names(self.root))
        if self.depth == 1:
            for child in _subfolders(self.root):
                yield from self._matching(child, _names(child))

    def _matching(self, folder: Path, names: list[str]) -> Iterator[tuple[Path, Match]]:
        for name in names:
            path = folder / name
            found = self.matches(path)
            if found is not None:
                yield path, found


def _names(folder: Path) -> list[str]:
    try:
        return [e.name for e in os.scandir(folder) if e.is_file(follow_symlinks=False)]
    except OSError:
        return []


def _subfolders(folder: Path) -> list[Path]:
    try:
        return [
            Path(e.path)
            for e in os.scandir(folder)
            if e.is_dir(follow_symlinks=False) and not e.name.startswith(".")
        ]
    except OSError:
        return []


def _match_claude(root: Path, path: Path) -> Match | None:
    # projects/<escaped cwd>/<session>.jsonl; subagents in <session>/subagents/agent-*.jsonl
    rel = path.relative_to(root).parts
    if path.suffix != ".jsonl":
        return None
    group = f"claude-code:{rel[0]}"
    if len(rel) == 2:
        return Match("claude-code", "claude-code", "main", group)
    if len(rel) >= 4 and rel[-2] == "subagents":
        kind = "compaction" if path.name.startswith("agent-acompact") else "subagent"
        return Match("claude-code", "claude-code", kind, group)
    return None


def _match_codex(root: Path, path: Path) -> Match | None:
    # sessions/YYYY/MM/DD/rollout-<timestamp>-<uuid>.jsonl; the project comes from session_meta
    if path.name.startswith("rollout-") and path.suffix == ".jsonl":
        return Match("codex", "codex", "main", None)
    return None


def _match_cursor(root: Path, path: Path) -> Match | None:
    # projects/<slug>/agent-transcripts/<uuid>/<uuid>.jsonl (older builds: <uuid>.jsonl)
    rel = path.relative_to(root).parts
    if path.suffix != ".jsonl" or len(rel) < 3 or rel[1] != "agent-transcripts":
        return None
    kind = "subagent" if "subagents" in rel else "main"
    return Match("cursor", "cursor", kind, f"cursor:{rel[0]}")


def _match_aider(root: Path, path: Path) -> Match | None:
    if path.name == AIDER_HISTORY:
        return Match("aider", "aider", "main", f"aider:{path.parent}")
    return None


def cursor_state_db(settings: Settings) -> Path:
    """Cursor's chat database: the setting, or where Cursor keeps it on this platform."""
    if settings.cursor_state_db is not None:
        return settings.cursor_state_db.expanduser()
    tail = Path("Cursor") / "User" / "globalStorage" / "state.vscdb"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / tail
    if sys.platform == "win32":
        return Path(os.environ.get("APPDATA") or Path.home() / "AppData" / "Roaming") / tail
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / tail


def _database_matcher(db: Path) -> Matcher:
    names = {db.name, db.name + "-wal"}

    def match(root: Path, path: Path) -> Match | None:
        return Match("cursor", "cursor-db", "database", None) if path.name in names else None

    return match


def sources_for(settings: Settings) -> list[Source]:
    """The folders `rune watch` follows, from the settings."""
    db = cursor_state_db(settings)
    sources = [
        Source("claude-code", settings.claude_dir.expanduser() / "projects", None, _match_claude),
        Source("codex", settings.codex_dir.expanduser() / "sessions", None, _match_codex),
        Source("cursor", settings.cursor_dir.expanduser() / "projects", None, _match_cursor),
        Source("cursor-db", db.parent, 0, _database_matcher(db)),
    ]
    for root in settings.aider_roots:
        sources.append(Source("aider", root.expanduser(), 1, _match_aider))
    return sources


def wanted(settings: Settings, match: Match) -> bool:
    """Subagent and compaction transcripts only when the settings ask for them."""
    return match.kind in ("main", "database") or settings.watch_subagents
