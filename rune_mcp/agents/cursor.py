"""Cursor: agent transcripts, its chat database `state.vscdb`, its stop hook, `rune install`.

Newer Cursor versions write `<cursor_dir>/projects/<slug>/agent-transcripts/<id>/<id>.jsonl`,
lines `{"role": ..., "message": {"content": [text | tool_use | tool_result]}}` without ids or
timestamps. All versions keep chats in the SQLite file `state.vscdb` (table `cursorDiskKV`:
`composerData:<id>` lists a conversation's bubbles, `bubbleId:<id>:<bubble>` holds each).
Cursor keeps that database open, so it is opened strictly read-only (`mode=ro`) and never
locked or written; the most recently updated conversation is the session.

Hook: `stop` ends a turn, not the chat, so the job waits `idle_seconds` and every later turn
pushes it back; the event names the conversation, whose agent transcript is then looked up,
and its `workspace_roots` the project. No session-start note: Cursor's hooks (1.7) have no
event that fires when a chat starts and hands its output to the model.

Install: `.cursor/mcp.json` and `.cursor/hooks.json` in the project, or under `cursor_dir`
(`~/.cursor`) for user scope.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import sys
from pathlib import Path
from typing import Any

from rune_mcp import sqlite
from rune_mcp.agents import installing
from rune_mcp.agents.base import (
    Agent,
    Database,
    HookJob,
    Installer,
    InstallTarget,
    Match,
    Matcher,
    Place,
    Sample,
    SkipEventError,
    event_folder,
)
from rune_mcp.capture.base import Builder, as_text, read_jsonl
from rune_mcp.config import Settings
from rune_mcp.errors import ParseError
from rune_mcp.trajectory import Trajectory

FORMAT = "cursor"
SQLITE_MAGIC = b"SQLite format 3\x00"
_QUERY = re.compile(r"<user_query>\s*(.*?)\s*</user_query>", re.DOTALL)
_INJECTED = ("<user_info>", "<system_reminder>", "<attached_files>", "<additional_data>")
DB_FORMAT = "cursor-db"  # the database's name in the watcher's state
_STOP_EVENTS = frozenset({"stop", "sessionEnd"})
SCOPES = ("project", "user")


def looks_like(sample: Sample) -> bool:
    """Detection: Cursor lines have a `role` and a `message` but no `type`."""
    records = sample.records
    hits = sum(1 for r in records if r.get("role") in ("user", "assistant") and "message" in r
               and "type" not in r)
    return hits > 0 and hits * 2 >= len(records)


def parse(text: str, name: str, source: Path | None = None) -> Trajectory:
    """A Cursor agent-transcript JSONL file."""
    builder = Builder(FORMAT, name, agent="cursor")
    for rec in read_jsonl(text, builder.stats):
        role = rec.get("role")
        message = rec.get("message")
        content = message.get("content") if isinstance(message, dict) else None
        if role not in ("user", "assistant") or content is None:
            builder.stats[f"unknown:{role}"[:80]] += 1
            continue
        blocks = content if isinstance(content, list) else [{"type": "text", "text": content}]
        for block in blocks:
            _block(builder, role, block)
    return builder.finish()


def _block(builder: Builder, role: str, block: Any) -> None:
    if not isinstance(block, dict):
        builder.stats["bad_blocks"] += 1
        return
    kind = block.get("type")
    if kind == "text":
        text = as_text(block.get("text"))
        if role == "assistant":
            builder.assistant(text)
        else:
            _user_text(builder, text)
    elif kind == "tool_use":
        builder.tool_call(str(block.get("name") or "unknown"), _str(block.get("id")),
                          block.get("input"))
    elif kind == "tool_result":
        builder.tool_result(_str(block.get("tool_use_id")), as_text(block.get("content")),
                            block.get("is_error") is True)
    elif kind in ("thinking", "reasoning"):
        builder.thinking(as_text(block.get("thinking", block.get("text"))))
    else:
        builder.stats[f"unknown_block:{kind}"[:80]] += 1


def _user_text(builder: Builder, text: str) -> None:
    query = _QUERY.search(text)
    if query:
        builder.user(query.group(1))
    elif text.lstrip().startswith(_INJECTED):
        builder.stats["skipped_injected"] += 1
    else:
        builder.user(text)


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


# --- state.vscdb ----------------------------------------------------------------------


def parse_vscdb(path: Path, composer_id: str | None = None) -> Trajectory:
    """The latest conversation (or `composer_id`) of a Cursor `state.vscdb`, read-only."""
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise ParseError(f"cannot open Cursor database {path} read-only ({exc}).") from None
    try:
        composers = _composers(conn, path)
        if composer_id is not None:
            composers = [c for c in composers if c[0] == composer_id]
        for cid, data in composers:
            builder = Builder(FORMAT, f"{path}#{cid}", agent="cursor")
            builder.session_id = cid
            for bubble in _bubbles(conn, cid, data, builder):
                _bubble(builder, bubble)
            if builder.task:
                return builder.finish()
    except sqlite3.Error as exc:
        raise ParseError(f"Cursor database {path} is unreadable ({exc}); is it a "
                         "state.vscdb file?") from None
    finally:
        conn.close()
    raise ParseError(f"no task found in {path}: no Cursor conversation in it has a user request.")


def _composers(conn: sqlite3.Connection, path: Path) -> list[tuple[str, dict[str, Any]]]:
    """Conversations, most recently updated first."""
    try:
        rows = conn.execute(
            "SELECT key, value FROM cursorDiskKV WHERE key LIKE 'composerData:%'"
        ).fetchall()
    except sqlite3.OperationalError:
        raise ParseError(f"{path} has no cursorDiskKV table: it is not a Cursor "
                         "state.vscdb.") from None
    out = []
    for key, value in rows:
        data = _json(value)
        if isinstance(data, dict):
            out.append((str(key).split(":", 1)[1], data))
    out.sort(key=lambda c: -_num(c[1].get("lastUpdatedAt") or c[1].get("createdAt")))
    return out


def _bubbles(conn: sqlite3.Connection, cid: str, data: dict[str, Any],
             builder: Builder) -> list[dict[str, Any]]:
    inline = data.get("conversation")
    if isinstance(inline, list) and inline:  # older versions keep bubbles inline
        return [b for b in inline if isinstance(b, dict)]
    headers = data.get("fullConversationHeadersOnly")
    out = []
    for header in headers if isinstance(headers, list) else []:
        bubble_id = header.get("bubbleId") if isinstance(header, dict) else None
        if not isinstance(bubble_id, str):
            builder.stats["bad_bubbles"] += 1
            continue
        row = conn.execute("SELECT value FROM cursorDiskKV WHERE key = ?",
                           (f"bubbleId:{cid}:{bubble_id}",)).fetchone()
        bubble = _json(row[0]) if row else None
        if isinstance(bubble, dict):
            bubble.setdefault("type", header.get("type"))
            out.append(bubble)
        else:
            builder.stats["missing_bubbles"] += 1
    return out


def _bubble(builder: Builder, bubble: dict[str, Any]) -> None:
    ts = bubble.get("createdAt") if isinstance(bubble.get("createdAt"), str) else None
    text = as_text(bubble.get("text"))
    if bubble.get("type") == 1:
        builder.user(text, ts)
        return
    thinking = bubble.get("thinking")
    if isinstance(thinking, dict):
        builder.thinking(as_text(thinking.get("text")), ts)
    builder.assistant(text, ts)
    tool = bubble.get("toolFormerData")
    if isinstance(tool, dict) and tool.get("name"):
        call_id = _str(tool.get("toolCallId")) or f"bubble-{bubble.get('bubbleId')}"
        args = _json(tool.get("rawArgs")) if isinstance(tool.get("rawArgs"), str) else None
        builder.tool_call(str(tool["name"]), call_id, args if args is not None
                          else tool.get("params"), ts)
        result = tool.get("result")
        failed = tool.get("status") in ("error", "failed") or bool(tool.get("error"))
        builder.tool_result(call_id, as_text(_json(result) if isinstance(result, str)
                                             else result), failed, ts)


def _json(value: Any) -> Any:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def _num(value: Any) -> float:
    return float(value) if isinstance(value, int | float) else 0.0


def conversations(path: Path) -> list[tuple[str, int, float | None]]:
    """Every conversation of a `state.vscdb` for the watcher: (id, bubbles, last update in
    seconds since the epoch, or None); raises `sqlite3.Error` or `ValueError` when unreadable."""
    conn = sqlite.connect_readonly(path)
    try:
        rows = conn.execute(
            "SELECT key, value FROM cursorDiskKV WHERE key LIKE 'composerData:%'"
        ).fetchall()
    finally:
        conn.close()
    out = []
    for key, value in rows:
        data = json.loads(value) if isinstance(value, str | bytes) else None
        if not isinstance(data, dict):
            continue
        bubbles = data.get("fullConversationHeadersOnly") or data.get("conversation")
        stamp = data.get("lastUpdatedAt") or data.get("createdAt")
        out.append((str(key).split(":", 1)[1], len(bubbles) if isinstance(bubbles, list) else 0,
                    float(stamp) / 1000 if isinstance(stamp, int | float) else None))
    return out


def state_db(settings: Settings) -> Path:
    """Cursor's chat database: the setting, or where Cursor keeps it on this platform."""
    if settings.cursor_state_db is not None:
        return settings.cursor_state_db.expanduser()
    tail = Path("Cursor") / "User" / "globalStorage" / "state.vscdb"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / tail
    if sys.platform == "win32":
        return Path(os.environ.get("APPDATA") or Path.home() / "AppData" / "Roaming") / tail
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / tail


