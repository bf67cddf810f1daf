"""Automatic capture: watch the agents' transcript folders and queue every finished session once.

Hooks miss sessions (Ctrl+C fires no Claude Code `SessionEnd`), so `rune watch` follows the
folders where Claude Code, Codex, Cursor and Aider write their transcripts:

- `FileWatcher` turns file-system events (watchdog: inotify, or polling when inotify runs out
  of watches) into debounced polls of the `Tailer`, and runs a periodic reconciliation scan
  because the kernel drops events silently when its queue overflows.
- `SessionTracker` receives every new complete line exactly once (in the same transaction as
  the offset) and keeps one row per session: its project, how much content it has, when it
  last grew. A session is finished when it has been idle for `idle_seconds`, or when the agent
  started a new session in the same project; it is then parsed, filtered (too small, opted-out
  project) and queued once in the job queue. A session that grows again is queued again only
  when it gained at least `min_session_steps` new content lines.

The watcher sleeps in a blocking queue wait between events; its only timer is the next idle
deadline or the next reconciliation scan.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import json
import logging
import os
import queue
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from rune_mcp.config import Settings
from rune_mcp.errors import RuneError, UsageError
from rune_mcp.trajectory import Trajectory
from rune_mcp.watch.tail import Chunk, Tailer, WatchDB

log = logging.getLogger(__name__)

STATE_DB = Path("watch") / "state.sqlite3"
LOCK_FILE = Path("watch") / "watcher.lock"
DEBOUNCE_S = 0.25  # events for one file within this window become one read
AIDER_HISTORY = ".aider.chat.history.md"
AIDER_HEADER = b"# aider chat started at"
IGNORE_FILE = ".runeignore"
_STOP = "\0stop"
_RESCAN = "\0rescan"
_WATCHDOG_LOGGERS = ("watchdog.observers.inotify_c", "watchdog.observers.inotify")

_SESSIONS = """
CREATE TABLE IF NOT EXISTS sessions (
    key TEXT PRIMARY KEY,
    file_id INTEGER NOT NULL,
    path TEXT NOT NULL,
    agent TEXT NOT NULL,
    fmt TEXT NOT NULL,
    kind TEXT NOT NULL,
    grp TEXT,
    project TEXT,
    start INTEGER NOT NULL,
    end INTEGER,
    lines INTEGER NOT NULL DEFAULT 0,
    content INTEGER NOT NULL DEFAULT 0,
    fresh INTEGER NOT NULL DEFAULT 0,
    baseline INTEGER NOT NULL DEFAULT 0,
    first_seen REAL NOT NULL,
    last_growth REAL NOT NULL,
    state TEXT NOT NULL,
    reason TEXT,
    finished_at REAL,
    trajectory_id TEXT,
    job_id TEXT,
    steps INTEGER
);
CREATE INDEX IF NOT EXISTS sessions_state ON sessions (state, last_growth);
CREATE INDEX IF NOT EXISTS sessions_file ON sessions (file_id);
CREATE INDEX IF NOT EXISTS sessions_grp ON sessions (grp, state);
"""


# --- where transcripts live ------------------------------------------------------------


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


def _holds(path: str, dev: int, ino: int) -> bool:
    """Whether `path` is still the file with this identity."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


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


# --- sessions --------------------------------------------------------------------------


class Enqueue(Protocol):
    """Queue one finished session; returns the job id."""

    def __call__(
        self, *, path: Path | None, text: str | None, fmt: str, session_id: str | None
    ) -> str: ...


def job_queue_enqueue(settings: Settings) -> Enqueue:
    """The real `Enqueue`: a job in the library's queue, marked as coming from the watcher."""
    from rune_mcp.distill.queue import JobQueue

    jobs = JobQueue(settings)

    def enqueue(
        *, path: Path | None, text: str | None, fmt: str, session_id: str | None
    ) -> str:
        return jobs.enqueue(
            path=path, text=text, fmt=fmt, source="watcher", session_id=session_id
        ).id

    return enqueue


@dataclass
class _LineInfo:
    """What the tracker learns from a batch of JSONL lines."""

    lines: int = 0
    content: int = 0
    project: str | None = None


def _jsonl_info(agent: str, lines: list[bytes]) -> _LineInfo:
    """Count lines that carry conversation (not metadata) and find the project folder.

    `[b'{"type":"user","cwd":"/p","message":{}}', b'{"type":"summary"}']` -> 2 lines, 1 content.
    """
    info = _LineInfo(lines=len(lines))
    for raw in lines:
        try:
            obj = json.loads(raw)
        except (ValueError, RecursionError):
            continue
        if not isinstance(obj, dict):
            continue
        kind = obj.get("type")
        if agent == "claude-code":
            info.content += kind in ("user", "assistant") and not obj.get("isMeta")
            if info.project is None and isinstance(obj.get("cwd"), str):
                info.project = obj["cwd"]
        elif agent == "codex":
            payload = obj.get("payload")
            info.content += kind == "response_item"
            if kind == "session_meta" and isinstance(payload, dict):
                cwd = payload.get("cwd")
                info.project = cwd if isinstance(cwd, str) else info.project
        else:
            info.content += obj.get("role") in ("user", "assistant")
    return info


