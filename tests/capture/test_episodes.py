"""Episode detection and final working actions on small hand-made sessions."""

from __future__ import annotations

from capture.builders import ClaudeSession
from rune_mcp.capture import parse_text
from rune_mcp.capture.episodes import action_key, is_failure, render_action
from rune_mcp.trajectory import Step


def test_repeated_failures_collapse_into_one_episode_ending_at_the_pass() -> None:
    s = ClaudeSession()
    s.user("fix the parser")
    s.bash("pytest tests/test_parser.py", "FAILED test_parser.py::test_a\n1 failed", True)
    s.edit("/p/parser.py", "a", "b")
    s.bash("pytest tests/test_parser.py", "E   KeyError: 'x'\n1 failed", True)
    s.say("The key is missing from the defaults.")
    s.edit("/p/parser.py", "b", "c")
    s.bash("pytest tests/test_parser.py", "1 passed")
    traj = parse_text(s.text())
    (ep,) = traj.episodes
    assert ep.attempt_step == 1
    assert "KeyError" in ep.error  # the error the final fix answered
    assert ep.diagnosis == "The key is missing from the defaults."
    assert ep.fix is not None and "+ c" in ep.fix
    assert ep.verification == "1 passed"


def test_changed_flag_is_the_fix() -> None:
    s = ClaudeSession()
    s.user("push the branch")
    s.bash("git push", "fatal: The current branch has no upstream branch.", True)
    s.bash("git push -u origin work", "branch 'work' set up to track 'origin/work'.")
    (ep,) = parse_text(s.text()).episodes
    assert ep.fix == "$ git push -u origin work"
    assert ep.verification is not None and "set up to track" in ep.verification


def test_failure_detected_from_output_without_error_flag() -> None:
    s = ClaudeSession()
    s.user("run the script")
    s.bash("python run.py", 'Traceback (most recent call last):\n  File "run.py"\nNameError: x')
    s.edit("/p/run.py", "x", "y")
    s.bash("python run.py", "done")
    (ep,) = parse_text(s.text()).episodes
    assert "NameError" in ep.error and ep.verification == "done"


def test_refusals_and_unfixed_errors_are_not_episodes() -> None:
    s = ClaudeSession()
    s.user("write the file")
    s.call("Write", {"file_path": "/p/a.txt", "content": "x"},
           "Claude requested permissions to write to /p/a.txt, but you haven't granted it yet.",
           True)
    s.bash("make deploy", "make: *** No rule to make target 'deploy'.\nError 2", True)
    s.say("There is no deploy target; stopping here.")
    assert parse_text(s.text()).episodes == []


def test_session_without_errors_yields_final_working_actions() -> None:
    s = ClaudeSession()
    s.user("add a readme and run the tests")
    s.bash("ls", "src tests")
    s.call("Write", {"file_path": "/p/README.md", "content": "# p"}, "File created")
    s.bash("pytest -q", "1 failed", True)
    s.bash("pytest -q", "2 passed")
    s.bash("pytest -q", "2 passed")
    traj = parse_text(s.text())
    actions = [render_action(traj.steps[i]) for i in traj.final_actions]
    assert actions == ["write /p/README.md:\n# p", "$ pytest -q"]
    assert traj.steps[traj.final_actions[-1]].index == len(traj.steps) - 2  # the last run


def test_action_keys_and_failure_rules() -> None:
    bash = Step(0, "tool_call", tool="Bash", input={"command": "cd app && python -m pytest -x"})
    assert action_key(bash) == "cmd:python -m pytest"
    shell = Step(0, "tool_call", tool="shell", input={"command": ["bash", "-lc", "npm test"]})
    assert action_key(shell) == "cmd:npm test"
    edit = Step(0, "tool_call", tool="Edit", input={"file_path": "/a.py"})
    assert action_key(edit) == "file:/a.py"
    read = Step(0, "tool_call", tool="Read", input={"file_path": "/a.py"})
    ok = Step(1, "tool_result", output="error: this line is in the file")
    assert not is_failure(read, ok)  # reading text that mentions an error is no failure
    lint = Step(1, "tool_result", output="app.py:3:1: F401 'os' imported but unused")
    assert is_failure(bash, lint)
    assert not is_failure(bash, Step(1, "tool_result", output="0 errors, 12 passed"))
