"""Every real transcript beside the checkout parses into a sensible trajectory."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from rune_mcp.capture import parse_path
from rune_mcp.trajectory import Trajectory

MAROT = "claude-code/marot-spotter/258c7280-ae70-4798-800f-63464d01a85d.jsonl"
COMPACTED_AT = "2026-02-11T21:18:41.543Z"  # the session's one compact_boundary (auto)


def _kinds(traj: Trajectory) -> Counter[str]:
    return Counter(s.kind for s in traj.steps)


def test_claude_code_2_1_session_with_subagents_and_compaction(transcripts_dir: Path) -> None:
    traj = parse_path(transcripts_dir / MAROT)
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


def _halves(traj: Trajectory) -> tuple[int, int]:
    """Tool calls before and after the compaction."""
    calls = [s.timestamp or "" for s in traj.steps if s.kind == "tool_call"]
    return sum(t < COMPACTED_AT for t in calls), sum(t > COMPACTED_AT for t in calls)


def test_compacted_real_session_keeps_its_task_and_both_halves(transcripts_dir: Path) -> None:
    traj = parse_path(transcripts_dir / MAROT)
    assert traj.task == "Implement spotter-gqc"  # asked before the compaction
    assert _halves(traj) == (124, 62)
    assert not any("continued from a previous conversation" in (s.text or "")
                   for s in traj.steps)  # the compact summary is neither a step nor the task
    assert "broken_links" not in traj.stats  # this boundary names a line the file holds


def _variant(transcripts_dir: Path, tmp_path: Path, edit: Callable[[list[str]], None]) -> Path:
    """The real session with its lines edited (its subagents left behind)."""
    lines = (transcripts_dir / MAROT).read_text(encoding="utf-8").splitlines()
    edit(lines)
    path = tmp_path / "session.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_real_compaction_naming_a_missing_line_falls_back_to_file_order(
    transcripts_dir: Path, tmp_path: Path
) -> None:
    def lose_logical_parent(lines: list[str]) -> None:
        i = next(i for i, line in enumerate(lines) if '"compact_boundary"' in line)
        record = json.loads(lines[i])
        record["logicalParentUuid"] = "00000000-0000-4000-8000-000000000000"
        lines[i] = json.dumps(record)

    traj = parse_path(_variant(transcripts_dir, tmp_path, lose_logical_parent))
    assert traj.task == "Implement spotter-gqc" and _halves(traj) == (124, 62)
    assert traj.stats["broken_links"] == 1


def test_real_session_with_a_damaged_middle_line_keeps_everything_else(
    transcripts_dir: Path, tmp_path: Path
) -> None:
    whole = parse_path(transcripts_dir / MAROT)

    def damage(lines: list[str]) -> None:
        # an assistant text line halfway through the first half, cut short
        i = next(i for i, line in enumerate(lines[600:], 600)
                 if '"type":"assistant"' in line and '"type":"text"' in line)
        lines[i] = lines[i][:200]

    traj = parse_path(_variant(transcripts_dir, tmp_path, damage))
    assert traj.task == whole.task and traj.stats["bad_lines"] == 1
    assert traj.stats["broken_links"] == 1
    assert _halves(traj) == _halves(whole)
    assert len(traj.steps) == len(whole.steps) - 1  # only the damaged line's text is gone


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

    path = transcripts_dir / MAROT
    with pytest.raises(ParseError, match="no task found"):
        parse_path(path, fmt)