def _mtime(*paths: Path) -> float | None:
    """The latest modification time among the files that exist."""
    times = []
    for path in paths:
        with contextlib.suppress(OSError):
            times.append(path.stat().st_mtime)
    return max(times) if times else None


def _aider_started(line: bytes) -> float | None:
    """`# aider chat started at 2024-05-01 10:00:00` -> its local timestamp."""
    text = line[len(AIDER_HEADER):].decode("utf-8", "replace").strip()
    try:
        return datetime.strptime(text[:19], "%Y-%m-%d %H:%M:%S").timestamp()
    except ValueError:
        return None


class SessionTracker:
    """Turns new lines into session rows and decides when a session is finished.

    `on_chunk` runs inside the tailer's transaction (so counts and offsets commit together);
    `settle` runs outside it, parses finished sessions and queues them.
    """

    def __init__(self, settings: Settings, db: WatchDB, enqueue: Enqueue, cutoff: float) -> None:
        self.settings = settings
        self.db = db
        self.enqueue = enqueue
        self.cutoff = cutoff  # files last written before this are history, not new sessions
        self.queued_now = 0
        self._superseded: set[str] = set()
        self._dirty_dbs: dict[Path, float] = {}
        self._db_read_at: dict[Path, float] = {}
        # Cursor rewrites its database for UI state too: read it at most this often.
        self._db_interval = min(settings.idle_seconds, 30.0)

    # --- inside the tail transaction ----------------------------------------------------

    def on_chunk(self, chunk: Chunk, match: Match, tx: sqlite3.Connection) -> None:
        if match.agent == "aider":
            self._aider_chunk(chunk, match, tx)
        else:
            self._jsonl_chunk(chunk, match, tx)

    def _jsonl_chunk(self, chunk: Chunk, match: Match, tx: sqlite3.Connection) -> None:
        key = str(chunk.file_id)
        row = tx.execute("SELECT * FROM sessions WHERE key = ?", (key,)).fetchone()
        info = _jsonl_info(match.agent, chunk.lines)
        grown = min(chunk.mtime, time.time())
        group = match.group
        if match.agent == "codex" and info.project:
            group = f"codex:{info.project}"
        if row is None:
            historic = chunk.mtime < self.cutoff
            self._insert(
                tx, key=key, chunk=chunk, match=match, group=group, start=0, grown=grown,
                historic=historic,
            )
            row = tx.execute("SELECT * FROM sessions WHERE key = ?", (key,)).fetchone()
            if historic:
                info_fresh = 0
            else:
                info_fresh = info.content
                if group:
                    self._superseded.add(key)
        else:
            info_fresh = info.content
            if chunk.reset:
                tx.execute("UPDATE sessions SET lines = 0, content = 0 WHERE key = ?", (key,))
            if group and row["grp"] is None and row["state"] == "active":
                self._superseded.add(key)
        active = info_fresh > 0 or row["state"] == "active"
        tx.execute(
            "UPDATE sessions SET path = ?, grp = COALESCE(grp, ?), "
            "project = COALESCE(project, ?), lines = lines + ?, content = content + ?, "
            "fresh = fresh + ?, last_growth = CASE WHEN ? > 0 THEN ? ELSE last_growth END, "
            "state = CASE WHEN ? THEN 'active' ELSE state END WHERE key = ?",
            (
                str(chunk.path), group, info.project, info.lines, info.content, info_fresh,
                info_fresh, grown, active, key,
            ),
        )

    def _insert(
        self,
        tx: sqlite3.Connection,
        *,
        key: str,
        chunk: Chunk,
        match: Match,
        group: str | None,
        start: int,
        grown: float,
        historic: bool,
        project: str | None = None,
    ) -> None:
        tx.execute(
            "INSERT OR REPLACE INTO sessions (key, file_id, path, agent, fmt, kind, grp, "
            "project, start, first_seen, last_growth, state, baseline, reason) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                key, chunk.file_id, str(chunk.path), match.agent, match.fmt, match.kind, group,
                project, start, time.time(), grown, "historic" if historic else "active",
                int(historic), "older than the watcher's backfill window" if historic else None,
            ),
        )

    def _aider_chunk(self, chunk: Chunk, match: Match, tx: sqlite3.Connection) -> None:
        """An Aider history holds many sessions, each opened by a `# aider chat started at`
        line; a new header ends the previous session (a new session in the same project)."""
        if chunk.reset:
            tx.execute(
                "DELETE FROM sessions WHERE file_id = ? AND state = 'active'", (chunk.file_id,)
            )
        project = str(chunk.path.parent)
        grown = min(chunk.mtime, time.time())
        for line, offset in zip(chunk.lines, chunk.offsets, strict=True):
            if line.startswith(AIDER_HEADER):
                started = _aider_started(line) or grown
                self._aider_close(tx, chunk, offset, started)
                historic = chunk.new_file and started < self.cutoff
                key = f"{chunk.file_id}@{offset}"
                self._insert(
                    tx, key=key, chunk=chunk, match=match, group=match.group, start=offset,
                    grown=grown, historic=historic, project=project,
                )
            elif line.strip():
                self._aider_line(
                    tx, chunk=chunk, match=match, offset=offset, grown=grown, project=project
                )
            else:
                tx.execute(
                    "UPDATE sessions SET lines = lines + 1 WHERE file_id = ? AND end IS NULL",
                    (chunk.file_id,),
                )
        if chunk.new_file and grown < self.cutoff:
            # The last session of an old history is history too.
            tx.execute(
                "UPDATE sessions SET state = 'historic', baseline = 1, fresh = 0 "
                "WHERE file_id = ? AND end IS NULL",
                (chunk.file_id,),
            )

    def _aider_close(
        self, tx: sqlite3.Connection, chunk: Chunk, offset: int, ended: float
    ) -> None:
        rows = tx.execute(
            "SELECT key, state FROM sessions WHERE file_id = ? AND end IS NULL", (chunk.file_id,)
        ).fetchall()
        for row in rows:
            historic = chunk.new_file and ended < self.cutoff
            state = "historic" if historic else row["state"]
            tx.execute(
                "UPDATE sessions SET end = ?, state = ?, baseline = MAX(baseline, ?) "
                "WHERE key = ?",
                (offset, state, int(historic), row["key"]),
            )
            if state == "active":
                self._superseded.add(row["key"])

    def _aider_line(
        self,
        tx: sqlite3.Connection,
        *,
        chunk: Chunk,
        match: Match,
        offset: int,
        grown: float,
        project: str,
    ) -> None:
        row = tx.execute(
            "SELECT key FROM sessions WHERE file_id = ? AND end IS NULL", (chunk.file_id,)
        ).fetchone()
        if row is None:  # text before any header: a session that starts here
            key = f"{chunk.file_id}@{offset}"
            historic = chunk.new_file and grown < self.cutoff
            self._insert(
                tx, key=key, chunk=chunk, match=match, group=match.group, start=offset,
                grown=grown, historic=historic, project=project,
            )
            row = tx.execute("SELECT key FROM sessions WHERE key = ?", (key,)).fetchone()
        tx.execute(
            "UPDATE sessions SET lines = lines + 1, content = content + 1, "
            "fresh = fresh + CASE WHEN baseline = 1 AND state = 'historic' AND ? THEN 0 "
            "ELSE 1 END, last_growth = ?, path = ?, "
            "state = CASE WHEN state = 'historic' AND ? THEN 'historic' ELSE 'active' END "
            "WHERE key = ?",
            (chunk.new_file, grown, str(chunk.path), chunk.new_file, row["key"]),
        )

    def on_gone(self, file_id: int) -> None:
        """The file disappeared: its unfinished sessions cannot be read any more."""
        with self.db.transaction() as tx:
            tx.execute(
                "UPDATE sessions SET state = 'skipped', reason = 'transcript deleted', "
                "finished_at = ? WHERE file_id = ? AND state = 'active'",
                (time.time(), file_id),
            )

    # --- Cursor's chat database ----------------------------------------------------------

    def on_touch(self, path: Path, match: Match) -> None:
        """Cursor's `state.vscdb` (or its WAL) changed: read its conversations soon."""
        db = path.with_name(path.name.removesuffix("-wal"))
        mtime = _mtime(db, db.with_name(db.name + "-wal"))
        if mtime is None:
            return
        seen = self.db.meta_get(f"db-mtime:{db}")
        if seen is None or float(seen) < mtime:
            self._dirty_dbs[db] = mtime

    def _db_deadline(self) -> float | None:
        times = [self._db_read_at.get(db, 0.0) + self._db_interval for db in self._dirty_dbs]
        return min(times) if times else None

    def _read_databases(self, now: float) -> None:
        for db, mtime in list(self._dirty_dbs.items()):
            if now - self._db_read_at.get(db, 0.0) < self._db_interval:
                continue
            del self._dirty_dbs[db]
            self._db_read_at[db] = now
            try:
                self._read_database(db)
            except (sqlite3.Error, OSError, ValueError) as exc:
                log.warning("cannot read Cursor's database %s (%s); will try again", db, exc)
                continue
            with self.db.transaction():
                self.db.meta_set(f"db-mtime:{db}", str(mtime))

    def _read_database(self, db: Path) -> None:
        """One session row per conversation (`composerData:<id>`); a conversation grows when
        it has more bubbles than last time."""
        conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=5.0)
        try:
            rows = conn.execute(
                "SELECT key, value FROM cursorDiskKV WHERE key LIKE 'composerData:%'"
            ).fetchall()
        finally:
            conn.close()
        now = time.time()
        with self.db.transaction() as tx:
            for key, value in rows:
                data = json.loads(value) if isinstance(value, str | bytes) else None
                if not isinstance(data, dict):
                    continue
                bubbles = data.get("fullConversationHeadersOnly") or data.get("conversation")
                count = len(bubbles) if isinstance(bubbles, list) else 0
                stamp = data.get("lastUpdatedAt") or data.get("createdAt")
                updated = float(stamp) / 1000 if isinstance(stamp, int | float) else now
                self._composer(tx, db, str(key).split(":", 1)[1], count, min(updated, now))

    def _composer(
        self, tx: sqlite3.Connection, db: Path, cid: str, count: int, updated: float
    ) -> None:
        key = f"cursor-db:{cid}"
        row = tx.execute("SELECT content FROM sessions WHERE key = ?", (key,)).fetchone()
        if row is None:
            historic = updated < self.cutoff
            tx.execute(
                "INSERT INTO sessions (key, file_id, path, agent, fmt, kind, start, lines, "
                "content, fresh, baseline, first_seen, last_growth, state) "
                "VALUES (?, 0, ?, 'cursor', 'cursor-db', 'main', 0, ?, ?, ?, ?, ?, ?, ?)",
                (
                    key, str(db), count, count, 0 if historic else count, int(historic),
                    time.time(), updated, "historic" if historic else "active",
                ),
            )
        elif count > row["content"]:
            tx.execute(
                "UPDATE sessions SET lines = ?, content = ?, fresh = fresh + ?, "
                "last_growth = ?, state = 'active' WHERE key = ?",
                (count, count, count - row["content"], updated, key),
            )

    # --- deciding and queueing ----------------------------------------------------------

    def next_deadline(self) -> float | None:
        row = self.db.conn.execute(
            "SELECT MIN(last_growth) AS t FROM sessions WHERE state = 'active'"
        ).fetchone()
        times = [t for t in (self._db_deadline(),) if t is not None]
        if row["t"] is not None:
            times.append(float(row["t"]) + self.settings.idle_seconds)
        return min(times) if times else None

    def settle(self, now: float) -> float | None:
        """Finish every session that is due; returns when the next one will be."""
        self._read_databases(now)
        for key in self._supersede_keys():
            self._finish(key, "a new session started in the same project")
        cutoff = now - self.settings.idle_seconds
        rows = self.db.conn.execute(
            "SELECT key FROM sessions WHERE state = 'active' AND last_growth <= ?", (cutoff,)
        ).fetchall()
        for row in rows:
            self._finish(row["key"], f"idle for {self.settings.idle_seconds:g} s")
        return self.next_deadline()

    def _supersede_keys(self) -> list[str]:
        """Sessions ended because a newer one appeared in their project, oldest first."""
        fresh, self._superseded = self._superseded, set()
        done: list[str] = []
        for key in fresh:
            row = self._row(key)
            if row is None:
                continue
            if row["agent"] == "aider":
                if row["end"] is not None and row["state"] == "active":
                    done.append(key)
                continue
            if row["grp"] is None or row["kind"] != "main":
                continue
            # Sessions of the project that stopped writing before this one did: on a first
            # scan that finds several, only the most recent stays open.
            older = self.db.conn.execute(
                "SELECT key FROM sessions WHERE grp = ? AND state = 'active' AND key != ? "
                "AND kind = 'main' AND last_growth <= ? ORDER BY last_growth",
                (row["grp"], key, row["last_growth"]),
            ).fetchall()
            done.extend(r["key"] for r in older)
        return done

    def _row(self, key: str) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self.db.conn.execute(
            "SELECT * FROM sessions WHERE key = ?", (key,)
        ).fetchone()
        return row

    def _set(self, key: str, state: str, reason: str, **values: Any) -> None:
        cols = "".join(f", {name} = ?" for name in values)
        with self.db.transaction() as tx:
            tx.execute(
                f"UPDATE sessions SET state = ?, reason = ?, finished_at = ?{cols} WHERE key = ?",
                (state, reason, time.time(), *values.values(), key),
            )

    def _finish(self, key: str, why: str) -> None:
        row = self._row(key)
        if row is None or row["state"] != "active":
            return
        min_steps = self.settings.min_session_steps
        ignored = self._ignored(row)
        if ignored:
            self._set(key, "skipped", ignored, fresh=0)
            return
        if (row["trajectory_id"] or row["baseline"]) and row["fresh"] < min_steps:
            self._set(key, "finished", f"only {row['fresh']} new content lines since last time")
            return
        try:
            self._queue(row, why)
        except RuneError as exc:
            log.info("not remembering %s: %s", row["path"], exc)
            self._set(key, "skipped", str(exc), fresh=0)
        except Exception as exc:  # a parser bug must not stop the watcher
            log.exception("could not process %s", row["path"])
            self._set(key, "failed", f"internal error ({type(exc).__name__}: {exc})", fresh=0)

    def _load(self, row: sqlite3.Row) -> tuple[Trajectory, Path | None, str | None, str]:
        """The session's trajectory, and what to queue: a path, or text in a format."""
        from rune_mcp.capture import parse_path, parse_text
        from rune_mcp.capture.cursor import parse_vscdb

        path = Path(row["path"])
        if row["fmt"] == "cursor-db":
            traj = parse_vscdb(path, composer_id=row["key"].split(":", 1)[1])
            return traj, None, traj.to_json(), "generic"
        if row["agent"] == "aider":
            text = self._aider_text(row)
            return parse_text(text, fmt="aider", name=path.name), None, text, "aider"
        return parse_path(path, fmt=row["fmt"]), path, None, row["fmt"]

    def _queue(self, row: sqlite3.Row, why: str) -> None:
        traj, path, text, fmt = self._load(row)
        steps = len(traj.steps)
        if steps < self.settings.min_session_steps:
            self._set(row["key"], "skipped", f"too small to teach anything ({steps} steps)",
                      steps=steps, fresh=0)
            return
        if traj.id == row["trajectory_id"]:
            self._set(row["key"], "finished", "no new content since it was queued", fresh=0)
            return
        job_id = self.enqueue(path=path, text=text, fmt=fmt, session_id=traj.session_id)
        self.queued_now += 1
        log.info("queued %s (%s, %d steps) as job %s: %s", Path(row["path"]).name,
                 row["agent"], steps, job_id, why)
        self._set(row["key"], "queued", why, job_id=job_id, trajectory_id=traj.id,
                  steps=steps, fresh=0)

    def _aider_text(self, row: sqlite3.Row) -> str:
        end = row["end"]
        if end is None:
            offsets = self.db.conn.execute(
                "SELECT offset FROM files WHERE id = ?", (row["file_id"],)
            ).fetchone()
            end = row["start"] if offsets is None else int(offsets["offset"])
        with open(row["path"], "rb") as handle:
            handle.seek(int(row["start"]))
            data = handle.read(max(0, int(end) - int(row["start"])))
        return data.decode("utf-8", "replace")

    def _ignored(self, row: sqlite3.Row) -> str | None:
        """Why this session's project is opted out, or None."""
        project = row["project"]
        candidates = [c for c in (project, row["path"]) if c]
        for pattern in self.settings.ignore_projects:
            pat = os.path.expanduser(pattern).rstrip("/")
            for cand in candidates:
                if fnmatch.fnmatch(cand, pat) or cand == pat or cand.startswith(pat + "/"):
                    return f"project matches ignore_projects entry {pattern!r}"
        if project:
            folder = Path(project)
            for parent in (folder, *folder.parents):
                if (parent / IGNORE_FILE).exists():
                    return f"{parent / IGNORE_FILE} opts this project out"
        return None


