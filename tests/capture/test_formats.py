"""What capture does for every format: detection, the clear errors, bad bytes, budgets, the
`rune parse` command. Each agent's parser is tested in tests/agents/."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from capture.builders import AIDER_HISTORY, ClaudeSession, fix_session
from rune_mcp.capture import FORMATS, detect_format, parse_path, parse_text
from rune_mcp.errors import ParseError


def test_formats_are_the_documented_five() -> None:
    assert FORMATS == ("claude-code", "codex", "cursor", "aider", "generic")


def test_detection_and_errors(tmp_path: Path) -> None:
    assert detect_format(fix_session().text()) == "claude-code"
    assert detect_format(AIDER_HISTORY) == "aider"
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
