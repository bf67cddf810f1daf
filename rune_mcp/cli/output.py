"""Printing for CLI handlers: JSON for machines, aligned tables for people; and the one
shape of a subcommand that can print either."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

Handler = Callable[[argparse.Namespace, Any], int]  # (parsed arguments, Settings) -> exit code


def command(
    sub: Any, name: str, func: Handler, help: str, json: bool = False
) -> argparse.ArgumentParser:
    """Add the subcommand `name` to `sub`, run by `func`; with `json`, its `--json` flag."""
    parser: argparse.ArgumentParser = sub.add_parser(name, help=help)
    if json:
        parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=func)
    return parser


def progress(step: int, total: int, message: str) -> None:
    """A long job's progress on stderr (`rune: [3/30] step 3/30 loss 1.2`), so stdout stays
    clean for --json."""
    prefix = f"[{step}/{total}] " if total else ""
    print(f"rune: {prefix}{message}", file=sys.stderr, flush=True)


def emit_json(obj: Any) -> None:
    """Print `obj` as JSON on stdout (paths and other objects as strings)."""
    sys.stdout.write(json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def table(rows: Iterable[dict[str, Any]], columns: Sequence[str], width: int = 60) -> str:
    """Left-aligned columns; long cells are cut to `width` characters with an ellipsis.

    `[{"a": 1, "b": "x"}], ["a", "b"]` -> "a  b\\n1  x".
    """
    cells = [[_cell(row.get(col), width) for col in columns] for row in rows]
    widths = [max([len(col)] + [len(r[i]) for r in cells]) for i, col in enumerate(columns)]
    lines = ["  ".join(col.ljust(w) for col, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def _cell(value: Any, width: int) -> str:
    text = "" if value is None else " ".join(str(value).split())
    return text if len(text) <= width else text[: width - 1] + "…"