# --- file-system events ------------------------------------------------------------------


def _event_handler(put: Callable[[str], None]) -> Any:
    from watchdog.events import FileSystemEvent, FileSystemEventHandler

    class Forward(FileSystemEventHandler):
        """Forwards changed paths to the watcher's queue; runs in watchdog's thread."""

        def on_any_event(self, event: FileSystemEvent) -> None:
            if event.event_type in ("opened", "closed_no_write"):
                return  # our own reads
            put(os.fsdecode(event.src_path))
            if event.dest_path:
                put(os.fsdecode(event.dest_path))

    return Forward()


def _event_filter() -> list[Any]:
    from watchdog import events as ev

    return [
        ev.FileCreatedEvent, ev.FileModifiedEvent, ev.FileMovedEvent, ev.FileDeletedEvent,
        ev.FileClosedEvent, ev.DirCreatedEvent, ev.DirMovedEvent,
    ]


@dataclass
class _Observers:
    """inotify (or the platform's native API) first; polling for folders it cannot watch."""

    put: Callable[[str], None]
    polling_only: bool
    poll_interval: float
    modes: dict[str, str] = field(default_factory=dict)
    native: Any = None
    polling: Any = None

    def watch(self, folder: Path, recursive: bool) -> None:
        key = str(folder)
        if key in self.modes:
            return
        handler = _event_handler(self.put)
        if not self.polling_only:
            try:
                self._native().schedule(
                    handler, key, recursive=recursive, event_filter=_event_filter()
                )
                self.modes[key] = "native"
                return
            except OSError as exc:
                if exc.errno not in (errno.ENOSPC, errno.EMFILE):
                    log.warning("cannot watch %s (%s); it is only scanned", folder, exc)
                    return
                log.warning("%s (%s); polling %s every %.0f s instead (raise "
                            "fs.inotify.max_user_watches to avoid this)",
                            exc.strerror or exc, exc.errno, folder, self.poll_interval)
        self._polling().schedule(handler, key, recursive=recursive, event_filter=_event_filter())
        self.modes[key] = "polling"

    def _native(self) -> Any:
        if self.native is None:
            from watchdog.observers import Observer

            self.native = Observer()
            self.native.daemon = True
            self.native.start()
        return self.native

    def _polling(self) -> Any:
        if self.polling is None:
            from watchdog.observers.polling import PollingObserver

            self.polling = PollingObserver(timeout=self.poll_interval)
            self.polling.daemon = True
            self.polling.start()
        return self.polling

    def stop(self) -> None:
        for observer in (self.native, self.polling):
            if observer is not None:
                observer.stop()
        for observer in (self.native, self.polling):
            if observer is not None:
                observer.join(timeout=5)
        self.native = self.polling = None
        self.modes.clear()


