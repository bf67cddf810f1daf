"""Quirks: project conventions a model cannot guess, each with the session steps that teach it.

The memory benchmark needs knowledge that lives only in a session. Each kind of quirk
(`quirks.code`: learned by writing code; `quirks.commands`: at the command line) draws a
fictional convention (a renamed API, a required argument, a renamed CLI flag, a config key,
...) from small pools with a seeded `random.Random`, and returns:

- `calls`: how an agent learns it: the obvious attempt, the error it gets, a look at the
  project's docs or code, the fix, and the check that passes;
- `clean`: how a later session that already knows it does it right the first time (this is
  how sessions of one project depend on each other);
- `probes`: questions asking for the same knowledge in other words, with the answer, the
  obvious wrong guess and other plausible distractors.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from rune_mcp.bench.quirks.calls import Call, ProbeSpec, Project, Quirk, bash, edit, passing, read
from rune_mcp.bench.quirks.code import (
    banned_module,
    file_layout,
    renamed_api,
    required_argument,
    wrapped_api,
)
from rune_mcp.bench.quirks.commands import build_command, cli_flag, config_key, error_code, test_command

__all__ = ["KINDS", "Call", "ProbeSpec", "Project", "Quirk", "bash", "edit", "passing", "read"]

# The generator shuffles this order with its seed: a new kind goes at the end, or the same
# seed would no longer give the same dataset.
KINDS: dict[str, Callable[[Project, random.Random], Quirk]] = {
    "renamed_api": renamed_api,
    "wrapped_api": wrapped_api,
    "required_argument": required_argument,
    "cli_flag": cli_flag,
    "test_command": test_command,
    "build_command": build_command,
    "config_key": config_key,
    "file_layout": file_layout,
    "error_code": error_code,
    "banned_module": banned_module,
}
