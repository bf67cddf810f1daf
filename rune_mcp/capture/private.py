"""`<private>...</private>`: text a person marks as never to be remembered.

A user who pastes a customer's record or a note to themselves into a prompt can wrap it in
`<private>` tags; the builder calls `strip_private` on every string of every agent's
transcript (user prompts, assistant text, thinking, each string of a tool input, tool output)
before the size budget and redaction see it, so the marked text never reaches a trajectory,
the queue, a lesson or the weights. Each removed span is counted in the trajectory's
`stats["private_removed"]`.

The rules lean towards removing too much rather than too little:

- tags are matched case-insensitively (`<PRIVATE>`, `< /private >` are tags too) and nest;
- an opening tag without its closing tag hides the rest of the string (a prompt cut off by
  the size budget, or an agent that split one message into several blocks);
- a closing tag without an opening one hides everything before it in the string (the
  opening tag was in an earlier block of the same message).

Only the marked text goes, tags included; nothing stands in for it, so a prompt that was all
private leaves no step (and can never become a session's task).
"""

from __future__ import annotations

import re
from collections import Counter

STAT = "private_removed"
_TAG = re.compile(r"<\s*(/?)\s*private\s*>", re.IGNORECASE)


def strip_private(text: str, stats: Counter[str]) -> str:
    """`"key <private>hunter2</private> ok"` -> `"key  ok"`; each removed span is counted in
    `stats["private_removed"]`. Text without a tag is returned as is (one substring test)."""
    if "<" not in text or _TAG.search(text) is None:
        return text
    kept: list[str] = []
    depth = 0
    start = 0  # where the text not yet decided about begins
    for tag in _TAG.finditer(text):
        if tag.group(1) != "/":
            if depth == 0:
                kept.append(text[start:tag.start()])
            depth += 1
        elif depth == 0:
            kept = []  # a closing tag without an opening one: all before it was private
            stats[STAT] += 1
        else:
            depth -= 1
            if depth == 0:
                stats[STAT] += 1
        if depth == 0:
            start = tag.end()
    if depth:
        stats[STAT] += 1  # never closed: the rest of the string is private
    else:
        kept.append(text[start:])
    return "".join(kept)
