"""Distillation commands: `rune remember PATH` turns a finished session into an adapter."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from rune_mcp.cli.output import emit_json, progress
from rune_mcp.config import Settings


def register(sub: Any) -> None:
    remember = sub.add_parser(
        "remember", help="distill a session transcript into a LoRA adapter in the library")
    remember.add_argument("path", type=Path, help="transcript file (JSONL, Markdown, ...)")
    remember.add_argument("--format", default="auto",
                          help="transcript format (default: detected from the file)")
    remember.add_argument("--method", choices=("lora", "qlora", "hyper", "hyper+lora"),
                          default=None,
                          help="LoRA on full-precision weights, QLoRA on an NF4 base, the "
                               "hypernetwork's adapter in one forward pass (hyper), or gradient "
                               "steps starting from it (hyper+lora) (default: the "
                               "remember_method and train_method settings)")
    remember.add_argument("--json", action="store_true", help="print JSON")
    remember.set_defaults(func=remember_cmd)


def remember_cmd(args: argparse.Namespace, settings: Settings) -> int:
    from rune_mcp.capture import parse_path
    from rune_mcp.capture.control import check, pause_reason
    from rune_mcp.distill.remember import remember_trajectory

    traj = parse_path(args.path, args.format)
    check(settings, traj.project, "cli", [args.path])  # an excluded project: one sentence
    paused = pause_reason(settings, traj.project)
    if paused:  # naming a session is asking for it; say that automatic capture is off
        print(f"rune: {paused[0].upper()}{paused[1:]}", file=sys.stderr, flush=True)
    result = remember_trajectory(settings, traj, args.method, progress)
    if args.json:
        emit_json(result.to_dict())
        return 0
    state = "already remembered as" if result.reused else "remembered as"
    print(f"{state} adapter {result.adapter_id}")
    kinds = ", ".join(f"{n} {k}" for k, n in sorted(result.kinds.items()))
    print(f"  lessons: {result.lessons}   examples: {result.examples}"
          + (f" ({kinds})" if kinds else ""))
    loss = "n/a" if result.final_loss is None else f"{result.final_loss:.4f}"
    print(f"  method: {result.method}   final loss: {loss}   seconds: {result.seconds:.1f}"
          + (f" (model load {result.load_seconds:.1f}, training {result.train_seconds:.1f})"
             if not result.reused else ""))
    return 0
