"""The kept branch of a transcript whose records name their parents, bridged by file order.

Agents that write a conversation as a tree (Claude Code's `uuid`/`parentUuid`) keep the
branch that was not rewound: the path from the last record back to the root. A link can break
without the conversation having ended: a damaged line in the middle is dropped, so its child
names a parent no record carries; a compaction names the last record before it through a
second key (`logicalParentUuid`) that may name a record the file never held. Stopping there
would drop everything before the break, the task included. So where a record names a parent
that is missing (or already on the path: a cycle in a damaged file), or is a boundary that
continues the conversation without naming anything, the walk goes on from the closest earlier
record in file order that is not yet on the path, and counts the bridge.

`kept_branch(records, ...)` only decides which records are on the branch; the caller keeps
them in file order, which is the order they were written. `unique` drops records written twice
(a resumed session repeats lines) and `trees` splits records into their separate trees (each
inline subagent is a tree of its own).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

Record = Mapping[str, Any]
R = TypeVar("R", bound=Record)


@dataclass(frozen=True)
class Branch:
    """The ids of the records on the kept branch, and how many broken links file order
    bridged."""

    ids: frozenset[str]
    bridged: int


class _EarlierFree:
    """The closest earlier position not yet taken, in near-constant time (a union-find whose
    taken positions point left), so a damaged file of many breaks stays linear."""

    def __init__(self, size: int) -> None:
        self._left = list(range(size))

    def take(self, pos: int) -> None:
        self._left[pos] = pos - 1

    def before(self, pos: int) -> int:
        """The largest free position below `pos`, or -1."""
        cur = pos - 1
        trail = []
        while cur >= 0 and self._left[cur] != cur:
            trail.append(cur)
            cur = self._left[cur]
        for seen in trail:  # path compression
            self._left[seen] = cur
        return cur


def kept_branch(
    records: Sequence[Record],
    *,
    id_key: str,
    parent_keys: Sequence[str],
    is_node: Callable[[Record], bool],
    continues: Callable[[Record], bool] = lambda rec: False,
) -> Branch:
    """The branch from the last `is_node` record back to the root.

    Every record carrying a string `id_key` may be a parent; `parent_keys` are tried in order
    and the first naming a known record is followed. `is_node` marks the records a branch may
    end at or be bridged to (conversation records, not progress or bookkeeping lines);
    `continues(rec)` is true for a record that follows earlier ones without naming them.
    """
    index: dict[str, int] = {}
    for i, rec in enumerate(records):
        rid = rec.get(id_key)
        if isinstance(rid, str):
            index.setdefault(rid, i)
    nodes = [i for i, rec in enumerate(records) if is_node(rec)
             and isinstance(rec.get(id_key), str) and index[rec[id_key]] == i]
    if not nodes:
        return Branch(frozenset(), 0)
    node_pos = {i: pos for pos, i in enumerate(nodes)}
    free = _EarlierFree(len(nodes))
    on_path: set[int] = set()
    bridged = 0
    cur = nodes[-1]
    while True:
        on_path.add(cur)
        if cur in node_pos:
            free.take(node_pos[cur])
        rec = records[cur]
        named = [rec.get(key) for key in parent_keys if isinstance(rec.get(key), str)]
        parent = next((index[p] for p in named if p in index), None)
        if parent is not None and parent not in on_path:
            cur = parent
            continue
        if not named and not continues(rec):
            break  # the root
        # a record that is not a node (a progress line) bridges to the nodes before it
        earlier = free.before(node_pos.get(cur, bisect_left(nodes, cur)))
        if earlier < 0:
            break  # nothing before the break: the file starts here
        bridged += 1
        cur = nodes[earlier]
    ids = frozenset(str(records[i][id_key]) for i in on_path)
    return Branch(ids, bridged)



def unique(records: Sequence[R], id_key: str) -> tuple[list[R], int]:
    """The records without those repeating an earlier record's id, and how many were dropped."""
    seen: set[str] = set()
    out: list[R] = []
    for rec in records:
        rid = rec.get(id_key)
        if isinstance(rid, str):
            if rid in seen:
                continue
            seen.add(rid)
        out.append(rec)
    return out, len(records) - len(out)


def trees(records: Sequence[R], id_key: str, parent_key: str) -> list[list[R]]:
    """The records grouped by the root their `parent_key` links lead to, groups in the order
    their first record was written (records without an id form one group)."""
    by_id = {rec[id_key]: rec for rec in records if isinstance(rec.get(id_key), str)}
    root_of: dict[str, str] = {}

    def root(rec: R) -> str:
        trail: list[str] = []
        cur = rec
        while True:
            rid = cur.get(id_key)
            if not isinstance(rid, str) or rid in trail:
                break
            if rid in root_of:
                return root_of[rid]
            trail.append(rid)
            parent = cur.get(parent_key)
            if not isinstance(parent, str) or parent not in by_id:
                break
            cur = by_id[parent]
        top = trail[-1] if trail else ""
        for rid in trail:
            root_of[rid] = top
        return top

    groups: dict[str, list[R]] = {}
    for rec in records:
        groups.setdefault(root(rec), []).append(rec)
    return list(groups.values())
