"""Size discipline: what one step may carry into a trajectory.

A session can contain a 5 MB build log or a pasted screenshot. Lessons need the gist of an
output (its head, where the command echoes what it does, and its tail, where errors and
summaries land), never the megabytes, and base64 images teach a text model nothing. Budget:

- every text field of a step (message text, tool output, each string inside a tool input) is
  at most `FIELD_BUDGET` characters: longer text keeps its first `HEAD` and last `TAIL`
  characters, cut at line breaks where possible, joined by a marker that says how much
  was left out;
- runs of `BASE64_MIN` or more base64 characters and `data:...;base64,` URIs are replaced by
  `[base64 dropped: N chars]`; image blocks become `[image dropped: media type]`.
"""

from __future__ import annotations

import re
from collections import Counter

FIELD_BUDGET = 16_000
HEAD = 10_000
TAIL = 5_000
BASE64_MIN = 1_000

_DATA_URI = re.compile(r"data:[\w.+/-]{1,64};base64,[A-Za-z0-9+/=\s]{16,}")
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/]{" + str(BASE64_MIN) + r",}={0,2}")
_LONG_RUN = re.compile(r"\S{" + str(BASE64_MIN) + ",}")  # fast gate: a blob is a long unbroken run


def drop_blobs(text: str, stats: Counter[str]) -> str:
    """`"img data:image/png;base64,iVBOR..."` -> `"img [base64 dropped: 5000 chars]"`."""
    if len(text) < 64:
        return text
    if "base64," in text:
        text = _DATA_URI.sub(lambda m: _blob_note(m, stats), text)
    if len(text) >= BASE64_MIN and _LONG_RUN.search(text):
        text = _BASE64_RUN.sub(lambda m: _blob_note(m, stats), text)
    return text


def _blob_note(match: re.Match[str], stats: Counter[str]) -> str:
    stats["dropped_base64"] += 1
    return f"[base64 dropped: {len(match.group(0))} chars]"


def clip(text: str, stats: Counter[str], budget: int = FIELD_BUDGET) -> str:
    """Keep head and tail of text over budget: `"a\\n" * 20000` -> head, marker, tail."""
    if len(text) <= budget:
        return text
    stats["truncated_fields"] += 1
    head_len, tail_len = HEAD * budget // FIELD_BUDGET, TAIL * budget // FIELD_BUDGET
    head_end = text.rfind("\n", head_len // 2, head_len)
    head_end = head_len if head_end < 0 else head_end + 1
    tail_start = text.find("\n", len(text) - tail_len, len(text) - tail_len // 2)
    tail_start = len(text) - tail_len if tail_start < 0 else tail_start + 1
    omitted = tail_start - head_end
    marker = f"\n[... {omitted} characters omitted ...]\n"
    return text[:head_end] + marker + text[tail_start:]


def fit(text: str, stats: Counter[str]) -> str:
    """Apply the whole budget to one text field: blobs first, then head and tail."""
    return clip(drop_blobs(text, stats), stats)


def image_note(media_type: str | None, stats: Counter[str]) -> str:
    stats["dropped_images"] += 1
    return f"[image dropped: {media_type or 'unknown type'}]"
