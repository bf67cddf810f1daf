"""Where transcripts live: the folders `rune watch` follows and what each file in them is.

A `Source` is one folder (with how deep to look); its matcher says which agent wrote a file, in
which format, and which project it belongs to (`Match`). Which folders those are, and the
matchers, come from the agents (`rune_mcp/agents/`, each agent's `places`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rune_mcp.agents import AGENTS
from rune_mcp.agents.base import Match, Matcher
from rune_mcp.config import Settings

__all__ = ["Match", "Matcher", "Source", "sources_for", "wanted", "watched_roots"]


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


def sources_for(settings: Settings) -> list[Source]:
    """The folders `rune watch` follows: every agent's `places`, from the settings."""
    return [
        Source(place.label, place.root, place.depth, place.match)
        for agent in AGENTS for place in agent.places(settings)
    ]


def watched_roots(settings: Settings) -> list[Path]:
    """The watched folders, resolved: the only places the watcher reads a session from (a
    file there that is a link to somewhere else is not read)."""
    roots: list[Path] = []
    for source in sources_for(settings):
        root = source.root.expanduser().resolve()
        if root not in roots:
            roots.append(root)
    return roots


def wanted(settings: Settings, match: Match) -> bool:
    """Subagent and compaction transcripts only when the settings ask for them."""
    return match.kind in ("main", "database") or settings.watch_subagents
