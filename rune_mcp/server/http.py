"""`rune serve --http`: the streamable HTTP transport and what guards it.

The SDK's DNS-rebinding protection checks Host and Origin against the machine's own names,
the request body is capped, a bearer token is required when one is set (it must be, to
listen beyond this machine), and a client must send each request's headers and body within
the deadlines of `http_deadlines`.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings

from rune_mcp.config import Settings
from rune_mcp.errors import InputError
from rune_mcp.server.http_deadlines import deadline_protocol

log = logging.getLogger(__name__)

LOOPBACK = ("127.0.0.1", "localhost", "::1")


class BearerTokenMiddleware:
    """Refuse HTTP requests without `Authorization: Bearer <token>` (constant-time compare)."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(
        self, scope: dict[str, Any], receive: Callable[[], Awaitable[Any]],
        send: Callable[[Any], Awaitable[None]],
    ) -> None:
        if scope["type"] == "http":
            headers = dict(scope.get("headers") or [])
            given = headers.get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                from starlette.responses import JSONResponse

                response = JSONResponse(
                    {"error": "a valid bearer token is required"},
                    status_code=401,
                    headers={"WWW-Authenticate": 'Bearer realm="rune"'},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def http_app(server: MCPServer[Any], settings: Settings, host: str) -> Any:
    """The streamable HTTP app: Host/Origin checks on (the SDK's DNS-rebinding protection),
    the request size limit, and the bearer token when one is set."""
    app: Any = server.streamable_http_app(
        max_request_body_size=settings.max_request_bytes,
        transport_security=transport_security(host),
        host=host,
    )
    if settings.auth_token:
        app = BearerTokenMiddleware(app, settings.auth_token)
    return app


def transport_security(host: str) -> TransportSecuritySettings:
    """The Host/Origin checks for a server bound to `host`: this machine's own names (and
    `host` itself), any port. `rune ui` applies the same settings to its pages."""
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[f"{h}:*" for h in _local_names(host)] + _local_names(host),
        allowed_origins=[f"http://{h}:*" for h in _local_names(host)],
    )


def serve_http(
    server: MCPServer[Any], settings: Settings, host: str | None, port: int | None
) -> None:
    """Serve over HTTP until the process is stopped; refuse a public bind without a token."""
    import uvicorn

    host = host or settings.http_host
    port = port or settings.http_port
    if host not in LOOPBACK and not settings.auth_token:
        raise InputError(
            f"serving on {host} exposes Rune beyond this machine; set RUNE_AUTH_TOKEN first."
        )
    app = http_app(server, settings, host)
    log.info("rune serve: http://%s:%d/mcp", host, port)
    protocol = deadline_protocol(settings.http_header_timeout, settings.http_body_timeout)
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", lifespan="on", http=protocol
    )
    uvicorn.Server(config).run()


def _local_names(host: str) -> list[str]:
    names = ["127.0.0.1", "localhost", "[::1]"]
    if host not in (*LOOPBACK, "0.0.0.0", "::"):
        names.append(host)
    return names
