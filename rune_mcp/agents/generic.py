"""The generic JSON format, for agents Rune has no parser for and for manual calls.

One JSON document: `{"task": "...", "steps": [{"kind": "user", "text": "..."}, ...]}` with
optional `session_id`, `project`, `agent`, `started`, `ended`. A step's `kind` is one of
`user`, `assistant`, `thinking`, `tool_call` (`tool`, `tool_id`, `input` object, optional
`family`: read, edit, run, search or other) or `tool_result` (`tool_id`, `output`,
`is_error`); `timestamp` is optional everywhere. A trajectory written by `rune parse --json`
is itself valid input. See docs/trajectory.md. Nothing writes these files on its own, so the
format has no folders, hooks or install.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rune_mcp.agents.base import Agent, Sample
from rune_mcp.capture.base import Builder, as_text
from rune_mcp.errors import ParseError
from rune_mcp.trajectory import STEP_KINDS, TOOL_FAMILIES, Step, ToolFamily, Trajectory

FORMAT = "generic"


def looks_like(sample: Sample) -> bool:
    """Detection: the whole text is one JSON object with a `steps` list."""
    data = sample.document
    return isinstance(data, dict) and isinstance(data.get("steps"), list)


def parse(text: str, name: str, source: Path | None = None) -> Trajectory:
    try:
        data = json.loads(text.lstrip("\ufeff"))
    except (ValueError, RecursionError) as exc:
        raise ParseError(f"{name} is not valid JSON ({exc}); the generic format is one JSON "
                         'object {"task": ..., "steps": [...]}.') from None
    if not isinstance(data, dict):
        raise ParseError(f'{name} is not a JSON object; the generic format is {{"task": ..., '
                         '"steps": [...]}.')
    builder = Builder(FORMAT, name, agent=_str(data.get("agent")) or "generic")
    builder.session_id = _str(data.get("session_id"))
    builder.project = _str(data.get("project"))
    task = data.get("task")
    if isinstance(task, str) and task.strip():
        builder.user_request_text(task)
    steps = data.get("steps")
    for raw in steps if isinstance(steps, list) else []:
        _step(builder, raw)
    if builder.task and not any(s.kind == "user" for s in builder.steps):
        builder.steps.insert(0, Step(index=0, kind="user", text=builder.task))
        for i, step in enumerate(builder.steps):
            step.index = i
    builder.started = _str(data.get("started")) or builder.started
    builder.ended = _str(data.get("ended")) or builder.ended
    return builder.finish()


def _step(builder: Builder, raw: Any) -> None:
    if not isinstance(raw, dict) or raw.get("kind") not in STEP_KINDS:
        builder.stats["bad_steps"] += 1
        return
    kind = raw["kind"]
    ts = raw.get("timestamp")
    if kind == "user":
        builder.user(as_text(raw.get("text")), ts)
    elif kind == "assistant":
        builder.assistant(as_text(raw.get("text")), ts)
    elif kind == "thinking":
        builder.thinking(as_text(raw.get("text")), ts)
    elif kind == "tool_call":
        builder.tool_call(_str(raw.get("tool")) or "unknown", _str(raw.get("tool_id")),
                          raw.get("input"), ts, family=_family(raw.get("family")))
    else:
        builder.tool_result(_str(raw.get("tool_id")), as_text(raw.get("output")),
                            raw.get("is_error") is True, ts, tool=_str(raw.get("tool")))


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _family(value: Any) -> ToolFamily | None:
    for family in TOOL_FAMILIES:
        if value == family:
            return family
    return None


AGENT = Agent(name=FORMAT, title="generic JSON", looks_like=looks_like, parse=parse)
