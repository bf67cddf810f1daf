"""Tiny real adapters for tests: a randomly initialised 2-layer llama, LoRA from PEFT.

`make_peft_adapter` runs the real PEFT code path (`get_peft_model` + `save_pretrained`), so the
folder is exactly what distillation produces, only a few kilobytes. `adapter_variant` makes
many distinct adapters from one cheaply (safetensors + numpy, no torch), for tests that need
hundreds; `make_gguf_lora` writes a small llama.cpp-style GGUF LoRA file; `adapter_meta` the
metadata `Library.add` takes.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

TINY_TARGETS = ("q_proj", "v_proj")
FAKE_BASE = "0" * 63 + "1"  # a base fingerprint no real model has
# peft calls a transformers method that transformers 5 renamed; tests loading PEFT models
# mark themselves with `@pytest.mark.filterwarnings(PEFT_WARNING)`.
PEFT_WARNING = "ignore:.*is_gradient_checkpointing:FutureWarning"


def tiny_llama(seed: int = 0) -> Any:
    """A 2-layer llama with hidden size 16: random weights, loads in milliseconds."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
    )
    return LlamaForCausalLM(config)


def make_peft_adapter(
    out: Path, seed: int = 0, rank: int = 4, targets: tuple[str, ...] = TINY_TARGETS
) -> Path:
    """Save a LoRA adapter of the tiny llama to `out` (adapter_config.json + safetensors)."""
    import torch
    from peft import LoraConfig, get_peft_model

    model = tiny_llama(seed)
    config = LoraConfig(
        r=rank, lora_alpha=2 * rank, target_modules=list(targets), init_lora_weights=False
    )
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        # peft calls a transformers method that transformers 5 has renamed (PEFT_WARNING).
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
        peft_model = get_peft_model(model, config)
    peft_model.save_pretrained(str(out), safe_serialization=True)
    return out


def adapter_variant(src: Path, dst: Path, seed: int) -> Path:
    """Copy the adapter in `src` to `dst` with every tensor shifted by seeded noise."""
    from safetensors.numpy import load_file, save_file

    rng = np.random.default_rng(seed)
    tensors = load_file(str(src / "adapter_model.safetensors"))
    changed = {
        name: (value + rng.normal(0, 0.01, value.shape)).astype(value.dtype)
        for name, value in tensors.items()
    }
    dst.mkdir(parents=True, exist_ok=True)
    save_file(changed, str(dst / "adapter_model.safetensors"))
    (dst / "adapter_config.json").write_bytes((src / "adapter_config.json").read_bytes())
    return dst


def make_gguf_lora(out: Path, seed: int = 0, rank: int = 4, layers: int = 2) -> Path:
    """A small GGUF LoRA file in the layout llama.cpp reads (random lora_a/lora_b)."""
    import gguf

    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(out), "llama")
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", float(2 * rank))
    for layer in range(layers):
        for name in ("attn_q", "attn_v"):
            base = f"blk.{layer}.{name}.weight"
            writer.add_tensor(f"{base}.lora_a", rng.normal(0, 0.1, (rank, 16)).astype(np.float32))
            writer.add_tensor(f"{base}.lora_b", rng.normal(0, 0.1, (16, rank)).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def adapter_meta(
    n: int, task: str | None = None, base: str = FAKE_BASE, **overrides: Any
) -> dict[str, Any]:
    """Metadata for test adapter number `n` (distinct trajectory and session per `n`)."""
    meta: dict[str, Any] = {
        "base_fingerprint": base,
        "method": "lora",
        "rank": 4,
        "alpha": 8.0,
        "target_modules": list(TINY_TARGETS),
        "agent": "claude-code",
        "session_id": f"session-{n}",
        "project": "/home/dev/tidewater",
        "trajectory_id": f"{n:064x}",
        "task": task or f"task number {n}: fix the failing test in module_{n}.py",
        "lesson_count": 3,
        "training": {"steps": 30, "final_loss": 0.5, "seconds": 1.0},
        "parents": [],
    }
    meta.update(overrides)
    return meta
