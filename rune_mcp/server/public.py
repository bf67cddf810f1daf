"""What leaves the server: messages with Rune's own paths turned into words.

Library and queue errors name files because `rune` on the command line is run by the person
who owns them. An MCP client is an agent that passes what it reads on, so no answer of a tool
or resource names a path: a file of an adapter becomes that adapter's id (`adapter 4f1c2e9a0b7d's
manifest.json`), another file under RUNE_HOME its place there (`RUNE_HOME/jobs.sqlite3`), and
any other absolute path its file name. This module is the one place that does it; the server
applies it to every error, to the reports of `remember_session` and `memory_status`, and to the
resources' errors and status. Other results keep their text: a project folder in
`list_adapters` is the user's own data, not Rune's.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mcp_types import CallToolResult, TextContent

# Tools whose successful answers carry messages from the queue or the library.
REPORTING_TOOLS = frozenset({"remember_session", "memory_status"})

_HOME = "RUNE_HOME"
_ADAPTER = re.compile(
    r"(adapter folder )?RUNE_HOME[/\\]adapters[/\\]([0-9a-f]{6,64})(?:[/\\]([^\s'\"`]+))?"
)
# An absolute path: POSIX `/x` not inside a word, URL or relative path; `C:\x`; `file:///x`.
_ABSOLUTE = re.compile(
    r"file://[^\s'\"`<>|]+"
    r"|(?<![\w.~:/\\-])/[^\s'\"`<>|]+"
    r"|(?<!\w)[A-Za-z]:[\\/][^\s'\"`<>|]*"
)
_TRAILING = ".,;:!?)]}"


def public_text(text: str, home: Path) -> str:
    """`text` with every path of Rune's and every other absolute path replaced.

    `public_text("/h/adapters/4f1c2e9a0b7d55/manifest.json is not JSON.", Path("/h"))`
    -> "adapter 4f1c2e9a0b7d's manifest.json is not JSON."
    """
    for prefix in _home_spellings(home):
        text = text.replace(prefix, _HOME)
    text = _ADAPTER.sub(_adapter_words, text)
    return _ABSOLUTE.sub(_file_name, text)


def public_value(value: Any, home: Path) -> Any:
    """`public_text` applied to every string inside a JSON-like value."""
    if isinstance(value, str):
        return public_text(value, home)
    if isinstance(value, dict):
        return {key: public_value(item, home) for key, item in value.items()}
    if isinstance(value, list):
        return [public_value(item, home) for item in value]
    return value


def public_result(tool: str, result: Any, home: Path) -> Any:
    """A tool's result as it may leave the server: errors and reports cleaned, others as is."""
    if not isinstance(result, CallToolResult):
        return result
    if not result.is_error and tool not in REPORTING_TOOLS:
        return result
    content = [
        TextContent(type="text", text=public_text(c.text, home)) if isinstance(c, TextContent)
        else c
        for c in result.content
    ]
    structured = result.structured_content
    return result.model_copy(update={
        "content": content,
        "structured_content": None if structured is None else public_value(structured, home),
    })


def _home_spellings(home: Path) -> Iterable[str]:
    """RUNE_HOME as given and resolved, longest first (one may contain the other)."""
    spellings = {str(home), str(home.expanduser())}
    with contextlib.suppress(OSError, RuntimeError):
        spellings.add(str(home.expanduser().resolve()))
    return sorted((s for s in spellings if len(s) > 1), key=len, reverse=True)


def _adapter_words(match: re.Match[str]) -> str:
    folder, adapter, inner = match.group(1), match.group(2)[:12], match.group(3)
    if not inner:
        return f"adapter {adapter}'s folder" if folder else f"adapter {adapter}"
    trail = len(inner) - len(inner.rstrip(_TRAILING))
    name = inner[: len(inner) - trail] if trail else inner
    return f"adapter {adapter}'s {name.replace(chr(92), '/')}" + inner[len(name):]


def _file_name(match: re.Match[str]) -> str:
    found = match.group(0)
    body = found.rstrip(_TRAILING)
    trail = found[len(body):]
    name = re.split(r"[/\\]", body.rstrip("/\\"))[-1]
    return (name or "a file") + trail
