"""The kept branch of a record tree: parent links first, file order where a link is broken."""

from __future__ import annotations

from typing import Any

from rune_mcp.capture.chain import kept_branch, trees, unique


def _rec(rid: str, parent: str | None = None, kind: str = "msg", **extra: Any) -> dict[str, Any]:
    return {"id": rid, "parent": parent, "kind": kind, **extra}


def _branch(records: list[dict[str, Any]]) -> tuple[list[str], int]:
    branch = kept_branch(records, id_key="id", parent_keys=("parent", "logical"),
                         is_node=lambda r: r["kind"] == "msg",
                         continues=lambda r: bool(r.get("boundary")))
    return [r["id"] for r in records if r["id"] in branch.ids], branch.bridged


def test_parent_links_pick_the_branch_that_was_kept() -> None:
    records = [_rec("a"), _rec("b", "a"), _rec("c", "a"), _rec("d", "c")]
    assert _branch(records) == (["a", "c", "d"], 0)


def test_a_missing_parent_is_bridged_to_the_closest_earlier_record() -> None:
    records = [_rec("a"), _rec("b", "a"), _rec("d", "lost"), _rec("e", "d")]
    assert _branch(records) == (["a", "b", "d", "e"], 1)


def test_second_parent_key_and_boundaries_that_name_nothing() -> None:
    named = [_rec("a"), _rec("b", "a"), _rec("k", None, logical="b"), _rec("s", "k")]
    assert _branch(named) == (["a", "b", "k", "s"], 0)
    unnamed = [_rec("a"), _rec("b", "a"), _rec("k", None, boundary=True), _rec("s", "k")]
    assert _branch(unnamed) == (["a", "b", "k", "s"], 1)
    fresh_root = [_rec("a"), _rec("b", "a"), _rec("k"), _rec("s", "k")]
    assert _branch(fresh_root) == (["k", "s"], 0)  # a plain root ends the branch


def test_bridge_from_a_record_that_is_no_node_and_through_cycles() -> None:
    # a progress line whose parent is lost bridges to the node written before it
    records = [_rec("a"), _rec("p", "lost", kind="progress"), _rec("b", "p")]
    assert _branch(records) == (["a", "p", "b"], 1)
    cycle = [_rec("a"), _rec("b", "c"), _rec("c", "b")]
    assert _branch(cycle) == (["a", "b", "c"], 1)


def test_every_link_broken_still_keeps_every_record() -> None:
    records = [_rec(f"r{i}", f"lost{i}") for i in range(50_000)]
    ids, bridged = _branch(records)
    assert len(ids) == 50_000 and bridged == 49_999


def test_unique_and_trees() -> None:
    records = [_rec("a"), _rec("b", "a"), _rec("a"), _rec("x"), _rec("y", "x"), {"kind": "msg"}]
    kept, dropped = unique(records, "id")
    assert dropped == 1 and [r.get("id") for r in kept] == ["a", "b", "x", "y", None]
    groups = trees(kept, "id", "parent")
    assert [[r.get("id") for r in g] for g in groups] == [["a", "b"], ["x", "y"], [None]]
