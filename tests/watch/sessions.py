"""Small agent transcripts written the way the agents write them, for the watcher tests."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any


def claude_lines(
    task: str,
    turns: int = 3,
    cwd: str = "/home/dev/acme",
    session: str = "s-1",
    start: int = 0,
    parent: str | None = None,
) -> list[str]:
    """A Claude Code session: the task, then `turns` Bash calls with their results and a
    closing answer (2 + 2 * turns conversation lines). With `start` > 0 it continues a
    session (no new task line) after the line whose uuid is `parent`."""
    lines: list[dict[str, Any]] = []
    n = start

    def rec(kind: str, content: Any, **extra: Any) -> None:
        nonlocal parent, n
        n += 1
        uuid = f"{session}-{n:05d}"
        lines.append({
            "parentUuid": parent, "isSidechain": False, "userType": "external", "cwd": cwd,
            "sessionId": session, "version": "2.1.39", "type": kind, "uuid": uuid,
            "timestamp": f"2026-01-01T00:{n // 60 % 60:02d}:{n % 60:02d}.000Z",
            "message": {"role": kind, "content": content, **extra.pop("message", {})},
            **extra,
        })
        parent = uuid

    if start == 0:
        rec("user", task)
    for i in range(turns):
        tid = f"toolu_{session}_{n + 1}"
        rec("assistant", [{"type": "tool_use", "id": tid, "name": "Bash",
                           "input": {"command": f"make step-{n}-{i}"}}],
            message={"id": f"msg-{session}-{n}"})
        rec("user", [{"type": "tool_result", "tool_use_id": tid, "content": f"step {i} ok",
                      "is_error": False}], toolUseResult={"stdout": f"step {i} ok", "stderr": ""})
    rec("assistant", [{"type": "text", "text": f"Finished {task} part {start}."}],
        message={"id": f"msg-{session}-end-{n}"})
    return [json.dumps(line) for line in lines]


def continue_claude(path: Path, turns: int, start: int) -> None:
    """Append `turns` more tool calls and an answer to a Claude Code transcript, chained to
    its last line as Claude Code does."""
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    last = [r for r in records if "uuid" in r][-1]
    more = claude_lines("", turns=turns, cwd=last["cwd"], session=last["sessionId"],
                        start=start, parent=last["uuid"])
    write_lines(path, more, append=True)


def write_lines(path: Path, lines: list[str], append: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a" if append else "w", encoding="utf-8") as handle:
        handle.write("".join(line + "\n" for line in lines))
    return path


def codex_lines(task: str, cwd: str, session: str) -> list[str]:
    def line(kind: str, payload: dict[str, Any]) -> str:
        return json.dumps({"timestamp": "2026-01-01T00:00:00Z", "type": kind, "payload": payload})

    out = [line("session_meta", {"id": session, "cwd": cwd, "cli_version": "0.50.0"})]
    out.append(line("response_item", {"type": "message", "role": "user",
                                      "content": [{"type": "input_text", "text": task}]}))
    for i in range(3):
        call = f"call_{session}_{i}"
        out.append(line("response_item", {
            "type": "function_call", "name": "shell", "call_id": call,
            "arguments": json.dumps({"command": ["make", f"step{i}"]})}))
        out.append(line("response_item", {"type": "function_call_output", "call_id": call,
                                          "output": f"step {i} ok"}))
    out.append(line("response_item", {"type": "message", "role": "assistant",
                                      "content": [{"type": "output_text", "text": "Done."}]}))
    return out


def cursor_lines(task: str) -> list[str]:
    out = [{"role": "user", "message": {"content": [{"type": "text", "text": task}]}}]
    for i in range(3):
        out.append({"role": "assistant", "message": {"content": [
            {"type": "tool_use", "id": f"t{i}", "name": "run_terminal_cmd",
             "input": {"command": f"make step{i}"}}]}})
        out.append({"role": "user", "message": {"content": [
            {"type": "tool_result", "tool_use_id": f"t{i}", "content": f"step {i} ok"}]}})
    out.append({"role": "assistant", "message": {"content": [{"type": "text", "text": "Done."}]}})
    return [json.dumps(line) for line in out]


def aider_run(started: str, task: str) -> str:
    return (
        f"\n# aider chat started at {started}\n\n"
        f"#### {task}\n\n"
        "I will change `app.py`.\n\n"
        "app.py\n```python\n<<<<<<< SEARCH\nold = 1\n=======\nnew = 2\n>>>>>>> REPLACE\n```\n\n"
        "#### /run make test\n\n> 1 passed\n\n"
        "All tests pass now.\n\n"
    )


def cursor_db(path: Path, conversations: dict[str, list[tuple[int, str]]], updated_ms: int) -> None:
    """A minimal `state.vscdb`: `cursorDiskKV` rows for each conversation and its bubbles."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS cursorDiskKV (key TEXT UNIQUE, value BLOB)")
        for cid, bubbles in conversations.items():
            headers = [{"bubbleId": f"b{i}", "type": kind} for i, (kind, _t) in enumerate(bubbles)]
            data = {"composerId": cid, "fullConversationHeadersOnly": headers,
                    "createdAt": updated_ms, "lastUpdatedAt": updated_ms}
            conn.execute("INSERT OR REPLACE INTO cursorDiskKV VALUES (?, ?)",
                         (f"composerData:{cid}", json.dumps(data)))
            for i, (kind, text) in enumerate(bubbles):
                conn.execute("INSERT OR REPLACE INTO cursorDiskKV VALUES (?, ?)",
                             (f"bubbleId:{cid}:b{i}", json.dumps({"type": kind, "text": text})))
        conn.commit()
    finally:
        conn.close()
