"""What every parser shares: tolerant line reading and the builder that makes a trajectory.

Parsers only translate an agent's events into `Builder` calls (`user`, `assistant`,
`tool_call`, `tool_result`, ...). The builder removes `<private>` spans, then applies the size
budget and redaction to every string as it arrives, keeps parse statistics, picks the task,
and finally runs episode detection, so each format gets the same guarantees from one place.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

from rune_mcp.capture.budget import fit
from rune_mcp.capture.episodes import analyse
from rune_mcp.capture.private import strip_private
from rune_mcp.capture.redact import Redactor
from rune_mcp.capture.tools import tool_family
from rune_mcp.errors import ParseError
from rune_mcp.trajectory import Step, StepKind, ToolFamily, Trajectory

TASK_MAX_CHARS = 4_000


def decode(data: bytes, stats: Counter[str]) -> str:
    """Bytes -> text; lines that are not valid UTF-8 are dropped and counted, a BOM removed."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    good: list[str] = []
    for raw in data.split(b"\n"):
        try:
            good.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            stats["invalid_utf8_lines"] += 1
            good.append("")
    return "\n".join(good)


def read_jsonl(text: str, stats: Counter[str]) -> Iterator[dict[str, Any]]:
    """Yield each JSON object line; bad lines are counted, an unfinished last line ignored."""
    text = text.lstrip("\ufeff")
    lines = text.split("\n")
    last = len(lines) - 1
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        stats["lines"] += 1
        try:
            obj = json.loads(line.lstrip("\ufeff"))
        except (ValueError, RecursionError):
            if i == last:  # the agent is still writing this line: wait for it
                stats["incomplete_last_line"] += 1
            else:
                stats["bad_lines"] += 1
            continue
        if not isinstance(obj, dict):
            stats["bad_lines"] += 1
            continue
        for key in ("type", "role"):  # the fields formats dispatch on must be strings
            if key in obj and not isinstance(obj[key], str):
                obj[key] = None
        yield obj


def as_text(value: Any) -> str:
    """Best-effort text of a JSON value: strings as is, block lists joined, others as JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = []
        for item in value:
            if isinstance(item, dict) and isinstance(item.get("text"), str):
                parts.append(item["text"])
            elif isinstance(item, str):
                parts.append(item)
            elif item is not None:
                parts.append(json.dumps(item, ensure_ascii=False, default=str))
        return "\n".join(parts)
    return json.dumps(value, ensure_ascii=False, default=str)


def _stem(name: str) -> str:
    """`"/x/abc.jsonl"` -> `"abc"`; the session id of formats that carry none."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    return base.split(".", 1)[0] if base and not base.startswith("<") else ""


def _valid_unicode(text: str) -> str:
    """Lone surrogates (from `\\ud800` escapes) cannot be stored as UTF-8: replace them."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


class Builder:
    """Accumulates the steps of one session, already budgeted and redacted."""

    def __init__(self, fmt: str, name: str, agent: str | None = None) -> None:
        self.fmt = fmt
        self.name = name
        self.agent = agent or fmt
        self.stats: Counter[str] = Counter()
        self.redactor = Redactor()
        self.steps: list[Step] = []
        self.task: str | None = None
        self.task_fallback: str | None = None
        self.session_id: str | None = None
        self.project: str | None = None
        self.started: str | None = None
        self.ended: str | None = None
        self._tool_calls: dict[str, tuple[str, ToolFamily]] = {}  # id -> (tool, family)

    # --- cleaning -------------------------------------------------------------------
    def clean(self, text: str) -> str:
        # `<private>` spans go first: the budget could cut a tag pair apart, and what is gone
        # need not be redacted.
        text = strip_private(_valid_unicode(text), self.stats)
        return self.redactor.redact(fit(text, self.stats))

    def clean_value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.clean(value)
        if isinstance(value, dict):
            return {str(k): self.clean_value(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.clean_value(v) for v in value]
        return value

    # --- events ---------------------------------------------------------------------
    def _add(self, kind: StepKind, timestamp: Any, **fields: Any) -> Step:
        ts = timestamp if isinstance(timestamp, str) else None
        if ts:
            self.started = self.started or ts
            self.ended = ts
        step = Step(index=len(self.steps), kind=kind, timestamp=ts, **fields)
        self.steps.append(step)
        return step

    def user(self, text: str, timestamp: Any = None, request: bool = True) -> None:
        """A user message; the first `request` becomes the task."""
        text = self.clean(text).strip()
        if not text:
            return
        self._add("user", timestamp, text=text)
        if request and self.task is None:
            self.task = text[:TASK_MAX_CHARS]

    def user_request_text(self, text: str) -> None:
        """A request carried inside another step (a slash command's arguments)."""
        if self.task is None and text.strip():
            self.task = self.clean(text).strip()[:TASK_MAX_CHARS]

    def fallback_task(self, text: str) -> None:
        """Text that can stand for the task when no plain request exists (a command's prompt)."""
        if self.task_fallback is None and text.strip():
            self.task_fallback = self.clean(text).strip()[:TASK_MAX_CHARS]

    def assistant(self, text: str, timestamp: Any = None) -> None:
        text = self.clean(text).strip()
        if text:
            self._add("assistant", timestamp, text=text)

    def thinking(self, text: str, timestamp: Any = None) -> None:
        text = self.clean(text).strip()
        if text:
            self._add("thinking", timestamp, text=text)

    def tool_call(self, tool: str, tool_id: str | None, tool_input: Any,
                  timestamp: Any = None, family: ToolFamily | None = None) -> None:
        """A tool call; its family comes from the tool name and input unless the parser
        knows it (`family`)."""
        if not isinstance(tool_input, dict):
            tool_input = {} if tool_input is None else {"input": tool_input}
        tool = str(tool) if tool else "unknown"
        family = family or tool_family(tool, tool_input)
        if tool_id:
            self._tool_calls[tool_id] = (tool, family)
        self._add("tool_call", timestamp, tool=tool, tool_id=tool_id,
                  input=self.clean_value(tool_input), family=family)

    def tool_result(self, tool_id: str | None, output: str, is_error: bool = False,
                    timestamp: Any = None, tool: str | None = None) -> None:
        """A tool result; it takes the tool name and family of the call it answers."""
        call = self._tool_calls.get(tool_id) if tool_id else None
        tool = tool or (call[0] if call else None)
        family = call[1] if call and call[0] == tool else tool_family(tool)
        self._add("tool_result", timestamp, tool=tool, tool_id=tool_id,
                  output=self.clean(output), is_error=bool(is_error), family=family)

    # --- result ---------------------------------------------------------------------
    def finish(self, subagents: list[Trajectory] | None = None) -> Trajectory:
        task = self.task or self.task_fallback
        if not task:
            raise ParseError(
                f"no task found in {self.name}: it holds no user request "
                f"({len(self.steps)} steps read); is it an empty or unfinished transcript?"
            )
        self.stats["steps"] = len(self.steps)
        episodes, final = analyse(self.steps)
        return Trajectory(
            format=self.fmt,
            session_id=self.session_id or _stem(self.name),
            task=task,
            steps=self.steps,
            project=self.project,
            agent=self.agent,
            started=self.started,
            ended=self.ended,
            episodes=episodes,
            final_actions=final,
            redactions=dict(sorted(self.redactor.counts.items())),
            stats=dict(sorted(self.stats.items())),
            subagents=subagents or [],
        )
