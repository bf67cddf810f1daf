"""Sessions: which lines belong to which session, and when a session is finished and queued.

`SessionTracker` receives every new complete line exactly once (in the same transaction as the
offset) and keeps one row per session in the watcher's database. It knows three ways an agent
stores sessions, and asks the agent (`rune_mcp/agents/`) which one it uses and the details:
one JSONL file per session (which lines are conversation, which name the project: `lines`),
one history file appending session after session (`runs`: the header line that opens one),
and a chat database holding every conversation (`database`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from rune_mcp import agents
from rune_mcp.agents.base import Runs
from rune_mcp.capture.control import refusal
from rune_mcp.capture.transcript_file import open_checked, read_range, read_transcript, still_names
from rune_mcp.config import Settings
from rune_mcp.errors import ParseError, RuneError
from rune_mcp.trajectory import Trajectory
from rune_mcp.watch.sources import Match, watched_roots
from rune_mcp.watch.tail import Chunk, WatchDB

log = logging.getLogger(__name__)


SESSIONS_SCHEMA = """
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


class Enqueue(Protocol):
    """Queue one finished session; returns the job id."""

    def __call__(
        self, *, path: Path | None, text: str | None, fmt: str, session_id: str | None
    ) -> str: ...


def job_queue_enqueue(settings: Settings) -> Enqueue:
    """The real `Enqueue`: a job in the library's queue, marked as coming from the watcher."""
    from rune_mcp.distill.queue import JobQueue

    jobs = JobQueue(settings)
    roots = watched_roots(settings)

    def enqueue(
        *, path: Path | None, text: str | None, fmt: str, session_id: str | None
    ) -> str:
        # The queue reads and parses the file once more, checked against the watched folders:
        # what it stores is what it checked.
        return jobs.enqueue(
            path=path, text=text, fmt=fmt, source="watcher", session_id=session_id, roots=roots
        ).id

    return enqueue


@dataclass
class _LineInfo:
    """What the tracker learns from a batch of JSONL lines."""

    lines: int = 0
    content: int = 0
    project: str | None = None


def _jsonl_info(agent: str, lines: list[bytes]) -> _LineInfo:
    """Count lines that carry conversation (not metadata) and find the project folder, as
    the agent's `lines` reads each line.

    `[b'{"type":"user","cwd":"/p","message":{}}', b'{"type":"summary"}']` -> 2 lines, 1 content
    (Claude Code).
    """
    facts = agents.get(agent).lines
    info = _LineInfo(lines=len(lines))
    for raw in lines:
        try:
            obj = json.loads(raw)
        except (ValueError, RecursionError):
            continue
        if not isinstance(obj, dict):
            continue
        content, project = facts(obj)
        info.content += content
        info.project = info.project or project
    return info


def _mtime(*paths: Path) -> float | None:
    """The latest modification time among the files that exist."""
    times = []
    for path in paths:
        with contextlib.suppress(OSError):
            times.append(path.stat().st_mtime)
    return max(times) if times else None


