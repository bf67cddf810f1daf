"""Codex CLI: its rollouts (`<codex_dir>/sessions/YYYY/MM/DD/rollout-<time>-<id>.jsonl`).

Each line is `{timestamp, type, payload}`; the conversation is in `response_item` payloads
(messages, reasoning, function calls and their outputs). `event_msg` lines repeat the same
conversation for the terminal UI and are skipped. Older rollouts put the items on the lines
directly, after a header line with `id` and `instructions`; both shapes are read. Codex has
no hooks Rune uses and no `rune install`; the watcher finds its sessions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rune_mcp.agents.base import Agent, Match, Place, Sample
from rune_mcp.capture.base import Builder, as_text, read_jsonl
from rune_mcp.config import Settings
from rune_mcp.trajectory import Trajectory

FORMAT = "codex"
ITEM_TYPES = frozenset(
    {"message", "reasoning", "function_call", "function_call_output", "custom_tool_call",
     "custom_tool_call_output", "local_shell_call", "web_search_call"}
)
SKIPPED_TYPES = frozenset({"turn_context", "event_msg", "compacted", "state"})
# User-role messages the CLI injects (project instructions, environment) are not requests.
_INJECTED = ("<environment_context>", "<user_instructions>", "# AGENTS.md", "<permissions",
             "<turn_aborted>", "<user_shell_command>")


def looks_like(sample: Sample) -> bool:
    """Detection: rollout lines are typed `session_meta`, `response_item`, ... (or, in the
    older shape, items with a `role` after an `instructions` header)."""
    records = sample.records
    hits = 0
    for rec in records:
        kind = rec.get("type")
        if kind in ("session_meta", "response_item", "turn_context", "event_msg") or (
            kind in ITEM_TYPES and "role" in rec
        ) or "instructions" in rec:
            hits += 1
    return hits > 0 and hits * 2 >= len(records)


def parse(text: str, name: str, source: Path | None = None) -> Trajectory:
    builder = Builder(FORMAT, name, agent="codex")
    for rec in read_jsonl(text, builder.stats):
        kind = rec.get("type")
        payload = rec.get("payload")
        ts = rec.get("timestamp")
        if kind == "session_meta" and isinstance(payload, dict):
            _meta(builder, payload)
        elif kind == "response_item" and isinstance(payload, dict):
            _item(builder, payload, ts)
        elif kind in SKIPPED_TYPES:
            builder.stats[f"skipped:{kind}"] += 1
        elif kind in ITEM_TYPES and payload is None:
            _item(builder, rec, ts)  # the older rollout shape
        elif kind is None and "instructions" in rec:
            _meta(builder, rec)
        else:
            builder.stats[f"unknown:{kind}"[:80]] += 1
    return builder.finish()


def _meta(builder: Builder, meta: dict[str, Any]) -> None:
    if isinstance(meta.get("id"), str):
        builder.session_id = meta["id"]
    if isinstance(meta.get("cwd"), str):
        builder.project = meta["cwd"]


def _item(builder: Builder, item: dict[str, Any], ts: Any) -> None:
    kind = item.get("type")
    if kind == "message":
        _message(builder, item, ts)
    elif kind == "reasoning":
        texts = [as_text(item.get("summary")), as_text(item.get("content"))]
        builder.thinking("\n".join(t for t in texts if t), ts)
    elif kind in ("function_call", "custom_tool_call"):
        raw = item.get("arguments", item.get("input"))
        builder.tool_call(str(item.get("name") or "unknown"), _call_id(item), _args(raw), ts)
    elif kind == "local_shell_call":
        action = item.get("action")
        command = action.get("command") if isinstance(action, dict) else None
        builder.tool_call("shell", _call_id(item), {"command": command}, ts)
    elif kind == "web_search_call":
        builder.tool_call("web_search", _call_id(item), item.get("action"), ts)
    elif kind in ("function_call_output", "custom_tool_call_output"):
        output, is_error = _output(item.get("output"))
        builder.tool_result(_call_id(item), output, is_error, ts)
    else:
        builder.stats[f"unknown_item:{kind}"[:80]] += 1


def _message(builder: Builder, item: dict[str, Any], ts: Any) -> None:
    role = item.get("role")
    content = item.get("content")
    parts = content if isinstance(content, list) else [{"type": "text", "text": content}]
    for part in parts:
        if not isinstance(part, dict):
            builder.stats["bad_blocks"] += 1
            continue
        text = as_text(part.get("text"))
        if part.get("type") == "reasoning":
            builder.thinking(text, ts)
        elif role == "user":
            if text.lstrip().startswith(_INJECTED):
                builder.stats["skipped_injected"] += 1
            else:
                builder.user(text, ts)
        elif role == "assistant":
            builder.assistant(text, ts)
        else:
            builder.stats[f"skipped_role:{role}"[:80]] += 1


def _call_id(item: dict[str, Any]) -> str | None:
    value = item.get("call_id", item.get("id"))
    return value if isinstance(value, str) else None


def _args(raw: Any) -> Any:
    """`'{"command": ["ls"]}'` -> `{"command": ["ls"]}`; other strings are kept as `input`."""
    if isinstance(raw, str):
        try:
            parsed = json.loads(raw)
        except ValueError:
            return {"input": raw}
        return parsed if isinstance(parsed, dict) else {"input": parsed}
    return raw


def _output(raw: Any) -> tuple[str, bool]:
    """An output is text or JSON `{"output": ..., "metadata": {"exit_code": n}}`."""
    data: Any = raw
    if isinstance(raw, str) and raw.lstrip().startswith("{"):
        try:
            data = json.loads(raw)
        except ValueError:
            data = raw
    if isinstance(data, dict):
        meta = data.get("metadata")
        code = meta.get("exit_code") if isinstance(meta, dict) else None
        failed = (isinstance(code, int) and code != 0) or data.get("success") is False
        return as_text(data.get("output", data.get("content"))), failed
    return as_text(data), False


# --- where rollouts live ---------------------------------------------------------------------


def _match(root: Path, path: Path) -> Match | None:
    # sessions/YYYY/MM/DD/rollout-<timestamp>-<uuid>.jsonl; the project comes from session_meta
    if path.name.startswith("rollout-") and path.suffix == ".jsonl":
        return Match(FORMAT, FORMAT, "main", None)
    return None


def _line(record: dict[str, Any]) -> tuple[bool, str | None]:
    """Conversation lines are `response_item`s; the project is `session_meta`'s `cwd`."""
    payload = record.get("payload")
    cwd = payload.get("cwd") if record.get("type") == "session_meta" and isinstance(
        payload, dict) else None
    return record.get("type") == "response_item", cwd if isinstance(cwd, str) else None


def places(settings: Settings) -> list[Place]:
    return [Place(FORMAT, settings.codex_dir.expanduser() / "sessions", None, _match)]


def session_globs(settings: Settings, session_id: str) -> list[tuple[Path, str]]:
    return [(settings.codex_dir / "sessions", f"*/*/*/rollout-*-{session_id}.jsonl")]


AGENT = Agent(
    name=FORMAT,
    title="Codex CLI",
    looks_like=looks_like,
    parse=parse,
    places=places,
    roots=lambda settings: [settings.codex_dir],
    session_globs=session_globs,
    lines=_line,
)
