"""The stdio transport: the SDK's, with every line screened before it reaches the SDK.

The SDK's reader (`mcp.server.stdio.stdio_server`) decodes stdin with `errors="replace"`, so
invalid UTF-8 silently becomes U+FFFD; it reads a line of any length into memory; and a line
that its message validator refuses (not JSON, nested past the parser's limit of about 200
levels, a batch array, an object without `method`) is put on the read stream as an exception
object, which the dispatcher logs at debug level and drops. The client gets no answer and
waits on its request for ever. A request whose id is not a string or an integer is worse: the
validator reads it as a notification, so it runs and is never answered.

Here stdin is read as bytes, at most one line's limit at a time; `linecheck` decides what each
line is. A message goes on to the SDK's reader unchanged; anything else is answered with its
JSON-RPC error through the SDK's own writer, so stdout still carries only whole protocol
messages, one per line, and nothing is written past the writer.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO, cast

import anyio
from mcp.server.stdio import stdio_server
from mcp.shared.message import SessionMessage

from rune_mcp.config import Settings
from rune_mcp.server.linecheck import check_line, oversized

log = logging.getLogger(__name__)

# A tool's arguments may be up to max_request_bytes; the envelope around them and JSON escapes
# get this much room on top, so that arguments a little too large get the tool's own refusal
# (which names the request) rather than a line-level one.
ENVELOPE_BYTES = 64 * 1024
_DRAIN_CHUNK = 64 * 1024


@dataclass(frozen=True)
class StdioLimits:
    """The largest line read (newline included) and the deepest nesting accepted."""

    max_line_bytes: int
    max_depth: int

    @classmethod
    def from_settings(cls, settings: Settings) -> StdioLimits:
        return cls(settings.max_request_bytes + ENVELOPE_BYTES, settings.max_json_depth)


@asynccontextmanager
async def screened_stdio(limits: StdioLimits) -> AsyncIterator[tuple[Any, Any]]:
    """`(read_stream, write_stream)` for the low-level server, like the SDK's `stdio_server`."""
    with _claimed_stdin() as raw:
        lines = _ScreenedLines(raw, limits)
        # stdout is left to the SDK, which points fd 1 at stderr while it serves.
        async with stdio_server(stdin=cast(Any, lines)) as (read_stream, write_stream):
            lines.answer_through(write_stream.clone())
            yield read_stream, write_stream


class _ScreenedLines:
    """What the SDK's reader iterates: the message lines of stdin; the rest are answered."""

    def __init__(self, raw: BinaryIO, limits: StdioLimits) -> None:
        self._raw = raw
        self._limits = limits
        self._replies: Any = None
        self._ready = anyio.Event()

    def answer_through(self, replies: Any) -> None:
        """Send errors into `replies` (a clone of the write stream, closed at end of input)."""
        self._replies = replies
        self._ready.set()

    def __aiter__(self) -> AsyncIterator[str]:
        return self._lines()

    async def _lines(self) -> AsyncIterator[str]:
        await self._ready.wait()
        async with self._replies:
            while True:
                line, whole = await anyio.to_thread.run_sync(
                    _read_line, self._raw, self._limits.max_line_bytes, abandon_on_cancel=True
                )
                if not line:
                    return
                verdict = (
                    check_line(line, self._limits.max_depth)
                    if whole
                    else oversized(self._limits.max_line_bytes)
                )
                if verdict is None:
                    continue
                if isinstance(verdict, str):
                    yield verdict
                    continue
                log.info("stdio: answered a malformed line (%d): %s", verdict.code, verdict.message)
                for reply in verdict.replies():
                    await self._replies.send(SessionMessage(reply))


def _read_line(raw: BinaryIO, limit: int) -> tuple[bytes, bool]:
    """The next line (b"" at end of input) and whether it fits in `limit` bytes; the rest of a
    line that does not is read and thrown away, so memory stays bounded by `limit`."""
    line = raw.readline(limit + 1)
    if len(line) <= limit or line.endswith(b"\n"):
        return line, True
    while True:
        rest = raw.readline(_DRAIN_CHUNK)
        if not rest or rest.endswith(b"\n"):
            return line, False


@contextmanager
def _claimed_stdin() -> Iterator[BinaryIO]:
    """stdin's bytes on a private descriptor, with fd 0 on the null device while serving, so a
    child process or a stray read cannot take protocol bytes (the SDK does this for the streams
    it claims itself). Where stdin is not fd 0, its buffer is read in place."""
    buffer = sys.stdin.buffer
    try:
        if buffer.fileno() != 0:
            raise OSError("stdin is not descriptor 0")
        private = _dup_above_std(0)
    except (AttributeError, OSError, ValueError):
        yield buffer
        return
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        os.dup2(null, 0)
    finally:
        os.close(null)
    try:
        # closefd=False, never closed: a reader thread abandoned at shutdown may still be
        # blocked on this descriptor, and a recycled number would hand it someone else's file.
        yield open(private, "rb", closefd=False)  # noqa: SIM115
    finally:
        os.dup2(private, 0)


def _dup_above_std(fd: int) -> int:
    """A duplicate of `fd` that is not 0, 1 or 2 and is not inherited by children."""
    if sys.platform == "win32":
        duplicate = os.dup(fd)
        if duplicate <= 2:
            os.close(duplicate)
            raise OSError("the duplicate landed on a standard descriptor")
        return duplicate
    import fcntl

    return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
