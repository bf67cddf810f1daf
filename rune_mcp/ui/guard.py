"""What stands between a browser and the dashboard: the checks of `rune serve --http`, reused.

- Host and Origin are checked by the MCP SDK's DNS-rebinding protection with the settings
  `rune_mcp.server.http` builds for a loopback bind, so a page on another site cannot reach
  the dashboard through a rebound name, and a request naming another host is refused.
- When a token is set, `BearerTokenMiddleware` decides. A browser cannot add an
  Authorization header to a link it follows, so the token may come once as `?token=...`
  (the address `rune ui` prints); it is then kept in an HttpOnly, SameSite=Strict cookie,
  and every request carries it to the same middleware as a bearer header.
- A request that changes something (POST) must also come from the dashboard's own pages:
  its Origin (or Referer) is this very host, and its form carries the per-process token the
  pages embed. A refusal is one sentence on a page, never the bare status.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from rune_mcp.ui.layout import error_page

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Any]]
Send = Callable[[Any], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
COOKIE = "rune_ui_token"

REFUSALS = {
    421: "This dashboard answers only requests addressed to this machine (127.0.0.1 or "
         "localhost); open it at the address `rune ui` printed.",
    403: "Requests from another site's pages are refused; open the dashboard directly at the "
         "address `rune ui` printed.",
    401: "This dashboard needs its token: open the address `rune ui` printed, which ends in "
         "?token=..., or pass the token as a bearer header.",
}


class Guard:
    """ASGI middleware: Host/Origin first, then the token, then the dashboard."""

    def __init__(self, app: ASGIApp, token: str | None, host: str = "127.0.0.1") -> None:
        from mcp.server.transport_security import TransportSecurityMiddleware

        from rune_mcp.server.http import BearerTokenMiddleware, transport_security

        self.app = app
        self.token = token
        self.security = TransportSecurityMiddleware(transport_security(host))
        self.bearer = BearerTokenMiddleware(_passed, token) if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        refused = await self.security.validate_request(request, is_post=False)
        if refused is not None:
            await refusal(refused.status_code)(scope, receive, send)
            return
        if self.bearer is not None:
            given = request.query_params.get("token")
            if given is not None:
                response = await self._adopt(request, given)
                await response(scope, receive, send)
                return
            _cookie_as_bearer(scope, request.cookies.get(COOKIE))
            if not await self._authorized(scope, receive):
                await refusal(401)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _authorized(self, scope: Scope, receive: Receive) -> bool:
        """Ask `BearerTokenMiddleware` itself; its inner app only marks that it was reached."""
        probe: dict[str, Any] = {**scope, "rune.passed": False}
        assert self.bearer is not None

        async def discard(_message: Any) -> None:
            return None

        await self.bearer(probe, receive, discard)
        return bool(probe["rune.passed"])

    async def _adopt(self, request: Request, given: str) -> Response:
        """`?token=...`: a good token becomes the cookie and the address loses it."""
        scope = dict(request.scope)
        _cookie_as_bearer(scope, given, replace=True)
        if not await self._authorized(scope, request.receive):
            return refusal(401)
        query = urlencode([(k, v) for k, v in parse_qsl(request.url.query) if k != "token"])
        target = request.url.path + (f"?{query}" if query else "")
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(COOKIE, given, httponly=True, samesite="strict", path="/")
        return response


async def _passed(scope: Scope, _receive: Receive, _send: Send) -> None:
    scope["rune.passed"] = True


def _cookie_as_bearer(scope: Scope, token: str | None, replace: bool = False) -> None:
    """Present `token` as the Authorization header (an existing one wins unless `replace`)."""
    headers = list(scope.get("headers") or [])
    if replace:
        headers = [(k, v) for k, v in headers if k != b"authorization"]
    if token and not any(k == b"authorization" for k, _ in headers):
        headers.append((b"authorization", f"Bearer {token}".encode("latin-1", "replace")))
    scope["headers"] = headers


def refusal(status: int) -> HTMLResponse:
    sentence = REFUSALS.get(status, "This request is refused.")
    headers = {"WWW-Authenticate": 'Bearer realm="rune"'} if status == 401 else None
    return HTMLResponse(error_page(sentence, "Refused"), status_code=status, headers=headers)


def same_origin(request: Request) -> bool:
    """True when the request's Origin, or failing that its Referer, is this very host."""
    host = request.headers.get("host", "")
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        referer = request.headers.get("referer")
        if not referer:
            return False
        parts = urlsplit(referer)
        origin = f"{parts.scheme}://{parts.netloc}"
    return bool(host) and origin == f"http://{host}"


def check_post(request: Request, form_token: object, expected: str) -> str | None:
    """None when a POST may go ahead, else the sentence saying why not."""
    if not same_origin(request):
        return ("This form was not sent from the dashboard's own page; reload the dashboard "
                "and use its buttons.")
    if not isinstance(form_token, str) or not hmac.compare_digest(form_token, expected):
        return ("This form is stale (the dashboard restarted since the page was loaded); "
                "reload the page and try again.")
    return None
