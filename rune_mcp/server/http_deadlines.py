"""Deadlines for reading an HTTP request: a client that sends its headers or body slowly is
disconnected after a bounded time.

uvicorn's `timeout_keep_alive` only covers the idle time between requests, and it is
cancelled by the first byte of the next one; nothing bounds a connection that sends nothing,
or a header line or a body a byte at a time, so a few such clients hold the server's
connections for ever. This is an h11 protocol (h11 is what uvicorn always has; httptools is
an optional extra) that keeps one deadline per phase of a request, taken from h11's view of
the client:

- awaiting headers (h11 state IDLE), from the connection's start or the end of the previous
  response: `header_timeout`, answered with 408 and closed;
- awaiting the rest of the body (SEND_BODY): `body_timeout`, closed, which the app sees as a
  disconnect.

A deadline is set once per phase, so bytes trickling in do not extend it. While the app
works on a request or streams its response the client owes nothing and no deadline runs.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)

_TIMEOUT_BODY = b"the request was not received in time\n"
TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(_TIMEOUT_BODY), _TIMEOUT_BODY)
)


def deadline_protocol(header_timeout: float, body_timeout: float) -> type[H11Protocol]:
    """The protocol class for `uvicorn.Config(http=...)`, with these two deadlines."""
    return type(
        "DeadlineH11Protocol",
        (DeadlineH11Protocol,),
        {"header_timeout": header_timeout, "body_timeout": body_timeout},
    )


class DeadlineH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline on reading each request's headers and body."""

    header_timeout: float = 10.0
    body_timeout: float = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._phase: str | None = None
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._track()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._track()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # the next request's headers get a whole deadline of their own
        self._track(fresh=True)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        super().connection_lost(exc)

    def handle_websocket_upgrade(self, event: h11.Request) -> None:
        self._cancel()  # the connection is no longer this protocol's
        self._phase = "upgraded"
        super().handle_websocket_upgrade(event)

    def _track(self, fresh: bool = False) -> None:
        """Start the deadline of the phase h11 is in, if it has not started yet."""
        if self._phase == "upgraded" or self.transport is None or self.transport.is_closing():
            return
        phase = {h11.IDLE: "headers", h11.SEND_BODY: "body"}.get(self.conn.their_state)
        if phase == self._phase and not fresh:
            return
        self._cancel()
        self._phase = phase
        if phase is not None:
            timeout = self.header_timeout if phase == "headers" else self.body_timeout
            self._deadline = self.loop.call_later(timeout, self._expire, phase, timeout)

    def _cancel(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self, phase: str, timeout: float) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        where = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
        log.info("closing the connection from %s: request %s not in after %g s", where, phase,
                 timeout)
        if phase == "headers" and self.conn.our_state is h11.IDLE:
            self.transport.write(TIMEOUT_RESPONSE)
        elif self.cycle is not None and not self.cycle.response_complete:
            # the app is waiting on receive(): wake it with a disconnect, and drop its output
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        self.transport.close()
