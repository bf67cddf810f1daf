"""`rune adapters merge`, and the lineage `rune adapters show` prints."""

from __future__ import annotations

import argparse
from typing import Any

from rune_mcp.cli.output import emit_json
from rune_mcp.config import Settings
from rune_mcp.errors import RuneError, UsageError

MAX_DEPTH = 8  # ids hash their parents, so lineage has no cycles; this only bounds the print


def register(actions: Any) -> None:
    merge = actions.add_parser(
        "merge", help="merge adapters into one stored adapter with PEFT, recording its lineage")
    # The methods come from the library package, which every other command would pay for.
    merge.fill = lambda: _merge_arguments(merge)
    merge.set_defaults(func=adapters_merge)


def _merge_arguments(merge: argparse.ArgumentParser) -> None:
    from rune_mcp.library.lineage import METHODS

    merge.add_argument("adapter_ids", metavar="ID", nargs="+",
                       help="two or more adapter ids or unique prefixes")
    merge.add_argument("--method", required=True, choices=METHODS,
                       help="cat: exactly the weighted sum (ranks add up); svd: the sum cut to "
                       "the largest rank; linear, ties, dare_ties, dare_linear: A and B combined "
                       "separately (one rank needed)")
    merge.add_argument("--weights", metavar="W,W,...",
                       help="one weight per adapter (default: equal, summing to 1)")
    merge.add_argument("--density", type=float,
                       help="share of entries kept by ties, dare_ties and dare_linear (0-1]")
    merge.add_argument("--json", action="store_true", help="print JSON")


def parse_weights(text: str | None) -> list[float] | None:
    """`"0.5,0.5"` -> `[0.5, 0.5]`."""
    if text is None:
        return None
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise UsageError(f"--weights takes numbers separated by commas, e.g. 0.5,0.5; got "
                         f"{text!r}.") from None


def adapters_merge(args: argparse.Namespace, settings: Settings) -> int:
    from rune_mcp.distill.merge import merge_adapters
    from rune_mcp.library import Library

    lib = Library.open(settings)
    result = merge_adapters(settings, args.adapter_ids, args.method, parse_weights(args.weights),
                            args.density, library=lib)
    if args.json:
        emit_json({**result.to_dict(), "lineage": lineage_tree(lib, result.record.adapter_id)})
        return 0
    print(f"stored merge {result.record.adapter_id} in {result.seconds:.1f} s")
    for line in lineage_lines(lib, result.record):
        print(line)
    return 0


def lineage_tree(lib: Any, adapter_id: str, depth: int = 0) -> dict[str, Any]:
    """`{"adapter_id", "task", "method", "weights", "density", "fitness", "parents": [...]}`;
    a parent that is gone or unreadable is `{"adapter_id", "missing": true}`."""
    from rune_mcp.library.lineage import lineage_of, parents_of

    try:
        record = lib.store.read(adapter_id)
    except RuneError:
        return {"adapter_id": adapter_id, "missing": True}
    node: dict[str, Any] = {"adapter_id": adapter_id, "task": record.task,
                            "session_id": record.session_id}
    lineage = lineage_of(record)
    if lineage is not None:
        node.update(lineage.model_dump())
    if depth < MAX_DEPTH:
        node["parents"] = [lineage_tree(lib, p, depth + 1) for p in parents_of(record)]
    return node


def lineage_lines(lib: Any, record: Any) -> list[str]:
    """The lineage as `rune adapters show` prints it: the recipe, then each parent indented
    under the adapter it went into, and the adapters composed from this one."""
    tree = lineage_tree(lib, record.adapter_id)
    lines = _node_lines(tree, 0)[1:]
    children = lib.descendants([record.adapter_id])
    if lines and tree.get("method"):
        lines.insert(0, f"{'lineage':>13}: {_recipe(tree)}")
    elif lines:
        lines.insert(0, f"{'lineage':>13}: built on")
    if children:
        lines.append(f"{'composed into':>13}: {', '.join(c[:12] for c in children)} (removed "
                     "with it)")
    return lines


def _node_lines(node: dict[str, Any], depth: int) -> list[str]:
    pad = " " * (15 + 2 * depth)
    if node.get("missing"):
        return [f"{pad}{node['adapter_id'][:12]}  (not in the library)"]
    origin = f" (session {node['session_id']})" if node.get("session_id") else ""
    recipe = f" [{_recipe(node)}]" if node.get("method") else ""
    lines = [f"{pad}{node['adapter_id'][:12]}{recipe}  {str(node['task'])[:70]}{origin}"]
    for parent in node.get("parents") or []:
        lines += _node_lines(parent, depth + 1)
    return lines


def _recipe(node: dict[str, Any]) -> str:
    parts = [f"{node['method']} merge", "weights " + ", ".join(f"{w:g}" for w in node["weights"])]
    if node.get("density") is not None:
        parts.append(f"density {node['density']:g}")
    if node.get("seed") is not None:
        parts.append(f"seed {node['seed']}")
    if node.get("fitness") is not None:
        parts.append(f"fitness {node['fitness']:.4g}")
    return ", ".join(parts)