class _OverflowAlarm(logging.Handler):
    """watchdog only logs when the kernel's inotify queue overflows; this turns that log
    record into an immediate reconciliation scan instead of waiting for the next one."""

    def __init__(self, put: Callable[[str], None]) -> None:
        super().__init__(logging.WARNING)
        self.put = put

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            self.put(_RESCAN)


class Sink(Protocol):
    """Where the file watcher delivers lines and asks what is due."""

    def on_chunk(self, chunk: Chunk, match: Match, tx: sqlite3.Connection) -> None: ...

    def on_gone(self, file_id: int) -> None: ...

    def on_touch(self, path: Path, match: Match) -> None: ...

    def settle(self, now: float) -> float | None: ...


class FileWatcher:
    """Observers, debouncing, the reconciliation scan and the sleep between them."""

    def __init__(
        self,
        db: WatchDB,
        sources: list[Source],
        sink: Sink,
        rescan_seconds: float,
        *,
        accept: Callable[[Match], bool] = lambda _m: True,
        polling_only: bool = False,
        poll_interval: float = 5.0,
        debounce: float = DEBOUNCE_S,
    ) -> None:
        self.db = db
        self.sources = sources
        self.sink = sink
        self.accept = accept
        self.tailer = Tailer(db)
        self.rescan_seconds = rescan_seconds
        self.debounce = debounce
        self.events: queue.Queue[str] = queue.Queue()
        self.observers = _Observers(self.events.put, polling_only, poll_interval)
        self.scans = 0
        self._stop = threading.Event()

    # --- reading files ------------------------------------------------------------------

    def _source_for(self, path: Path) -> tuple[Source, Match] | None:
        for source in self.sources:
            found = source.matches(path)
            if found is not None and self.accept(found):
                return source, found
        return None

    def poll(self, path: Path) -> int:
        """Read what is new in one file (or, for a folder, in the files below it)."""
        if path.is_dir():
            return sum(self.poll(p) for p in self._files_below(path))
        found = self._source_for(path)
        if found is None:
            return 0
        return self._tail(path, found[1])

    def _tail(self, path: Path, match: Match) -> int:
        if match.kind == "database":  # SQLite, not lines: the sink reads it when it settles
            self.sink.on_touch(path, match)
            return 0

        def handle(chunk: Chunk, tx: sqlite3.Connection) -> None:
            self.sink.on_chunk(chunk, match, tx)

        return self.tailer.poll(path, handle)

    def _files_below(self, folder: Path) -> Iterator[Path]:
        for source in self.sources:
            if folder == source.root or source.root in folder.parents:
                for path, match in source.files():
                    if (folder in path.parents) and self.accept(match):
                        yield path

    def scan(self) -> int:
        """Reconciliation: read every file whose size, time or identity changed since it was
        last read (events may have been dropped), and forget files that are gone."""
        known = {(f.dev, f.ino): f for f in self.db.files()}
        seen: set[tuple[int, int]] = set()
        polled = 0
        for source in self.sources:
            if self._observing:
                for folder, recursive in source.folders():
                    self.observers.watch(folder, recursive)
            for path, match in source.files():
                if not self.accept(match):
                    continue
                if match.kind == "database":
                    self.sink.on_touch(path, match)
                    continue
                try:
                    st = path.stat()
                except OSError:
                    continue
                seen.add((st.st_dev, st.st_ino))
                row = known.get((st.st_dev, st.st_ino))
                if row and row.path == str(path) and row.size == st.st_size \
                        and row.mtime == st.st_mtime:
                    continue
                polled += 1
                self._tail(path, match)
        for row in known.values():
            if (row.dev, row.ino) not in seen and not _holds(row.path, row.dev, row.ino):
                with self.db.transaction():
                    self.db.forget_file(row.id)
                self.sink.on_gone(row.id)
        self.scans += 1
        return polled

    # --- the loop -----------------------------------------------------------------------

    _observing = False

    def stop(self) -> None:
        """Ask `run` to return (safe from any thread or a signal handler)."""
        self._stop.set()
        self.events.put(_STOP)

    def _collect(self, timeout: float) -> set[str]:
        """Block until an event arrives (or `timeout`), then gather the burst that follows."""
        try:
            first = self.events.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return set()
        paths = {first}
        until = time.monotonic() + self.debounce
        while (left := until - time.monotonic()) > 0:
            try:
                paths.add(self.events.get(timeout=left))
            except queue.Empty:
                break
        return paths

    def run(self, on_wake: Callable[[], None] | None = None) -> None:
        """Watch until `stop()`: observers first (so nothing written during the first scan is
        missed), then the scan, then sleep until an event, an idle deadline or a rescan."""
        self._observing = True
        alarm = _OverflowAlarm(self.events.put)
        for name in _WATCHDOG_LOGGERS:
            logging.getLogger(name).addHandler(alarm)
        try:
            self.scan()
            next_scan = time.monotonic() + self.rescan_seconds
            while not self._stop.is_set():
                deadline = self.sink.settle(time.time())
                if on_wake is not None:
                    on_wake()
                timeout = next_scan - time.monotonic()
                if deadline is not None:
                    timeout = min(timeout, deadline - time.time() + 0.05)
                paths = self._collect(timeout)
                for name in sorted(paths - {_STOP, _RESCAN}):
                    self._poll_logged(Path(name))
                if _RESCAN in paths or time.monotonic() >= next_scan:
                    self.scan()
                    next_scan = time.monotonic() + self.rescan_seconds
        finally:
            self._observing = False
            for name in _WATCHDOG_LOGGERS:
                logging.getLogger(name).removeHandler(alarm)
            self.observers.stop()

    def _poll_logged(self, path: Path) -> None:
        try:
            self.poll(path)
        except RuneError:
            raise
        except Exception:  # one odd file must not stop the watcher; the next scan retries
            log.exception("error while reading %s", path)


