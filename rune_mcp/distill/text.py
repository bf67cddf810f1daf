"""Text helpers of the lesson compiler: clipping, the line of an error that names it, casing."""

from __future__ import annotations

import re

_ERROR_LINE = re.compile(
    r"(error|exception|traceback|failed|fail:|not found|no such|cannot|can't|denied|invalid|"
    r"missing|undefined|unrecognized|refused)", re.IGNORECASE)
_PYTEST_E = re.compile(r"^E\s{2,}")  # lines were stripped: pytest's `E   ` starts them
_DIAGNOSTIC = re.compile(r"^[\w./-]+:\d+(?::\d+)?:\s+\S")
_EXCEPTION = re.compile(r"\b[A-Z]\w*(?:Error|Exception|Exit|Interrupt|Warning)\b:.*$")


def clip(text: str, limit: int) -> str:
    """Keep head and tail of a long text: `clip("a"*10, 6)` -> `"aa…aaa"` (errors end with
    the useful line, commands start with it)."""
    text = text.strip()
    if len(text) <= limit:
        return text
    head = limit * 2 // 5
    return text[:head].rstrip() + "\n…\n" + text[-(limit - head - 3):].lstrip()


def error_line(error: str) -> str:
    """The line of an error output that names the problem: the last exception line (from the
    exception's name on), else pytest's last `E   ` line, else the last diagnostic of a
    linter or compiler (`path:line:col: message`), else the last line that looks like an
    error, else the last line; summaries such as `1 failed, 9 passed` or `Found 1 error.`
    come last in a tool's output and name nothing.
    `"Traceback...\\nE   KeyError: 'x'"` -> `"KeyError: 'x'"`."""
    lines = [ln.strip() for ln in error.strip().splitlines() if ln.strip()]
    if not lines:
        return ""
    for line in reversed(lines):
        found = _EXCEPTION.search(line)
        if found:
            return clip(found.group(0), 200)
    for pattern in (_PYTEST_E, _DIAGNOSTIC, _ERROR_LINE):
        for line in reversed(lines):
            found = pattern.search(line)
            if found:
                return clip(line[found.end():] if pattern is _PYTEST_E else line, 200)
    return clip(lines[-1], 200)


def lower_first(text: str) -> str:
    text = " ".join(text.split()).rstrip(".?!")
    return text[:1].lower() + text[1:] if text[:2] != text[:2].upper() else text
