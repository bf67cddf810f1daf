"""Which of a session's lessons are held out of training as its self-probes.

A lesson compiled from a session is phrased several ways (`rune_mcp.distill.lessons`); the
phrasings of one lesson are the question/answer examples (kind `qa`, or `fact`) built from the
same trajectory steps, so they are grouped by `Example.steps`; an example that names no steps
is grouped by its answer. From each lesson with at least `MIN_PHRASINGS` phrasings a share of
them is held out (`self_probe_share` of them rounded down, at least one, and always at least
one phrasing left to train on): the adapter never trains on those words, so answering them
shows that it learned the lesson, not the sentence.

Only phrasings that can be judged are held out: the answer needs a key span, an identifier or
command it writes in backticks that the question does not already hold (the fix, not the
failing call the question asks about), or a name in one: the dotted names and called
functions of a backticked span count too, so `readings = gauges.read_window(station_id,
hours=24)` gives `gauges.read_window` and `read_window`, which an answer can hold without
copying the line (a span longer than `WHOLE_SPAN` characters, a line of code or an error
message, counts only by its names). Which phrasings go is
decided by a digest of their text, not by position or chance, so the same session always
gives the same split.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence

from rune_mcp.distill.lessons import Example
from rune_mcp.library.selfprobes import SelfProbe

PROBE_KINDS = frozenset({"qa", "fact"})
MIN_PHRASINGS = 3
MAX_SPANS = 8
WHOLE_SPAN = 40
_TICKED = re.compile(r"`([^`\n]{1,300})`")
_NAME = re.compile(r"([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)(\()?")
MIN_NAME = 3

GroupKey = tuple[str, tuple[int, ...] | str]


def key_spans(question: str, answer: str) -> list[str]:
    """The backticked spans of `answer` not already in `question`, and the names in them,
    each once, in order: key_spans("What fails with `a()`?", "`a()` fails; use `db.open(x)`.")
    -> ["db.open(x)", "db.open", "open"]."""
    spans: list[str] = []
    for span in _TICKED.findall(answer):
        text = span.strip()
        if not text or text in question:
            continue
        parts = [text] if len(text) <= WHOLE_SPAN else []
        for part in parts + _names(text):
            if part not in question and part not in spans:
                spans.append(part)
    return spans[:MAX_SPANS]


def _names(code: str) -> list[str]:
    """Dotted names and called functions in `code` (a dotted call followed by the function's
    own name), none shorter than `MIN_NAME`: `x = a.b.read(y)` -> `["a.b.read", "read"]`."""
    out: list[str] = []
    for name, call in _NAME.findall(code):
        if "." in name:
            out.append(name)
            if call:
                out.append(name.rsplit(".", 1)[-1])
        elif call:
            out.append(name)
    return [n for n in out if len(n) >= MIN_NAME and n != code]


def lesson_key(example: Example) -> GroupKey:
    """The lesson an example phrases: its steps, or its answer when it names no steps."""
    return ("steps", example.steps) if example.steps else ("answer", example.answer)


def split_self_probes(examples: Sequence[Example], share: float) -> tuple[list[Example], list[Example]]:
    """(examples to train on, examples held out), both in their original order; `share` 0
    holds out nothing. See the module docstring for which are held out."""
    if share <= 0:
        return list(examples), []
    groups: dict[GroupKey, list[int]] = {}
    for i, example in enumerate(examples):
        if example.kind in PROBE_KINDS:
            groups.setdefault(lesson_key(example), []).append(i)
    held: set[int] = set()
    for members in groups.values():
        held |= _held_out(examples, members, share)
    train = [ex for i, ex in enumerate(examples) if i not in held]
    return train, [ex for i, ex in enumerate(examples) if i in held]


def _held_out(examples: Sequence[Example], members: list[int], share: float) -> set[int]:
    if len(members) < MIN_PHRASINGS:
        return set()
    judged = [i for i in members if key_spans(examples[i].prompt, examples[i].answer)]
    count = min(len(judged), len(members) - 1, max(1, math.floor(share * len(members))))
    judged.sort(key=lambda i: (_digest(examples[i]), i))
    return set(judged[:count])


def _digest(example: Example) -> str:
    return hashlib.sha256(f"{example.prompt}\x00{example.answer}".encode()).hexdigest()


def to_probes(held: Sequence[Example]) -> list[SelfProbe]:
    """The held-out examples as stored self-probes."""
    return [SelfProbe(question=ex.prompt, answer=ex.answer,
                      key_spans=key_spans(ex.prompt, ex.answer), kind=str(ex.kind),
                      lesson=list(ex.steps)) for ex in held]
