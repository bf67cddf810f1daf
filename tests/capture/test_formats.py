"""Each parser on synthetic input, format detection, and the clear errors."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from capture.builders import ClaudeSession, fix_session
from rune_mcp.capture import FORMATS, detect_format, parse_path, parse_text
from rune_mcp.capture.write import CodexWriter
from rune_mcp.errors import ParseError


def test_formats_are_the_documented_five() -> None:
    assert FORMATS == ("claude-code", "codex", "cursor", "aider", "generic")


def test_claude_code_episode_and_final_actions() -> None:
    traj = parse_text(fix_session().text())
    assert traj.format == "claude-code" and traj.task == "Make the order tests pass"
    (ep,) = traj.episodes
    assert ep.action == "$ pytest -x tests/test_orders.py"
    assert "has no attribute 'connect'" in ep.error
    assert "open_pool" in ep.diagnosis
    assert ep.fix is not None and "+ acme.db.open_pool(DSN, retries=3)" in ep.fix
    assert ep.verification == "3 passed in 0.12s"
    assert [traj.steps[i].tool for i in traj.final_actions] == ["Edit", "Bash"]


def test_claude_code_truncated_last_line_is_ignored() -> None:
    text = fix_session().text()
    partial = text + '{"type": "assistant", "message": {"content": [{"type": "te'
    traj = parse_text(partial)
    assert traj.stats["incomplete_last_line"] == 1
    assert "bad_lines" not in traj.stats
    assert len(traj.steps) == len(parse_text(text).steps)


def test_claude_code_rewound_branch_is_dropped() -> None:
    s = ClaudeSession()
    s.user("Add a health endpoint")
    fork = s.parent
    s.say("Abandoned answer")
    s.parent = fork
    s.say("Kept answer")
    traj = parse_text(s.text())
    texts = [st.text for st in traj.steps if st.kind == "assistant"]
    assert texts == ["Kept answer"]
    assert traj.stats["off_branch_lines"] == 1


def test_claude_code_split_message_and_duplicate_lines_merge() -> None:
    s = ClaudeSession()
    s.user("Explain the build")
    s.say("Part one")
    dup = dict(s.lines[-1])
    s.lines.append(dup)  # the same line written twice (resumed session)
    traj = parse_text(s.text())
    assert [st.text for st in traj.steps if st.kind == "assistant"] == ["Part one"]
    assert traj.stats["duplicate_lines"] == 1


def test_claude_code_tool_use_result_string_and_image_blocks() -> None:
    s = ClaudeSession()
    s.user("Look at the screenshot")
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": "iVBORw0KGgo" * 500}}
    # The error shows only in `toolUseResult`: the result block has no `is_error`.
    s.tool_result("t1", [image], False, "Error: something")
    traj = parse_text(s.text())
    result = traj.steps[-1]
    assert result.output == "[image dropped: image/png]" and result.is_error
    assert traj.stats["dropped_images"] == 1


def test_codex_function_calls_with_exit_codes_make_an_episode() -> None:
    w = CodexWriter("c1", "/work/app")
    w.user("<environment_context>cwd</environment_context>")
    w.user("fix the build")
    w.call(["bash", "-lc", "make"], "cc: error: x.c", exit_code=2)
    w.reasoning("x.c needs the header")
    w.call(["bash", "-lc", "make CFLAGS=-Iinclude"], "ok", exit_code=0)
    w.line("event_msg", {"type": "agent_message", "message": "done"})
    traj = parse_text(w.jsonl())
    assert traj.format == "codex" and traj.task == "fix the build"
    assert traj.project == "/work/app" and traj.stats["skipped:event_msg"] == 1
    (ep,) = traj.episodes
    assert ep.action == "$ make" and ep.fix == "$ make CFLAGS=-Iinclude"
    assert ep.diagnosis == "x.c needs the header"  # thinking stands in when nothing was said


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


AIDER = """# aider chat started at 2025-01-01 09:00:00

#### old run

# aider chat started at 2025-03-04 10:11:12

> Aider v0.80.0
#### make greet() say hello

I will change it.

greet.py
```python
<<<<<<< SEARCH
    return "hi"
=======
    return "hello"
>>>>>>> REPLACE
```

> Applied edit to greet.py

