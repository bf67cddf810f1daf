"""Lineage: which stored adapters an adapter was composed from, and how.

A stored composition (a merge) is an adapter like any other: write-once, content-addressed,
exported to GGUF. Its manifest names its parents in `parents` (part of the id: the same
parents merged the same way give the same adapter) and the recipe under `extra.lineage`
(method, weights, density where used, the seed of a random method, an optional fitness),
covered by the manifest's metadata digest like all its text.

Forgetting follows lineage: deleting an adapter deletes every adapter descended from it, to
any depth, so that what a forgotten session taught lives on in no merge.

A merge is indexed once, by its parents' tasks joined: the index keeps one row per adapter
(a stale index is found by counting rows against adapters, and a row is deleted by id), and a
task that needs what two sessions learned reads like both of their tasks together more than
like either alone.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from rune_mcp.errors import IntegrityError, UsageError
from rune_mcp.library.records import AdapterRecord

Method = Literal["linear", "cat", "svd", "ties", "dare_ties", "dare_linear"]
METHODS: tuple[str, ...] = ("linear", "cat", "svd", "ties", "dare_ties", "dare_linear")
# PEFT trims or drops entries of A and B by `density` only in these.
DENSITY_METHODS = frozenset({"ties", "dare_ties", "dare_linear"})
# PEFT combines A and B entry by entry in these, so every parent needs the same rank.
EQUAL_RANK_METHODS = frozenset({"linear", "ties", "dare_ties", "dare_linear"})
# DARE drops entries at random: the seed makes the merge, and so its id, reproducible.
RANDOM_METHODS = frozenset({"dare_ties", "dare_linear"})
LINEAGE_KEY = "lineage"
MERGE_PREFIX = "merge:"


class Lineage(BaseModel):
    """How a stored composition was made from its parents (`manifest.extra.lineage`)."""

    model_config = ConfigDict(strict=True, extra="forbid")

    method: Method
    weights: list[float]
    density: float | None = None
    seed: int | None = None
    fitness: float | None = None


def lineage_of(record: AdapterRecord) -> Lineage | None:
    """The recipe of a stored composition; None for an adapter learned from one session."""
    extra = record.manifest.get("extra") or {}
    data = extra.get(LINEAGE_KEY) if isinstance(extra, dict) else None
    if data is None:
        return None
    try:
        return Lineage.model_validate(data)
    except ValidationError:
        return None  # only Rune writes it, under the metadata digest: treat as no recipe


def parents_of(record: AdapterRecord) -> list[str]:
    return [str(p) for p in record.manifest.get("parents") or []]


def descendants(records: Iterable[AdapterRecord], roots: Iterable[str]) -> list[str]:
    """Ids of every adapter descended from `roots` (not the roots), generation by generation.

    `a -> m1 -> m2`: `descendants(records, ["a"])` -> `["m1", "m2"]`.
    """
    children: dict[str, list[str]] = {}
    for record in records:
        for parent in parents_of(record):
            children.setdefault(parent, []).append(record.adapter_id)
    seen = set(roots)
    found: list[str] = []
    frontier = sorted(seen)
    while frontier:
        following = []
        for parent in frontier:
            for child in sorted(children.get(parent, [])):
                if child not in seen:
                    seen.add(child)
                    found.append(child)
                    following.append(child)
        frontier = following
    return found


def leaf_ancestors(by_id: dict[str, AdapterRecord], adapter_id: str) -> set[str]:
    """The single-session adapters an adapter is composed of (itself when it is one)."""
    record = by_id.get(adapter_id)
    parents = parents_of(record) if record is not None else []
    if not parents:
        return {adapter_id}
    leaves: set[str] = set()
    for parent in parents:
        leaves |= leaf_ancestors(by_id, parent)
    return leaves


def check_recipe(method: str, weights: Sequence[float], density: float | None,
                 parents: int) -> None:
    """Refuse, in one sentence, a merge PEFT could not make or that would be ambiguous."""
    if method not in METHODS:
        raise UsageError(f"merge method must be one of {', '.join(METHODS)}; got {method!r}.")
    if parents < 2:
        raise UsageError("a merge needs at least two different adapters.")
    if len(weights) != parents:
        raise UsageError(f"give one weight per adapter: {parents} adapters, {len(weights)} "
                         "weights.")
    if not all(math.isfinite(w) for w in weights) or not any(weights):
        raise UsageError("merge weights must be finite numbers, not all zero.")
    if method in DENSITY_METHODS:
        if density is None:
            raise UsageError(f"the {method} merge needs --density (the share of entries kept, "
                             "above 0 and at most 1), e.g. 0.5.")
        if not 0 < density <= 1:
            raise UsageError(f"density must be above 0 and at most 1, got {density}.")
    elif density is not None:
        raise UsageError(f"density applies only to {', '.join(sorted(DENSITY_METHODS))}; "
                         f"the {method} merge takes none.")


def check_one_base(records: Sequence[AdapterRecord]) -> str:
    """The base fingerprint all `records` share; refused in one sentence when they differ."""
    bases = {r.base_fingerprint for r in records}
    if len(bases) > 1:
        first = records[0]
        other = next(r for r in records if r.base_fingerprint != first.base_fingerprint)
        raise IntegrityError(
            f"adapters {first.adapter_id[:12]} and {other.adapter_id[:12]} were trained for "
            f"different base models ({first.base_fingerprint[:12]}... and "
            f"{other.base_fingerprint[:12]}...); compose only adapters of one base model.")
    return records[0].base_fingerprint


def merged_embed_text(parents: Sequence[AdapterRecord]) -> str:
    """The parents' tasks, one a line, each once (a parent that is itself a merge gives the
    tasks it was indexed by)."""
    lines: list[str] = []
    for parent in parents:
        text = parent.embed_text if lineage_of(parent) is not None else parent.task
        for line in text.splitlines():
            if line.strip() and line not in lines:
                lines.append(line)
    return "\n".join(lines)


def merge_meta(parents: Sequence[AdapterRecord], lineage: Lineage, rank: int, alpha: float,
               targets: Sequence[str], seconds: float) -> dict[str, Any]:
    """What `Library.add` records for a merge of `parents` made by `lineage`."""
    projects = {p.project for p in parents}
    tasks = merged_embed_text(parents)
    return {
        "base_fingerprint": check_one_base(parents),
        "method": MERGE_PREFIX + lineage.method,
        "rank": rank, "alpha": alpha, "target_modules": sorted(targets),
        "project": projects.pop() if len(projects) == 1 else None,
        "task": f"{lineage.method} merge of {len(parents)} adapters: "
                + " | ".join(tasks.splitlines()),
        "embed_text": tasks,
        "lesson_count": sum(int(p.manifest.get("lesson_count") or 0) for p in parents),
        "training": {"seconds": round(seconds, 3)},
        "parents": [p.adapter_id for p in parents],
        LINEAGE_KEY: lineage.model_dump(),
    }
