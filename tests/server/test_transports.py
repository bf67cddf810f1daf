"""`rune serve` as a real process: stdio stays pure JSON-RPC, HTTP guards Host, Origin, token
and size."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.http import http_serve

from rune_mcp.config import Settings

REPO = Path(__file__).resolve().parents[2]
INIT = {
    "jsonrpc": "2.0", "id": 0, "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {},
               "clientInfo": {"name": "test", "version": "1"}},
}


def _env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNE_")}
    env.update(RUNE_HOME=str(settings.home), RUNE_CACHE_DIR=str(settings.cache_dir),
               PYTHONPATH=str(REPO), **extra)
    return env


def _requests(n: int) -> list[dict[str, Any]]:
    """A mix of cheap calls, refusals and successes, each with its own id."""
    kinds: list[tuple[str, dict[str, Any]]] = [
        ("tools/list", {}),
        ("ping", {}),
        ("tools/call", {"name": "memory_status", "arguments": {}}),
        ("tools/call", {"name": "recall_adapter", "arguments": {"task": 5}}),
        ("tools/call", {"name": "remember_session",
                        "arguments": {"transcript_path": "/etc/passwd"}}),
        ("tools/call", {"name": "forget", "arguments": {"adapter_id": "../x"}}),
        ("tools/call", {"name": "nope", "arguments": {}}),
        ("resources/read", {"uri": "rune://status"}),
    ]
    out = []
    for i in range(1, n + 1):
        method, params = kinds[i % len(kinds)]
        out.append({"jsonrpc": "2.0", "id": i, "method": method, "params": params})
    return out


def test_stdio_stdout_is_pure_jsonrpc_through_1000_calls(settings: Settings, tmp_path: Path) -> None:
    stderr = (tmp_path / "stderr.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "rune_mcp", "--debug", "serve"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
        env=_env(settings, RUNE_LOG_LEVEL="DEBUG"), cwd=tmp_path,
    )
    assert proc.stdin and proc.stdout
    try:
        lines = [INIT, {"jsonrpc": "2.0", "method": "notifications/initialized"}]
        lines += _requests(1000)
        proc.stdin.write(b"".join(json.dumps(m).encode() + b"\n" for m in lines))
        proc.stdin.flush()
        seen: dict[int, dict[str, Any]] = {}
        while len(seen) < 1001:
            raw = proc.stdout.readline()
            assert raw, f"server stopped early; stderr: {(tmp_path / 'stderr.log').read_text()[-2000:]}"
            message = json.loads(raw)  # every stdout line is a JSON-RPC message
            assert message["jsonrpc"] == "2.0"
            if "id" in message:
                assert message["id"] not in seen
                seen[message["id"]] = message
    finally:
        proc.stdin.close()
        proc.wait(60)
        proc.stdout.close()
        stderr.close()
    assert proc.returncode == 0
    assert seen[0]["result"]["serverInfo"]["name"] == "rune"
    assert all("result" in seen[i] for i in range(1, 1001))
    refused = seen[3]["result"]  # recall_adapter with a number for task
    assert refused["isError"] and "argument 'task'" in refused["content"][0]["text"]
    assert "DEBUG" in (tmp_path / "stderr.log").read_text()  # the logs went to stderr
    assert (settings.home / "logs" / "rune.log").stat().st_size > 0


def test_sdk_stdio_client(settings: Settings, tmp_path: Path) -> None:
    import anyio
    from mcp import Client, StdioServerParameters

    params = StdioServerParameters(
        command=sys.executable, args=["-m", "rune_mcp", "serve"], env=_env(settings),
        cwd=str(tmp_path),
    )

    async def main() -> tuple[list[str], Any]:
        async with Client(params) as client:
            tools = await client.list_tools()
            status = await client.call_tool("memory_status", {})
            return [t.name for t in tools.tools], status

    names, status = anyio.run(main)
    assert "remember_session" in names and not status.is_error
    assert status.structured_content["jobs"]["queued"] == 0


@pytest.fixture
def http_server(settings: Settings, tmp_path: Path) -> Iterator[str]:
    with http_serve(settings, tmp_path / "http.log", RUNE_AUTH_TOKEN="s3cret",
                    RUNE_MAX_REQUEST_BYTES="4096") as port:
        yield f"http://127.0.0.1:{port}/mcp"


def test_http_guards(http_server: str) -> None:
    import httpx

    base = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    token = {"Authorization": "Bearer s3cret"}
    body = json.dumps(INIT)

    def post(headers: dict[str, str], content: str = body) -> httpx.Response:
        return httpx.post(http_server, headers={**base, **headers}, content=content, timeout=30)

    assert post({}).status_code == 401
    assert post({"Authorization": "Bearer wrong"}).status_code == 401
    assert post({**token, "Host": "evil.example:80"}).status_code == 421
    assert post({**token, "Origin": "http://evil.example"}).status_code == 403
    assert post(token, content=json.dumps({**INIT, "pad": "x" * 5000})).status_code == 413
    ok = post({**token, "Origin": "http://localhost:3000"})
    assert ok.status_code == 200, ok.text
    assert "rune" in ok.text


def test_http_refuses_a_public_bind_without_token(settings: Settings) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "rune_mcp", "serve", "--http", "--host", "0.0.0.0"],
        env=_env(settings), capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 1 and "RUNE_AUTH_TOKEN" in proc.stderr
    assert "Traceback" not in proc.stderr
