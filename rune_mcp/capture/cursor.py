"""Cursor: agent-transcript JSONL files and the chat database `state.vscdb`.

Newer Cursor versions write `~/.cursor/projects/<slug>/agent-transcripts/<id>/<id>.jsonl`,
lines `{"role": ..., "message": {"content": [text | tool_use | tool_result]}}` without ids or
timestamps. All versions keep chats in the SQLite file `state.vscdb` (table `cursorDiskKV`:
`composerData:<id>` lists a conversation's bubbles, `bubbleId:<id>:<bubble>` holds each).
Cursor keeps that database open, so it is opened strictly read-only (`mode=ro`) and never
locked or written; the most recently updated conversation is the session.
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path
from typing import Any

from rune_mcp.capture.base import Builder, as_text, read_jsonl
from rune_mcp.errors import ParseError
from rune_mcp.trajectory import Trajectory

FORMAT = "cursor"
SQLITE_MAGIC = b"SQLite format 3\x00"
_QUERY = re.compile(r"<user_query>\s*(.*?)\s*</user_query>", re.DOTALL)
_INJECTED = ("<user_info>", "<system_reminder>", "<attached_files>", "<additional_data>")


def looks_like(records: list[dict[str, Any]]) -> bool:
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
