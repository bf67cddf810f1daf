"""Codex CLI: the parser on a synthetic rollout, and where rollouts live."""

from __future__ import annotations

from rune_mcp.agents import codex
from rune_mcp.capture import parse_text
from rune_mcp.capture.write import CodexWriter
from rune_mcp.config import Settings


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


def test_rollouts_are_watched_and_name_their_project(settings: Settings) -> None:
    [place] = codex.AGENT.places(settings)
    root = settings.codex_dir / "sessions"
    found = place.match(root, root / "2025" / "09" / "01" / "rollout-2025-09-01T00-00-00-c1.jsonl")
    assert found is not None and found.group is None  # the project is in session_meta
    assert place.match(root, root / "2025" / "09" / "01" / "notes.jsonl") is None
    line = codex.AGENT.lines
    assert line({"type": "session_meta", "payload": {"cwd": "/work/app"}}) == (False, "/work/app")
    assert line({"type": "response_item", "payload": {}}) == (True, None)
    assert line({"type": "event_msg"}) == (False, None)
    assert codex.AGENT.hook is None and codex.AGENT.installer is None
