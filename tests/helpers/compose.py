"""A tiny real base for composition tests: a 2-layer random llama written as an f32 GGUF,
its derived transformers form, and random PEFT adapters of it exported to GGUF and stored.

Everything a merge touches is real (PEFT's `add_weighted_adapter`, the GGUF export, llama.cpp
loading the result), only small enough to run in seconds.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from helpers.archs import tiny_model, write_gguf_base
from helpers.tiny import adapter_meta
from rune_mcp.basemodel import BaseModelInfo, ensure_derived, resolve_base
from rune_mcp.config import Settings
from rune_mcp.distill.gguf import export_gguf

# Token ids of a short text (the tiny vocabulary's bytes); what is compared is the model.
IDS = [1, 40, 72, 101, 108, 108, 111, 32, 119, 111, 114, 108, 100, 33, 10, 200, 150, 90]
PROJECT = "/home/dev/tidewater"


def tiny_base(folder: Path) -> Path:
    """The tiny llama GGUF (the same bytes every time, so its derived form is cached once)."""
    folder.mkdir(parents=True, exist_ok=True)
    return write_gguf_base(tiny_model("llama"), "llama", folder / "tiny-llama.gguf")


def tiny_settings(home: Path, base: Path, cache_dir: Path) -> Settings:
    return Settings(home=home, cache_dir=cache_dir, base_model=base, threads=1,
                    context_size=256, seed=0, device="cpu", backend="llamacpp")


def random_adapter(derived: Path, out: Path, seed: int, targets: list[str], rank: int = 4) -> Path:
    """A PEFT LoRA of the derived model with random A and B, strong enough to move logits."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(derived), dtype=torch.float32)
    torch.manual_seed(seed)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=targets,
                        init_lora_weights=False)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing",
                                category=FutureWarning)
        peft_model = get_peft_model(model, config)
    peft_model.save_pretrained(str(out), safe_serialization=True)
    return out


def store_adapter(lib: Any, settings: Settings, info: BaseModelInfo, folder: Path, n: int,
                  targets: list[str], rank: int = 4, project: str = PROJECT,
                  task: str | None = None, base: str | None = None) -> str:
    """Make adapter number `n`, export it, store it; its id."""
    derived = ensure_derived(settings, info, quiet=True)
    peft = random_adapter(derived, folder / f"peft-{n}", seed=n, targets=targets, rank=rank)
    gguf = export_gguf(peft, info, folder / f"adapter-{n}.gguf")
    meta = adapter_meta(n, task=task, base=base or info.fingerprint, rank=rank, alpha=2.0 * rank,
                        target_modules=targets, project=project)
    return str(lib.add(peft, gguf, meta).adapter_id)


def tiny_stack(folder: Path, cache_dir: Path) -> tuple[Settings, BaseModelInfo]:
    """Settings on the tiny base (home under `folder`) and the base's description."""
    settings = tiny_settings(folder / "home", tiny_base(folder / "base"), cache_dir)
    return settings, resolve_base(settings)
