"""What quirks are made of: fictional projects, tool calls with their results, test output.

A quirk's session is a sequence of `Call`s (what the agent ran and what came back); the
builders here write them the way Claude Code's tools report them (Read's numbered lines,
Edit's confirmation, pytest's summary line), and `code_flow` strings them into the
attempt -> error -> look -> fix -> check episode every code quirk teaches through.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Call:
    """One tool call with its result; `text` is what the assistant said before it."""

    tool: str
    input: dict[str, Any]
    output: str
    is_error: bool = False
    text: str = ""
    thinking: str = ""


@dataclass(frozen=True)
class ProbeSpec:
    """A probe as a quirk states it; the generator shuffles the choices and adds the project."""

    task: str  # what recall is asked with
    question: str  # the user's message, worded unlike the session
    prefix: str  # the start of the answer, already written
    answer: str
    distractors: tuple[str, ...]  # plausible wrong answers, the obvious guess among them
    # spans of a free answer that show the lesson / the habit it corrected (see
    # `rune_mcp.bench.answers`); written without new random draws, so a seed's sessions stay
    right_keys: tuple[str, ...] = ()
    wrong_keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class Project:
    """A fictional repository: its name, package, CLI and domain."""

    name: str
    pkg: str  # its Python package
    cli: str  # its command-line tool
    cwd: str  # where the agent works
    cfg: str  # its TOML configuration file
    entity: str  # what its code handles, and a second thing for the clean re-use
    other: str
    test_cmd: str = "pytest -q"  # replaced once a test_command quirk teaches the real one


@dataclass(frozen=True)
class Quirk:
    """One convention: what teaches it, how a later session uses it, and how it is probed."""

    kind: str
    topic: str
    knowledge: str
    calls: tuple[Call, ...]
    clean: tuple[Call, ...]
    probes: tuple[ProbeSpec, ...]
    bash_only: bool = False
    test_cmd: str | None = None  # the project's test command, for the test_command kind
    extra: dict[str, str] = field(default_factory=dict)


# --- tool-call builders ---------------------------------------------------------------------


def bash(
    command: str, output: str, error: bool = False, text: str = "", thinking: str = "", description: str = ""
) -> Call:
    args: dict[str, Any] = {"command": command}
    if description:
        args["description"] = description
    return Call("Bash", args, output, error, text, thinking)


def write(proj: Project, path: str, content: str, text: str = "") -> Call:
    full = f"{proj.cwd}/{path}"
    return Call(
        "Write", {"file_path": full, "content": content}, f"File created successfully at: {full}", False, text
    )


def edit(proj: Project, path: str, old: str, new: str, text: str = "", thinking: str = "") -> Call:
    full = f"{proj.cwd}/{path}"
    return Call(
        "Edit",
        {"file_path": full, "old_string": old, "new_string": new, "replace_all": False},
        f"The file {full} has been updated successfully.",
        False,
        text,
        thinking,
    )


def read(proj: Project, path: str, content: str, text: str = "") -> Call:
    numbered = "\n".join(f"{i + 1:6d}\u2192{line}" for i, line in enumerate(content.splitlines()))
    return Call("Read", {"file_path": f"{proj.cwd}/{path}"}, numbered, False, text)


def grep(proj: Project, pattern: str, path: str, hits: list[str], text: str = "") -> Call:
    return Call(
        "Grep",
        {"pattern": pattern, "path": f"{proj.cwd}/{path}", "output_mode": "content"},
        "\n".join(f"{path}:{line}" for line in hits),
        False,
        text,
    )


def passing(proj: Project, rng: random.Random, n: int | None = None) -> str:
    """A passing test run's output, long enough to be noise."""
    n = n or rng.randint(12, 40)
    lines = [f"tests/test_{proj.entity}_{i % 7}.py::test_case_{i} PASSED" for i in range(n)]
    return "\n".join([*lines, f"{n} passed in {rng.uniform(0.8, 9.0):.2f}s"])


def failing(proj: Project, rng: random.Random, test: str, frames: list[str], error: str) -> str:
    """A pytest failure whose last line is `error`."""
    n = rng.randint(8, 30)
    head = [f"tests/test_{proj.entity}_{i % 5}.py::test_case_{i} PASSED" for i in range(n)]
    tb = [
        f"tests/{test}.py::test_main FAILED",
        "",
        "=" * 20 + " FAILURES " + "=" * 20,
        "____ test_main ____",
        *frames,
        f"E   {error}",
        f"FAILED tests/{test}.py::test_main - {error.split(':', maxsplit=1)[0]}",
        f"1 failed, {n} passed in {rng.uniform(0.8, 9.0):.2f}s",
    ]
    return "\n".join(head + tb)


def pick(rng: random.Random, pool: list[str], k: int) -> list[str]:
    return rng.sample(pool, k)


def code_flow(
    proj: Project,
    rng: random.Random,
    path: str,
    wrong: str,
    right: str,
    error: str,
    look: Call,
    diagnosis: str,
    thinking: str,
) -> tuple[Call, ...]:
    """Write code the obvious way -> tests fail -> look -> fix -> tests pass."""
    frames = [f"{path}:{rng.randint(3, 30)}: in load", f"    {wrong.strip()}"]
    return (
        write(proj, path, wrong, "I'll add the module."),
        bash(
            proj.test_cmd,
            failing(proj, rng, f"test_{proj.entity}_new", frames, error),
            True,
            "Now the tests.",
            description="Run the test suite",
        ),
        look,
        edit(proj, path, wrong, right, diagnosis, thinking),
        bash(proj.test_cmd, passing(proj, rng), description="Run the test suite"),
    )


def clean_code(proj: Project, rng: random.Random, path: str, right: str) -> tuple[Call, ...]:
    return (
        write(proj, path, right, "Following the project's convention from last time."),
        bash(proj.test_cmd, passing(proj, rng), description="Run the test suite"),
    )
