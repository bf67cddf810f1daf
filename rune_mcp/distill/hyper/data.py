"""Meta-training data: generated sessions, their lessons, and what the encoder sees of them.

Sessions come from `rune bench make-dataset`'s generator (`rune_mcp.bench.dataset.generate`),
one dataset per seed: fictional projects whose conventions exist nowhere else, so an adapter
can only know them by reading the session. Each session is parsed the way `rune remember`
parses any transcript (redaction included) and compiled into lessons; the encoder's states
are computed once per session with the frozen base.

Held-out paraphrases: the lesson compiler phrases each fact several ways (question/answer
lessons of one episode share their steps). With the `lessons` source, about a third of the
phrasings of every fact that has at least two are hidden from the encoder but still trained,
so the network is rewarded for writing the fact, not for copying the wording it read.
"""

from __future__ import annotations

import random
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor

from rune_mcp.config import Settings
from rune_mcp.distill.collate import Rendered, render_examples
from rune_mcp.distill.hyper.encode import StateCache, pool_starts, pooled_states, session_tokens
from rune_mcp.distill.lessons import Example, compile_lessons
from rune_mcp.errors import TrainingError, UsageError
from rune_mcp.trajectory import Trajectory


@contextmanager
def seed_session_files(settings: Settings, seed: int, projects: int) -> Iterator[list[Path]]:
    """The session files of `make-dataset`'s dataset for `seed` (`projects` projects), written
    to a temporary folder under the home that is removed afterwards. The generator is
    deterministic per seed and project count, so the same sessions come back every time."""
    from rune_mcp.bench.dataset import generate

    root = settings.home / "tmp"
    root.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(dir=root, prefix=f"hyper-data-{seed}-"))
    try:
        generate(folder, projects, seed, general=0)
        yield sorted((folder / "sessions").glob("*.jsonl"))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@dataclass
class Session:
    """One training or evaluation session, ready for the network."""

    name: str
    seed: int
    examples: list[Example]
    rendered: list[Rendered]  # every lesson: all of them are loss targets
    states: Tensor  # [texts, layers, hidden]: every text the encoder could read
    context: list[int]  # rows of `states` the encoder does read
    heldout: list[int] = field(default_factory=list)  # lessons hidden from the encoder

    def visible(self) -> Tensor:
        return self.states[self.context]


def parse_seeds(text: str) -> list[int]:
    """`"0-3,10"` -> [0, 1, 2, 3, 10]."""
    seeds: list[int] = []
    try:
        for part in (p.strip() for p in text.split(",") if p.strip()):
            if "-" in part:
                low, high = part.split("-", 1)
                seeds += range(int(low), int(high) + 1)
            else:
                seeds.append(int(part))
    except ValueError:
        raise UsageError(f"seeds {text!r} are not numbers or ranges; write them as 0-7,12.") from None
    if not seeds:
        raise UsageError(f"seeds {text!r} name no seed; write them as 0-7,12.")
    return list(dict.fromkeys(seeds))


def heldout_paraphrases(examples: Sequence[Example], seed: int) -> list[int]:
    """Indices of the question/answer lessons hidden from the encoder: a third (at least one)
    of each fact's phrasings, for facts phrased at least twice."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, ex in enumerate(examples):
        if ex.kind == "qa" and ex.steps:
            groups.setdefault(ex.steps, []).append(i)
    rng = random.Random(seed)
    hidden: list[int] = []
    for members in groups.values():
        if len(members) >= 2:
            hidden += rng.sample(members, max(1, len(members) // 3))
    return sorted(hidden)


def session_from(
    name: str, seed: int, traj: Trajectory, examples: list[Example], model: Any, tokenizer: Any,
    source: str, max_tokens: int, cache: StateCache | None = None,
) -> Session:
    """Encode one session for the network (lessons hidden per `heldout_paraphrases`); with
    `cache`, states encoded before are read back instead."""
    rendered = render_examples(examples, tokenizer, max_tokens)
    texts = session_tokens(source, traj, examples, tokenizer, max_tokens)
    starts = pool_starts(source, rendered)
    pad = int(tokenizer.pad_token_id)
    states = (cache.states(model, texts, pad, starts) if cache
              else pooled_states(model, texts, pad, starts=starts))
    heldout = heldout_paraphrases(examples, seed) if source != "trajectory" else []
    hidden = set(heldout)
    context = [i for i in range(len(texts)) if i not in hidden]
    return Session(name, seed, examples, rendered, states, context, heldout)


def generated_sessions(
    settings: Settings, model: Any, tokenizer: Any, seeds: Sequence[int], projects: int,
    source: str, max_tokens: int, say: Callable[[str], None], limit: int | None = None,
    cache: StateCache | None = None,
) -> list[Session]:
    """Every learnable session of the datasets of `seeds` (the first `limit`), encoded (or
    read from `cache`)."""
    from rune_mcp.capture import parse_path
    from rune_mcp.distill.remember import check_learnable

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    out: list[Session] = []
    for seed in seeds:
        with seed_session_files(settings, seed, projects) as found:
            # First sessions of every project first: a `limit` then spans projects, so the
            # mismatched control of the evaluation reads another project's session.
            paths = sorted(found, key=lambda p: (p.stem.rsplit("-", 1)[-1], p.stem))
            for path in paths:
                if limit is not None and len(out) >= limit:
                    break
                traj = parse_path(path)
                examples = compile_lessons(traj, settings, count)
                try:
                    check_learnable(traj, examples)
                except TrainingError:
                    continue
                out.append(session_from(f"{seed}/{path.stem}", seed, traj, examples, model,
                                        tokenizer, source, max_tokens, cache))
        say(f"seed {seed}: {sum(s.seed == seed for s in out)} sessions encoded")
    if not out:
        raise TrainingError(f"the datasets of seeds {list(seeds)} hold no learnable session; use "
                            "more --projects or other seeds.")
    return out