# --- install -------------------------------------------------------------------------------


def _add_hooks(path: Path) -> bool:
    command = installing.hook_command(FORMAT)

    def change(data: dict[str, Any]) -> None:
        data.setdefault("version", 1)
        stop = installing.hook_list(installing.section(data, "hooks", path), "stop", path)
        stop[:] = installing.without_rune(stop, keep=command)
        if not any(isinstance(h, dict) and h.get("command") == command for h in stop):
            stop.append({"command": command})

    return installing.update(path, change)


def config_folder(settings: Settings, scope: str, project: Path) -> Path:
    """Where a scope keeps `mcp.json` and `hooks.json`."""
    return settings.cursor_dir if scope == "user" else project / ".cursor"


def install(target: InstallTarget) -> list[str]:
    """Register the server and the stop hook for one scope (Cursor has no CLI to do it:
    `use_cli` is ignored)."""
    folder = config_folder(target.settings, target.scope, target.project)
    mcp_file, hooks_file = folder / "mcp.json", folder / "hooks.json"
    changed = installing.set_server(mcp_file, installing.stdio_entry(with_type=False))
    done = [f"{'wrote' if changed else 'kept'} the rune server in {mcp_file}"]
    changed = _add_hooks(hooks_file)
    done.append(f"{'added' if changed else 'kept'} the stop hook in {hooks_file}")
    return done


