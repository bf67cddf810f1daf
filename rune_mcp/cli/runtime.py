"""`rune run PROMPT`: answer with the recalled adapter on the local base model."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from rune_mcp.cli.output import emit_json
from rune_mcp.config import Settings
from rune_mcp.errors import UsageError


def register(sub: Any) -> None:
    run = sub.add_parser("run", help="answer a prompt with the recalled adapter (memory) applied")
    run.add_argument("prompt", help="what to ask the model ('-' reads it from stdin)")
    run.add_argument("--task", help="task to recall an adapter for (default: the prompt)")
    run.add_argument("--adapter", default="auto",
                     help="auto (recall), none (bare base), an adapter id, 'project' (the "
                     "project's adapters composed) or ids with scales, e.g. ID:0.5,ID:0.5 "
                     "(default: auto)")
    run.add_argument("--project", help="the project for --adapter project (default: the "
                     "project of the adapter recalled for the task)")
    run.add_argument("--max-tokens", type=int, default=None,
                     help="longest answer in tokens (default: the max_tokens setting)")
    run.add_argument("--json", action="store_true",
                     help="print JSON: text, adapter_id, similarity, timings")
    run.set_defaults(func=run_cmd)


def run_cmd(args: argparse.Namespace, settings: Settings) -> int:
    from rune_mcp.runtime.run import run_with_memory

    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    if args.max_tokens is not None and args.max_tokens < 1:
        raise UsageError(f"--max-tokens must be at least 1, got {args.max_tokens}.")
    result = run_with_memory(settings, prompt, task=args.task, adapter=args.adapter,
                             max_tokens=args.max_tokens, project=args.project)
    if args.json:
        emit_json(result.to_dict())
        return 0
    print(result.text)
    used = (f"adapter {result.adapter_id[:12]}" if result.adapter_id else "no adapter")
    if result.adapters and not result.adapter_id:
        used = "adapters " + ", ".join(f"{i[:12]} x{s:.3g}" for i, s in result.adapters)
    if result.similarity is not None:
        used += f" (similarity {result.similarity:.2f})"
    t = result.timings
    print(f"rune: {used}; {result.backend}; swap {t.get('swap', 0):.2f} ms, prompt "
          f"{t.get('prompt', 0):.0f} ms, {result.completion_tokens} tokens at "
          f"{t.get('tokens_per_s', 0):.0f} tokens/s", file=sys.stderr)
    return 0
