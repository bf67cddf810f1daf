"""Rune's MCP resources: the status, and each adapter's manifest (errors and status name no
internal path: `rune_mcp.server.public`)."""

from __future__ import annotations

import json
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError

from rune_mcp.errors import RuneError
from rune_mcp.server.models import StatusResult
from rune_mcp.server.public import public_text, public_value
from rune_mcp.server.safety import check_identifier
from rune_mcp.server.service import Rune, in_thread


def add_resources(server: MCPServer[Any], rune: Rune) -> None:
    @server.resource("rune://status", name="status", mime_type="application/json")
    async def status_resource() -> str:
        """Rune's status: library size, jobs, base model, backend."""
        status: StatusResult = await in_thread(rune.status)
        return json.dumps(public_value(status.model_dump(mode="json"), rune.settings.home),
                          indent=2)

    @server.resource(
        "rune://adapters/{adapter_id}", name="adapter", mime_type="application/json"
    )
    async def adapter_resource(adapter_id: str) -> str:
        """One adapter's manifest: task, source session, training settings, file digests."""
        try:
            check_identifier(adapter_id, "adapter_id")
            record = await in_thread(lambda: rune.library().get(adapter_id))
        except RuneError as exc:
            raise ResourceError(public_text(str(exc), rune.settings.home)) from exc
        return json.dumps(record.manifest, indent=2, sort_keys=True, default=str)
