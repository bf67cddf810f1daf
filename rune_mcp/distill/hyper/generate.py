"""A trajectory -> a PEFT adapter folder, in one forward pass of the hypernetwork.

`find_hypernetwork` checks, before any model loads, that a hypernetwork exists for this base
model and writes adapters for the configured target modules; anything else is one sentence
saying how to train one. `generate_adapter` encodes the session, runs the network once and
writes an ordinary PEFT LoRA folder (adapter_config.json + adapter_model.safetensors, PEFT's
own key names), so the library, the GGUF export and every runtime treat it like any other.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rune_mcp.basemodel import BaseModelInfo
from rune_mcp.config import Settings
from rune_mcp.distill.collate import render_examples
from rune_mcp.distill.hyper.apply import target_layers
from rune_mcp.distill.hyper.checkpoint import Checkpoint, default_dir, load_network, read_checkpoint
from rune_mcp.distill.hyper.encode import pool_starts, pooled_states, session_tokens
from rune_mcp.distill.hyper.network import Adapter
from rune_mcp.distill.hyper.train import TRAIN_HINT, lesson_loss
from rune_mcp.distill.lessons import Example
from rune_mcp.distill.train import Loaded, make_batches
from rune_mcp.errors import TrainingError
from rune_mcp.trajectory import Trajectory

HYPER_METHODS = ("hyper", "hyper+lora")
LOSS_TOKENS = 384  # one batch of lessons is enough to report how well the adapter fits them


@dataclass
class Generated:
    """What one forward pass produced."""

    peft_dir: Path
    seconds: float
    lesson_loss: float  # the lessons' cross-entropy under the generated adapter (one batch)
    texts: int  # texts the encoder read


def find_hypernetwork(settings: Settings, info: BaseModelInfo, folder: Path | None = None) -> Checkpoint:
    """The hypernetwork for this base and these target modules, or one sentence why not."""
    folder = folder or default_dir(settings, info.fingerprint)
    ckpt = read_checkpoint(folder, TRAIN_HINT)
    cfg = ckpt.config
    if cfg.base_fingerprint != info.fingerprint:
        raise TrainingError(f"the hypernetwork at {folder} was trained for base model "
                            f"{cfg.base_fingerprint[:12]}, not {info.fingerprint[:12]}; train one "
                            f"for this base with {TRAIN_HINT}.")
    if set(cfg.targets) != set(settings.target_modules):
        raise TrainingError(f"the hypernetwork at {folder} writes adapters for {list(cfg.targets)}, "
                            f"not target_modules {list(settings.target_modules)}; set "
                            f"target_modules to match or train one with {TRAIN_HINT}.")
    return ckpt


def adapter_settings(settings: Settings, ckpt: Checkpoint) -> Settings:
    """The settings an adapter of this hypernetwork is stored (and fine-tuned) with: its rank,
    alpha and module order come from the checkpoint."""
    cfg = ckpt.config
    return settings.with_overrides(lora_rank=cfg.rank, lora_alpha=cfg.alpha,
                                   target_modules=list(cfg.targets))


@torch.no_grad()
def generate_adapter(
    ckpt: Checkpoint, loaded: Loaded, traj: Trajectory, examples: list[Example], out_dir: Path
) -> Generated:
    """Encode the session, write its adapter to `out_dir` (a PEFT folder) in one pass."""
    if not examples:
        raise TrainingError("there are no lessons to generate an adapter from; nothing was stored.")
    start = time.monotonic()
    cfg = ckpt.config
    model, tokenizer = loaded.model, loaded.tokenizer
    if int(model.config.hidden_size) != cfg.hidden:
        raise TrainingError(f"the hypernetwork reads states {cfg.hidden} wide but the base model's "
                            f"are {model.config.hidden_size}; train one for it with {TRAIN_HINT}.")
    net = load_network(ckpt, loaded.device).eval()
    pad = int(tokenizer.pad_token_id)
    texts = session_tokens(cfg.source, traj, examples, tokenizer, cfg.max_tokens)
    rendered = render_examples(examples, tokenizer, cfg.max_tokens)
    starts = pool_starts(cfg.source, rendered)
    adapter = net(pooled_states(model, texts, pad, starts=starts).to(loaded.device))
    write_peft(out_dir, adapter, model, cfg.rank, cfg.alpha)
    seconds = time.monotonic() - start
    batch = make_batches(rendered, LOSS_TOKENS, 0)[0]
    loss = float(lesson_loss(model, adapter, batch, pad))
    return Generated(out_dir, seconds, loss, len(texts))


def write_peft(out_dir: Path, adapter: Adapter, model: Any, rank: int, alpha: float) -> Path:
    """Save `adapter` as a PEFT LoRA folder for `model` (safetensors only)."""
    from peft import LoraConfig
    from safetensors.torch import save_file

    layers = target_layers(model, list(adapter.a))
    tensors: dict[str, torch.Tensor] = {}
    for (layer, module), (name, _) in sorted(layers.items()):
        prefix = f"base_model.model.{name}"
        tensors[f"{prefix}.lora_A.weight"] = adapter.a[module][layer].detach().float().cpu().contiguous()
        tensors[f"{prefix}.lora_B.weight"] = adapter.b[module][layer].detach().float().cpu().contiguous()
    out_dir.mkdir(parents=True, exist_ok=True)
    # PEFT types alpha as int but only ever divides by it; a float alpha is kept exact.
    lora_alpha: Any = alpha
    config = LoraConfig(r=rank, lora_alpha=lora_alpha, target_modules=sorted(adapter.a),
                        lora_dropout=0.0, bias="none", task_type="CAUSAL_LM",
                        base_model_name_or_path=getattr(model, "name_or_path", None) or None)
    config.save_pretrained(str(out_dir))
    save_file(tensors, str(out_dir / "adapter_model.safetensors"), metadata={"format": "pt"})
    return out_dir
