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

from pydantic import BaseModel, ConfigDict, ValidationError

from rune_mcp.errors import ParseError
from rune_mcp.validation import problem

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

    def step(self, index: int | None) -> Step | None:
        """The step whose `index` is `index` (None for None or an index not in the session);
        steps are usually stored at their own index, so that is tried first."""
        if index is None:
            return None
        if 0 <= index < len(self.steps) and self.steps[index].index == index:
            return self.steps[index]
        return next((s for s in self.steps if s.index == index), None)

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
    def from_dict(cls, data: Any, where: str = "trajectory JSON") -> Trajectory:
        """The trajectory `to_dict` wrote, validated by `TrajectoryRecord`; `where` names the
        source in the one-sentence ParseError a bad field gives."""
        version = data.get("format_version") if isinstance(data, dict) else None
        if version != FORMAT_VERSION:
            raise ParseError(
                f"{where} has format version {version!r}, which is not supported (this Rune "
                f"reads version {FORMAT_VERSION}); upgrade Rune or parse the transcript again."
            )
        try:
            record = TrajectoryRecord.model_validate(data)
        except ValidationError as exc:
            raise ParseError(f"{where} {problem(exc, _HINTS)}; parse the transcript again.") from None
        return _build(record)

    @classmethod
    def from_json(cls, text: str | bytes, where: str = "trajectory JSON") -> Trajectory:
        """`from_dict` of a JSON text, as `to_json` wrote it."""
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise ParseError(f"{where} is not valid JSON ({exc}); parse the transcript again.") from None
        return cls.from_dict(data, where)


# --- the JSON form, validated ------------------------------------------------------------------
# One model per dataclass, field for field (tests/test_trajectory.py keeps them in step). They
# only check: `to_dict` writes the dataclasses directly, so the JSON is what it always was.

_HINTS = {
    "kind": "one of " + ", ".join(STEP_KINDS), "family": "one of " + ", ".join(TOOL_FAMILIES),
    "format_version": f"{FORMAT_VERSION}, the version this Rune reads",
}


class _Record(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class StepRecord(_Record):
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


class EpisodeRecord(_Record):
    attempt_step: int
    action: str
    error: str
    diagnosis: str = ""
    fix_step: int | None = None
    fix: str | None = None
    verify_step: int | None = None
    verification: str | None = None


class TrajectoryRecord(_Record):
    format_version: Literal[1]
    format: str
    session_id: str
    task: str
    steps: list[StepRecord] = []
    project: str | None = None
    agent: str | None = None
    started: str | None = None
    ended: str | None = None
    episodes: list[EpisodeRecord] = []
    final_actions: list[int] = []
    redactions: dict[str, int] = {}
    stats: dict[str, int] = {}
    subagents: list[TrajectoryRecord] = []
    id: str = ""


def _build(record: TrajectoryRecord) -> Trajectory:
    steps = [Step(**dict(s)) for s in record.steps]
    if any("family" not in s.model_fields_set for s in record.steps):
        from rune_mcp.capture.tools import fill_families  # capture imports this module

        fill_families(steps)  # JSON written before steps had a family
    body = {name: value for name, value in record if name not in
            ("format_version", "steps", "episodes", "subagents")}
    return Trajectory(**body, steps=steps, episodes=[Episode(**dict(e)) for e in record.episodes],
                      subagents=[_build(sub) for sub in record.subagents])
