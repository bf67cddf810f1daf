"""Which stdio lines are MCP messages, and the JSON-RPC error that answers each one that is not.

JSON-RPC 2.0 answers a line that is not JSON with a parse error (-32700) and a JSON value that
is not a request with an invalid-request error (-32600), with the request's id when it can be
known and `null` when not. A line this module lets through is passed on unchanged.

The id can be known more often than the strict parser suggests: a request whose only fault
is a stray byte that is not UTF-8, a lone surrogate escape, or nesting past the limit still
parses with Python's more lenient parser (bad bytes replaced), and answering with its id
spares the client a request it would wait on for ever.

Ids are echoed only from objects that carry a `method` and neither `result` nor `error`: such
an id belongs to the client's own requests. An id on anything else may be one of the server's
(a malformed response), and echoing it would settle the wrong request on the client's side.

Batch arrays were removed from MCP in protocol version 2025-06-18. A batch gets one error per
request in it, each with that request's id, as separate lines: what a client waits on is its
ids, and a separate line is read by every client, old or new. A batch without a request that
has a usable id (empty, notifications only, not objects) gets one error with id `null`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

from mcp_types import (
    INVALID_REQUEST,
    PARSE_ERROR,
    ErrorData,
    JSONRPCError,
    JSONRPCNotification,
    jsonrpc_message_adapter,
)
from pydantic import ValidationError

RequestId = int | str

BATCH = (
    "Batch arrays are not part of MCP since protocol version 2025-06-18; send each JSON-RPC "
    "message on its own line."
)
# A JSON string, escapes included. The closing quote is optional and the repeats possessive,
# so every match succeeds without backtracking and one pass covers the line: with a required
# closing quote, a line of `"\"\"\"...` would be rescanned from every quote (quadratic).
_STRING = re.compile(r'"(?:[^"\\]++|\\.)*+"?', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
_KIND = {str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}


@dataclass(frozen=True)
class Refusal:
    """Why a line is not an MCP message, and the ids to answer (`None` for `"id": null`)."""

    code: int
    message: str
    ids: tuple[RequestId | None, ...] = (None,)

    def replies(self) -> list[JSONRPCError]:
        error = ErrorData(code=self.code, message=self.message)
        return [JSONRPCError(jsonrpc="2.0", id=i, error=error) for i in self.ids]


def oversized(limit: int) -> Refusal:
    """The answer to a line longer than `limit` bytes, which was skipped unread."""
    return Refusal(
        INVALID_REQUEST,
        f"The message is larger than the {limit} bytes Rune reads from one line; send smaller "
        "arguments (a transcript as transcript_path rather than text).",
    )


def check_line(line: bytes, max_depth: int) -> str | Refusal | None:
    """The line as text when it is an MCP message, a Refusal when not, None when it is blank."""
    if not line.strip():
        return None  # blank lines separate nothing and ask nothing
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Refusal(
            PARSE_ERROR,
            f"The message is not valid UTF-8 (byte {exc.start + 1}); send each JSON-RPC message "
            "as one line of UTF-8 JSON.",
            _ids(_loads(line.decode("utf-8", errors="replace"))),
        )
    depth = nesting_depth(text) if text.count("[") + text.count("{") > max_depth else 0
    if depth > max_depth:
        return Refusal(
            INVALID_REQUEST,
            f"The message nests arrays and objects {depth} levels deep, more than the "
            f"{max_depth} Rune accepts; send flatter arguments.",
            _ids(_loads(text)),
        )
    try:
        message = jsonrpc_message_adapter.validate_json(text, by_name=False)
    except ValidationError as exc:
        return _explain(text, exc)
    if isinstance(message, JSONRPCNotification) and '"id"' in text:
        # The validator reads {"id": true, "method": ...} as a notification, which would leave
        # the client waiting for an answer to the request it meant to send.
        value = _loads(text)
        if isinstance(value, dict) and "id" in value:
            return Refusal(INVALID_REQUEST, _invalid("id must be a string or an integer"))
    return text


def nesting_depth(text: str) -> int:
    """How deep arrays and objects nest in `text`, brackets inside strings not counted."""
    brackets = _BRACKET.findall(_STRING.sub("", text))
    return max(accumulate(map(_STEP.__getitem__, brackets), initial=0))


def _explain(text: str, exc: ValidationError) -> Refusal:
    errors = exc.errors(include_url=False, include_input=False)
    if errors and errors[0]["type"] == "json_invalid":
        reason = str(errors[0]["msg"]).removeprefix("Invalid JSON: ")
        return Refusal(
            PARSE_ERROR,
            f"The line is not valid JSON ({reason}); send each JSON-RPC message as one line "
            "of JSON.",
            _ids(_loads(text)),
        )
    value = _loads(text)
    if isinstance(value, list):
        return Refusal(INVALID_REQUEST, BATCH, _ids(value))
    if not isinstance(value, dict):
        kind = _KIND.get(type(value), "value")
        return Refusal(
            INVALID_REQUEST,
            f"The message is a JSON {kind}, not an object; send one JSON-RPC object per line.",
        )
    return Refusal(INVALID_REQUEST, _invalid(_problem(value)), _ids(value))


def _invalid(problem: str) -> str:
    return (
        f"The message is not a valid JSON-RPC 2.0 message ({problem}); send an object with "
        'jsonrpc "2.0", a string method and, for a request, a string or integer id.'
    )


def _problem(message: dict[str, Any]) -> str:
    """The first thing wrong with a JSON object that should be a JSON-RPC message."""
    answer = "result" in message or "error" in message
    checks: list[tuple[bool, str]] = [
        (message.get("jsonrpc") != "2.0", 'jsonrpc must be "2.0"'),
        ("method" not in message and not answer, "it has no method"),
        ("method" in message and not isinstance(message["method"], str),
         "method must be a string"),
        ("id" in message and _valid_id(message["id"]) is None,
         "id must be a string or an integer"),
        ("params" in message and not isinstance(message["params"], dict | None),
         "params must be an object"),
        ("result" in message and not isinstance(message["result"], dict),
         "result must be an object"),
        ("error" in message, "error must be an object with an integer code and a string message"),
    ]
    return next((why for wrong, why in checks if wrong), "its members do not fit together")


def _ids(value: Any) -> tuple[RequestId | None, ...]:
    """The ids to answer for a parsed value: its request's id, or each request's in a batch."""
    items = value if isinstance(value, list) else [value]
    ids = [i for i in map(_request_id, items) if i is not None]
    return tuple(dict.fromkeys(ids)) or (None,)


def _request_id(message: Any) -> RequestId | None:
    if not isinstance(message, dict) or "method" not in message:
        return None
    if "result" in message or "error" in message:
        return None
    return _valid_id(message.get("id"))


def _valid_id(value: Any) -> RequestId | None:
    # MCP ids are strings or integers; JSON true is a Python int and must not pass for 1.
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    return None


def _loads(text: str) -> Any:
    """The parsed line, or None when Python's parser refuses it too (or nests past its limit)."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None