def uninstall(target: InstallTarget) -> list[str]:
    """Remove Rune's server entry and hook from one scope."""
    folder = config_folder(target.settings, target.scope, target.project)
    done = []
    if installing.drop_server(folder / "mcp.json"):
        done.append(f"removed the rune server from {folder / 'mcp.json'}")
    if installing.drop_hooks(folder / "hooks.json", installing.without_rune):
        done.append(f"removed Rune's hook from {folder / 'hooks.json'}")
    return done or ["nothing of Rune's was installed for this scope"]


# --- where transcripts live, and the hook -------------------------------------------------


def _match(root: Path, path: Path) -> Match | None:
    # projects/<slug>/agent-transcripts/<uuid>/<uuid>.jsonl (older builds: <uuid>.jsonl)
    rel = path.relative_to(root).parts
    if path.suffix != ".jsonl" or len(rel) < 3 or rel[1] != "agent-transcripts":
        return None
    kind = "subagent" if "subagents" in rel else "main"
    return Match(FORMAT, FORMAT, kind, f"{FORMAT}:{rel[0]}")


def _database_matcher(db: Path) -> Matcher:
    names = {db.name, db.name + "-wal"}

    def match(root: Path, path: Path) -> Match | None:
        return Match(FORMAT, DB_FORMAT, "database", None) if path.name in names else None

    return match


def places(settings: Settings) -> list[Place]:
    """The agent transcripts, and the folder of the chat database (the file and its WAL)."""
    db = state_db(settings)
    return [
        Place(FORMAT, settings.cursor_dir.expanduser() / "projects", None, _match),
        Place(DB_FORMAT, db.parent, 0, _database_matcher(db)),
    ]


def session_globs(settings: Settings, session_id: str) -> list[tuple[Path, str]]:
    return [(settings.cursor_dir / "projects",
             f"*/agent-transcripts/{session_id}/{session_id}.jsonl")]


def hook_job(event: dict[str, Any], settings: Settings) -> HookJob:
    """The job for a Cursor hook event: its transcript, else its conversation's."""
    name = str(event.get("hook_event_name") or "stop")
    if name not in _STOP_EVENTS:
        raise SkipEventError(f"event {name} does not end a session")
    conversation = event.get("conversation_id")
    conversation = conversation if isinstance(conversation, str) else None
    raw = event.get("transcript_path")
    project = event_folder("workspace_roots")(event)
    if isinstance(raw, str) and raw:
        return HookJob(Path(raw), conversation, settings.idle_seconds, project=project)
    if conversation:
        return HookJob(None, conversation, settings.idle_seconds, project=project)
    raise SkipEventError("no agent transcript for this conversation; the watcher reads "
                         "Cursor's history")


AGENT = Agent(
    name=FORMAT,
    title="Cursor",
    looks_like=looks_like,
    parse=parse,
    places=places,
    roots=lambda settings: [settings.cursor_dir],
    session_globs=session_globs,
    hook=hook_job,
    installer=Installer(scopes=SCOPES, install=install, uninstall=uninstall),
    database=Database(fmt=DB_FORMAT, magic=SQLITE_MAGIC, locate=state_db, parse=parse_vscdb,
                      conversations=conversations),
)
