"""Small synthetic transcripts for capture tests, written by `rune_mcp.capture.write`."""

from __future__ import annotations

from rune_mcp.capture.write import ClaudeWriter


class ClaudeSession(ClaudeWriter):
    """A linear Claude Code transcript: `s.user("hi"); s.bash("ls", "out"); s.text()`."""

    def bash(self, command: str, output: str, is_error: bool = False) -> None:
        self.call("Bash", {"command": command}, output, is_error)

    def edit(self, path: str, old: str, new: str, output: str = "The file has been updated.",
             is_error: bool = False) -> None:
        self.call("Edit", {"file_path": path, "old_string": old, "new_string": new}, output,
                  is_error)

    def text(self) -> str:
        return self.jsonl()


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


# An Aider history of two runs; the second edits greet.py and runs a failing test.
AIDER_HISTORY = """# aider chat started at 2025-01-01 09:00:00

#### old run

# aider chat started at 2025-03-04 10:11:12

> Aider v0.80.0
#### make greet() say hello

I will change it.

greet.py
```python
<<<<<<< SEARCH
    return "hi"
=======
    return "hello"
>>>>>>> REPLACE
```

> Applied edit to greet.py

#### /run pytest -q
> FAILED test_greet.py::test_name - AssertionError
> 1 failed
"""
