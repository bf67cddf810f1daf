"""A `rune serve` subprocess spoken to over real stdio, line by line, with bounded waits."""

from __future__ import annotations

import itertools
import json
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from rune_mcp.config import Settings

REPO = Path(__file__).resolve().parents[2]
INIT = {
    "jsonrpc": "2.0", "id": "init", "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {},
               "clientInfo": {"name": "test", "version": "1"}},
}
WAIT = 60.0  # seconds for any one reply: generous on a loaded machine, but never for ever


def serve_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNE_")}
    env.update(RUNE_HOME=str(settings.home), RUNE_CACHE_DIR=str(settings.cache_dir),
               PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", **extra)
    return env


class StdioPeer:
    """The client end: raw lines out, every stdout line parsed as JSON (or the test fails)."""

    def __init__(self, settings: Settings, cwd: Path, **env: str) -> None:
        self.stderr_path = cwd / "serve-stderr.log"
        self._stderr = self.stderr_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rune_mcp", "serve"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
            env=serve_env(settings, **env), cwd=cwd,
        )
        assert self.proc.stdin and self.proc.stdout
        self._stdin: IO[bytes] = self.proc.stdin
        self._replies: queue.Queue[bytes] = queue.Queue()
        self._ids = itertools.count()
        self._pump_thread = threading.Thread(target=self._pump, args=(self.proc.stdout,),
                                             daemon=True)
        self._pump_thread.start()
        self.stdout_lines: list[bytes] = []

    def __enter__(self) -> StdioPeer:
        reply = self.request(INIT)
        assert reply["result"]["serverInfo"]["name"] == "rune", reply
        self.send(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}).encode())
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            self._stdin.close()
            self.proc.wait(WAIT)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(WAIT)
            self._pump_thread.join(WAIT)
            if self.proc.stdout:
                self.proc.stdout.close()
            self._stderr.close()

    def _pump(self, stdout: IO[bytes]) -> None:
        for line in iter(stdout.readline, b""):
            self._replies.put(line)
        self._replies.put(b"")

    def send(self, line: bytes) -> None:
        self._stdin.write(line.rstrip(b"\n") + b"\n")
        self._stdin.flush()

    def next_reply(self) -> dict[str, Any]:
        try:
            raw = self._replies.get(timeout=WAIT)
        except queue.Empty:
            raise AssertionError(f"no reply within {WAIT} s; stderr: {self.stderr_tail()}") from None
        assert raw, f"the server closed stdout; stderr: {self.stderr_tail()}"
        self.stdout_lines.append(raw)
        message = json.loads(raw)  # every stdout line is one JSON-RPC message
        assert isinstance(message, dict) and message.get("jsonrpc") == "2.0", raw[:300]
        return message

    def request(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send a request and return its reply (anything else on the way is a failure)."""
        self.send(json.dumps(message).encode())
        reply = self.next_reply()
        assert reply.get("id") == message["id"], f"expected id {message['id']!r}, got {reply}"
        return reply

    def exchange(self, line: bytes) -> list[dict[str, Any]]:
        """Send one raw line, then a ping; the replies that came before the ping's answer."""
        self.send(line)
        sentinel = f"sentinel-{next(self._ids)}"
        self.send(json.dumps({"jsonrpc": "2.0", "id": sentinel, "method": "ping"}).encode())
        replies = []
        while (reply := self.next_reply()).get("id") != sentinel:
            replies.append(reply)
        assert reply.get("result") == {}, reply
        return replies

    def stderr_tail(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text(errors="replace")[-2000:]
