"""What the index embeds: the task first, then a short digest of what was learned."""

from __future__ import annotations

from rune_mcp.library import embed_text_for
from rune_mcp.library.embedtext import DIGEST_CHARS, TASK_CHARS
from rune_mcp.trajectory import Episode, Step, Trajectory


def _trajectory(task: str = "Make the reports page load the last 24 hours of readings") -> Trajectory:
    steps = [
        Step(0, "user", text=task),
        Step(1, "tool_call", tool="Edit", tool_id="a",
             input={"file_path": "/home/dev/tidewater/tidewater/reports.py", "old_string": "x"}),
        Step(2, "tool_call", tool="Bash", tool_id="b",
             input={"command": "pytest -q tests/test_reports.py --maxfail=1"}),
        Step(3, "tool_result", tool_id="b", is_error=True,
             output="Traceback (most recent call last):\n  File \"reports.py\", line 3\n"
                    "AttributeError: module 'tidewater.gauges' has no attribute 'fetch'"),
    ]
    episode = Episode(attempt_step=1, action="gauges.fetch(station)",
                      error=steps[3].output or "", fix="gauges.read_window(station, hours=24)")
    return Trajectory(format="claude-code", session_id="s", task=task, steps=steps,
                      episodes=[episode])


def test_task_leads_and_digest_names_error_fix_files_commands() -> None:
    text = embed_text_for(_trajectory())
    lines = text.splitlines()
    assert lines[0] == "Make the reports page load the last 24 hours of readings"
    assert "errors: AttributeError: module 'tidewater.gauges' has no attribute 'fetch'" in text
    assert "fixes: gauges.read_window(station, hours=24)" in text
    assert "files: reports.py" in text
    assert "commands: pytest -q tests/test_reports.py" in text


def test_long_task_and_digest_are_capped() -> None:
    text = embed_text_for(_trajectory(task="word " * 1000))
    task_line, _, digest = text.partition("\n")
    assert len(task_line) <= TASK_CHARS and len(digest) <= DIGEST_CHARS


def test_plain_session_is_just_its_task() -> None:
    traj = Trajectory(format="generic", session_id="s", task="  rename   the cli flag ",
                      steps=[Step(0, "user", text="rename the cli flag")])
    assert embed_text_for(traj) == "rename the cli flag"
