"""Self-probes: a session's own lessons, held out of training and stored with its adapter.

When a session is remembered, a share of the paraphrases of its question/answer lessons is
kept out of the training data (`rune_mcp.distill.selfprobes` chooses them) and written as
`self_probes.json` into the adapter's folder, before the folder is published, so it is one of
the adapter's files: listed in the manifest with its digest, part of the adapter's id, checked
with the rest, exported and imported with it. They are what the Evolution Operator scores a
composition on (`rune_mcp.distill.fitness`), so evolving needs no data a user must write.

Each probe is the held-out example's question, the answer it was compiled with, and the key
spans of that answer: the backticked identifiers and commands in it that the question does
not already hold. A free answer is right when it holds one of them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from rune_mcp.errors import IntegrityError
from rune_mcp.fsutil import atomic_write_text
from rune_mcp.library.manifest import SELF_PROBES
from rune_mcp.validation import problem

__all__ = ["SELF_PROBES", "SelfProbe", "SelfProbeFile", "read_self_probes", "write_self_probes"]
VERSION: Literal[1] = 1
MAX_PROBES = 1000  # far above what one session's lesson budget compiles
Text = Annotated[str, StringConstraints(min_length=1, max_length=20_000)]
Span = Annotated[str, StringConstraints(min_length=1, max_length=2_000)]
HINTS = {"question": "a non-empty text", "answer": "a non-empty text",
         "key_spans": "a non-empty list of texts", "lesson": "a list of step indexes",
         "version": f"{VERSION}", "probes": f"a list of at most {MAX_PROBES} probes"}


class SelfProbe(BaseModel):
    """One held-out paraphrase: what is asked, what was answered, what an answer must hold."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    question: Text
    answer: Text
    key_spans: Annotated[list[Span], Field(min_length=1, max_length=32)]
    kind: Annotated[str, StringConstraints(min_length=1, max_length=32)] = "qa"
    lesson: list[Annotated[int, Field(ge=0)]] = []  # the trajectory steps the lesson is about


class SelfProbeFile(BaseModel):
    """`self_probes.json`."""

    model_config = ConfigDict(strict=True, extra="forbid")

    version: Literal[1]
    probes: Annotated[list[SelfProbe], Field(max_length=MAX_PROBES)]


def write_self_probes(path: Path, probes: list[SelfProbe]) -> Path:
    """Write `probes` to `path` (atomically; validated first) and return the path."""
    data = SelfProbeFile(version=VERSION, probes=list(probes))
    text = json.dumps(data.model_dump(), indent=1, ensure_ascii=False, sort_keys=True) + "\n"
    atomic_write_text(path, text)
    return path


def read_self_probes(path: Path) -> list[SelfProbe]:
    """The probes in `path`; IntegrityError (one sentence) when the file is not a valid one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise IntegrityError(f"{path.name} is not readable JSON ({exc}); the adapter's "
                             "self-probes cannot be used.") from None
    try:
        return list(SelfProbeFile.model_validate(data).probes)
    except ValidationError as exc:
        raise IntegrityError(f"{path.name} {problem(exc, HINTS)}; the adapter's self-probes "
                             "cannot be used.") from None
