"""Claude Code: the parser on synthetic transcripts, where transcripts live, the hook events,
and `rune install claude-code` (merge, back up, stay idempotent, reverse exactly)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from capture.builders import ClaudeSession, fix_session

from rune_mcp.agents import claude_code
from rune_mcp.agents.base import InstallTarget, SkipEventError
from rune_mcp.agents.installing import is_rune_hook
from rune_mcp.capture import parse_text
from rune_mcp.config import Settings
from rune_mcp.trajectory import Trajectory

OTHER_HOOK = {"hooks": [{"type": "command", "command": "notify-send done"}]}


def _write(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


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


def _compacted(logical_parent: str | None = None) -> ClaudeSession:
    """A session compacted halfway: a failing test before the compaction, the fix after."""
    s = ClaudeSession()
    s.user("Make the order tests pass")
    s.bash("pytest -x tests/test_orders.py", "1 failed", is_error=True)
    s.compact("1. The user asked to make the order tests pass. Keep going.", logical_parent)
    s.edit("/home/dev/acme/orders.py", "connect(DSN)", "open_pool(DSN)")
    s.bash("pytest -x tests/test_orders.py", "3 passed in 0.12s")
    return s


def _commands(traj: Trajectory) -> list[object]:
    return [st.input.get("command") if st.input else None
            for st in traj.steps if st.kind == "tool_call"]


@pytest.mark.parametrize("logical_parent", [None, "7c642069-0000-4000-8000-00000000dead"],
                         ids=["logical-parent-present", "logical-parent-missing"])
def test_compacted_session_keeps_its_task_and_both_halves(logical_parent: str | None) -> None:
    traj = parse_text(_compacted(logical_parent).text())
    assert traj.task == "Make the order tests pass"
    assert _commands(traj) == ["pytest -x tests/test_orders.py", None,
                               "pytest -x tests/test_orders.py"]
    assert [st.tool for st in traj.steps if st.kind == "tool_call"] == ["Bash", "Edit", "Bash"]
    assert traj.stats["skipped_compaction"] == 1
    assert traj.stats.get("broken_links") == (1 if logical_parent else None)
    # The failure before the compaction and its fix after it make one episode.
    (episode,) = traj.episodes
    assert episode.fix is not None and "open_pool" in episode.fix


def test_compaction_boundary_naming_nothing_falls_back_to_file_order() -> None:
    s = _compacted()
    boundary = next(line for line in s.lines if line.get("subtype") == "compact_boundary")
    del boundary["logicalParentUuid"]
    traj = parse_text(s.text())
    assert traj.task == "Make the order tests pass" and len(_commands(traj)) == 3
    assert traj.stats["broken_links"] == 1


def test_compact_summary_is_never_a_step_task_or_lesson() -> None:
    traj = parse_text(_compacted("no-such-line").text())
    assert not any("continued from a previous conversation" in (st.text or "")
                   for st in traj.steps)
    # A summary written without `isCompactSummary` (the file a compaction started anew) is
    # recognised by how it opens, so the request after it is the task.
    s = ClaudeSession()
    s.compact("The user asked for retries.")
    for key in ("isCompactSummary", "isVisibleInTranscriptOnly"):
        del s.lines[-1][key]
    s.user("Now add a test for the retries")
    s.say("Added.")
    later = parse_text(s.text())
    assert later.task == "Now add a test for the retries"
    assert later.stats["skipped_compaction"] == 1


def test_damaged_middle_line_keeps_the_task_and_both_halves() -> None:
    s = fix_session()
    lines = s.text().splitlines()
    # the line carrying the edit call's result, cut short: the next line names a lost parent
    cut = next(i for i, line in enumerate(lines) if "The file has been updated." in line)
    lines[cut] = lines[cut][: len(lines[cut]) // 2]
    traj = parse_text("\n".join(lines) + "\n")
    assert traj.task == "Make the order tests pass"
    assert traj.stats["bad_lines"] == 1 and traj.stats["broken_links"] == 1
    assert [st.tool for st in traj.steps if st.kind == "tool_call"] == ["Bash", "Edit", "Bash"]
    assert traj.steps[-1].text == "Fixed: orders now use open_pool."
    assert "off_branch_lines" not in traj.stats


def test_damaged_line_after_a_rewind_keeps_the_rewound_branch_dropped() -> None:
    s = ClaudeSession()
    s.user("Add a health endpoint")
    fork = s.parent
    s.say("Abandoned answer")
    s.parent = fork
    s.say("Kept answer")
    s.bash("curl localhost/health", "ok")
    s.say("Done.")
    lines = s.text().splitlines()
    lines[-2] = "{not json"  # the result of the curl call
    traj = parse_text("\n".join(lines) + "\n")
    texts = [st.text for st in traj.steps if st.kind == "assistant"]
    assert texts == ["Kept answer", "Done."] and traj.task == "Add a health endpoint"


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


def test_watched_files_and_session_lookup(settings: Settings) -> None:
    [place] = claude_code.AGENT.places(settings)
    root = settings.claude_dir / "projects"
    assert place.root == root and place.depth is None
    main = place.match(root, root / "-home-dev-app" / "s1.jsonl")
    assert main is not None and (main.kind, main.group) == ("main", "claude-code:-home-dev-app")
    sub = place.match(root, root / "-home-dev-app" / "s1" / "subagents" / "agent-a1.jsonl")
    assert sub is not None and sub.kind == "subagent"
    compact = place.match(root, root / "-p" / "s1" / "subagents" / "agent-acompact-1.jsonl")
    assert compact is not None and compact.kind == "compaction"
    assert place.match(root, root / "-p" / "notes.txt") is None
    assert claude_code.AGENT.session_globs(settings, "s1") == [(root, "*/s1.jsonl")]
    line = claude_code.AGENT.lines
    assert line({"type": "user", "cwd": "/p", "message": {}}) == (True, "/p")
    assert line({"type": "user", "isMeta": True}) == (False, None)
    assert line({"type": "summary"}) == (False, None)


def test_hook_events(settings: Settings) -> None:
    def job(name: str, **extra: object) -> object:
        return claude_code.hook_job({"hook_event_name": name, "session_id": "s",
                                     "transcript_path": "/t/s.jsonl", **extra}, settings)

    end = claude_code.hook_job({"hook_event_name": "SessionEnd", "session_id": "s",
                                "transcript_path": "/t/s.jsonl"}, settings)
    assert (end.path, end.session_id, end.delay, end.fmt) == (
        Path("/t/s.jsonl"), "s", 0.0, "claude-code")
    stop = claude_code.hook_job({"hook_event_name": "Stop", "transcript_path": "/t/s.jsonl"},
                                settings)
    assert stop.delay == settings.idle_seconds and stop.session_id is None
    sub = claude_code.hook_job({"hook_event_name": "SubagentStop", "transcript_path": "/t/s.jsonl",
                                "agent_transcript_path": "/t/a.jsonl"}, settings)
    assert sub.path == Path("/t/s.jsonl")  # subagents only when the settings ask for them
    wide = settings.with_overrides(watch_subagents=True)
    sub = claude_code.hook_job({"hook_event_name": "SubagentStop", "transcript_path": "/t/s.jsonl",
                                "agent_transcript_path": "/t/a.jsonl"}, wide)
    assert sub.path == Path("/t/a.jsonl")
    with pytest.raises(SkipEventError, match="does not end a session"):
        job("UserPromptSubmit")
    with pytest.raises(SkipEventError, match="without transcript_path"):
        claude_code.hook_job({"hook_event_name": "Stop"}, settings)


def test_claude_project_scope_merges_backs_up_and_reverses(
    settings: Settings, tmp_path: Path
) -> None:
    project = tmp_path / "app"
    mcp = project / ".mcp.json"
    hooks = project / ".claude" / "settings.json"
    _write(mcp, {"mcpServers": {"other": {"command": "other-server"}}})
    _write(hooks, {"permissions": {"allow": ["Bash(ls)"]}, "hooks": {"Stop": [OTHER_HOOK]}})
    before = {p: json.loads(p.read_text()) for p in (mcp, hooks)}

    claude_code.install(InstallTarget(settings, "project", project, use_cli=False))
    servers = json.loads(mcp.read_text())["mcpServers"]
    assert servers["other"] == {"command": "other-server"}
    assert servers["rune"]["type"] == "stdio" and servers["rune"]["args"][-1] == "serve"
    data = json.loads(hooks.read_text())
    assert data["permissions"] == {"allow": ["Bash(ls)"]}
    assert data["hooks"]["Stop"][0] == OTHER_HOOK
    for event in ("SessionEnd", "Stop", "PreCompact"):
        commands = [h["command"] for g in data["hooks"][event] for h in g["hooks"]]
        assert sum(is_rune_hook(c) for c in commands) == 1, event
    assert json.loads((project / ".mcp.json.rune-backup").read_text()) == before[mcp]

    snapshot = {p: p.read_text() for p in (mcp, hooks)}
    done = claude_code.install(InstallTarget(settings, "project", project, use_cli=False))
    assert all(line.startswith("kept") for line in done)
    assert {p: p.read_text() for p in (mcp, hooks)} == snapshot  # idempotent

    claude_code.uninstall(InstallTarget(settings, "project", project, use_cli=False))
    assert {p: json.loads(p.read_text()) for p in (mcp, hooks)} == before


def test_claude_user_and_local_scope_without_cli(settings: Settings, tmp_path: Path) -> None:
    state = claude_code.state_file()
    _write(state, {"numStartups": 3, "projects": {"/x": {"allowedTools": []}}})
    claude_code.install(InstallTarget(settings, "user", tmp_path, use_cli=False))
    claude_code.install(InstallTarget(settings, "local", tmp_path, use_cli=False))
    data = json.loads(state.read_text())
    assert data["numStartups"] == 3 and data["projects"]["/x"] == {"allowedTools": []}
    assert "rune" in data["mcpServers"]
    assert "rune" in data["projects"][str(tmp_path.resolve())]["mcpServers"]
    assert (settings.claude_dir / "settings.json").exists()
    assert (tmp_path / ".claude" / "settings.local.json").exists()
    claude_code.uninstall(InstallTarget(settings, "user", tmp_path, use_cli=False))
    claude_code.uninstall(InstallTarget(settings, "local", tmp_path, use_cli=False))
    data = json.loads(state.read_text())
    assert "rune" not in data["mcpServers"]
    assert "hooks" not in json.loads((settings.claude_dir / "settings.json").read_text())
