"""Small agent transcripts for the watcher tests (Claude Code and Codex by `rune_mcp.capture.write`)."""

from __future__ import annotations

import json
import random
import sqlite3
from datetime import timedelta
from pathlib import Path

from rune_mcp.capture.write import START, ClaudeWriter, CodexWriter, write_jsonl


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
    session (no new task line, later times, other ids) after the line whose uuid is `parent`."""
    writer = ClaudeWriter(session, cwd, rng=random.Random(f"{session}:{start}"),
                          start=START + timedelta(hours=start), parent=parent)
    if start == 0:
        writer.user(task)
    for i in range(turns):
        writer.call("Bash", {"command": f"make step-{start}-{i}"}, f"step {i} ok")
    writer.say(f"Finished {task} part {start}.")
    return writer.json_lines()


def continue_claude(path: Path, turns: int, start: int) -> None:
    """Append `turns` more tool calls and an answer to a Claude Code transcript, chained to
    its last line as Claude Code does."""
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    last = [r for r in records if "uuid" in r][-1]
    more = claude_lines("", turns=turns, cwd=last["cwd"], session=last["sessionId"],
                        start=start, parent=last["uuid"])
    write_jsonl(path, more, append=True)


def write_lines(path: Path, lines: list[str], append: bool = False) -> Path:
    return write_jsonl(path, lines, append)


def codex_lines(task: str, cwd: str, session: str) -> list[str]:
    writer = CodexWriter(session, cwd)
    writer.user(task)
    for i in range(3):
        writer.call(["make", f"step{i}"], f"step {i} ok")
    writer.say("Done.")
    return writer.json_lines()


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