def _runs(agent: str) -> Runs | None:
    """How the agent appends sessions to one history file, or None (one file per session)."""
    return agents.get(agent).runs


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
        self._dirty_dbs: dict[Path, tuple[float, str]] = {}  # db -> (mtime, agent)
        self._db_read_at: dict[Path, float] = {}
        # Agents rewrite their chat database for UI state too: read it at most this often.
        self._db_interval = min(settings.idle_seconds, 30.0)
        self._roots = watched_roots(settings)

    # --- inside the tail transaction ----------------------------------------------------

    def on_chunk(self, chunk: Chunk, match: Match, tx: sqlite3.Connection) -> None:
        runs = _runs(match.agent)
        if runs is not None:
            self._runs_chunk(chunk, match, runs, tx)
        else:
            self._jsonl_chunk(chunk, match, tx)

    def _jsonl_chunk(self, chunk: Chunk, match: Match, tx: sqlite3.Connection) -> None:
        key = str(chunk.file_id)
        row = tx.execute("SELECT * FROM sessions WHERE key = ?", (key,)).fetchone()
        info = _jsonl_info(match.agent, chunk.lines)
        grown = min(chunk.mtime, time.time())
        group = match.group
        if group is None and info.project:  # the path does not tell the project; a line did
            group = f"{match.agent}:{info.project}"
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

    def _runs_chunk(
        self, chunk: Chunk, match: Match, runs: Runs, tx: sqlite3.Connection
    ) -> None:
        """A history that holds many sessions, each opened by a header line (Aider's
        `# aider chat started at`); a new header ends the previous session (a new session in
        the same project)."""
        if chunk.reset:
            tx.execute(
                "DELETE FROM sessions WHERE file_id = ? AND state = 'active'", (chunk.file_id,)
            )
        project = str(chunk.path.parent)
        grown = min(chunk.mtime, time.time())
        for line, offset in zip(chunk.lines, chunk.offsets, strict=True):
            if line.startswith(runs.header):
                started = runs.started(line) or grown
                self._runs_close(tx, chunk, offset, started)
                historic = chunk.new_file and started < self.cutoff
                key = f"{chunk.file_id}@{offset}"
                self._insert(
                    tx, key=key, chunk=chunk, match=match, group=match.group, start=offset,
                    grown=grown, historic=historic, project=project,
                )
            elif line.strip():
                self._runs_line(
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

    def _runs_close(
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

    def _runs_line(
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

    # --- an agent's chat database ---------------------------------------------------------

    def on_touch(self, path: Path, match: Match) -> None:
        """A chat database (Cursor's `state.vscdb`) or its WAL changed: read its
        conversations soon."""
        db = path.with_name(path.name.removesuffix("-wal"))
        mtime = _mtime(db, db.with_name(db.name + "-wal"))
        if mtime is None:
            return
        seen = self.db.meta_get(f"db-mtime:{db}")
        if seen is None or float(seen) < mtime:
            self._dirty_dbs[db] = (mtime, match.agent)

    def _db_deadline(self) -> float | None:
        times = [self._db_read_at.get(db, 0.0) + self._db_interval for db in self._dirty_dbs]
        return min(times) if times else None

    def _read_databases(self, now: float) -> None:
        for db, (mtime, agent) in list(self._dirty_dbs.items()):
            if now - self._db_read_at.get(db, 0.0) < self._db_interval:
                continue
            del self._dirty_dbs[db]
            self._db_read_at[db] = now
            try:
                self._read_database(db, agent)
            except (sqlite3.Error, OSError, ValueError) as exc:
                log.warning("cannot read %s's chat database %s (%s); will try again",
                            agents.get(agent).title, db, exc)
                continue
            with self.db.transaction():
                self.db.meta_set(f"db-mtime:{db}", str(mtime))

    def _read_database(self, db: Path, agent: str) -> None:
        """One session row per conversation; a conversation grows when it has more messages
        than last time."""
        database = agents.get(agent).database
        if database is None:
            return
        conversations = database.conversations(db)
        now = time.time()
        with self.db.transaction() as tx:
            for cid, count, updated in conversations:
                self._conversation(
                    tx, db, (agent, database.fmt), cid, count, min(updated or now, now)
                )

    def _conversation(
        self, tx: sqlite3.Connection, db: Path, source: tuple[str, str], cid: str, count: int,
        updated: float,
    ) -> None:
        agent, fmt = source
        key = f"{fmt}:{cid}"
        row = tx.execute("SELECT content FROM sessions WHERE key = ?", (key,)).fetchone()
        if row is None:
            historic = updated < self.cutoff
            tx.execute(
                "INSERT INTO sessions (key, file_id, path, agent, fmt, kind, start, lines, "
                "content, fresh, baseline, first_seen, last_growth, state) "
                "VALUES (?, 0, ?, ?, ?, 'main', 0, ?, ?, ?, ?, ?, ?, ?)",
                (
                    key, str(db), agent, fmt, count, count, 0 if historic else count,
                    int(historic), time.time(), updated, "historic" if historic else "active",
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
            if _runs(row["agent"]) is not None:  # a new header ended this one
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
        """The session's trajectory, and what to queue: a path, or text in a format.

        Every file is opened checked (`open_checked`): inside the watched folders, a regular
        file with one name, so one swapped for a link since it was seen is not read.
        """
        from rune_mcp.capture import database_magic, parse_file, parse_text

        path = Path(row["path"])
        keeper = agents.with_database(row["fmt"])
        if keeper is not None and keeper.database is not None:
            # The database is the agent's, not a file to queue: the job carries the JSON.
            with open_checked(path, self._roots, error=ParseError) as opened:
                traj = keeper.database.parse(opened.path, row["key"].split(":", 1)[1])
                if not still_names(opened):
                    raise ParseError(f"{path} changed while it was read; it is read again later.")
            return traj, None, traj.to_json(), "generic"
        if _runs(row["agent"]) is not None:
            text = self._run_text(row)
            return parse_text(text, fmt=row["agent"], name=path.name), None, text, row["agent"]
        file = read_transcript(path, self._roots, error=ParseError,
                               database_magic=database_magic())
        return parse_file(file, fmt=row["fmt"]), path, None, row["fmt"]

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

    def _run_text(self, row: sqlite3.Row) -> str:
        """The text of one session of a history file: from its header to the next one."""
        end = row["end"]
        if end is None:
            offsets = self.db.conn.execute(
                "SELECT offset FROM files WHERE id = ?", (row["file_id"],)
            ).fetchone()
            end = row["start"] if offsets is None else int(offsets["offset"])
        with open_checked(Path(row["path"]), self._roots, error=ParseError) as opened:
            data = read_range(opened, int(row["start"]), max(0, int(end) - int(row["start"])))
        return data.decode("utf-8", "replace")

    def _ignored(self, row: sqlite3.Row) -> str | None:
        """Why this session is not captured (an excluded project, automatic capture paused),
        or None."""
        return refusal(self.settings, row["project"], "watcher", [row["path"]])
