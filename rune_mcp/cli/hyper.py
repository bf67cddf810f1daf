"""`rune hyper train`: meta-train the hypernetwork that writes an adapter in one forward pass;
`rune hyper eval`: score a trained one on the sessions of any seeds.

The network is trained on sessions the dataset generator invents (`rune bench make-dataset`),
one dataset per training seed; the evaluation seeds are generated apart and never trained on.
Progress and the time left go to stderr; the run's summary to stdout (JSON with --json).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from rune_mcp.cli.output import emit_json
from rune_mcp.config import Settings


def register(sub: Any) -> None:
    hyper = sub.add_parser("hyper", help="train the hypernetwork that writes adapters in one pass")
    hyper_sub = hyper.add_subparsers(dest="hyper_command", metavar="COMMAND", required=True)
    train = hyper_sub.add_parser(
        "train", help="meta-train the hypernetwork on generated sessions (docs/hypernetwork.md)")
    train.fill = lambda: _train_arguments(train)
    train.set_defaults(func=train_cmd)
    ev = hyper_sub.add_parser(
        "eval", help="score a hypernetwork on generated sessions: own adapter against another's")
    ev.fill = lambda: _eval_arguments(ev)
    ev.set_defaults(func=eval_cmd)


def _eval_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seeds", required=True, help="dataset seeds whose sessions are scored, "
                   "e.g. 100 (held out) or 0 (a training seed: does it read what it learnt?)")
    p.add_argument("--hypernetwork", type=Path, default=None, help="checkpoint folder (default: "
                   "the hypernetwork setting, else RUNE_HOME/hyper/<base fingerprint>)")
    p.add_argument("--projects", type=int, default=2, help="fictional projects per seed (default 2)")
    p.add_argument("--sessions", type=int, default=4, help="sessions scored (default 4)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def _train_arguments(p: argparse.ArgumentParser) -> None:
    from rune_mcp.distill.hyper.train import MetaOptions

    d = MetaOptions(out=Path(), train_seeds=[], eval_seeds=[])
    p.add_argument("--train-seeds", required=True,
                   help="dataset seeds to train on, e.g. 0-15 (each is a generated dataset)")
    p.add_argument("--eval-seeds", required=True,
                   help="dataset seeds to evaluate on, never trained on, e.g. 100-101")
    _option(p, "--projects", d.projects, "fictional projects per seed, three sessions each")
    p.add_argument("--steps", type=int, default=d.steps, help=f"optimizer steps in all "
                   f"(default {d.steps}); with --resume, the total to continue to")
    p.add_argument("--out", type=Path, default=None,
                   help="checkpoint folder (default: the hypernetwork setting, else "
                        "RUNE_HOME/hyper/<base fingerprint>: where `rune remember --method "
                        "hyper` looks)")
    p.add_argument("--resume", action="store_true", help="continue the checkpoint in --out")
    p.add_argument("--source", choices=("lessons", "answers", "trajectory"), default=d.source,
                   help="what the encoder reads: the compiled lessons (pooled whole, or over "
                        f"their answers only) or the trajectory text (default {d.source})")
    _option(p, "--lr", d.learning_rate, "AdamW learning rate")
    _option(p, "--l2", d.l2, "weight of the L2 penalty on the generated delta W")
    _option(p, "--contrast", d.contrast, "weight of the hinge asking a session's own adapter "
            "to beat another session's on its lessons (0 = off)")
    _option(p, "--margin", d.margin, "nats the own adapter should beat the rival's by")
    _option(p, "--rank", d.rank, "LoRA rank")
    _option(p, "--alpha", d.alpha, "LoRA alpha")
    _option(p, "--latent", d.latent, "width of the network's latents")
    _option(p, "--batch-tokens", d.batch_tokens, "lesson tokens per session per step")
    _option(p, "--sessions-per-step", d.sessions_per_step, "sessions averaged in one step")
    _option(p, "--eval-every", d.eval_every, "evaluate and checkpoint every N steps")
    _option(p, "--eval-sessions", d.eval_sessions, "evaluation sessions scored")
    _option(p, "--seed", d.seed, "seed of the network's initialisation and order")
    p.add_argument("--json", action="store_true", help="print the run's summary as JSON")


def _option(p: argparse.ArgumentParser, flag: str, default: float, text: str) -> None:
    """A numeric option of `MetaOptions`, typed as its default and saying that default."""
    p.add_argument(flag, type=type(default), default=default, help=f"{text} (default {default})")


def _say(message: str) -> None:
    print(f"rune: {message}", file=sys.stderr, flush=True)


def train_cmd(args: argparse.Namespace, settings: Settings) -> int:
    from rune_mcp.basemodel import ensure_derived, resolve_base
    from rune_mcp.distill.hyper.checkpoint import default_dir
    from rune_mcp.distill.hyper.data import parse_seeds
    from rune_mcp.distill.hyper.train import MetaOptions, meta_train
    from rune_mcp.distill.train import load_base

    info = resolve_base(settings)
    opts = MetaOptions(
        out=args.out or default_dir(settings, info.fingerprint),
        train_seeds=parse_seeds(args.train_seeds), eval_seeds=parse_seeds(args.eval_seeds),
        projects=args.projects, steps=args.steps, learning_rate=args.lr, l2=args.l2,
        contrast=args.contrast, margin=args.margin,
        batch_tokens=args.batch_tokens, sessions_per_step=args.sessions_per_step,
        eval_every=args.eval_every, eval_sessions=args.eval_sessions, rank=args.rank,
        alpha=args.alpha, latent=args.latent, source=args.source, seed=args.seed,
        resume=args.resume)
    opts.check()  # overlapping seeds are refused before a model loads
    _say("loading the base model")
    loaded = load_base(settings, ensure_derived(settings, info), "lora")
    state = meta_train(settings, loaded, info.fingerprint, opts, _say)
    summary = {"out": str(opts.out), "step": state.step, "device": state.device,
               "seconds": round(state.seconds, 1), "cpu_seconds": round(state.cpu_seconds, 1),
               "encode_seconds": state.encode_seconds,
               "first_loss": state.losses[0] if state.losses else None,
               "last_loss": state.losses[-1] if state.losses else None,
               "eval": state.evals[-1] if state.evals else None}
    if args.json:
        emit_json(summary)
        return 0
    print(f"hypernetwork at step {state.step} in {opts.out} ({state.device}, "
          f"{state.seconds:.0f} s, {state.cpu_seconds:.0f} CPU s)")
    if state.evals:
        print(f"  last evaluation: {state.evals[-1]}")
    return 0


def eval_cmd(args: argparse.Namespace, settings: Settings) -> int:
    from rune_mcp.basemodel import ensure_derived, resolve_base
    from rune_mcp.distill.hyper.data import parse_seeds
    from rune_mcp.distill.hyper.generate import find_hypernetwork
    from rune_mcp.distill.hyper.train import evaluate_checkpoint
    from rune_mcp.distill.train import load_base
    from rune_mcp.errors import UsageError

    seeds = parse_seeds(args.seeds)
    if args.sessions < 2 or args.projects < 1:
        raise UsageError("--sessions must be at least 2 (each is compared with another's "
                         "adapter) and --projects at least 1.")
    info = resolve_base(settings)
    ckpt = find_hypernetwork(settings, info, args.hypernetwork or settings.hypernetwork)
    _say("loading the base model")
    loaded = load_base(settings, ensure_derived(settings, info), "lora")
    result = evaluate_checkpoint(settings, loaded, ckpt, seeds, args.projects, args.sessions, _say)
    if args.json:
        emit_json(result)
        return 0
    print(f"hypernetwork at step {result['step']} on seeds {seeds} ({result['sessions']} "
          f"sessions, {result['trained_on']} of them trained on):")
    for key in ("base", "bias_only", "generated", "mismatched", "spread"):
        if key in result:
            print(f"  {key:<11} {result[key]}")
    return 0
