"""A `rune serve --http` subprocess on a free local port, stopped when the test leaves it."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from helpers.stdio import serve_env
from rune_mcp.config import Settings

START_S = 120.0  # importing the server on a loaded machine can take a while; never for ever


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def http_serve(settings: Settings, log: Path, **env: str) -> Iterator[int]:
    """Start `rune serve --http` with `env` added to its environment and yield its port once
    it accepts connections; its output goes to `log`, which a failed start shows."""
    port = free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rune_mcp", "serve", "--http", "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=serve_env(settings, **env),
        )
        try:
            deadline = time.monotonic() + START_S
            while time.monotonic() < deadline:
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", port)) == 0:
                        break
                assert proc.poll() is None, log.read_text()
                time.sleep(0.2)
            yield port
        finally:
            proc.terminate()
            proc.wait(30)
