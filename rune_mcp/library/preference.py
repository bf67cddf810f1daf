"""Recall's fitness preference: an evolved merge before the single adapter it was measured
against, when the task reads nearly as much like the merge.

Recall ranks by similarity alone, and a task written like one session's finds that session's
adapter first. `rune evolve` (rune_mcp/distill/evolve.py) scores each of a project's
single-session adapters alone and compositions of them, every one on the held-out lessons of
all the project's sessions, and stores the fittest composition as a merge only when it beats
the fittest single adapter by `MIN_GAIN`. The merge records the fitness it was selected with
in its lineage (`extra.lineage.fitness`); nothing else records one, so a recorded fitness
marks a merge that beat every single adapter of its search. Its parents are every adapter
that search scored, each with the scale it was chosen at as its weight (0: left out).

So when the best hit H is a single-session adapter, an evolved merge E goes first instead
when all of these hold:

- E has the project and the base model of H;
- H is one of E's parents with a weight above 0: E was measured against H alone and beat it,
  and applies what H taught (a parent the search left out at weight 0 is not in E);
- E's similarity to the task is at least H's less `recall_fitness_margin` (and not below
  the recall threshold).

Of several such merges the most similar goes first: fitness of different searches was
measured on different probes, so it is not compared. Otherwise, and always with a margin of
0, similarity decides. The merge's hit says why it is first (`RecallHit.reason`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from rune_mcp.library.index import Match
from rune_mcp.library.lineage import lineage_of, parents_of
from rune_mcp.library.records import AdapterRecord, RecallHit


def may_give_way(record: AdapterRecord) -> bool:
    """Whether an evolved merge may be recalled before `record`: a single-session adapter of
    a project (evolve composes only those)."""
    return not parents_of(record) and bool(record.project)


# The index records of merges: a merge records no session and no trajectory (a single adapter
# recording neither matches too, and `stands_in_for` passes it over). Neither project nor base
# is in the filter: one set serves every project, and nearly every record has the base.
MERGES_WHERE: dict[str, Any] = {"$and": [{"session_id": ""}, {"trajectory_id": ""}]}


def nearest_first(vector: Sequence[float], project: str,
                  merges: Sequence[Match]) -> list[tuple[str, float]]:
    """The `merges` of `project` with their cosine similarity to `vector`, most similar
    first (as the index measures it: 1 - cosine distance)."""
    rows = [(m.adapter_id, cosine(vector, m.embedding)) for m in merges
            if m.metadata.get("project") == project]
    return sorted(rows, key=lambda row: (-row[1], row[0]))


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    norms = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return sum(x * y for x, y in zip(a, b, strict=True)) / norms if norms else 0.0


def evolved_weight(merge: AdapterRecord, adapter_id: str) -> float:
    """The weight an evolved `merge` gives `adapter_id`; 0.0 when `merge` records no fitness
    (it was not selected by evolve) or does not hold that adapter."""
    lineage = lineage_of(merge)
    parents = parents_of(merge)
    if lineage is None or lineage.fitness is None or len(lineage.weights) != len(parents):
        return 0.0
    return sum(w for p, w in zip(parents, lineage.weights, strict=True) if p == adapter_id)


def stands_in_for(merge: AdapterRecord, single: AdapterRecord) -> bool:
    """Whether `merge` is an evolved merge of `single`'s project and base that holds `single`
    with a weight above 0."""
    return (
        may_give_way(single)
        and merge.project == single.project
        and merge.base_fingerprint == single.base_fingerprint
        and evolved_weight(merge, single.adapter_id) > 0
    )


def floor(top: RecallHit, margin: float, threshold: float) -> float | None:
    """The least similarity a merge needs to go before `top`; None when the margin is 0
    (similarity alone decides)."""
    return None if margin <= 0 else max(threshold, top.similarity - margin)


def preferred(merge: RecallHit, top: RecallHit, margin: float) -> RecallHit:
    """`merge`'s hit, saying why it goes before `top`."""
    lineage = lineage_of(merge.record)
    assert lineage is not None and lineage.fitness is not None  # `stands_in_for` held
    others = len([p for p, w in zip(parents_of(merge.record), lineage.weights, strict=True)
                  if w > 0 and p != top.record.adapter_id])
    short = top.record.adapter_id[:12]
    reason = (
        f"evolved merge holding {short} and {others} more adapter{'' if others == 1 else 's'}, "
        f"stored by `rune evolve` for its fitness {lineage.fitness:.4g}, above each of its "
        f"project's adapters alone; first instead of {short} (similarity "
        f"{top.similarity:.3f}) because its similarity is within {margin:g} of that one's"
    )
    return RecallHit(merge.record, merge.similarity, reason)


def put_first(hits: Sequence[RecallHit], first: RecallHit, k: int) -> list[RecallHit]:
    """`first`, then `hits` without it, `k` in all."""
    rest = [h for h in hits if h.record.adapter_id != first.record.adapter_id]
    return [first, *rest][:k]
