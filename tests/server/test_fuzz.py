"""Hostile and malformed tool calls: wrong types, extra fields, huge strings, traversal.

For every tool, at least 200 generated calls (seeded, so a failure reproduces). None may
crash the server or leak an internal detail, and the calls that must be refused are. Then
the same over a real `rune serve` on stdio, with malformed protocol messages in between:
each is answered with the expected JSON-RPC error, and the server answers to the end.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from rune_mcp.config import Settings
from server.conftest import generic_transcript, text_of

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


@pytest.mark.anyio
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


# --- the same over real stdio, with malformed protocol messages in between -------------------

PARSE, INVALID = -32700, -32600
DEPTH = 64  # max_json_depth's default
NAMES = ["", "nope", "remember", "REMEMBER_SESSION", "../../etc/passwd", "tools/list", "a\x00b",
         "ü∂ñ😀", "x" * 300, "memory_status ", "__init__", "$(id)"]
TEXT = ["ping", "{", "}{", "[1,", '{"a":}', "nul\x00l", "tru", "NaN", "'single'", "\x01\x02",
        "ünïcödé ☃", "<xml/>", "1 2", '{"jsonrpc": "2.0"', "// comment", "-"]


def _nest(levels: int) -> Any:
    value: Any = "x"
    for n in range(levels):
        value = [value] if n % 2 else {"k": value}
    return value


def _hostile_call(rng: random.Random, id_: int) -> tuple[dict[str, Any], str]:
    """A tools/call and what must come back: "refuse" (an error or an isError result),
    "deep" (the line-level error, with this id) or "any" (an answer)."""
    call: dict[str, Any] = {"jsonrpc": "2.0", "id": id_, "method": "tools/call"}
    roll = rng.random()
    tool = rng.choice(sorted(PARAMS))
    if roll < 0.55:
        args, refuse = _case(rng, tool)
        if tool == "remember_session" and not refuse:
            args["extra"] = 1  # a valid call would queue real training in the server
            refuse = True
        call["params"] = {"name": tool, "arguments": args}
        return call, "refuse" if refuse else "any"
    if roll < 0.68:
        call["params"] = {"name": rng.choice(NAMES), "arguments": {}}
        return call, "refuse"
    if roll < 0.80:
        levels = rng.randrange(2, 120)
        param = rng.choice(PARAMS[tool] or ["extra"])
        call["params"] = {"name": tool, "arguments": {param: _nest(levels)}}
        return call, "deep" if levels + 3 > DEPTH else "refuse"
    if roll < 0.88:
        call["params"] = {"name": rng.choice(["recall_adapter", "run_with_memory", "forget"])}
        return call, "refuse"  # required arguments missing
    if roll < 0.95:
        call["params"] = {"name": tool, "arguments": rng.choice([[1], "args", 5, True])}
        return call, "refuse"
    call["params"] = rng.choice([{"name": 5}, {"arguments": {}}, {"name": None}, {}])
    return call, "refuse"


def _req(id_: Any, **extra: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id_, "method": "ping", **extra}


def _malformed(rng: random.Random, id_: int) -> tuple[bytes, list[tuple[int, Any]]]:
    """A line that is not an MCP message, and the (code, id) of each error it must get."""
    dumps = json.dumps
    kind = rng.randrange(12)
    if kind == 0:
        return rng.choice(TEXT).encode() + bytes(rng.choice([b"", b"\xff"])), [(PARSE, None)]
    if kind == 1:
        whole = dumps(_req(id_, params={"s": "x" * rng.randrange(50)}))
        return whole[: rng.randrange(1, len(whole) - 1)].encode(), [(PARSE, None)]
    if kind == 2:
        bad = bytes(rng.choice([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80"]))
        return dumps(_req(id_, params={"s": "@"})).encode().replace(b"@", bad), [(PARSE, id_)]
    if kind == 3:
        return dumps(rng.choice([0, -1.5, None, True, "s", "😀" * 3])).encode(), [(INVALID, None)]
    if kind == 4:
        ids = [f"{id_}-{n}" for n in range(rng.randrange(4))]
        items: list[Any] = [_req(i) for i in ids]
        items += rng.sample([{"jsonrpc": "2.0", "method": "n"}, 5, None, [], {"id": 1}],
                            rng.randrange(3))
        rng.shuffle(items)
        order = [i["id"] for i in items if isinstance(i, dict) and i.get("method") == "ping"]
        return dumps(items).encode(), [(INVALID, i) for i in order] or [(INVALID, None)]
    if kind == 5:
        shapes: list[dict[str, Any]] = [
            {"id": id_}, {"id": id_, "params": {}}, {"id": id_, "result": rng.choice([5, []])},
            {"id": id_, "error": rng.choice(["no", 5, {"code": "x"}])}, {},
        ]
        return dumps({"jsonrpc": "2.0", **rng.choice(shapes)}).encode(), [(INVALID, None)]
    if kind == 6:
        wrong: dict[str, Any] = rng.choice([
            {"jsonrpc": "1.0"}, {"jsonrpc": 2}, {"method": rng.choice([5, None, []])},
            {"params": rng.choice([[1], "p", 3])},
        ])
        message = {**_req(id_), **wrong}
        if rng.random() < 0.3:
            del message["jsonrpc"]
        return dumps(message).encode(), [(INVALID, id_)]
    if kind == 7:
        bad_id: Any = rng.choice([True, False, 1.5, None, [], {"a": 1}])
        return dumps(_req(bad_id)).encode(), [(INVALID, None)]
    if kind == 8:
        levels = rng.randrange(DEPTH, 400)
        return dumps(_req(id_, params={"a": _nest(levels)})).encode(), [(INVALID, id_)]
    if kind == 9:
        return b"[" * rng.randrange(3000, 20000), [(INVALID, None)]
    if kind == 10:
        huge = "\x00" * (LIMIT + 70_000)  # each NUL is six bytes on the wire
        return dumps(_req(id_, params={"s": huge})).encode(), [(INVALID, None)]
    return b"\xef\xbb\xbf" + dumps(_req(id_)).encode(), [(PARSE, None)]


def _assert_no_leak(reply: dict[str, Any], places: list[str], where: str) -> None:
    text = json.dumps(reply, ensure_ascii=False)
    for leak in [*places, "site-packages", "Traceback", "rune_mcp/"]:
        assert leak not in text, f"{where} leaked {leak!r}: {text[:400]}"


def _stdio_barrage(settings: Settings, tmp_path: Path, calls: int, malformed: int) -> None:
    from helpers.stdio import REPO, StdioPeer

    rng = random.Random(f"rune-stdio-{calls}-{malformed}")
    places = [str(settings.home), str(settings.cache_dir), str(REPO), str(tmp_path)]
    todo = ["call"] * calls + ["line"] * malformed
    rng.shuffle(todo)
    with StdioPeer(settings, tmp_path, RUNE_MAX_REQUEST_BYTES=str(LIMIT)) as peer:
        for n, what in enumerate(todo, start=1):
            if what == "call":
                call, expect = _hostile_call(rng, n)
                reply = peer.request(call)
                where = f"call {str(call)[:200]}"
                refused = "error" in reply or reply["result"].get("isError")
                if expect == "refuse":
                    assert refused, f"{where} was not refused: {str(reply)[:300]}"
                if expect == "deep":
                    assert reply.get("error", {}).get("code") == INVALID, f"{where}: {reply}"
            else:
                line, expected = _malformed(rng, n)
                replies = peer.exchange(line)
                where = f"line {line[:120]!r}"
                got = [(r.get("error", {}).get("code"), r.get("id")) for r in replies]
                assert got == expected, f"{where}: {replies}"
                reply = replies[0]
            _assert_no_leak(reply, places, where)
        status = peer.request({"jsonrpc": "2.0", "id": "last", "method": "tools/call",
                               "params": {"name": "memory_status", "arguments": {}}})
        assert not status["result"].get("isError"), status
    assert peer.proc.returncode == 0, peer.stderr_tail()


def test_stdio_barrage_small(settings: Settings, tmp_path: Path) -> None:
    _stdio_barrage(settings, tmp_path, calls=60, malformed=30)


@pytest.mark.slow
def test_stdio_barrage(settings: Settings, tmp_path: Path) -> None:
    _stdio_barrage(settings, tmp_path, calls=600, malformed=150)
