"""The transcript writers: what they write parses back into what was written."""

from __future__ import annotations

import json
import random
from pathlib import Path

from rune_mcp.capture import parse_path, parse_text
from rune_mcp.capture.write import ClaudeWriter, CodexWriter, write_jsonl


def _claude(seed: int) -> ClaudeWriter:
    w = ClaudeWriter("s-9", "/home/dev/kest", rng=random.Random(seed))
    w.user("make the build pass", snapshot=True, permissionMode="default")
    w.call("Bash", {"command": "make"}, "cc: error: x.c\n" * 20, is_error=True, progress=True,
           thinking="the header is missing", text="Building.")
    w.call("Edit", {"file_path": "/home/dev/kest/x.c", "old_string": "a", "new_string": "b"},
           "The file has been updated.")
    w.call("Bash", {"command": "make"}, "ok")
    w.finish("Done.")
    return w


def test_same_seed_same_bytes() -> None:
    assert _claude(1).jsonl() == _claude(1).jsonl() != _claude(2).jsonl()


def test_claude_session_parses_back() -> None:
    w = _claude(0)
    lines = [json.loads(line) for line in w.jsonl().splitlines()]
    assert {line["type"] for line in lines} == {"user", "assistant", "progress", "system",
                                                "file-history-snapshot"}
    chain = {line["uuid"] for line in lines if "uuid" in line}
    assert all(line["parentUuid"] in chain for line in lines if line.get("parentUuid"))
    traj = parse_text(w.jsonl())
    assert traj.task == "make the build pass" and traj.project == "/home/dev/kest"
    assert [s.tool for s in traj.steps if s.kind == "tool_call"] == ["Bash", "Edit", "Bash"]
    failed = next(s for s in traj.steps if s.kind == "tool_result")
    assert failed.is_error and (failed.output or "").startswith("Exit code 1\ncc: error")
    (ep,) = traj.episodes
    assert ep.action == "$ make" and ep.verification == "ok"
    assert traj.stats["skipped:progress"] >= 1


def test_codex_session_parses_back(tmp_path: Path) -> None:
    w = CodexWriter("c-1", "/work/app")
    w.user("fix the build")
    w.call(["bash", "-lc", "make"], "cc: error: x.c", exit_code=2)
    w.call(["bash", "-lc", "make CFLAGS=-Iinclude"], "ok", exit_code=0)
    w.say("Fixed.")
    path = write_jsonl(tmp_path / "rollout.jsonl", w.json_lines())
    traj = parse_path(path)
    assert traj.format == "codex" and traj.task == "fix the build"
    assert traj.project == "/work/app" and traj.session_id == "c-1"
    (ep,) = traj.episodes
    assert ep.fix == "$ make CFLAGS=-Iinclude"
    write_jsonl(path, ['{"type": "event_msg", "payload": {}}'], append=True)
    assert path.read_text().count("\n") == len(w.lines) + 1
