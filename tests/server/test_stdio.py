"""`rune serve` over real stdio answers every malformed line with its JSON-RPC error, with the
request's id where it can be known, and passes valid messages through unchanged."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from helpers.stdio import StdioPeer

from rune_mcp.config import Settings
from rune_mcp.server.linecheck import check_line, nesting_depth

PARSE, INVALID = -32700, -32600
LIMIT = 20_000  # RUNE_MAX_REQUEST_BYTES for these servers; lines may be 64 KiB longer


def _req(id_: Any = 7, **extra: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id_, "method": "ping", **extra}


def _line(value: Any) -> bytes:
    return json.dumps(value).encode()


def _deep(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


# (line, the (code, id) of each reply expected before the next message is read)
CASES: list[tuple[str, bytes, list[tuple[int, Any]]]] = [
    ("not JSON", b"hello there", [(PARSE, None)]),
    ("truncated", b'{"jsonrpc": "2.0", "id": 3, "method": "pi', [(PARSE, None)]),
    ("raw NUL", b'{"jsonrpc": "2.0", "id": 3, "method": "p\x00ing"}', [(PARSE, None)]),
    ("BOM", "\ufeff".encode() + _line(_req(3)), [(PARSE, None)]),
    ("not UTF-8, id knowable", b'{"jsonrpc": "2.0", "id": 4, "method": "ping", '
     b'"params": {"s": "\xff\xfe"}}', [(PARSE, 4)]),
    ("not UTF-8 at all", b"\xc3\x28\xa0\xa1", [(PARSE, None)]),
    ("lone surrogate", b'{"jsonrpc": "2.0", "id": 5, "method": "ping", '
     b'"params": {"s": "\\ud800"}}', [(PARSE, 5)]),
    ("number", b"42", [(INVALID, None)]),
    ("null", b"null", [(INVALID, None)]),
    ("string", b'"ping"', [(INVALID, None)]),
    ("empty batch", b"[]", [(INVALID, None)]),
    ("batch of requests", _line([_req(1), _req("b"), {"jsonrpc": "2.0", "method": "x"}, 5]),
     [(INVALID, 1), (INVALID, "b")]),
    ("batch of notifications", _line([{"jsonrpc": "2.0", "method": "x"}]), [(INVALID, None)]),
    ("batch with a repeated id", _line([_req(1), _req(1)]), [(INVALID, 1)]),
    ("no method", _line({"jsonrpc": "2.0", "id": 9}), [(INVALID, None)]),
    ("no method, params", _line({"jsonrpc": "2.0", "id": 9, "params": {}}), [(INVALID, None)]),
    ("bad response", _line({"jsonrpc": "2.0", "id": 9, "result": 5}), [(INVALID, None)]),
    ("bad error", _line({"jsonrpc": "2.0", "id": 9, "error": "no"}), [(INVALID, None)]),
    ("wrong version", _line({**_req(10), "jsonrpc": "1.0"}), [(INVALID, 10)]),
    ("no version", _line({"id": 11, "method": "ping"}), [(INVALID, 11)]),
    ("method a number", _line({"jsonrpc": "2.0", "id": 12, "method": 5}), [(INVALID, 12)]),
    ("params a list", _line(_req(13, params=[1, 2])), [(INVALID, 13)]),
    ("id true", _line(_req(True)), [(INVALID, None)]),
    ("id float", _line(_req(1.5)), [(INVALID, None)]),
    ("id null", _line(_req(None)), [(INVALID, None)]),
    ("id object", _line(_req({"a": 1})), [(INVALID, None)]),
    ("nested 200 deep", _line(_req(14, params={"a": _deep(200)})), [(INVALID, 14)]),
    ("nested 65 deep", _line(_req(15, params={"a": _deep(63)})), [(INVALID, 15)]),
    ("nested past every parser", b'{"jsonrpc": "2.0", "id": 16, "params": '
     + b"[" * 5000 + b"]" * 5000 + b', "method": "ping"}', [(INVALID, None)]),
    ("oversized", _line(_req(17, params={"s": "x" * (LIMIT + 70_000)})), [(INVALID, None)]),
    ("unknown method", _line({"jsonrpc": "2.0", "id": 18, "method": "no/such"}), [(-32601, 18)]),
    ("blank", b"   ", []),
    ("notification", _line({"jsonrpc": "2.0", "method": "notifications/whatever"}), []),
    ("response to nothing", _line({"jsonrpc": "2.0", "id": 19, "result": {}}), []),
]


def test_every_malformed_line_is_answered(settings: Settings, tmp_path: Path) -> None:
    with StdioPeer(settings, tmp_path, RUNE_MAX_REQUEST_BYTES=str(LIMIT)) as peer:
        for name, line, expected in CASES:
            replies = peer.exchange(line)
            got = [(r["error"]["code"], r["id"]) for r in replies if "error" in r]
            assert got == expected, f"{name}: {replies}"
            for reply in replies:
                message = reply["error"]["message"]
                if reply["error"]["code"] in (PARSE, INVALID):  # Rune's, not the SDK's
                    assert message.endswith(".") and "\n" not in message, (name, message)
        # valid messages go through unchanged, string ids and all
        reply = peer.request(_req("str-id"))
        assert reply == {"jsonrpc": "2.0", "id": "str-id", "result": {}}
        listed = peer.request({"jsonrpc": "2.0", "id": 20, "method": "tools/list"})
        assert len(listed["result"]["tools"]) == 6
    assert peer.proc.returncode == 0


def test_errors_say_what_is_wrong(settings: Settings, tmp_path: Path) -> None:
    with StdioPeer(settings, tmp_path, RUNE_MAX_JSON_DEPTH="16") as peer:
        deep = peer.exchange(_line(_req(1, params={"a": _deep(20)})))[0]["error"]["message"]
        batch = peer.exchange(_line([_req(2)]))[0]["error"]["message"]
        bad_id = peer.exchange(_line(_req(True)))[0]["error"]["message"]
    assert "22 levels deep, more than the 16 Rune accepts" in deep
    assert "Batch arrays are not part of MCP since protocol version 2025-06-18" in batch
    assert "id must be a string or an integer" in bad_id


@pytest.mark.parametrize("line", [b"", b"\n", b" \t\r\n"])
def test_blank_lines_are_skipped(line: bytes) -> None:
    assert check_line(line, 64) is None


def test_valid_lines_pass_through_unchanged() -> None:
    line = b'{"jsonrpc":"2.0", "id":1 ,"method":"ping","params":{"s":"[[{"}}\r\n'
    assert check_line(line, 3) == line.decode()


def test_nesting_depth_ignores_brackets_in_strings() -> None:
    assert nesting_depth('{"a": "[[[{{{", "b": [[1]], "c": "\\"[["}') == 3
    assert nesting_depth("[" * 100) == 100
    assert nesting_depth("]]]") == 0
