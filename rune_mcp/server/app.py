"""The MCP server assembled: `RuneServer` (one-sentence tool failures, the argument checks
every call passes first), `build_server` and `serve`.

Importing this module loads the MCP SDK (most of a second), so only `rune serve`, the tests
and what else really serves import it; `rune_mcp.server` names these lazily.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp_types import CallToolResult, InputRequiredResult
from pydantic import ValidationError

from rune_mcp import __version__
from rune_mcp.config import Settings
from rune_mcp.errors import RuneError
from rune_mcp.server.http import serve_http
from rune_mcp.server.models import tool_error
from rune_mcp.server.public import public_result
from rune_mcp.server.resources import add_resources
from rune_mcp.server.service import Rune
from rune_mcp.server.stdio import StdioLimits, screened_stdio
from rune_mcp.server.tools import add_tools, validation_sentence

log = logging.getLogger(__name__)

NAME = "rune"
INTERNAL_ERROR = "Rune hit an internal error in {tool}; the details are in Rune's log file."

INSTRUCTIONS = """\
Rune is a memory for coding agents that lives in LoRA weights: each finished session is \
distilled into a small adapter that a local model can load later.
- remember_session: call it when a session solved something worth keeping (a bug fixed after \
several attempts, a project-specific procedure). It queues the transcript and returns a job \
id at once; training runs in the background. Pass transcript_path, or session_id for a Claude \
Code / Codex / Cursor session, or text.
- recall_adapter: before starting a task that resembles earlier work, to see which remembered \
sessions match and what they taught.
- run_with_memory: to ask the local model, with the best-matching adapter loaded, how this \
project handled a similar problem. Its answers come from a small local model: check them.
- list_adapters, forget, memory_status: browse, delete (by adapter or by session) and check \
the queue, the library size and the model in use.
Resources: rune://status and rune://adapters/{adapter_id} (an adapter's manifest)."""


class RuneServer(MCPServer[Any]):
    """MCPServer whose tool failures are always one sentence, never a traceback."""

    def __init__(self, rune: Rune, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rune = rune

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[Any, Any] | None = None
    ) -> CallToolResult | InputRequiredResult:
        result = await self._call_tool(name, arguments, context)
        # The one place answers lose Rune's internal paths (`rune_mcp.server.public`).
        cleaned: CallToolResult | InputRequiredResult = public_result(
            name, result, self.rune.settings.home
        )
        return cleaned

    async def _call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[Any, Any] | None = None
    ) -> CallToolResult | InputRequiredResult:
        log.debug("tools/call %s with %s", name[:60], sorted(str(k)[:40] for k in arguments))
        refusal = self._precheck(name, arguments)
        if refusal is not None:
            log.info("refused %s: %s", name, refusal)
            return tool_error(refusal)
        try:
            return await super().call_tool(name, arguments, context)
        except UnexpectedToolError as exc:
            cause = exc.__cause__
            if isinstance(cause, RuneError):
                log.info("%s: %s", name, cause)
                return tool_error(str(cause))
            log.error("%s failed", name, exc_info=cause or exc)
            return tool_error(INTERNAL_ERROR.format(tool=name))
        except ToolError as exc:
            cause = exc.__cause__
            if isinstance(cause, ValidationError):
                return tool_error(validation_sentence(name, cause))
            if isinstance(cause, ToolError | RuneError):
                return tool_error(str(cause))
            return tool_error(str(exc))

    async def run_stdio_async(self) -> None:
        """Serve over stdio with every malformed line answered (`rune_mcp.server.stdio`)."""
        lowlevel = self._lowlevel_server
        limits = StdioLimits.from_settings(self.rune.settings)
        async with screened_stdio(limits) as (read_stream, write_stream):
            await lowlevel.run(read_stream, write_stream, lowlevel.create_initialization_options())

    def _precheck(self, name: str, arguments: dict[str, Any]) -> str | None:
        tool = self._tool_manager.get_tool(name)
        if tool is None:
            return f"there is no tool named {name[:60]!r}; call tools/list to see Rune's tools."
        try:
            size = len(json.dumps(arguments, default=str, ensure_ascii=False).encode("utf-8"))
        except (TypeError, ValueError):
            return f"{name}: the arguments are not valid JSON values."
        limit = self.rune.settings.max_request_bytes
        if size > limit:
            return f"{name}: the arguments are larger than the {limit} bytes Rune accepts."
        allowed = set(tool.parameters.get("properties", {}))
        extra = sorted(k for k in arguments if k not in allowed)
        if extra:
            return (
                f"{name}: unknown argument {str(extra[0])[:60]!r}; it takes "
                f"{', '.join(sorted(allowed)) or 'no arguments'}."
            )
        return None


def build_server(
    settings: Settings, roots: Sequence[Path] = (), start_worker: bool = True
) -> RuneServer:
    """The MCP server with Rune's six tools and two resources."""
    rune = Rune(settings, roots, start_worker)
    server = RuneServer(
        rune,
        name=NAME,
        title="Rune",
        description="Memory for coding agents, stored in LoRA weights.",
        instructions=INSTRUCTIONS,
        version=__version__,
        # The SDK puts a rich handler on the root logger at this level; Rune's own logger
        # (stderr and the log file) carries Rune's debug output, and rendering every
        # library's debug record through rich made 1,000 calls take minutes.
        log_level="WARNING",
    )
    add_tools(server, rune)
    add_resources(server, rune)
    return server


def serve(
    settings: Settings,
    http: bool = False,
    host: str | None = None,
    port: int | None = None,
    roots: Sequence[Path] = (),
) -> int:
    """Run the server until the client disconnects (stdio) or the process is stopped (HTTP)."""
    server = build_server(settings, roots)
    if server.rune.has_queued():
        server.rune.kick_worker()  # jobs left by a closed editor or a hook: pick them up
    if not http:
        log.info("rune serve: stdio")
        server.run("stdio")
        return 0
    serve_http(server, settings, host, port)
    return 0
