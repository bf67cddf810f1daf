"""A client that sends its headers or body slowly is disconnected after a bounded time; one that
is merely slow between requests, or waits on a slow answer, is not. Real sockets, loopback only;
every loop that waits is bounded."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import uvicorn
from helpers.http import http_serve

from rune_mcp.config import Settings
from rune_mcp.server.http_deadlines import deadline_protocol

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.5
SLACK = 4.0  # a loaded machine may be late; a missing deadline is late for ever
HEAD = b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\n"


class EchoApp:
    """Answers with the request body; records how each request ended."""

    def __init__(self) -> None:
        self.events: list[str] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        if scope["path"] == "/slow":
            await anyio.sleep(BODY_TIMEOUT + HEADER_TIMEOUT + 0.5)
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.events.append("disconnect")
                return
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.events.append(f"body {len(body)}")
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(body) or 2).encode())]})
        await send({"type": "http.response.body", "body": body or b"ok"})


@pytest.fixture
def echo_server() -> Iterator[tuple[int, EchoApp]]:
    app = EchoApp()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_level="warning", lifespan="off",
                            http=deadline_protocol(HEADER_TIMEOUT, BODY_TIMEOUT))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    try:
        yield sock.getsockname()[1], app
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def _connect(port: int) -> socket.socket:
    conn = socket.create_connection(("127.0.0.1", port), timeout=HEADER_TIMEOUT + BODY_TIMEOUT + SLACK)
    return conn


def _trickle_until_closed(conn: socket.socket, chunk: bytes, seconds: float) -> tuple[float, bytes]:
    """Send `chunk` every 0.1 s for at most `seconds`; when the server hangs up, how long it
    took and what it said. Fails if the connection is still open at the end."""
    start = time.monotonic()
    conn.settimeout(0.1)
    received = b""
    while time.monotonic() - start < seconds:
        try:
            conn.sendall(chunk)
        except OSError:  # reset or broken pipe: the server closed it
            return time.monotonic() - start, received
        try:
            data = conn.recv(4096)
        except TimeoutError:
            continue
        except OSError:
            return time.monotonic() - start, received
        if not data:
            return time.monotonic() - start, received
        received += data
    raise AssertionError(f"still connected after {seconds} s of trickling")


def _read_response(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data or not data.endswith((b"ok", b"hello")):
        more = conn.recv(4096)
        assert more, f"closed mid-response: {data!r}"
        data += more
    return data


def test_silent_connection_gets_408_and_is_closed(echo_server: tuple[int, EchoApp]) -> None:
    port, app = echo_server
    with _connect(port) as conn:
        start = time.monotonic()
        data = b""
        while chunk := conn.recv(4096):
            data += chunk
        elapsed = time.monotonic() - start
    assert data.startswith(b"HTTP/1.1 408 Request Timeout"), data
    assert HEADER_TIMEOUT * 0.8 < elapsed < HEADER_TIMEOUT + SLACK
    assert app.events == []


def test_headers_sent_slowly_are_cut_off(echo_server: tuple[int, EchoApp]) -> None:
    port, app = echo_server
    with _connect(port) as conn:
        conn.sendall(HEAD + b"X-Slow: ")
        elapsed, said = _trickle_until_closed(conn, b"a", HEADER_TIMEOUT + SLACK)
    assert HEADER_TIMEOUT * 0.8 < elapsed < HEADER_TIMEOUT + SLACK
    assert said.startswith(b"HTTP/1.1 408") or said == b""
    assert app.events == []  # the app never saw the request


def test_body_sent_slowly_is_cut_off(echo_server: tuple[int, EchoApp]) -> None:
    port, app = echo_server
    with _connect(port) as conn:
        conn.sendall(HEAD + b"Content-Length: 100000\r\n\r\n" + b"x" * 10)
        elapsed, _ = _trickle_until_closed(conn, b"x", BODY_TIMEOUT + SLACK)
    assert BODY_TIMEOUT * 0.8 < elapsed < BODY_TIMEOUT + SLACK
    deadline = time.monotonic() + SLACK
    while not app.events and time.monotonic() < deadline:
        time.sleep(0.05)
    assert app.events == ["disconnect"]  # the app was told, not left waiting


def test_each_request_gets_its_own_header_deadline(echo_server: tuple[int, EchoApp]) -> None:
    port, app = echo_server
    with _connect(port) as conn:
        for _ in range(3):  # 3 x 0.6 s on one connection: longer than one header deadline
            conn.sendall(HEAD + b"Content-Length: 5\r\n\r\nhello")
            assert _read_response(conn).startswith(b"HTTP/1.1 200")
            time.sleep(HEADER_TIMEOUT * 0.6)
    assert app.events == ["body 5"] * 3


def test_a_slow_answer_is_not_cut_off(echo_server: tuple[int, EchoApp]) -> None:
    port, app = echo_server
    with _connect(port) as conn:
        conn.sendall(b"GET /slow HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert _read_response(conn).startswith(b"HTTP/1.1 200")
    assert app.events == ["body 0"]


def test_rune_serve_http_applies_the_header_deadline(settings: Settings, tmp_path: Path) -> None:
    with http_serve(settings, tmp_path / "http.log", RUNE_HTTP_HEADER_TIMEOUT="1",
                    RUNE_HTTP_BODY_TIMEOUT="1") as port:
        with _connect(port) as conn:
            conn.sendall(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            elapsed, said = _trickle_until_closed(conn, b"a", 1 + SLACK)
        assert elapsed < 1 + SLACK and (said.startswith(b"HTTP/1.1 408") or said == b"")
