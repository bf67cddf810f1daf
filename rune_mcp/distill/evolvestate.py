"""The evolve checkpoint: every generation searched so far and every composition scored.

One JSON file per project and base model, `<RUNE_HOME>/evolve/<digest>.json`, rewritten
atomically after each generation. It holds no optimiser internals: CMA-ES with a seeded
random stream is a deterministic function of the fitness values it was told, so a resumed run
rebuilds the optimiser by asking again and telling it the recorded values, generation by
generation, and checks that it asks for exactly the recorded candidates. It then goes on as
an uninterrupted run would have, without scoring anything twice.

A checkpoint is used only for the same adapters, base model and search settings (`config`);
otherwise the search starts afresh. An unreadable one is set aside the same way: it is
derived data, and losing it costs only the time to search again.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from rune_mcp.config import Settings
from rune_mcp.fsutil import atomic_write_text

log = logging.getLogger(__name__)
FOLDER = "evolve"
VERSION: Literal[1] = 1


class Generation(BaseModel):
    """One CMA-ES generation: the candidates asked for and the fitness of each."""

    model_config = ConfigDict(strict=True, extra="forbid")

    x: list[list[float]]
    fitness: list[float]


class Checkpoint(BaseModel):
    """What an evolve run has done so far."""

    model_config = ConfigDict(strict=True, extra="forbid")

    version: Literal[1] = VERSION
    project: str
    base_fingerprint: str
    adapters: list[str]
    config: dict[str, Any]
    evaluated: dict[str, dict[str, Any]] = {}  # scales key -> Score.to_dict()
    generations: list[Generation] = []

    def matches(self, other: Checkpoint) -> bool:
        """Whether this checkpoint was made by the same search as `other` describes."""
        return (self.project, self.base_fingerprint, self.adapters, self.config) == (
            other.project, other.base_fingerprint, other.adapters, other.config)


def checkpoint_path(settings: Settings, project: str, fingerprint: str) -> Path:
    digest = hashlib.sha256(f"{project}\x00{fingerprint}".encode()).hexdigest()[:24]
    return settings.home / FOLDER / f"{digest}.json"


def load_checkpoint(path: Path, fresh: Checkpoint) -> Checkpoint:
    """The checkpoint at `path` when it belongs to the search `fresh` describes, else `fresh`."""
    try:
        found = Checkpoint.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return fresh
    except (OSError, UnicodeDecodeError, ValueError, ValidationError) as exc:
        log.warning("evolve checkpoint %s is unreadable (%s); searching afresh", path,
                    type(exc).__name__)
        return fresh
    if not found.matches(fresh):
        log.info("evolve checkpoint %s is for other adapters or settings; searching afresh", path)
        return fresh
    return found


def save_checkpoint(path: Path, checkpoint: Checkpoint) -> None:
    atomic_write_text(path, json.dumps(checkpoint.model_dump(), indent=1, sort_keys=True) + "\n")
