"""Typed records at Rune's boundaries: a pydantic validation error as one sentence.

What Rune reads back from disk (an adapter's manifest, a trajectory's JSON) and what callers
hand the library are checked by pydantic models. A `ValidationError` lists every problem in
pydantic's words; users get the first one as a clause that names the field and says what it
must hold (`'rank' must be a positive integer, got 0`), and the caller ends the sentence with
where it happened and what to do.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from pydantic import ValidationError

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# pydantic's wording -> ours, tried in order on the start of its message.
_REWORD = (
    ("Value error, ", ""),
    ("Input should be ", "must be "),
    ("String should ", "must "),
    ("List should ", "must "),
    ("Dictionary should ", "must "),
)


def field_path(loc: tuple[int | str, ...]) -> str:
    """`("steps", 0, "bogus")` -> `steps[0].bogus`; a key that is no name is quoted:
    `("files", "adapter.gguf", "size")` -> `files["adapter.gguf"].size`."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _NAME.fullmatch(part):
            out += f".{part}" if out else part
        else:
            out += f'["{part}"]'
    return out


def problem(exc: ValidationError, hints: Mapping[str, str] | None = None) -> str:
    """The first problem of `exc` as a clause: `'steps[0].bogus' is not a known field`.

    `hints` gives, by field name, what a field must be in the reader's terms (`"a positive
    integer"`; `"parents[]"` for an item of the list `parents`); without one, pydantic's own
    expectation is used.
    """
    error = exc.errors(include_url=False)[0]
    loc = tuple(p for p in error["loc"] if p != "[key]")
    name = field_path(loc) or "the document"
    last = next((p for p in reversed(loc) if isinstance(p, str)), "")
    if loc and isinstance(loc[-1], int):
        last += "[]"  # an item of a list: its own hint, `parents[]`
    kind = error["type"]
    if kind == "missing":
        hint = (hints or {}).get(last)
        return f"lacks the field '{name}'" + (f" ({hint})" if hint else "")
    if kind == "extra_forbidden":
        return f"has the unknown field '{name}'"
    hint = (hints or {}).get(last)
    if hint:
        return f"has an invalid '{name}': it must be {hint}, got {_short(error.get('input'))}"
    # A check of ours (`value_error`) says itself what is wrong with the value.
    got = "" if kind == "value_error" else f", got {_short(error.get('input'))}"
    return f"has an invalid '{name}': it {_reword(str(error['msg']))}{got}"


def _reword(message: str) -> str:
    for theirs, ours in _REWORD:
        if message.startswith(theirs):
            return ours + message[len(theirs):]
    return message[:1].lower() + message[1:]


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
