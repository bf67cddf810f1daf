"""`rune bench remember`: seconds to remember sessions of about 1k, 2k, 4k and 8k tokens.

The sessions are built here, deterministically, in the shape of a real one: a task, reads of
source files, edits, failing runs with tracebacks, diagnoses, fixes and passing runs, repeated
with different names until the session reaches its size (counted with the base tokenizer).
Each size runs in its own temporary library with the configured training settings. "Load" is
loading the base model for training (done again for every size); "excluding load" is compile,
train, export, store and index. The embedder is warmed once beforehand and reported apart, and
so is the one-time generation of the rehearsal answers for the base (`rune_mcp.distill.rehearsal`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rune_mcp.cli.output import emit_json
from rune_mcp.config import Settings
from rune_mcp.trajectory import Episode, Step, Trajectory

SIZES = (1000, 2000, 4000, 8000)
TARGET_4K_S = 60.0
MODULES = ("billing", "ledger", "invoices", "refunds", "ledgers", "payouts", "tariffs", "quotas",
           "rates", "vouchers", "credits", "exports", "reports", "audits", "imports", "batches")


def register(sub: Any) -> None:
    bench = sub.add_parser("remember", help="seconds to remember sessions of 1k-8k tokens")
    bench.add_argument("--json", dest="json_out", type=Path, default=None,
                       help="also write the figures to this JSON file")
    bench.add_argument("--sizes", default=",".join(str(s) for s in SIZES),
                       help="comma-separated session sizes in tokens (default: %(default)s)")
    bench.set_defaults(func=bench_cmd)


def _block(i: int, start: int) -> list[Step]:
    """One attempt -> error -> diagnosis -> fix -> verification block of a session."""
    mod = MODULES[i % len(MODULES)] + (str(i // len(MODULES)) if i >= len(MODULES) else "")
    source = "\n".join(f"def {mod}_helper_{k}(value: int) -> int:\n    return value * {k + 2}\n"
                       for k in range(6))
    bad = f"total = shopkit.{mod}.sum_all(items)\n"
    good = f"total = shopkit.{mod}.aggregate(items, currency=\"EUR\")\n"
    run = {"command": f"SHOPKIT_ENV=test pytest tests/test_{mod}.py -q",
           "description": f"Run the {mod} tests"}
    trace = (f"Traceback (most recent call last):\n  File \"shopkit/{mod}.py\", line 40, in "
             f"total_of\n    {bad.strip()}\nAttributeError: module 'shopkit.{mod}' has no "
             "attribute 'sum_all'")
    steps = [
        Step(0, "assistant", text=f"I'll look at shopkit/{mod}.py first."),
        Step(0, "tool_call", tool="Read", tool_id=f"r{i}", input={"file_path": f"shopkit/{mod}.py"}),
        Step(0, "tool_result", tool_id=f"r{i}", output=source),
        Step(0, "tool_call", tool="Edit", tool_id=f"e{i}", input={
            "file_path": f"shopkit/{mod}.py", "old_string": "    pass\n", "new_string": bad}),
        Step(0, "tool_result", tool_id=f"e{i}", output="updated"),
        Step(0, "tool_call", tool="Bash", tool_id=f"b{i}", input=run),
        Step(0, "tool_result", tool_id=f"b{i}", output=trace, is_error=True),
        Step(0, "assistant", text=f"shopkit.{mod} has no sum_all; the module sums with "
                                  f"aggregate(items, currency=...)."),
        Step(0, "tool_call", tool="Edit", tool_id=f"f{i}", input={
            "file_path": f"shopkit/{mod}.py", "old_string": bad, "new_string": good}),
        Step(0, "tool_result", tool_id=f"f{i}", output="updated"),
        Step(0, "tool_call", tool="Bash", tool_id=f"v{i}", input=run),
        Step(0, "tool_result", tool_id=f"v{i}", output="3 passed in 0.41s"),
    ]
    for k, step in enumerate(steps):
        step.index = start + k
    return steps


def synthetic_trajectory(tokens: int, count: Any) -> Trajectory:
    """A session of about `tokens` tokens (by `count`), with one episode per block."""
    task = "Make every shopkit module total its items in euros and keep the tests green."
    steps = [Step(0, "user", text=task)]
    episodes: list[Episode] = []
    finals: list[int] = []
    i = 0
    while _size(steps, count) < tokens:
        block = _block(i, len(steps))
        steps += block
        fix, verify = block[8], block[11]
        episodes.append(Episode(
            attempt_step=block[5].index, action=f"$ {block[5].input['command']}",  # type: ignore[index]
            error=block[6].output or "", diagnosis=block[7].text, fix_step=fix.index,
            fix=f"edit shopkit: {fix.input['new_string']}", verify_step=verify.index,  # type: ignore[index]
            verification=verify.output))
        finals += [block[3].index, fix.index, block[10].index]
        i += 1
    return Trajectory(format="generic", session_id=f"bench-{tokens}", task=task, steps=steps,
                      project="/work/shopkit", agent="bench", episodes=episodes,
                      final_actions=finals)


def _size(steps: list[Step], count: Any) -> int:
    return sum(count(s.text + (s.output or "") + json.dumps(s.input or {})) for s in steps)


def _one(settings: Settings, tokens: int, count: Any) -> dict[str, Any]:
    from rune_mcp.distill import remember

    traj = synthetic_trajectory(tokens, count)
    with tempfile.TemporaryDirectory(prefix="rune-bench-") as home:
        local = settings.with_overrides(home=Path(home))
        remember._LOADED.clear()  # model load is measured for every size
        result = remember.remember_trajectory(local, traj)
    return {"target_tokens": tokens, "session_tokens": _size(traj.steps, count),
            "episodes": len(traj.episodes), "examples": result.examples,
            "seconds_including_load": round(result.seconds, 2),
            "load_seconds": round(result.load_seconds, 2),
            "seconds_excluding_load": round(result.seconds - result.load_seconds, 2),
            "train_seconds": round(result.train_seconds, 2),
            "final_loss": result.final_loss}


def bench_cmd(args: argparse.Namespace, settings: Settings) -> int:
    from rune_mcp.basemodel import ensure_derived, resolve_base
    from rune_mcp.distill.rehearsal import rehearsal_examples
    from rune_mcp.distill.train import load_base
    from rune_mcp.library.embed import get_embedder

    sizes = [int(x) for x in str(args.sizes).split(",") if x.strip()]
    info = resolve_base(settings)
    loaded = load_base(settings, ensure_derived(settings, info), "lora")
    tokenizer = loaded.tokenizer

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    start = time.monotonic()
    get_embedder(settings).embed(["warm up"])
    embedder_s = time.monotonic() - start
    # The rehearsal answers are generated once per base model and cached: paid by the first
    # session ever remembered on a base, so reported apart rather than hidden in one size.
    cached = any((settings.cache_dir / "rehearsal").glob("*.json"))
    start = time.monotonic()
    rehearsal_examples(settings, info.fingerprint, loaded.model, loaded.tokenizer)
    rehearsal_s = time.monotonic() - start
    del loaded
    rows = []
    for tokens in sizes:
        row = _one(settings, tokens, count)
        print(f"rune: {tokens} tokens: {row['seconds_excluding_load']} s excluding load, "
              f"{row['seconds_including_load']} s including", file=sys.stderr, flush=True)
        rows.append(row)
    report = {
        "benchmark": "remember", "machine": _machine(settings), "base_model": info.name,
        "settings": {"method": settings.train_method, "train_steps": settings.train_steps,
                     "train_batch_tokens": settings.train_batch_tokens,
                     "lora_rank": settings.lora_rank, "target_modules": settings.target_modules,
                     "lesson_token_budget": settings.lesson_token_budget},
        "embedder_load_seconds": round(embedder_s, 2),
        "rehearsal_seconds": round(rehearsal_s, 2), "rehearsal_was_cached": cached,
        "sizes": rows,
        "target": f"<= {TARGET_4K_S:.0f} s for 4k tokens excluding load",
    }
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=2) + "\n")
    emit_json(report)
    return 0


def _machine(settings: Settings) -> dict[str, Any]:
    import torch

    return {"cpus": os.cpu_count(), "threads": settings.threads, "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}
