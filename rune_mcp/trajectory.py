"""The trajectory: Rune's unit of memory, one finished agent session after parsing and redaction.

Everything downstream (lessons, adapters, the task embedding) reads only this model, so every
agent format is parsed into it and nothing else. It is serialized as versioned JSON:
`{"format_version": 1, "id": ..., "steps": [...], "episodes": [...], ...}`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from rune_mcp.errors import ParseError

FORMAT_VERSION = 1

StepKind = Literal["user", "assistant", "thinking", "tool_call", "tool_result"]
STEP_KINDS: tuple[StepKind, ...] = ("user", "assistant", "thinking", "tool_call", "tool_result")
# What a tool call does, decided once at capture (rune_mcp/capture/tools.py).
ToolFamily = Literal["read", "edit", "run", "search", "other"]
TOOL_FAMILIES: tuple[ToolFamily, ...] = ("read", "edit", "run", "search", "other")


@dataclass
class Step:
    """One event of a session, in order.

    `text` is the message or thinking text, `input` a tool call's arguments, `output` a tool
    result's text; `tool_id` links a call to its result. `family` says what a tool call (and
    its result) does: read, edit, run, search or other.
    """

    index: int
    kind: StepKind
    text: str = ""
    tool: str | None = None
    tool_id: str | None = None
    input: dict[str, Any] | None = None
    output: str | None = None
    is_error: bool = False
    timestamp: str | None = None
    family: ToolFamily | None = None


@dataclass
class Episode:
    """attempt -> error -> diagnosis -> fix -> verification, as step indices plus their text.

    `action` and `fix` are rendered actions (a command, an edit), `error` the failing output,
    `diagnosis` the assistant text between error and fix, `verification` the output that
    showed the fix worked (None when the session never checked).
    """

    attempt_step: int
    action: str
    error: str
    diagnosis: str = ""
    fix_step: int | None = None
    fix: str | None = None
    verify_step: int | None = None
    verification: str | None = None


@dataclass
class Trajectory:
    format: str
    session_id: str
    task: str
    steps: list[Step]
    project: str | None = None
    agent: str | None = None
    started: str | None = None
    ended: str | None = None
    episodes: list[Episode] = field(default_factory=list)
    final_actions: list[int] = field(default_factory=list)
    redactions: dict[str, int] = field(default_factory=dict)
    stats: dict[str, int] = field(default_factory=dict)
    subagents: list[Trajectory] = field(default_factory=list)
    id: str = ""

    def __post_init__(self) -> None:
        if not self.id:
            self.id = self.content_id()

    @property
    def project_name(self) -> str:
        """The project's folder name (`/home/me/acme-api` -> `acme-api`), or `project`."""
        if not self.project:
            return "project"
        return self.project.rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1] or "project"

    def content_id(self) -> str:
        """SHA-256 of the normalized content: the same session parsed twice has the same id,
        whatever its file name or when it was parsed."""
        payload = {
            "task": self.task,
            "project": self.project,
            "steps": [
                [s.kind, s.text, s.tool, s.input, s.output, s.is_error] for s in self.steps
            ],
            "subagents": [sub.content_id() for sub in self.subagents],
        }
        blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, default=str)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["subagents"] = [sub.to_dict() for sub in self.subagents]
        data["format_version"] = FORMAT_VERSION
        return data

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=indent)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Trajectory:
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise ParseError(
                f"trajectory format version {version!r} is not supported (this Rune reads "
                f"version {FORMAT_VERSION}); upgrade Rune or parse the transcript again."
            )
        body = {k: v for k, v in data.items() if k != "format_version"}
        try:
            body["steps"] = [Step(**s) for s in body.get("steps", [])]
            if any("family" not in s for s in data.get("steps", [])):
                from rune_mcp.capture.tools import fill_families  # capture imports this module

                fill_families(body["steps"])  # JSON written before steps had a family
            body["episodes"] = [Episode(**e) for e in body.get("episodes", [])]
            body["subagents"] = [cls.from_dict(s) for s in body.get("subagents", [])]
            return cls(**body)
        except TypeError as exc:
            raise ParseError(f"trajectory JSON has a missing or unknown field ({exc}); "
                             "parse the transcript again.") from None
