"""Hostile and malformed tool calls: wrong types, extra fields, huge strings, traversal.

For every tool, at least 200 generated calls (seeded, so a failure reproduces). None may
crash the server or leak an internal detail, and the calls that must be refused are.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from rune_mcp.config import Settings
from server.conftest import generic_transcript, text_of

pytestmark = pytest.mark.anyio
CALLS_PER_TOOL = 220
LIMIT = 20_000  # max_request_bytes for these servers: "huge" stays cheap to generate

PARAMS: dict[str, list[str]] = {
    "remember_session": ["transcript_path", "session_id", "agent", "text", "wait"],
    "recall_adapter": ["task", "k", "project"],
    "run_with_memory": ["prompt", "task", "adapter", "max_tokens"],
    "list_adapters": ["project", "limit"],
    "forget": ["adapter_id", "session_id"],
    "memory_status": [],
}
TRAVERSAL = [
    "../../../../etc/passwd", "/etc/passwd", "/etc/shadow", "~/.ssh/id_rsa",
    "..\\..\\windows\\win.ini", "%2e%2e/%2e%2e/etc/passwd", "/proc/self/environ",
    "file:///etc/passwd", "/dev/zero", "a/../../b", "/tmp/\x00.jsonl",
]
ODD = [
    None, 0, -1, 2**63, 3.5, float("inf"), True, [], {}, ["a"], {"a": 1}, "", " ", "\x00",
    "ü∂ñ", "😀" * 10, "${HOME}", "$(rm -rf /)", "'; DROP TABLE jobs;--", "\n\n", "-rf",
    "a" * 300, '{"steps": []}', "[1, 2]", "auto", "none", "generic",
]


def _value(rng: random.Random, param: str) -> tuple[Any, bool]:
    """A value for `param` and whether it alone forces a refusal."""
    roll = rng.random()
    if roll < 0.12:
        return "x" * (LIMIT + 100), True
    if roll < 0.35 and param in ("transcript_path", "adapter_id", "session_id"):
        return rng.choice(TRAVERSAL), True
    if roll < 0.45 and param == "text":
        return generic_transcript(rng.randrange(5)), False
    if roll < 0.55 and param in ("task", "prompt", "project"):
        return rng.choice(["fix the login test", "csv import is slow"]), False
    return rng.choice(ODD), False


def _case(rng: random.Random, tool: str) -> tuple[dict[str, Any], bool]:
    params = PARAMS[tool]
    args: dict[str, Any] = {}
    refuse = False
    for param in params:
        if rng.random() < 0.5:
            args[param], forced = _value(rng, param)
            refuse = refuse or forced
    if not params or rng.random() < 0.2:
        args[rng.choice(["extra", "__proto__", "path", "k2", "../x"])] = rng.choice(ODD)
        refuse = True
    if tool == "run_with_memory" and not refuse:
        # a valid call would generate text; these calls test refusals, so break one argument
        args["max_tokens"] = rng.choice([0, -3, "many", 10**6, None])
        refuse = True
    return args, refuse


def _check_result(result: Any, home: Path, tool: str, args: dict[str, Any], refuse: bool) -> None:
    text = text_of(result)
    where = f"{tool}({str(args)[:200]})"
    if refuse:
        assert result.is_error, f"{where} was not refused: {text[:200]}"
    if result.is_error:
        assert "\n" not in text.strip(), f"{where}: not one sentence: {text[:300]}"
        assert len(text) < 600, f"{where}: error too long"
    else:
        assert result.structured_content is not None, where
    for leak in ("Traceback", "internal error", str(home), "site-packages", "rune_mcp/"):
        assert leak not in text, f"{where} leaked {leak!r}: {text[:300]}"


@pytest.mark.parametrize("tool", sorted(PARAMS))
async def test_generated_calls_are_refused_cleanly(
    tool: str, settings: Settings, claude_session: Path
) -> None:
    from mcp import Client

    from rune_mcp.server import build_server

    small = settings.with_overrides(max_request_bytes=LIMIT)
    rng = random.Random(f"rune-{tool}")
    async with Client(build_server(small, start_worker=False)) as client:
        for _ in range(CALLS_PER_TOOL):
            args, refuse = _case(rng, tool)
            result = await client.call_tool(tool, args)
            _check_result(result, settings.home, tool, args, refuse)
        # the server is still healthy after the barrage
        status = await client.call_tool("memory_status", {})
        assert not status.is_error
