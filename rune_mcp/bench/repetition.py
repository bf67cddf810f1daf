"""`rune bench repetition`: does the repetition guard change the base model's answers?

The guard (`rune_mcp.runtime.repetition`) exists for answers that loop under an adapter; it
must leave ordinary answers alone. This asks the bare base every generic prompt of
`rune_mcp/data/general_prompts.json` and every coding question of `general_coding.json`
greedily, once without the guard and once with it (`--guard NxT`), on the same
llama.cpp weights, and reports how many answers came out token for token the same, the coding
questions passed each way, and how many answers were degenerate each way (the rule of
`rune bench memory`'s free answers).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rune_mcp.config import Settings
from rune_mcp.errors import UsageError
from rune_mcp.fsutil import atomic_write_text

PROMPT_TOKENS = 64  # as the general guard's cached answers
CODING_TOKENS = 200


def register(sub: Any) -> None:
    p = sub.add_parser("repetition", help="answers of the base with and without the repetition "
                       "guard: how many change, coding questions passed, degenerate answers")
    p.add_argument("--guard", default="8x3", metavar="NxT",
                   help="the guard measured: no run of N tokens T times (default 8x3)")
    p.add_argument("--limit", type=int, help="only the first N prompts and N coding questions")
    p.add_argument("--json", type=Path, help="write every answer both ways here")
    p.set_defaults(func=run)


def _answers(settings: Settings, questions: list[tuple[str, str, int]]) -> list[str]:
    from rune_mcp.basemodel import resolve_base
    from rune_mcp.runtime.llamacpp import LlamaCppBackend

    backend = LlamaCppBackend(settings, resolve_base(settings))
    try:
        return [backend.generate([{"role": "user", "content": prompt}], max_tokens=tokens,
                                 adapters=()).text for _, prompt, tokens in questions]
    finally:
        backend.close()


def _guard(text: str) -> tuple[int, int]:
    """`8x3` -> (8, 3), in the ranges of the `repeat_ngram` and `repeat_times` settings."""
    n, _, times = text.partition("x")
    if not (n.isdigit() and times.isdigit() and 2 <= int(n) <= 64 and 2 <= int(times) <= 16):
        raise UsageError(f"--guard {text!r} is not NxT with N in 2-64 and T in 2-16 (e.g. 8x3).")
    return int(n), int(times)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from rune_mcp.bench.answers import degeneration
    from rune_mcp.bench.coding import check_answer, load_questions
    from rune_mcp.bench.general import load_prompts

    ngram, times = _guard(args.guard)
    prompts = load_prompts()[: args.limit]
    coding = load_questions()[: args.limit]
    asked = ([("prompt", p, PROMPT_TOKENS) for p in prompts]
             + [("coding", q.prompt, CODING_TOKENS) for q in coding])
    plain = _answers(settings.with_overrides(repeat_ngram=0), asked)
    guarded = _answers(settings.with_overrides(repeat_ngram=ngram, repeat_times=times), asked)
    rows: list[dict[str, Any]] = [{"kind": kind, "prompt": prompt, "plain": a, "guarded": b, "same": a == b,
             "plain_degenerate": degeneration(a), "guarded_degenerate": degeneration(b)}
            for (kind, prompt, _), a, b in zip(asked, plain, guarded, strict=True)]
    start = len(prompts)
    for row, question in zip(rows[start:], coding, strict=True):
        row["plain_passed"] = check_answer(row["plain"], question).passed
        row["guarded_passed"] = check_answer(row["guarded"], question).passed
    summary = {
        "guard": {"ngram": ngram, "times": times},
        "prompts": len(prompts), "coding_questions": len(coding),
        "same": sum(r["same"] for r in rows), "answers": len(rows),
        "coding_passed": {"plain": sum(r["plain_passed"] for r in rows[start:]),
                          "guarded": sum(r["guarded_passed"] for r in rows[start:])},
        "degenerate": {"plain": sum(r["plain_degenerate"] is not None for r in rows),
                       "guarded": sum(r["guarded_degenerate"] is not None for r in rows)},
    }
    if args.json is not None:
        atomic_write_text(args.json, json.dumps({"summary": summary, "rows": rows}, indent=1) + "\n")
    print(f"{summary['same']} of {summary['answers']} answers unchanged by the guard",
          file=sys.stderr)
    print(json.dumps(summary, indent=1))
    return 0
