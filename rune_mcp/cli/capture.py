"""Capture commands: `rune parse PATH` turns a transcript into a trajectory and shows what was
captured; `rune pause` / `rune resume` stop and restart automatic capture."""

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
    for verb, does in (("pause", "stop"), ("resume", "restart")):
        cmd = sub.add_parser(
            verb, help=f"{does} automatic capture (watcher and hooks), everywhere or for a project",
            description=f"{does.capitalize()} automatic capture by `rune watch` and the agents' "
            "hooks. Explicit requests (`rune remember`, `rune jobs add`, the remember_session "
            "tool) work while capture is paused; projects in exclude_projects are never "
            "captured.",
        )
        cmd.add_argument("--project", type=Path, metavar="P",
                         help="only this project folder and the folders under it "
                              "(default: everywhere)")
        cmd.set_defaults(func=pause_cmd, verb=verb)


def parse_cmd(args: argparse.Namespace, settings: Settings) -> int:
    from rune_mcp.capture import parse_path
    from rune_mcp.cli.output import emit_json

    traj = parse_path(args.path, args.format)
    if args.json:
        emit_json(traj.to_dict())
        return 0
    print(summary(traj.to_dict()))
    return 0


def pause_cmd(args: argparse.Namespace, settings: Settings) -> int:
    from rune_mcp.capture import control

    settings.ensure_home()
    change = control.pause if args.verb == "pause" else control.resume
    print(change(settings, args.project))
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
    private = (data.get("stats") or {}).get("private_removed")
    if private:
        lines.append(f"private:    {private} <private> span(s) removed")
    if data["subagents"]:
        lines.append(f"subagents:  {len(data['subagents'])}")
        lines += [f"  - {_one_line(s['task'], 90)}" for s in data["subagents"]]
    return "\n".join(lines)


def _one_line(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"
