"""Every real transcript beside the checkout parses into a sensible trajectory."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from rune_mcp.capture import parse_path
from rune_mcp.trajectory import Trajectory


def _kinds(traj: Trajectory) -> Counter[str]:
    return Counter(s.kind for s in traj.steps)


def test_claude_code_2_1_session_with_subagents_and_compaction(transcripts_dir: Path) -> None:
    path = transcripts_dir / "claude-code/marot-spotter/258c7280-ae70-4798-800f-63464d01a85d.jsonl"
    traj = parse_path(path)
    assert traj.format == "claude-code"
    assert traj.task == "Implement spotter-gqc"
    assert traj.session_id == "258c7280-ae70-4798-800f-63464d01a85d"
    assert traj.project == "/home/USER/projects/spotter-worktrees/spotter-gqc"
    kinds = _kinds(traj)
    assert kinds["tool_call"] == kinds["tool_result"] == 186
    assert kinds["user"] == 2  # the request and "did you push?"; injected text is skipped
    assert traj.stats["skipped:progress"] == 1333
    assert traj.stats["skipped:file-history-snapshot"] == 28
    assert traj.stats["skipped_compaction"] == 1
    assert traj.stats["skipped_compaction_agents"] == 1
    # The failing `git push` was fixed by setting the upstream branch.
    push = [e for e in traj.episodes if "git push" in e.action]
    assert push and push[0].fix is not None and "--set-upstream" in push[0].fix
    assert "no upstream branch" in push[0].error
    assert len(traj.subagents) == 1
    assert traj.subagents[0].task.startswith("What is the output contract for Claude Code hooks")
    assert traj.final_actions and all(traj.steps[i].kind == "tool_call"
                                      for i in traj.final_actions)


def test_claude_code_slash_command_task_comes_from_its_prompt(transcripts_dir: Path) -> None:
    path = transcripts_dir / ("claude-code/d-kimuson-claude-code-viewer/"
                              "1af7fc5e-8455-4414-9ccd-011d40f70b2a.jsonl")
    traj = parse_path(path)
    assert traj.task.startswith("Please analyze this codebase and create a CLAUDE.md file")
    assert traj.steps[0].kind == "user" and traj.steps[0].text == "/init"
    assert _kinds(traj)["tool_call"] == 12
    assert len(traj.steps) == 28
    assert traj.episodes == []  # the only error is a permission refusal, not a lesson


def test_claude_code_inline_sidechains_become_subagents(transcripts_dir: Path) -> None:
    path = transcripts_dir / ("claude-code/d-kimuson-claude-code-viewer/"
                              "fe5e1c67-53e7-4862-81ae-d0e013e3270b.jsonl")
    traj = parse_path(path)
    assert traj.task == "create TODO app by Next.js"
    users = [s.text for s in traj.steps if s.kind == "user"]
    assert users == ["/orchestrator create TODO app by Next.js",
                     "Thanks! Please update CLAUDE.md for current changes"]
    assert len(traj.subagents) == 5
    assert any(sub.task.startswith("Create React components") for sub in traj.subagents)
    assert sum(len(sub.episodes) for sub in traj.subagents) >= 5
    assert traj.stats["skipped:summary"] == 1


def test_claude_code_split_messages_and_edit_episode(transcripts_dir: Path) -> None:
    path = transcripts_dir / ("claude-code/d-kimuson-claude-code-viewer/"
                              "5c0375b4-57a5-4f26-b12d-d022ee4e51b7.jsonl")
    traj = parse_path(path)
    assert traj.task == "@CLAUDE.md を最新の状態にアップデートしてください"
    assert len(traj.subagents) == 2
    (episode,) = traj.episodes
    assert "has not been read yet" in episode.error
    assert episode.fix is not None and episode.fix.startswith("edit /path/to/Demo/CLAUDE.md")
    assert episode.verification is not None and "Applied 6 edits" in episode.verification


def test_codex_rollout(transcripts_dir: Path) -> None:
    traj = parse_path(transcripts_dir / "codex/simonw-sample_codex_session.jsonl")
    assert traj.format == "codex"
    assert traj.task == "Write a hello world function"
    assert traj.session_id == "test-session"
    assert traj.project == "/project"
    assert [s.kind for s in traj.steps] == ["user", "thinking", "assistant"]


def test_every_transcript_parses_round_trips_and_has_a_stable_id(transcripts_dir: Path) -> None:
    paths = sorted(transcripts_dir.rglob("*.jsonl"))
    assert len(paths) >= 7
    for path in paths:
        traj = parse_path(path)
        assert traj.task and traj.steps, path
        again = Trajectory.from_dict(traj.to_dict())
        assert again.to_dict() == traj.to_dict()
        assert parse_path(path).id == traj.id
        assert all(s.index == i for i, s in enumerate(traj.steps))


@pytest.mark.parametrize("fmt", ["codex", "cursor", "aider"])
def test_wrong_forced_format_is_a_clear_error_not_a_crash(transcripts_dir: Path, fmt: str) -> None:
    from rune_mcp.errors import ParseError

    path = transcripts_dir / "claude-code/marot-spotter/258c7280-ae70-4798-800f-63464d01a85d.jsonl"
    with pytest.raises(ParseError, match="no task found"):
        parse_path(path, fmt)
