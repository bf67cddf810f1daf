"""`rune bench sweep`: training settings against the bundled session's probes and general prompts.

For each settings variant (JSON objects of setting overrides), it trains an adapter on the
bundled tidewater session with the embedded base, then reports the rank of the correct
completion on each reworded probe (1 = first of 4) and which of five general prompts (none of
them in the lessons or the rehearsal set) got a different greedy answer. It is the small, fast
check that chose the learning rate and rehearsal defaults (docs/distillation.md); the
generated set (`rune bench memory --ablation`) is the broader one.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from rune_mcp.config import Settings

GENERAL = [
    "Write a Python function that reverses a string.",
    "What is the capital of France?",
    "Explain what a hash map is in one sentence.",
    "Write a bash command that counts the lines in a file.",
    "How do I create a virtual environment in Python?",
]
GENERAL_TOKENS = 40


def run_sweep(settings: Settings, variants: list[dict[str, Any]]) -> dict[str, Any]:
    from peft import PeftModel

    from rune_mcp.basemodel import ensure_derived, resolve_base
    from rune_mcp.capture import parse_path
    from rune_mcp.distill.lessons import compile_lessons
    from rune_mcp.distill.probes import greedy, load_probes, sample_paths, score
    from rune_mcp.distill.rehearsal import rehearsal_examples
    from rune_mcp.distill.train import load_base, train_adapter

    info = resolve_base(settings)
    loaded = load_base(settings, ensure_derived(settings, info), "lora")
    session, probes_file = sample_paths()
    probes, traj = load_probes(probes_file), parse_path(session)

    def ranks(model: Any) -> list[int]:
        return [p.rank for p in score(model, loaded.tokenizer, probes)]

    def answers(model: Any) -> list[str]:
        return [greedy(model, loaded.tokenizer, q, GENERAL_TOKENS) for q in GENERAL]

    before, base_answers = ranks(loaded.model), answers(loaded.model)
    rows = []
    for overrides in variants:
        local = settings.with_overrides(**overrides)
        examples = compile_lessons(traj, local, lambda t: len(loaded.tokenizer(t)["input_ids"]))
        examples += rehearsal_examples(local, info.fingerprint, loaded.model, loaded.tokenizer)
        with tempfile.TemporaryDirectory(prefix="rune-sweep-") as tmp:
            start = time.monotonic()
            result = train_adapter(local, examples, loaded, Path(tmp) / "peft")
            seconds = time.monotonic() - start
            adapted = PeftModel.from_pretrained(loaded.model, str(Path(tmp) / "peft"))
            after, after_answers = ranks(adapted), answers(adapted)
            loaded.model = adapted.unload()
        rows.append({
            "overrides": overrides, "ranks": after, "final_loss": round(result.final_loss, 4),
            "train_seconds": round(seconds, 1), "examples": len(examples),
            "general_changed": [i for i, (a, b) in enumerate(zip(base_answers, after_answers,
                                                                   strict=True)) if a != b],
            "general_answers": after_answers,
        })
    return {"ranks_before": before, "general_prompts": GENERAL, "general_before": base_answers,
            "variants": rows}


def register(sub: Any) -> None:
    p = sub.add_parser("sweep", help="train on the bundled session under several settings and "
                       "compare probe ranks and general answers")
    p.add_argument("variants", nargs="*", default=["{}"],
                   help='settings overrides as JSON objects, e.g. \'{"learning_rate": 3e-4}\'')
    p.add_argument("--json", nargs="?", const="-", metavar="OUT",
                   help="write JSON to OUT (stdout when OUT is omitted)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from rune_mcp.cli.output import emit_json
    from rune_mcp.errors import UsageError

    variants = []
    for text in args.variants:
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise UsageError(f"each variant must be a JSON object of settings, got {text!r}.") from exc
        if not isinstance(value, dict):
            raise UsageError(f"each variant must be a JSON object of settings, got {text!r}.")
        variants.append(value)
    for value in variants:
        settings.with_overrides(**value)  # a bad setting fails here, before any model loads
    result = run_sweep(settings, variants)
    if args.json == "-":
        emit_json(result)
        return 0
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"before: ranks {result['ranks_before']}")
    for row in result["variants"]:
        print(f"{json.dumps(row['overrides'])}: ranks {row['ranks']}, general answers changed "
              f"{len(row['general_changed'])} of {len(GENERAL)}, loss {row['final_loss']}, "
              f"{row['train_seconds']} s training")
    return 0
