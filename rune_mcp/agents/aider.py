"""Aider: its chat history (`.aider.chat.history.md` in the project's git root).

The file appends every run: `# aider chat started at YYYY-MM-DD HH:MM:SS` opens one, user
lines start with `#### `, tool and UI output lines with `> `, and everything else is the
assistant. The last run is the session. Aider edits files through SEARCH/REPLACE blocks in
the assistant's text; each block becomes an `Edit` tool call so episodes see the fixes, and
`/run` or `/test` commands become shell calls whose `> ` output is their result.

The watcher follows the histories in the project roots of the `aider_roots` setting; one file
holds many sessions, each opened by its header line (`runs`). Aider has no hooks Rune uses
and no `rune install`.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

from rune_mcp.agents.base import Agent, Match, Place, Runs, Sample
from rune_mcp.capture.base import Builder
from rune_mcp.config import Settings
from rune_mcp.trajectory import Trajectory

FORMAT = "aider"
HISTORY = ".aider.chat.history.md"
HEADER = b"# aider chat started at"
_START = re.compile(r"^# aider chat started at (.+)$", re.MULTILINE)
_EDIT = re.compile(
    r"(?:^|\n)(?P<path>[^\n`]+?)\n```[^\n]*\n<<<<<<< SEARCH\n(?P<old>.*?)\n?=======\n"
    r"(?P<new>.*?)\n?>>>>>>> REPLACE\n```",
    re.DOTALL,
)
_RUN = re.compile(r"^/(?:run|test)\s+(.+)$", re.DOTALL)
_FAILED = re.compile(r"Traceback|Error|FAILED|failed|error:|exit (?:code|status) [1-9]")


def looks_like(sample: Sample) -> bool:
    """Detection: a `# aider chat started at` line, or `#### ` requests beside code fences."""
    head = sample.text[:20_000]
    return bool(_START.search(head)) or (head.count("\n#### ") >= 1 and "```" in head)


def parse(text: str, name: str, source: Path | None = None) -> Trajectory:
    starts = list(_START.finditer(text))
    builder = Builder(FORMAT, name, agent="aider")
    if starts:
        run = text[starts[-1].end():]
        builder.session_id = "aider-" + re.sub(r"\W+", "-", starts[-1].group(1).strip())
        builder.started = starts[-1].group(1).strip()
        builder.stats["earlier_runs"] = len(starts) - 1
    else:
        run = text
    if source is not None:
        builder.project = str(source.resolve().parent)
    _read_run(builder, run.split("\n"))
    return builder.finish()


def _read_run(builder: Builder, lines: list[str]) -> None:
    kind, block = "", list[str]()
    fenced = False  # inside a code fence every line is the assistant's
    for line in lines:
        if kind == "assistant" and line.startswith("```"):
            fenced = not fenced
        if fenced or line.startswith(">>>>>>>"):
            new = "assistant"
        elif line.startswith("#### "):
            new = "user"
        elif line.startswith("> ") or line == ">":
            new = "tool"
        elif kind in ("user", "tool") and not line.strip():
            continue  # a blank line closes nothing
        else:
            new = "assistant"
        if new != kind and block:
            _flush(builder, kind, block)
            block = []
        kind = new
        block.append(line[5:] if new == "user" else line[2:] if new == "tool" else line)
    if block:
        _flush(builder, kind, block)


def _flush(builder: Builder, kind: str, lines: list[str]) -> None:
    text = "\n".join(lines).strip()
    if not text:
        return
    if kind == "user":
        run = _RUN.match(text)
        if run:
            builder.tool_call("shell", None, {"command": run.group(1).strip()})
        elif text.startswith("/"):
            builder.user(text, request=False)  # an aider command such as /add
        else:
            builder.user(text)
    elif kind == "tool":
        last = builder.steps[-1] if builder.steps else None
        if last is not None and last.kind == "tool_call":
            failed = bool(_FAILED.search(text)) and last.tool == "shell"
            builder.tool_result(None, text, failed, tool=last.tool)
        else:
            builder.stats["ui_output_blocks"] += 1
    else:
        _assistant(builder, text)


def _assistant(builder: Builder, text: str) -> None:
    pos = 0
    for edit in _EDIT.finditer(text):
        builder.assistant(text[pos:edit.start()])
        builder.tool_call("Edit", None, {"file_path": edit.group("path").strip(),
                                         "old_string": edit.group("old"),
                                         "new_string": edit.group("new")})
        pos = edit.end()
    builder.assistant(text[pos:])


# --- where histories live ------------------------------------------------------------------


def _match(root: Path, path: Path) -> Match | None:
    if path.name == HISTORY:
        return Match(FORMAT, FORMAT, "main", f"{FORMAT}:{path.parent}")
    return None


def started(line: bytes) -> float | None:
    """`# aider chat started at 2024-05-01 10:00:00` -> its local timestamp."""
    text = line[len(HEADER):].decode("utf-8", "replace").strip()
    try:
        return datetime.strptime(text[:19], "%Y-%m-%d %H:%M:%S").timestamp()
    except ValueError:
        return None


def places(settings: Settings) -> list[Place]:
    """Each project root of `aider_roots`, and its direct sub-folders."""
    return [Place(FORMAT, root.expanduser(), 1, _match) for root in settings.aider_roots]


AGENT = Agent(
    name=FORMAT,
    title="Aider",
    looks_like=looks_like,
    parse=parse,
    places=places,
    runs=Runs(header=HEADER, started=started),
)
