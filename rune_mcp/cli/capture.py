"""`rune parse PATH`: turn a transcript into a trajectory and show what was captured."""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path
from typing import Any

from rune_mcp.config import Settings

FORMAT_CHOICES = ("auto", "claude-code", "codex", "cursor", "aider", "generic")


def register(sub: Any) -> None:
    p = sub.add_parser("parse", help="parse a transcript into a redacted trajectory")
    p.add_argument("path", type=Path, help="transcript file (JSONL, Markdown, JSON or .vscdb)")
    p.add_argument("--format", default="auto", choices=FORMAT_CHOICES,
                   help="transcript format (default: detect from the content)")
    p.add_argument("--json", action="store_true", help="print the whole trajectory as JSON")
    p.set_defaults(func=parse_cmd)


def parse_cmd(args: argparse.Namespace, settings: Settings) -> int:
    from rune_mcp.capture import parse_path
    from rune_mcp.cli.output import emit_json

    traj = parse_path(args.path, args.format)
    if args.json:
        emit_json(traj.to_dict())
        return 0
    print(summary(traj.to_dict()))
    return 0


def summary(data: dict[str, Any]) -> str:
    """A readable summary of a trajectory dict: task, steps by kind, episodes, redactions."""
    kinds = Counter(s["kind"] for s in data["steps"])
    lines = [
        f"format:     {data['format']}",
        f"session:    {data['session_id']}",
        f"project:    {data.get('project') or '-'}",
        f"task:       {_one_line(data['task'], 200)}",
        "steps:      " + (", ".join(f"{k} {n}" for k, n in sorted(kinds.items())) or "none"),
        f"episodes:   {len(data['episodes'])}",
    ]
    for ep in data["episodes"][:10]:
        lines.append(f"  - step {ep['attempt_step']}: {_one_line(ep['action'], 70)}")
        lines.append(f"    error: {_one_line(ep['error'], 90)}")
        lines.append(f"    fix:   {_one_line(ep['fix'] or '-', 90)}")
    lines.append(f"final actions: {len(data['final_actions'])}")
    red = data["redactions"]
    lines.append("redactions: " + (", ".join(f"{k} {n}" for k, n in red.items()) or "none"))
    if data["subagents"]:
        lines.append(f"subagents:  {len(data['subagents'])}")
        lines += [f"  - {_one_line(s['task'], 90)}" for s in data["subagents"]]
    return "\n".join(lines)


def _one_line(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"
