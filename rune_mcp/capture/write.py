"""Agent transcripts written the way the agents write them: Claude Code and Codex JSONL.

The benchmark's dataset generator (`rune bench make-dataset`) and the tests build their
sessions with these writers, so what a transcript line looks like is written down once, next
to the parsers that read it back. A Claude Code writer draws every id, time step and token
count from its own `random.Random`: the same seed gives the same bytes.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

CLAUDE_VERSION = "2.1.39"
CODEX_VERSION = "0.50.0"
START = datetime(2026, 1, 1, tzinfo=UTC)


def write_jsonl(path: Path, lines: Iterable[str], append: bool = False) -> Path:
    """Write JSONL lines (each without its newline) to `path`, creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a" if append else "w", encoding="utf-8") as handle:
        handle.write("".join(line + "\n" for line in lines))
    return path


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class ClaudeWriter:
    """One Claude Code session: a `parentUuid` chain with the line shapes of Claude Code 2.1.x.

    `w = ClaudeWriter("s-1", "/home/dev/acme"); w.user("fix it"); w.call("Bash",
    {"command": "make"}, "ok"); w.say("Done."); w.jsonl()`. `lines` and `parent` are open:
    a test may append a line of its own or fork the chain by setting `parent`.
    """

    def __init__(
        self,
        session_id: str = "sess-1",
        cwd: str = "/home/dev/acme",
        *,
        rng: random.Random | None = None,
        start: datetime = START,
        parent: str | None = None,
    ) -> None:
        self.rng = rng if rng is not None else random.Random(session_id)
        self.session_id, self.cwd, self.clock = session_id, cwd, start
        self.lines: list[dict[str, Any]] = []
        self.parent = parent

    # --- lines ---------------------------------------------------------------------------

    def line(self, kind: str, parent: str | None) -> dict[str, Any]:
        """The fields every conversation line starts with (not yet added)."""
        return {
            "parentUuid": parent,
            "isSidechain": False,
            "userType": "external",
            "cwd": self.cwd,
            "sessionId": self.session_id,
            "version": CLAUDE_VERSION,
            "gitBranch": "main",
            "type": kind,
            "uuid": str(uuid.UUID(int=self.rng.getrandbits(128), version=4)),
            "timestamp": self._tick(),
        }

    def chain(self, line: dict[str, Any]) -> str:
        """Add `line` as the next link of the conversation; return its uuid."""
        self.lines.append(line)
        self.parent = str(line["uuid"])
        return self.parent

    def _tick(self) -> str:
        self.clock += timedelta(milliseconds=self.rng.randint(300, 9000))
        return _stamp(self.clock)

    def _hex(self, prefix: str) -> str:
        return f"{prefix}{self.rng.getrandbits(100):025x}"

    # --- turns ---------------------------------------------------------------------------

    def user(self, content: str | list[dict[str, Any]], *, snapshot: bool = False,
             **fields: Any) -> str:
        """A user line (`fields` follow its message: `permissionMode`, `toolUseResult`, ...);
        `snapshot` adds the file-history snapshot Claude Code writes after a typed prompt."""
        line = self.line("user", self.parent)
        line["message"] = {"role": "user", "content": content}
        line.update(fields)
        uid = self.chain(line)
        if snapshot:
            self.lines.append({
                "type": "file-history-snapshot",
                "messageId": uid,
                "snapshot": {"messageId": uid, "trackedFileBackups": {},
                             "timestamp": line["timestamp"]},
                "isSnapshotUpdate": False,
            })
        return uid

    def assistant(self, blocks: list[dict[str, Any]]) -> str:
        """One API message, one line per block, all sharing `message.id`."""
        msg_id, request = self._hex("msg_01"), self._hex("req_011")
        for i, block in enumerate(blocks):
            last = i == len(blocks) - 1
            stop = ("tool_use" if block["type"] == "tool_use" else "end_turn") if last else None
            line = self.line("assistant", self.parent)
            line["message"] = {
                "model": "claude-opus-4-6",
                "id": msg_id,
                "type": "message",
                "role": "assistant",
                "content": [block],
                "stop_reason": stop,
                "stop_sequence": None,
                "usage": {
                    "input_tokens": 3,
                    "output_tokens": self.rng.randint(10, 900),
                    "cache_read_input_tokens": self.rng.randint(1000, 60000),
                },
            }
            line["requestId"] = request
            self.chain(line)
        return str(self.parent)

    def say(self, text: str) -> str:
        return self.assistant([{"type": "text", "text": text}])

    def call(
        self,
        tool: str,
        tool_input: dict[str, Any],
        output: str,
        is_error: bool = False,
        *,
        thinking: str = "",
        text: str = "",
        progress: bool = False,
    ) -> str:
        """A tool call (after optional thinking and text blocks of the same message) and its
        result; `progress` writes `bash_progress` lines in between. Returns the tool id."""
        blocks: list[dict[str, Any]] = []
        if thinking:
            blocks.append({"type": "thinking", "thinking": thinking, "signature": "sig" * 20})
        if text:
            blocks.append({"type": "text", "text": text})
        tool_id = self._hex("toolu_01")
        blocks.append({"type": "tool_use", "id": tool_id, "name": tool, "input": tool_input,
                       "caller": {"type": "direct"}})
        use_uuid = self.assistant(blocks)
        if progress:
            self.progress(tool_id, output)
        content = output
        if is_error and tool == "Bash" and not content.startswith("Exit code"):
            content = f"Exit code 1\n{content}"
        self.tool_result(tool_id, content, is_error,
                         tool_use_result(tool, tool_input, output, content, is_error), use_uuid)
        return tool_id

    def tool_result(self, tool_id: str, content: Any, is_error: bool, result: Any,
                    source: str | None = None) -> str:
        """The user line that carries a tool's result back (`result` is `toolUseResult`)."""
        line = self.line("user", source or self.parent)
        block = {"tool_use_id": tool_id, "type": "tool_result", "content": content}
        line["message"] = {"role": "user",
                           "content": [{**block, **({"is_error": True} if is_error else {})}]}
        line["toolUseResult"] = result
        line["sourceToolAssistantUUID"] = source or self.parent
        return self.chain(line)

    def progress(self, tool_id: str, output: str) -> None:
        """bash_progress lines: partial output, hanging off the tool call (not on the chain)."""
        lines = output.splitlines()
        for k in range(1, min(4, len(lines) // 8 + 1) + 1):
            line = self.line("progress", self.parent)
            partial = "\n".join(lines[: k * max(1, len(lines) // 4)])
            line["data"] = {"type": "bash_progress", "output": partial, "fullOutput": partial,
                            "elapsedTimeSeconds": k, "totalLines": len(lines)}
            line["toolUseID"] = f"bash-progress-{k - 1}"
            line["parentToolUseID"] = tool_id
            self.lines.append(line)

    def compact(self, summary: str, logical_parent: str | None = None) -> str:
        """A compaction (`/compact`, or automatic): the `compact_boundary` line, a new root
        naming the last line before it through `logicalParentUuid` (or `logical_parent`),
        then the compact summary the conversation goes on from. Returns the summary's uuid."""
        line = self.line("system", None)
        line = {"parentUuid": None, "logicalParentUuid": logical_parent or self.parent,
                **{k: v for k, v in line.items() if k != "parentUuid"}}
        line.update({"subtype": "compact_boundary", "content": "Conversation compacted",
                     "isMeta": False, "level": "info",
                     "compactMetadata": {"trigger": "auto",
                                         "preTokens": self.rng.randint(100_000, 170_000)}})
        self.chain(line)
        text = ("This session is being continued from a previous conversation that ran out of "
                f"context. The summary below covers the earlier portion of the conversation.\n\n"
                f"{summary}")
        return self.user(text, isVisibleInTranscriptOnly=True, isCompactSummary=True)

    def finish(self, text: str) -> None:
        """The closing answer and the `turn_duration` line Claude Code ends a turn with."""
        self.say(text)
        line = self.line("system", self.parent)
        line.update({"subtype": "turn_duration", "durationMs": self.rng.randint(20000, 400000),
                     "isMeta": False})
        self.lines.append(line)

    # --- output --------------------------------------------------------------------------

    def json_lines(self) -> list[str]:
        return [json.dumps(line, ensure_ascii=False) for line in self.lines]

    def jsonl(self) -> str:
        return "".join(line + "\n" for line in self.json_lines())


def tool_use_result(tool: str, tool_input: dict[str, Any], output: str, content: str,
                    is_error: bool) -> Any:
    """The `toolUseResult` Claude Code stores beside a result: an error's text, or an object
    whose shape depends on the tool."""
    path = tool_input.get("file_path")
    if is_error:
        return f"Error: {content}"
    if tool == "Bash":
        return {"stdout": output, "stderr": "", "interrupted": False, "isImage": False}
    if tool == "Read":
        raw = "\n".join(ln.split("\u2192", 1)[-1] for ln in output.splitlines())
        n = raw.count("\n") + 1
        return {"type": "text", "file": {"filePath": path, "content": raw, "numLines": n,
                                         "startLine": 1, "totalLines": n}}
    if tool == "Edit":
        return {"filePath": path, "oldString": tool_input.get("old_string"),
                "newString": tool_input.get("new_string"), "originalFile": None,
                "structuredPatch": [], "userModified": False, "replaceAll": False}
    if tool == "Write":
        return {"type": "create", "filePath": path, "content": tool_input.get("content"),
                "structuredPatch": []}
    return {"mode": "content", "numFiles": 1, "content": output,
            "filenames": [path] if path else []}


class CodexWriter:
    """One Codex CLI rollout: a `session_meta` line, then `response_item` lines.

    `w = CodexWriter("c1", "/work/app"); w.user("fix the build"); w.call(["make"], "ok");
    w.jsonl()`.
    """

    def __init__(self, session_id: str, cwd: str, *, start: datetime = START,
                 meta: dict[str, Any] | None = None) -> None:
        self.clock = start
        self.lines: list[dict[str, Any]] = []
        self.calls = 0
        self.line("session_meta", {"id": session_id, "cwd": cwd, "cli_version": CODEX_VERSION,
                                   **(meta or {})})

    def line(self, kind: str, payload: dict[str, Any]) -> None:
        """Any rollout line: `event_msg`, `turn_context`, ... as the test needs."""
        self.lines.append({"timestamp": _stamp(self.clock), "type": kind, "payload": payload})
        self.clock += timedelta(seconds=1)

    def _message(self, role: str, kind: str, text: str) -> None:
        self.line("response_item", {"type": "message", "role": role,
                                    "content": [{"type": kind, "text": text}]})

    def user(self, text: str) -> None:
        self._message("user", "input_text", text)

    def say(self, text: str) -> None:
        self._message("assistant", "output_text", text)

    def reasoning(self, text: str) -> None:
        self.line("response_item", {"type": "reasoning",
                                    "summary": [{"type": "summary_text", "text": text}]})

    def call(self, command: list[str], output: str, exit_code: int | None = None,
             name: str = "shell") -> str:
        """A shell call and its output; with `exit_code` the output is the JSON object older
        Codex versions wrote (`{"output": ..., "metadata": {"exit_code": ...}}`)."""
        self.calls += 1
        call_id = f"call_{self.calls}"
        self.line("response_item", {"type": "function_call", "name": name, "call_id": call_id,
                                    "arguments": json.dumps({"command": command})})
        if exit_code is not None:
            output = json.dumps({"output": output, "metadata": {"exit_code": exit_code}})
        self.line("response_item", {"type": "function_call_output", "call_id": call_id,
                                    "output": output})
        return call_id

    def json_lines(self) -> list[str]:
        return [json.dumps(line, ensure_ascii=False) for line in self.lines]

    def jsonl(self) -> str:
        return "".join(line + "\n" for line in self.json_lines())
