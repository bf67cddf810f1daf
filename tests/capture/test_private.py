"""`<private>...</private>`: the marked text never reaches a trajectory, in any agent's text
fields (prompts, assistant text, thinking, tool input and output), and is counted."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from capture.builders import AIDER_HISTORY, ClaudeSession
from rune_mcp.capture import parse_text
from rune_mcp.capture.private import STAT, strip_private
from rune_mcp.capture.write import CodexWriter

SECRET = "patient 4471 has condition Q"


@pytest.mark.parametrize(("text", "expected", "removed"), [
    ("no tags at all", "no tags at all", 0),
    ("a <b>tag</b> that is not ours", "a <b>tag</b> that is not ours", 0),
    ("key <private>hunter2</private> ok", "key  ok", 1),
    ("<PRIVATE>x</Private>y< private >z< /private >", "y", 2),
    ("a <private>b <private>c</private> d</private> e", "a  e", 1),  # nested
    ("a <private>b</private> c <private>d</private> e", "a  c  e", 2),
    ("keep <private>cut off by the budget", "keep ", 1),  # never closed: the rest goes
    ("opened in an earlier block</private> after", " after", 1),  # closed only: before goes
    ("multi\n<private>line\nsecret\n</private>\nend", "multi\n\nend", 1),
])
def test_strip_private(text: str, expected: str, removed: int) -> None:
    stats: Counter[str] = Counter()
    assert strip_private(text, stats) == expected
    assert stats[STAT] == removed


def _leaks(traj_json: str) -> bool:
    return "4471" in traj_json or "condition Q" in traj_json or "<private>" in traj_json


def test_claude_code_every_text_field() -> None:
    s = ClaudeSession()
    s.user(f"fix the billing export <private>{SECRET}</private> please")
    s.assistant([{"type": "thinking", "thinking": f"<private>{SECRET}</private> think"},
                 {"type": "text", "text": f"Looking. <private>{SECRET}</private>"}])
    s.bash(f"grep '<private>{SECRET}</private>' data.csv",
           f"row 1\n<private>{SECRET}</private>\nrow 3")
    s.say("Done.")
    traj = parse_text(s.text(), "claude-code")
    assert not _leaks(traj.to_json())
    assert traj.task == "fix the billing export  please"
    assert traj.stats[STAT] == 5  # prompt, thinking, text, tool input, tool output
    call = next(step for step in traj.steps if step.kind == "tool_call")
    assert call.input == {"command": "grep '' data.csv"}


def test_a_prompt_that_is_all_private_is_no_step_and_no_task() -> None:
    s = ClaudeSession()
    s.user(f"<private>{SECRET}</private>")
    s.user("now add the CSV header")
    s.say("Added.")
    traj = parse_text(s.text(), "claude-code")
    assert traj.task == "now add the CSV header"
    assert not _leaks(traj.to_json())


def test_codex_cursor_aider_and_generic() -> None:
    codex = CodexWriter("c1", "/work/app")
    codex.user(f"migrate the db <private>{SECRET}</private>")
    codex.reasoning(f"<private>{SECRET}</private>")
    codex.call(["psql", f"<private>{SECRET}</private>"], f"<private>{SECRET}</private> ok")
    codex.say("Migrated.")
    cursor = "\n".join(json.dumps(line) for line in [
        {"role": "user", "message": {"content": [
            {"type": "text", "text": f"rename util <private>{SECRET}</private>"}]}},
        {"role": "assistant", "message": {"content": [
            {"type": "text", "text": f"<private>{SECRET}</private>Renaming."},
            {"type": "tool_use", "id": "t1", "name": "run_terminal_cmd",
             "input": {"command": f"echo <private>{SECRET}</private>"}}]}},
        {"role": "user", "message": {"content": [
            {"type": "tool_result", "tool_use_id": "t1",
             "content": f"<private>{SECRET}</private>"}]}},
    ])
    aider = AIDER_HISTORY.replace("#### make greet() say hello",
                                  f"#### make greet() say hello <private>{SECRET}</private>")
    generic = json.dumps({"task": f"tidy <private>{SECRET}</private>", "steps": [
        {"kind": "user", "text": f"tidy <private>{SECRET}</private>"},
        {"kind": "tool_call", "tool": "Bash", "tool_id": "t",
         "input": {"command": f"<private>{SECRET}</private>"}},
        {"kind": "tool_result", "tool_id": "t", "output": f"<private>{SECRET}</private>"},
    ]})
    for fmt, text, spans in (("codex", codex.jsonl(), 4), ("cursor", cursor, 4),
                             ("aider", aider, 1), ("generic", generic, 4)):
        traj = parse_text(text, fmt)
        assert not _leaks(traj.to_json()), fmt
        assert traj.stats[STAT] >= spans, fmt


def test_private_text_is_stripped_before_redaction_sees_it() -> None:
    """A key inside the tags is gone, not redacted: no placeholder says a key was there."""
    s = ClaudeSession()
    s.user("deploy with <private>AKIAIOSFODNN7EXAMPLE</private> today")
    s.say("Deploying.")
    traj = parse_text(s.text(), "claude-code")
    assert traj.task == "deploy with  today"
    assert traj.redactions == {}
