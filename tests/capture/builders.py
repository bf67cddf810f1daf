"""Small synthetic transcripts for capture tests (Claude Code lines built like the real ones)."""

from __future__ import annotations

import json
from typing import Any


class ClaudeSession:
    """Builds a linear Claude Code JSONL transcript: `s.user("hi"); s.bash("ls", "out")`."""

    def __init__(self, cwd: str = "/home/dev/acme") -> None:
        self.cwd = cwd
        self.lines: list[dict[str, Any]] = []
        self.parent: str | None = None
        self.n = 0

    def _rec(self, kind: str, content: Any, **extra: Any) -> dict[str, Any]:
        self.n += 1
        uuid = f"uuid-{self.n:04d}"
        rec = {"parentUuid": self.parent, "isSidechain": False, "userType": "external",
               "cwd": self.cwd, "sessionId": "sess-1", "version": "2.1.39", "type": kind,
               "uuid": uuid, "timestamp": f"2026-01-01T00:00:{self.n % 60:02d}.000Z",
               "message": {"role": kind, "content": content}}
        rec.update(extra)
        self.lines.append(rec)
        self.parent = uuid
        return rec

    def user(self, text: str, **extra: Any) -> None:
        self._rec("user", text, **extra)

    def say(self, text: str) -> None:
        rec = self._rec("assistant", [{"type": "text", "text": text}])
        rec["message"]["id"] = f"msg-{self.n}"

    def call(self, tool: str, tool_input: dict[str, Any], output: str,
             is_error: bool = False) -> None:
        tid = f"toolu_{self.n + 1:04d}"
        rec = self._rec("assistant", [{"type": "tool_use", "id": tid, "name": tool,
                                       "input": tool_input}])
        rec["message"]["id"] = f"msg-{self.n}"
        self._rec("user", [{"type": "tool_result", "tool_use_id": tid, "content": output,
                            "is_error": is_error}],
                  toolUseResult=output if is_error else {"stdout": output, "stderr": ""})

    def bash(self, command: str, output: str, is_error: bool = False) -> None:
        self.call("Bash", {"command": command}, output, is_error)

    def edit(self, path: str, old: str, new: str, output: str = "The file has been updated.",
             is_error: bool = False) -> None:
        self.call("Edit", {"file_path": path, "old_string": old, "new_string": new}, output,
                  is_error)

    def text(self) -> str:
        return "\n".join(json.dumps(rec, ensure_ascii=False) for rec in self.lines) + "\n"


def fix_session() -> ClaudeSession:
    """The reference episode: a test fails, the agent diagnoses, edits, and tests pass."""
    s = ClaudeSession()
    s.user("Make the order tests pass")
    s.bash("pytest -x tests/test_orders.py",
           "E   AttributeError: module 'acme.db' has no attribute 'connect'\n1 failed",
           is_error=True)
    s.say("The db module has no connect(); it exposes open_pool(DSN, retries=3) instead.")
    s.edit("/home/dev/acme/orders.py", "acme.db.connect(DSN)", "acme.db.open_pool(DSN, retries=3)")
    s.bash("pytest -x tests/test_orders.py", "3 passed in 0.12s")
    s.say("Fixed: orders now use open_pool.")
    return s