# --- the watcher as a whole --------------------------------------------------------------


@contextlib.contextmanager
def _single_watcher(settings: Settings) -> Iterator[None]:
    """One `rune watch` per library: a second one would race the first for the same files."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(settings.home / LOCK_FILE), timeout=0)
    try:
        lock.acquire()
    except Timeout as exc:
        raise UsageError(
            "another `rune watch` is already running for this library; stop it first "
            "(`rune status` shows its pid)."
        ) from exc
    try:
        yield
    finally:
        lock.release()


class Watcher:
    """`rune watch`: a `FileWatcher` feeding a `SessionTracker`, plus the job worker."""

    def __init__(
        self,
        settings: Settings,
        enqueue: Enqueue | None = None,
        train: bool = True,
        debounce: float = DEBOUNCE_S,
    ) -> None:
        self.settings = settings
        self.train = train
        self.db = WatchDB(settings.home / STATE_DB, _SESSIONS)
        self.enqueue = enqueue or job_queue_enqueue(settings)
        self.tracker = SessionTracker(settings, self.db, self.enqueue, self._cutoff())
        self.sources = sources_for(settings)
        self.files = FileWatcher(
            self.db, self.sources, self.tracker, settings.watch_rescan_seconds,
            accept=lambda m: wanted(settings, m), polling_only=settings.watch_polling,
            poll_interval=max(1.0, min(30.0, settings.idle_seconds / 4)), debounce=debounce,
        )
        self._worker: threading.Thread | None = None
        self._worked_for = 0

    def _cutoff(self) -> float:
        """Transcripts last written before the watcher's first start minus the backfill
        window are history: recorded, not remembered (unless they grow)."""
        first = self.db.meta_get("first_start")
        if first is None:
            first = str(time.time())
            self.db.meta_set("first_start", first)
        return float(first) - self.settings.watch_backfill_hours * 3600.0

    def _heartbeat(self, mode: str) -> None:
        self.db.meta_set(
            "watcher",
            json.dumps({
                "pid": os.getpid(), "mode": mode, "beat": time.time(),
                "observers": dict(self.files.observers.modes), "scans": self.files.scans,
            }),
        )

    def _maybe_work(self) -> None:
        """Start the library's job worker in a thread when this watcher queued something."""
        if not self.train or self.tracker.queued_now == self._worked_for:
            return
        if self._worker is not None and self._worker.is_alive():
            return
        from rune_mcp.distill.queue import start_worker_thread

        self._worked_for = self.tracker.queued_now
        self._worker = start_worker_thread(self.settings, name="rune-watch-jobs")

    def once(self) -> dict[str, Any]:
        """Scan, queue what is finished, and (when training) run the queue to the end."""
        with _single_watcher(self.settings):
            self._heartbeat("once")
            polled = self.files.scan()
            self.tracker.settle(time.time())
            self.db.meta_set("watcher", json.dumps({"pid": None, "last_once": time.time()}))
        ran = None
        if self.train and self.tracker.queued_now:
            from rune_mcp.distill.queue import JobQueue

            ran = JobQueue(self.settings).work()
        return {"files_read": polled, "queued": self.tracker.queued_now, "jobs_run": ran}

    def run(self) -> None:
        """Watch in the foreground until `stop()` (or SIGINT/SIGTERM in the CLI)."""
        with _single_watcher(self.settings):
            def wake() -> None:
                self._heartbeat("watch")
                self._maybe_work()

            try:
                self.files.run(on_wake=wake)
            finally:
                with contextlib.suppress(sqlite3.Error):
                    self.db.meta_set("watcher", json.dumps({"pid": None, "stopped": time.time()}))

    def stop(self) -> None:
        self.files.stop()

    def close(self) -> None:
        self.db.close()


