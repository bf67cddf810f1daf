"""The lesson compiler: what is trained, what is not, and what each switch removes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from distill.sessions import FAILED, FIXED, make_trajectory
from rune_mcp.config import Settings
from rune_mcp.distill.lessons import (
    Example,
    _relative,
    apply_budget,
    approx_tokens,
    compile_lessons,
    render_action,
    summary,
)
from rune_mcp.distill.text import clip, error_line
from rune_mcp.trajectory import Step, Trajectory


def _answers(examples: list[Example]) -> str:
    return "\n".join(ex.answer for ex in examples)


def test_fix_is_trained_and_failed_attempt_is_never_an_answer(
    trajectory: Trajectory, settings: Settings
) -> None:
    examples = compile_lessons(trajectory, settings)
    kinds = summary(examples)
    assert kinds["episode"] == 1 and kinds["attempt"] == 1 and kinds["final"] >= 1
    assert kinds["qa"] >= 4
    answers = _answers(examples)
    assert "read_window(station_id, hours=24)" in answers
    # The failed call only appears in prompts (as context) or as an explicitly wrong thing.
    for ex in examples:
        if ex.kind in ("episode", "attempt", "final"):
            assert FAILED not in ex.answer, ex
    episode = next(ex for ex in examples if ex.kind == "episode")
    assert FAILED in episode.prompt and "has no attribute 'fetch'" in episode.prompt
    assert FIXED in episode.answer and "read_window" in episode.answer
    attempt = next(ex for ex in examples if ex.kind == "attempt")
    assert attempt.negative is not None and FAILED in attempt.negative


def test_every_prompt_names_the_project(trajectory: Trajectory, settings: Settings) -> None:
    examples = compile_lessons(trajectory, settings)
    assert examples and all("tidewater" in ex.prompt for ex in examples)


def test_qa_is_filled_from_the_sessions_own_identifiers(
    trajectory: Trajectory, settings: Settings
) -> None:
    qa = [ex for ex in compile_lessons(trajectory, settings) if ex.kind == "qa"]
    questions = "\n".join(ex.prompt for ex in qa)
    assert "AttributeError: module 'tidewater.gauges' has no attribute 'fetch'" in questions
    assert f"`{FAILED}`" in questions
    assert any("tidewater.gauges.read_window" in ex.answer for ex in qa)
    # The command the session ran, asked by its own description.
    assert any("run the tests" in ex.prompt and "TIDEWATER_ENV=test pytest -q" in ex.answer
               for ex in qa)
    assert len({ex.prompt for ex in qa}) == len(qa)  # several phrasings, no duplicates


def test_final_examples_hold_only_working_actions(
    trajectory: Trajectory, settings: Settings
) -> None:
    final = [ex for ex in compile_lessons(trajectory, settings) if ex.kind == "final"]
    text = _answers(final)
    assert FIXED in text and "$ TIDEWATER_ENV=test pytest -q" in text
    assert FAILED not in text  # an edit's replaced text is never part of an answer


@pytest.mark.parametrize("switch, kinds", [
    ("lessons_episodes", {"episode", "attempt"}),
    ("lessons_qa", {"qa"}),
    ("lessons_final", {"final"}),
])
def test_each_part_can_be_switched_off(
    trajectory: Trajectory, settings: Settings, switch: str, kinds: set[str]
) -> None:
    examples = compile_lessons(trajectory, settings.with_overrides(**{switch: False}))
    assert examples and not kinds & {ex.kind for ex in examples}


def test_budget_keeps_the_most_informative_examples(
    trajectory: Trajectory, settings: Settings
) -> None:
    full = compile_lessons(trajectory, settings)
    smallest = min(full, key=lambda ex: ex.priority)
    budget = sum(approx_tokens(ex.prompt) + approx_tokens(ex.answer) + 8 for ex in full) - 1
    kept = apply_budget(full, budget, approx_tokens)
    assert len(kept) < len(full)
    assert any(ex.kind == "attempt" for ex in kept)
    assert smallest not in kept or len(kept) == len(full) - 1
    assert [full.index(ex) for ex in kept] == sorted(full.index(ex) for ex in kept)


def test_long_session_stays_within_the_token_budget(settings: Settings) -> None:
    traj = make_trajectory(extra=" and more." * 3)
    padding = [Step(100 + i, "tool_call", tool="Bash", tool_id=f"x{i}",
                    input={"command": f"echo step {i} " + "x" * 400}) for i in range(60)]
    traj.steps.extend(padding)
    traj.final_actions = [*traj.final_actions, *(s.index for s in padding)]
    examples = compile_lessons(traj, settings.with_overrides(lesson_token_budget=1500))
    used = sum(approx_tokens(ex.prompt) + approx_tokens(ex.answer) + 8 for ex in examples)
    assert used <= 1500
    assert {"attempt", "episode"} <= {ex.kind for ex in examples}


def test_project_name_comes_from_its_folder(settings: Settings) -> None:
    examples = compile_lessons(make_trajectory(project="/srv/code/harbor-api/"), settings)
    assert all("harbor-api" in ex.prompt for ex in examples)


def test_relative_paths_keep_every_other_field() -> None:
    root = "/home/dev/tidewater"
    ex = Example("rehearsal", f"Open {root}/a.py", f"edit {root}/a.py:\nx = 1", 0.42,
                 negative=f"edit {root}/a.py:\nx = 0", steps=(3, 8), open_end=True)
    rel = _relative(ex, root)
    assert (rel.prompt, rel.answer, rel.negative) == ("Open a.py", "edit a.py:\nx = 1",
                                                      "edit a.py:\nx = 0")
    rewritten = {"prompt", "answer", "negative"}
    for f in dataclasses.fields(Example):  # a field added later is covered too
        if f.name not in rewritten:
            assert getattr(rel, f.name) == getattr(ex, f.name), f.name
    assert _relative(dataclasses.replace(ex, negative=None), root).negative is None


def test_helpers() -> None:
    assert clip("a" * 10, 6).startswith("aa") and len(clip("a" * 100, 20)) <= 24
    assert error_line("Traceback\n  x\nKeyError: 'x'\n") == "KeyError: 'x'"
    assert error_line("all good\nbye") == "bye"
    bash = Step(0, "tool_call", tool="Bash", input={"command": "make test"})
    assert render_action(bash) == "$ make test"
    write = Step(1, "tool_call", tool="Write", input={"file_path": "a.py", "content": "x = 1"})
    assert render_action(write) == "write a.py:\nx = 1"


def test_sample_session_bundled(tmp_path: Path) -> None:
    from rune_mcp.distill.probes import load_probes, sample_paths

    session, probes_file = sample_paths()
    assert session.is_file()
    probes = load_probes(probes_file)
    assert probes.session == session and len(probes.probes) >= 3


def test_the_error_line_names_the_problem_not_the_summary() -> None:
    pytest_out = ("tests/a.py::test_x FAILED\nE   orla.sandbox.EgressBlocked: no network\n"
                  "FAILED tests/a.py::test_x - orla.sandbox.EgressBlocked\n1 failed, 9 passed in 7.40s")
    assert error_line(pytest_out) == "orla.sandbox.EgressBlocked: no network"
    lint = "Exit code 1\npkg/codec.py:1:1: BAN001 `random` is banned\nFound 1 error."
    assert error_line(lint) == "pkg/codec.py:1:1: BAN001 `random` is banned"
    # an exception line still comes first, and a plain error-looking line after the rest
    assert error_line("E   assert 1 == 2\nValueError: bad") == "ValueError: bad"
    assert error_line("npm ERR! Missing script: \"build\"\nsee the log") == 'npm ERR! Missing script: "build"'
