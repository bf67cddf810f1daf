"""Which agents take a session-start note and how, and `rune install` / `rune uninstall` of
Claude Code's `SessionStart` hook."""

from __future__ import annotations

import json
from pathlib import Path

from rune_mcp import agents
from rune_mcp.agents import claude_code, cursor
from rune_mcp.agents.base import CLAUDE_START, additional_context, event_folder
from rune_mcp.agents.installing import hook_command, is_rune_hook
from rune_mcp.config import Settings
from rune_mcp.server.install import install, uninstall


def test_only_claude_code_has_a_session_start_event() -> None:
    """Cursor's hooks have no event that starts a chat and reaches the model; Codex, Aider
    and the generic format have no hooks at all (docs/cursor.md, docs/configuration.md)."""
    assert {a.name for a in agents.AGENTS if a.start_note is not None} == {"claude-code"}
    assert claude_code.AGENT.start_note is CLAUDE_START
    assert CLAUDE_START.events == frozenset({"SessionStart"})


def test_the_event_names_the_folder_and_the_reply_is_additional_context() -> None:
    assert CLAUDE_START.project({"cwd": "/home/dev/app", "source": "resume"}) == "/home/dev/app"
    for bad in ({}, {"cwd": "relative"}, {"cwd": ""}, {"cwd": 3}, {"cwd": [4]}):
        assert CLAUDE_START.project(bad) is None, bad
    assert event_folder("workspace_roots")({"workspace_roots": ["/w", "/x"]}) == "/w"
    assert event_folder("workspace_roots")({"workspace_roots": []}) is None
    reply = json.loads(additional_context("Rune remembers “2” sessions.",
                                          {"hook_event_name": "SessionStart"}))
    assert reply == {"hookSpecificOutput": {"hookEventName": "SessionStart",
                                            "additionalContext": "Rune remembers “2” sessions."}}


def test_hook_jobs_carry_the_project_the_event_names(settings: Settings) -> None:
    """Checked against exclusions and pauses before the transcript is even opened."""
    job = cursor.hook_job({"hook_event_name": "stop", "conversation_id": "c1",
                           "workspace_roots": ["/home/dev/app"]}, settings)
    assert job.project == "/home/dev/app"
    job = claude_code.hook_job({"hook_event_name": "Stop", "transcript_path": "/t/s.jsonl",
                                "cwd": "/home/dev/app"}, settings)
    assert job.project == "/home/dev/app"


def _rune_hooks(path: Path) -> dict[str, int]:
    hooks = json.loads(path.read_text()).get("hooks", {})
    return {event: sum(is_rune_hook(h.get("command")) for g in groups for h in g["hooks"])
            for event, groups in hooks.items()}


def test_install_adds_session_start_and_uninstall_removes_it(
    settings: Settings, tmp_path: Path
) -> None:
    hooks = tmp_path / ".claude" / "settings.json"
    done = install(settings, "claude-code", "project", tmp_path, use_cli=False)
    assert "hooks SessionStart, SessionEnd, Stop, PreCompact" in done[1]
    assert _rune_hooks(hooks) == {"SessionStart": 1, "SessionEnd": 1, "Stop": 1, "PreCompact": 1}
    [group] = json.loads(hooks.read_text())["hooks"]["SessionStart"]
    assert "matcher" not in group  # every source: startup, resume, clear, compact
    assert group["hooks"] == [{"type": "command", "command": hook_command("claude-code"),
                               "timeout": 10}]
    before = hooks.read_text()
    install(settings, "claude-code", "project", tmp_path, use_cli=False)
    assert hooks.read_text() == before  # idempotent
    uninstall(settings, "claude-code", "project", tmp_path, use_cli=False)
    assert "hooks" not in json.loads(hooks.read_text())
    assert uninstall(settings, "claude-code", "project", tmp_path, use_cli=False) == [
        "nothing of Rune's was installed for this scope"]


def test_an_older_install_gains_session_start_and_keeps_other_hooks(
    settings: Settings, tmp_path: Path
) -> None:
    hooks = tmp_path / ".claude" / "settings.json"
    theirs = {"hooks": [{"type": "command", "command": "echo hello"}]}
    ours = {"hooks": [{"type": "command", "command": hook_command("claude-code"), "timeout": 10}]}
    hooks.parent.mkdir(parents=True)
    hooks.write_text(json.dumps({"hooks": {"SessionStart": [theirs],
                                           "SessionEnd": [ours], "Stop": [ours]}}))
    install(settings, "claude-code", "project", tmp_path, use_cli=False)
    data = json.loads(hooks.read_text())["hooks"]
    assert data["SessionStart"][0] == theirs and len(data["SessionStart"]) == 2
    assert _rune_hooks(hooks)["SessionStart"] == 1
    uninstall(settings, "claude-code", "project", tmp_path, use_cli=False)
    assert json.loads(hooks.read_text())["hooks"] == {"SessionStart": [theirs]}
