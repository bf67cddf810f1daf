"""Size discipline: head and tail with a marker, blobs dropped with a note."""

from __future__ import annotations

import base64
from collections import Counter

from rune_mcp.capture.budget import FIELD_BUDGET, clip, drop_blobs, fit


def test_clip_keeps_head_and_tail_at_line_breaks() -> None:
    stats: Counter[str] = Counter()
    text = "".join(f"line {i}\n" for i in range(20_000))
    out = clip(text, stats)
    assert out.startswith("line 0\nline 1\n") and out.endswith("line 19999\n")
    assert "characters omitted" in out and len(out) <= FIELD_BUDGET + 100
    head, _, _ = out.partition("\n[... ")
    assert head.endswith("\n")  # cut at a line break
    assert stats["truncated_fields"] == 1
    assert clip("short", stats) == "short"


def test_base64_blobs_and_data_uris_are_dropped_with_a_note() -> None:
    stats: Counter[str] = Counter()
    blob = base64.b64encode(bytes(range(256)) * 20).decode()
    out = drop_blobs(f"before {blob} after", stats)
    assert out == f"before [base64 dropped: {len(blob)} chars] after"
    uri = "data:image/png;base64," + blob[:400]
    assert fit(f"<img src='{uri}'>", stats) == "<img src='[base64 dropped: 422 chars]'>"
    assert stats["dropped_base64"] == 2
