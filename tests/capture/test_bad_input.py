"""Malformed input never raises anything but a ParseError, and keeps what is readable.

A corpus of 600 files is generated from valid transcripts of every format by seeded
mutation (cut anywhere, bytes flipped, invalid UTF-8, NUL bytes, BOMs, lines of the wrong
JSON type, a 10 MB line, shuffled lines); hypothesis adds arbitrary JSON lines. Files that hold
no readable text (compressed, binary, UTF-16, another encoding) say so rather than "empty",
and a first line of 50 MB is still read as a record.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import json
import lzma
import random
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capture.builders import AIDER_HISTORY, fix_session
from rune_mcp.capture import parse_path, parse_text
from rune_mcp.capture.write import CodexWriter
from rune_mcp.errors import ParseError


def _codex() -> str:
    w = CodexWriter("c", "/p")
    w.user("do it")
    w.call(["ls"], "a b")
    return w.jsonl()


CODEX = _codex()
GENERIC = json.dumps({"task": "t", "steps": [{"kind": "user", "text": "t"},
                                             {"kind": "assistant", "text": "ok"}]})
BASES = [fix_session().text().encode(), CODEX.encode(), AIDER_HISTORY.encode(), GENERIC.encode()]
WRONG_TYPES = [b"[]", b"1", b"null", b'"str"', b'{"type": 5}', b'{"type": "user", "message": 3}',
               b'{"type": "assistant", "message": {"content": "x"}}',
               b'{"type": "user", "message": {"content": [1, null, {"type": "tool_result"}]}}',
               b'{"parentUuid": 7, "uuid": [], "type": "user"}',
               b'{"type": "response_item", "payload": {"type": "function_call", "arguments": 9}}']


def _mutate(data: bytes, rng: random.Random) -> bytes:
    lines = data.split(b"\n")
    how = rng.randrange(9)
    if how == 0:
        return data[: rng.randrange(len(data) + 1)]
    if how == 1:
        raw = bytearray(data)
        for _ in range(rng.randint(1, 20)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        return bytes(raw)
    if how == 2:
        lines.insert(rng.randrange(len(lines) + 1), b"\xff\xfe\xc3(" + data[:40])
    elif how == 3:
        lines.insert(rng.randrange(len(lines) + 1), b'{"type": "user\x00", "x": "\x00"}')
    elif how == 4:
        return b"\xef\xbb\xbf" + data
    elif how == 5:
        lines.insert(rng.randrange(len(lines) + 1), rng.choice(WRONG_TYPES))
    elif how == 6:
        rng.shuffle(lines)
    elif how == 7:
        lines = [line[: rng.randrange(len(line) + 1)] if rng.random() < 0.3 else line
                 for line in lines]
    else:
        return bytes(rng.randrange(256) for _ in range(rng.randint(0, 300)))
    return b"\n".join(lines)


def test_generated_malformed_corpus(tmp_path: Path) -> None:
    rng = random.Random(2024)
    outcomes = {"parsed": 0, "parse_error": 0}
    for i in range(600):
        data = _mutate(rng.choice(BASES), rng)
        path = tmp_path / f"bad-{i}.jsonl"
        path.write_bytes(data)
        try:
            traj = parse_path(path)
        except ParseError as exc:
            message = str(exc)
            assert message and "\n" not in message
            outcomes["parse_error"] += 1
        else:
            assert traj.task and traj.to_json()
            outcomes["parsed"] += 1
    assert outcomes["parsed"] > 150 and outcomes["parse_error"] > 30, outcomes


def test_ten_megabyte_line_is_kept_within_budget(tmp_path: Path) -> None:
    session = fix_session()
    session.bash("cat big.log", "x" * (10 * 2**20))
    path = tmp_path / "big.jsonl"
    path.write_text(session.text())
    traj = parse_path(path)
    assert traj.task == "Make the order tests pass"
    assert max(len(s.output or "") for s in traj.steps) < 20_000


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["type", "message", "content", "uuid", "parentUuid", "role", "payload",
                         "text", "tool_use_id", "isMeta", "name", "input", "id", "steps",
                         "task", "kind"]), inner, max_size=5),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(json_values, max_size=8), st.sampled_from(["auto", "claude-code", "codex",
                                                         "cursor", "generic"]))
def test_arbitrary_json_lines_never_crash(values: list[object], fmt: str) -> None:
    text = "\n".join(json.dumps(v) for v in values)
    with contextlib.suppress(ParseError):
        parse_text(text, fmt)


@pytest.mark.parametrize("text", ["", "\ufeff", "\n\n", "{", "[1, 2]", "\x00\x00"])
def test_degenerate_texts_are_parse_errors(text: str) -> None:
    with pytest.raises(ParseError):
        parse_text(text)


def test_fifty_megabyte_first_line_is_detected_from_the_whole_record(tmp_path: Path) -> None:
    session = fix_session()
    session.lines[0]["message"]["content"] = "Make the order tests pass\n" + "log " * (13 * 2**20)
    path = tmp_path / "long-first-line.jsonl"
    path.write_text(session.text())
    assert path.stat().st_size > 50 * 2**20
    traj = parse_path(path)
    assert traj.format == "claude-code" and traj.task.startswith("Make the order tests pass")
    assert len(traj.episodes) == 1


def _packed(kind: str, data: bytes, path: Path) -> None:
    if kind == "gzip":
        path.write_bytes(gzip.compress(data))
    elif kind == "bzip2":
        path.write_bytes(bz2.compress(data))
    elif kind == "xz":
        path.write_bytes(lzma.compress(data))
    elif kind == "zstd":  # no zstd in the standard library: a frame header is what is read
        path.write_bytes(b"\x28\xb5\x2f\xfd\x24\x00" + data[:32])
    else:
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("session.jsonl", data)


@pytest.mark.parametrize("kind", ["gzip", "bzip2", "xz", "zstd", "zip"])
@pytest.mark.parametrize("fmt", ["auto", "claude-code"])
def test_compressed_transcript_is_named_compressed_not_empty(
    tmp_path: Path, kind: str, fmt: str
) -> None:
    path = tmp_path / "session.jsonl.packed"
    _packed(kind, fix_session().text().encode(), path)
    with pytest.raises(ParseError) as caught:
        parse_path(path, fmt)
    message = str(caught.value)
    assert (f"is {kind}-compressed" in message if kind != "zip" else "is a zip archive" in message)
    assert "unpack it first" in message and "empty" not in message and "\n" not in message


@pytest.mark.parametrize(("data", "expected"), [
    (b"caf\xe9 cr\xe8me\n\xe0 la carte\n", r"is not UTF-8 text \(2 of its lines"),
    ("{\"type\": \"user\"}\n".encode("utf-16"), "is UTF-16 text, not UTF-8"),
    ("{\"type\": \"user\"}\n".encode("utf-16-le") * 3, "is UTF-16 text, not UTF-8"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)), "is a binary file"),
    (b"\x00" * 4096, "is a binary file"),
])
def test_unreadable_file_names_the_real_problem(tmp_path: Path, data: bytes,
                                                expected: str) -> None:
    path = tmp_path / "session.jsonl"
    path.write_bytes(data)
    for fmt in ("auto", "claude-code"):
        with pytest.raises(ParseError, match=expected) as caught:
            parse_path(path, fmt)
        assert "empty" not in str(caught.value) and "cannot tell" not in str(caught.value)


def test_text_that_is_no_transcript_still_says_so(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"just prose\nwith one caf\xe9 line\nand more prose\n")
    with pytest.raises(ParseError, match="cannot tell the format"):
        parse_path(path)
    path.write_bytes(b" \n\n")
    with pytest.raises(ParseError, match="no task found in .*: it is empty"):
        parse_path(path)