#### /run pytest -q
> FAILED test_greet.py::test_name - AssertionError
> 1 failed
"""


def test_aider_history_last_run_with_edit_blocks(tmp_path: Path) -> None:
    path = tmp_path / ".aider.chat.history.md"
    path.write_text(AIDER)
    traj = parse_path(path)
    assert traj.format == "aider" and traj.task == "make greet() say hello"
    assert traj.session_id == "aider-2025-03-04-10-11-12"
    assert traj.project == str(tmp_path.resolve())
    assert traj.stats["earlier_runs"] == 1
    edit = next(s for s in traj.steps if s.kind == "tool_call" and s.tool == "Edit")
    assert edit.input == {"file_path": "greet.py", "old_string": '    return "hi"',
                          "new_string": '    return "hello"'}
    run = [s for s in traj.steps if s.tool == "shell"]
    assert run[0].input == {"command": "pytest -q"} and run[1].is_error


def test_generic_json_and_own_output_round_trip() -> None:
    doc = {"task": "tidy imports", "agent": "my-agent", "project": "/src/x", "steps": [
        {"kind": "tool_call", "tool": "Bash", "tool_id": "1", "input": {"command": "ruff ."}},
        {"kind": "tool_result", "tool_id": "1", "output": "x.py:1:1: F401 unused", "is_error": False},
        {"kind": "bogus"},
        {"kind": "tool_call", "tool": "Bash", "tool_id": "2", "input": {"command": "ruff --fix ."}},
        {"kind": "tool_result", "tool_id": "2", "output": "All checks passed!"},
    ]}
    traj = parse_text(json.dumps(doc))
    assert traj.format == "generic" and traj.agent == "my-agent"
    assert traj.steps[0].kind == "user" and traj.steps[0].text == "tidy imports"
    assert traj.stats["bad_steps"] == 1
    assert len(traj.episodes) == 1  # the linter finding counts as a failure
    again = parse_text(traj.to_json())
    assert again.task == traj.task and len(again.steps) == len(traj.steps)


def test_detection_and_errors(tmp_path: Path) -> None:
    assert detect_format(fix_session().text()) == "claude-code"
    assert detect_format(AIDER) == "aider"
    with pytest.raises(ParseError, match="supported formats are auto, claude-code"):
        parse_text("just some prose\nwith lines\n")
    with pytest.raises(ParseError, match="unknown transcript format 'vim'.*claude-code"):
        parse_text("x", "vim")
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    with pytest.raises(ParseError, match="no task found in .*empty.jsonl"):
        parse_path(empty)
    s = ClaudeSession()
    s.say("I am talking to nobody")
    with pytest.raises(ParseError, match="no task found"):
        parse_text(s.text())
    with pytest.raises(ParseError, match="does not exist"):
        parse_path(tmp_path / "missing.jsonl")


def test_bom_invalid_utf8_and_nul_lines_are_skipped_and_counted(tmp_path: Path) -> None:
    lines = fix_session().text().encode().split(b"\n")
    lines.insert(2, b'{"type": "user", "message": "\xff\xfe broken"}')
    lines.insert(3, b'{"type": "us\x00er"}')
    path = tmp_path / "s.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b"\n".join(lines))
    traj = parse_path(path)
    assert traj.task == "Make the order tests pass" and len(traj.episodes) == 1
    assert traj.stats["invalid_utf8_lines"] == 1 and traj.stats["bad_lines"] == 1


def test_huge_output_keeps_head_and_tail(tmp_path: Path) -> None:
    s = ClaudeSession()
    s.user("build it")
    s.bash("make", "start of log\n" + "compiling unit\n" * 100_000 + "BUILD OK at the end")
    traj = parse_text(s.text())
    out = traj.steps[-1].output or ""
    assert out.startswith("start of log") and out.endswith("BUILD OK at the end")
    assert "characters omitted" in out and len(out) < 17_000


def test_cli_parse_summary_and_json(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_text(fix_session().text())
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    out = subprocess.run([sys.executable, "-m", "rune_mcp", "parse", str(path)],
                         capture_output=True, text=True, env=env, check=True).stdout
    assert "task:       Make the order tests pass" in out and "episodes:   1" in out
    raw = subprocess.run([sys.executable, "-m", "rune_mcp", "parse", str(path), "--json"],
                         capture_output=True, text=True, env=env, check=True).stdout
    data = json.loads(raw)
    for key in ("format", "session_id", "project", "task", "steps", "episodes", "redactions",
                "stats"):
        assert key in data
    bad = subprocess.run([sys.executable, "-m", "rune_mcp", "parse", str(tmp_path / "nope")],
                         capture_output=True, text=True, env=env)
    assert bad.returncode == 1 and bad.stderr.startswith("rune: no transcript at")
    assert "Traceback" not in bad.stderr
