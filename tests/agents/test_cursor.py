"""Cursor: agent transcripts, the read-only chat database, the stop hook, and
`rune install cursor`."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from rune_mcp.agents import cursor
from rune_mcp.agents.base import InstallTarget, SkipEventError
from rune_mcp.capture import parse_path, parse_text
from rune_mcp.config import Settings
from rune_mcp.errors import ConfigError, ParseError


def _write(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def test_cursor_agent_transcript_jsonl() -> None:
    lines = [
        {"role": "user", "message": {"content": [
            {"type": "text", "text": "<user_query>\nrename the util module\n</user_query>"}]}},
        {"role": "assistant", "message": {"content": [
            {"type": "text", "text": "Renaming."},
            {"type": "tool_use", "id": "c1", "name": "run_terminal_cmd",
             "input": {"command": "git mv util.py utils.py"}}]}},
        {"role": "user", "message": {"content": [
            {"type": "tool_result", "tool_use_id": "c1", "content": "ok"}]}},
    ]
    traj = parse_text("\n".join(json.dumps(x) for x in lines))
    assert traj.format == "cursor" and traj.task == "rename the util module"
    assert [s.kind for s in traj.steps] == ["user", "assistant", "tool_call", "tool_result"]


def _vscdb(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE cursorDiskKV (key TEXT UNIQUE ON CONFLICT REPLACE, value BLOB)")
    old = {"composerId": "old", "lastUpdatedAt": 1, "conversation": [
        {"bubbleId": "x", "type": 1, "text": "an older chat"}]}
    new = {"composerId": "new", "lastUpdatedAt": 2, "fullConversationHeadersOnly": [
        {"bubbleId": "b1", "type": 1}, {"bubbleId": "b2", "type": 2}, {"bubbleId": "gone"}]}
    rows = [
        ("composerData:old", json.dumps(old)),
        ("composerData:new", json.dumps(new)),
        ("bubbleId:new:b1", json.dumps({"type": 1, "text": "add retries to the client"})),
        ("bubbleId:new:b2", json.dumps({
            "type": 2, "text": "Adding retries.", "toolFormerData": {
                "name": "edit_file", "toolCallId": "t1",
                "rawArgs": json.dumps({"target_file": "client.py", "code_edit": "retries=3"}),
                "result": json.dumps({"diff": "+retries=3"}), "status": "completed"}})),
    ]
    conn.executemany("INSERT INTO cursorDiskKV VALUES (?, ?)", rows)
    conn.commit()
    conn.close()


def test_cursor_state_vscdb_is_read_only_and_picks_the_latest_chat(tmp_path: Path) -> None:
    folder = tmp_path / "globalStorage"
    folder.mkdir()
    db = folder / "state.vscdb"
    _vscdb(db)
    before = db.read_bytes()
    db.chmod(stat.S_IRUSR)
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)  # no journal could be created here
    try:
        traj = parse_path(db)
    finally:
        folder.chmod(stat.S_IRWXU)
        db.chmod(stat.S_IRUSR | stat.S_IWUSR)
    assert db.read_bytes() == before
    assert sorted(os.listdir(folder)) == ["state.vscdb"]
    assert traj.format == "cursor" and traj.session_id == "new"
    assert traj.task == "add retries to the client"
    assert [s.kind for s in traj.steps] == ["user", "assistant", "tool_call", "tool_result"]
    assert traj.steps[2].input == {"target_file": "client.py", "code_edit": "retries=3"}
    assert traj.stats["missing_bubbles"] == 1


def test_sqlite_file_that_is_not_cursor_is_a_clear_error(tmp_path: Path) -> None:
    db = tmp_path / "other.db"
    sqlite3.connect(db).execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(ParseError, match="not a Cursor state.vscdb"):
        parse_path(db)


def test_conversations_for_the_watcher(tmp_path: Path) -> None:
    db = tmp_path / "state.vscdb"
    _vscdb(db)
    assert sorted(cursor.conversations(db)) == [("new", 3, 0.002), ("old", 1, 0.001)]


def test_watched_places(settings: Settings, tmp_path: Path) -> None:
    db = tmp_path / "cursor-db" / "state.vscdb"
    chats, database = cursor.places(settings.with_overrides(cursor_state_db=db))
    root = settings.cursor_dir / "projects"
    found = chats.match(root, root / "home-dev-app" / "agent-transcripts" / "c1" / "c1.jsonl")
    assert found is not None and (found.kind, found.group) == ("main", "cursor:home-dev-app")
    assert chats.match(root, root / "home-dev-app" / "other" / "c1.jsonl") is None
    assert (database.root, database.depth) == (db.parent, 0)
    for name in ("state.vscdb", "state.vscdb-wal"):
        hit = database.match(db.parent, db.parent / name)
        assert hit is not None and (hit.fmt, hit.kind) == ("cursor-db", "database")
    assert database.match(db.parent, db.parent / "other.db") is None


def test_stop_hook(settings: Settings) -> None:
    job = cursor.hook_job({"hook_event_name": "stop", "conversation_id": "c1"}, settings)
    assert (job.path, job.session_id, job.delay, job.fmt) == (
        None, "c1", settings.idle_seconds, "auto")  # found by id in the agents' folders
    job = cursor.hook_job({"transcript_path": "/t/c1.jsonl"}, settings)
    assert job.path == Path("/t/c1.jsonl")
    with pytest.raises(SkipEventError, match="does not end a session"):
        cursor.hook_job({"hook_event_name": "afterFileEdit"}, settings)
    with pytest.raises(SkipEventError, match="no agent transcript"):
        cursor.hook_job({"hook_event_name": "stop"}, settings)


def test_cursor_both_scopes(settings: Settings, tmp_path: Path) -> None:
    project = tmp_path / "app"
    hooks = project / ".cursor" / "hooks.json"
    _write(hooks, {"version": 1, "hooks": {"stop": [{"command": "./lint.sh"}],
                                           "afterFileEdit": [{"command": "fmt"}]}})
    cursor.install(InstallTarget(settings, "project", project))
    cursor.install(InstallTarget(settings, "project", project))
    data = json.loads(hooks.read_text())
    assert data["hooks"]["afterFileEdit"] == [{"command": "fmt"}]
    assert data["hooks"]["stop"][0] == {"command": "./lint.sh"} and len(data["hooks"]["stop"]) == 2
    server = json.loads((project / ".cursor" / "mcp.json").read_text())["mcpServers"]["rune"]
    assert "type" not in server and server["args"][-1] == "serve"
    cursor.uninstall(InstallTarget(settings, "project", project))
    assert json.loads(hooks.read_text())["hooks"]["stop"] == [{"command": "./lint.sh"}]

    cursor.install(InstallTarget(settings, "user", project))
    assert (settings.cursor_dir / "mcp.json").exists() and (settings.cursor_dir / "hooks.json").exists()
    assert cursor.uninstall(InstallTarget(settings, "user", project))
    assert cursor.uninstall(InstallTarget(settings, "user", project)) == [
        "nothing of Rune's was installed for this scope"
    ]


def test_unparsable_config_is_refused_not_overwritten(settings: Settings, tmp_path: Path) -> None:
    mcp = tmp_path / ".cursor" / "mcp.json"
    mcp.parent.mkdir()
    mcp.write_text("{ // my servers\n")
    with pytest.raises(ConfigError, match="not valid JSON"):
        cursor.install(InstallTarget(settings, "project", tmp_path))
    assert mcp.read_text() == "{ // my servers\n"
