"""Why a file holds no readable transcript: compressed, binary, or text that is not UTF-8.

Decoding drops every line that is not UTF-8, so such a file reads as empty and detection would
call it "empty" or say it cannot tell the format. These checks name the real problem instead,
in one sentence with what to do. Compression is told from the first bytes (every format below
starts with bytes no transcript starts with); the others only once nothing readable was found,
so a transcript with one damaged line still parses and keeps its own error.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

# (magic, what the file is, how to unpack it) for what a transcript may arrive packed in.
_COMPRESSED = (
    (b"\x1f\x8b", "gzip-compressed", "gunzip -k"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed", "zstd -d"),
    (b"\xfd7zXZ\x00", "xz-compressed", "xz -dk"),
    (b"PK\x03\x04", "a zip archive", "unzip"),
    (b"PK\x05\x06", "a zip archive", "unzip"),
)
_BZIP2_BLOCKS = (b"1AY&SY", b"\x17rE8P\x90")  # after "BZh1".."BZh9": a block or the end
# Control bytes (not tab, newlines, form feed or the escape of colour codes) making up 5% of
# the first 8 KiB mark a binary file; text, in any encoding, has next to none.
_BINARY_WINDOW = 8192
_CONTROL = bytes(sorted(set(range(32)) - {9, 10, 12, 13, 27})) + b"\x7f"


def compressed(path: Path, head: bytes) -> str | None:
    """The error for a compressed file (`head`: its first bytes), or None."""
    kind = next(((name, tool) for magic, name, tool in _COMPRESSED if head.startswith(magic)),
                None)
    if kind is None and head[:3] == b"BZh" and head[3:4].isdigit() and head[4:10] in _BZIP2_BLOCKS:
        kind = ("bzip2-compressed", "bunzip2 -k")
    if kind is None:
        return None
    what, tool = kind
    return (f"{path} is {what}, not a transcript; unpack it first "
            f"(`{tool} {path.name}`) and pass the file inside.")


def unreadable(path: Path, data: bytes, text: str, stats: Counter[str]) -> str | None:
    """The error for a file without readable text (binary, UTF-16, or text in an encoding
    other than UTF-8), given its bytes, their decoded `text` and the decoding statistics;
    None when the file is text and simply is no transcript."""
    window = data[:_BINARY_WINDOW]
    if window.startswith((b"\xff\xfe", b"\xfe\xff")) or _every_other_nul(window):
        return (f"{path} is UTF-16 text, not UTF-8; convert it "
                f"(`iconv -f UTF-16 -t UTF-8 {path.name}`) and pass the converted file.")
    controls = len(window) - len(window.translate(None, _CONTROL))
    if controls * 20 >= len(window) > 0:
        return (f"{path} is a binary file, not a transcript; pass the .jsonl (or .md) file the "
                "agent wrote.")
    bad = stats["invalid_utf8_lines"]
    readable = sum(1 for line in text.split("\n") if line.strip())
    if bad and bad >= readable:
        return (f"{path} is not UTF-8 text ({bad} of its lines could not be decoded); convert "
                f"it (`iconv -f <its encoding> -t UTF-8 {path.name}`) and pass the converted "
                "file.")
    return None


def _every_other_nul(window: bytes) -> bool:
    """ASCII written as UTF-16 without a BOM: a NUL in every other byte and none between
    (a file of nothing but NULs, as a crash can leave, is binary)."""
    if len(window) < 16:
        return False
    even, odd = (half.count(0) / len(half) for half in (window[0::2], window[1::2]))
    return min(even, odd) < 0.1 and max(even, odd) > 0.9
