"""`rune bench merge`: how far each stored-merge method is from the run-time sum of its parents.

Two seeded random LoRA adapters (all seven linear modules of the configured base) are applied
together at 0.5/0.5 through PEFT's multiple active adapters: the run-time sum. Each of PEFT's
merge methods then turns the same two into one adapter, and the figure is the largest logit
difference between merge and sum over the largest effect of the sum on a fixed text:
0 means the merge is the sum. Random adapters, so this shows each method's arithmetic, not what
it does to learned skills (that is the memory benchmark's work).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from rune_mcp.config import Settings
from rune_mcp.errors import UsageError
from rune_mcp.fsutil import atomic_write_text

METHODS = ("cat", "svd", "linear", "ties", "dare_ties", "dare_linear")
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
TEXT = "def read_config(path):\n    with open(path) as handle:\n        return json.load(handle)\n"
DENSITY = 0.5


def register(sub: Any) -> None:
    p = sub.add_parser("merge", help="distance of each merge method from the run-time sum of "
                       "two adapters (PEFT, the configured base)")
    p.add_argument("--rank", type=int, default=8, help="rank of the two random adapters (default 8)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random adapters (default 0)")
    p.add_argument("--methods", default=",".join(METHODS), metavar="A,B",
                   help=f"merge methods to measure (default all: {','.join(METHODS)})")
    p.add_argument("--json", type=Path, help="write the results JSON here")
    p.set_defaults(func=run)


def _methods(text: str) -> list[str]:
    chosen = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in chosen if m not in METHODS]
    if unknown or not chosen:
        raise UsageError(f"--methods {text!r} names no method or unknown ones ({unknown}); "
                         f"choose among {', '.join(METHODS)}.")
    return chosen


def _random_adapters(model: Any, rank: int, seed: int) -> Any:
    """The base wrapped by PEFT with adapters `first` and `second`, random A and B in both."""
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model

    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=TARGETS,
                        init_lora_weights=False)
    with warnings.catch_warnings():
        # peft calls a transformers method that transformers 5 has renamed
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing",
                                category=FutureWarning)
        torch.manual_seed(seed)
        peft: PeftModel = get_peft_model(model, config, adapter_name="first")
        torch.manual_seed(seed + 1)
        peft.add_adapter("second", config)
    return peft


def _sum_scaled(peft: Any, weights: dict[str, float]) -> None:
    """Activate the adapters in `weights` together, each at its weight (the run-time sum)."""
    from peft.tuners.lora import LoraLayer

    peft.base_model.set_adapter(list(weights))
    for module in peft.modules():
        if isinstance(module, LoraLayer):
            for name, weight in weights.items():
                module.set_scale(name, weight)


def run(args: argparse.Namespace, settings: Settings) -> int:
    methods = _methods(args.methods)
    import torch
    from transformers import AutoTokenizer

    from rune_mcp.basemodel import ensure_derived, resolve_base
    from rune_mcp.distill.merge import load_float32_base

    info = resolve_base(settings)
    folder = ensure_derived(settings, info, quiet=True)
    model = load_float32_base(folder)
    tokens = AutoTokenizer.from_pretrained(str(folder)).encode(TEXT, add_special_tokens=False)
    ids = torch.tensor([model.config.bos_token_id or 0, *tokens])[None]
    peft = _random_adapters(model, args.rank, args.seed)

    def logits() -> Any:
        with torch.no_grad():
            return peft(input_ids=ids).logits[0].double()

    with peft.disable_adapter():
        base = logits()
    _sum_scaled(peft, {"first": 0.5, "second": 0.5})
    reference = logits()
    effect = float((reference - base).abs().max())
    # the merges read each parent's scaling, so it goes back to the trained one first
    _sum_scaled(peft, {"first": 1.0, "second": 1.0})
    rows = []
    for method in methods:
        start = time.perf_counter()
        torch.manual_seed(args.seed)  # DARE's drop is random
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)
            peft.add_weighted_adapter(["first", "second"], [0.5, 0.5], method, combination_type=method,
                                      density=DENSITY if method in ("ties", "dare_ties",
                                                                    "dare_linear") else None)
        seconds = time.perf_counter() - start
        peft.base_model.set_adapter(method)
        distance = float((logits() - reference).abs().max()) / effect
        rows.append({"method": method, "distance": round(distance, 4), "merge_s": round(seconds, 2)})
        print(f"{method:12s} {distance:8.4f}  ({seconds:.2f} s)", file=sys.stderr, flush=True)
    data = {"base": info.name, "rank": args.rank, "seed": args.seed, "density": DENSITY,
            "targets": TARGETS, "effect_of_sum": round(effect, 4), "methods": rows}
    if args.json is not None:
        atomic_write_text(args.json, json.dumps(data, indent=1) + "\n")
    print(json.dumps(data, indent=1))
    return 0

