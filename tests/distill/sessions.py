"""Hand-built trajectories for the distillation tests."""

from __future__ import annotations

from rune_mcp.trajectory import Episode, Step, Trajectory

FAILED = "readings = tidewater.gauges.fetch(station_id)"
FIXED = "readings = tidewater.gauges.read_window(station_id, hours=24)"
ERROR = ("Traceback (most recent call last):\n  File \"tidewater/reports.py\", line 18\n"
         "AttributeError: module 'tidewater.gauges' has no attribute 'fetch'")


def make_trajectory(project: str = "/home/dev/tidewater", extra: str = "") -> Trajectory:
    """Read -> failing edit -> failing test -> diagnosis -> fixing edit -> passing test."""
    edit_bad = {"file_path": "tidewater/reports.py", "old_string": "pass\n",
                "new_string": f"    {FAILED}\n"}
    edit_good = {"file_path": "tidewater/reports.py", "old_string": f"    {FAILED}\n",
                 "new_string": f"    {FIXED}\n"}
    test = {"command": "TIDEWATER_ENV=test pytest -q", "description": "Run the tests"}
    steps = [
        Step(0, "user", text="Add average_level(station_id) to tidewater/reports.py" + extra),
        Step(1, "tool_call", tool="Read", tool_id="r", input={"file_path": "tidewater/gauges.py"}),
        Step(2, "tool_result", tool_id="r", output="def read_window(station_id, *, hours): ..."),
        Step(3, "tool_call", tool="Edit", tool_id="e1", input=edit_bad),
        Step(4, "tool_result", tool_id="e1", output="updated"),
        Step(5, "tool_call", tool="Bash", tool_id="b1", input=test),
        Step(6, "tool_result", tool_id="b1", output=ERROR, is_error=True),
        Step(7, "assistant", text="gauges has no fetch; read_window(station_id, hours=24) is the API."),
        Step(8, "tool_call", tool="Edit", tool_id="e2", input=edit_good),
        Step(9, "tool_result", tool_id="e2", output="updated"),
        Step(10, "tool_call", tool="Bash", tool_id="b2", input=test),
        Step(11, "tool_result", tool_id="b2", output="1 passed in 0.19s"),
        Step(12, "assistant", text="Done."),
    ]
    episode = Episode(
        attempt_step=3, action=f"edit tidewater/reports.py:\n{FAILED}", error=ERROR,
        diagnosis="gauges has no fetch; read_window(station_id, hours=24) is the API.",
        fix_step=8, fix=f"edit tidewater/reports.py:\n{FIXED}", verify_step=11,
        verification="1 passed in 0.19s")
    return Trajectory(format="claude-code", session_id="s-1", task=steps[0].text, steps=steps,
                      project=project, agent="claude-code", episodes=[episode],
                      final_actions=[8, 10])