# --- status --------------------------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def watch_status(settings: Settings, limit: int = 10) -> dict[str, Any]:
    """What `rune status` shows about the watcher: roots, whether it runs, offsets, sessions.

    Reads the state file read-only and never creates it.
    """
    roots = [
        {"agent": s.agent, "path": str(s.root), "exists": s.root.is_dir()}
        for s in sources_for(settings)
    ]
    out: dict[str, Any] = {
        "state_file": str(settings.home / STATE_DB), "roots": roots, "running": False,
        "pid": None, "files": 0, "bytes_pending": 0, "offsets": [], "sessions": {},
        "recent_sessions": [],
    }
    path = settings.home / STATE_DB
    if not path.exists():
        return out
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
    except sqlite3.Error:
        return out
    try:
        conn.row_factory = sqlite3.Row
        _status_from(conn, out, limit)
    except sqlite3.Error as exc:
        out["error"] = f"cannot read the watcher state ({exc})"
    finally:
        conn.close()
    return out


def _status_from(conn: sqlite3.Connection, out: dict[str, Any], limit: int) -> None:
    meta = conn.execute("SELECT value FROM meta WHERE key = 'watcher'").fetchone()
    info = json.loads(meta["value"]) if meta else {}
    pid = info.get("pid")
    out["running"] = isinstance(pid, int) and _pid_alive(pid)
    out["pid"] = pid if out["running"] else None
    observers = info.get("observers", {}) if out["running"] else {}
    for root in out["roots"]:
        root["mode"] = observers.get(root["path"], "not watched")
    row = conn.execute(
        "SELECT COUNT(*) AS n, COALESCE(SUM(MAX(size - offset, 0)), 0) AS behind FROM files"
    ).fetchone()
    out["files"], out["bytes_pending"] = int(row["n"]), int(row["behind"])
    out["offsets"] = [
        {"path": r["path"], "offset": r["offset"], "size": r["size"]}
        for r in conn.execute(
            "SELECT path, offset, size FROM files ORDER BY updated DESC LIMIT ?", (limit,)
        )
    ]
    out["sessions"] = {
        r["state"]: r["n"]
        for r in conn.execute("SELECT state, COUNT(*) AS n FROM sessions GROUP BY state")
    }
    out["recent_sessions"] = [
        {
            "transcript": Path(r["path"]).name, "agent": r["agent"], "state": r["state"],
            "reason": r["reason"], "job_id": r["job_id"], "steps": r["steps"],
        }
        for r in conn.execute(
            "SELECT * FROM sessions WHERE state != 'historic' "
            "ORDER BY COALESCE(finished_at, last_growth) DESC LIMIT ?",
            (limit,),
        )
    ]
