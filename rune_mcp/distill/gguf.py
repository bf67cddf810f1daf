"""PEFT LoRA folder -> llama.cpp GGUF LoRA file, so one trained adapter serves on both runtimes.

Training happens in transformers (PEFT), serving on CPU happens in llama.cpp, and the two only
agree if the exported tensors land exactly where llama.cpp expects them: PEFT's A (r x in) and
B (out x r) go in as they are, named `blk.{i}.<gguf module>.weight.lora_a/lora_b`, and on
llama-architecture bases the rows of B for `attn_q` and `attn_k` get the same per-head
permutation the GGUF converter applied to the base's q and k weights. Without it the adapter
still loads but mostly adds noise (logit correlation with PEFT 0.33 instead of 0.90+). Qwen2,
Qwen3 and Gemma 3 bases keep transformers' row order, so their B goes in unchanged; any other
architecture is refused (rune_mcp.architectures says why).

Only safetensors are read; the GGUF appears by an atomic rename, complete or not at all.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rune_mcp.architectures import ARCHITECTURES, architecture
from rune_mcp.basemodel import BaseModelInfo
from rune_mcp.errors import InputError
from rune_mcp.fsutil import replacing

EXPORT_VERSION = 1
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"

# PEFT module name -> llama.cpp tensor name inside a block.
GGUF_MODULES = {
    "q_proj": "attn_q",
    "k_proj": "attn_k",
    "v_proj": "attn_v",
    "o_proj": "attn_output",
    "gate_proj": "ffn_gate",
    "up_proj": "ffn_up",
    "down_proj": "ffn_down",
}
# Architectures whose GGUF converter permutes q/k rows per head (convert_hf_to_gguf's LlamaModel).
PERMUTED_ARCHS = frozenset(a.name for a in ARCHITECTURES.values() if a.permute_qk)

_KEY = re.compile(
    r"(?:^|\.)layers\.(?P<layer>\d+)\.(?:self_attn|mlp)\.(?P<module>\w+)\.lora_(?P<ab>[AB])\.weight$"
)


@dataclass(frozen=True)
class LoraConfig:
    """The few adapter_config.json fields llama.cpp can express."""

    rank: int
    alpha: float  # written so that llama.cpp's alpha / r equals PEFT's scaling


def permute_rows(w: np.ndarray[Any, Any], n_head: int) -> np.ndarray[Any, Any]:
    """Reorder the rows of `w` (out x r) per head the way the GGUF converter reorders q/k.

    Within each head, HF keeps the two rotary halves apart ([x0..x31, y0..y31]); GGUF interleaves
    them ([x0, y0, x1, y1, ...]). For one head of 4 rows: rows [0, 1, 2, 3] -> [0, 2, 1, 3].
    """
    rows, r = w.shape
    if rows % (2 * n_head):
        raise InputError(f"a q/k LoRA B with {rows} rows cannot be split into {n_head} heads; "
                         "the adapter does not match the base model's attention layout.")
    return w.reshape(n_head, 2, rows // n_head // 2, r).swapaxes(1, 2).reshape(rows, r)


def read_config(peft_dir: Path) -> LoraConfig:
    """Read and check `adapter_config.json`: plain LoRA with one rank and one alpha."""
    path = peft_dir / ADAPTER_CONFIG
    try:
        cfg = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise InputError(f"{peft_dir} has no {ADAPTER_CONFIG}; pass a PEFT adapter folder.") from exc
    except (OSError, ValueError) as exc:
        raise InputError(f"{path} is not readable JSON ({exc}); re-save the adapter.") from exc
    if str(cfg.get("peft_type", "LORA")).upper() != "LORA":
        raise InputError(f"{peft_dir} holds a {cfg.get('peft_type')} adapter; only LoRA exports.")
    if cfg.get("use_dora"):
        raise InputError(f"{peft_dir} is a DoRA adapter, which llama.cpp cannot serve; "
                         "train plain LoRA.")
    if cfg.get("rank_pattern") or cfg.get("alpha_pattern"):
        raise InputError(f"{peft_dir} uses per-module ranks or alphas; llama.cpp takes one alpha "
                         "per adapter, so train with a single rank and alpha.")
    rank, alpha = int(cfg.get("r", 8)), float(cfg.get("lora_alpha", 8))
    if cfg.get("use_rslora"):
        alpha = alpha * math.sqrt(rank)  # rsLoRA scales by alpha/sqrt(r); llama.cpp by alpha/r
    return LoraConfig(rank=rank, alpha=alpha)


def read_tensors(peft_dir: Path) -> dict[tuple[int, str, str], np.ndarray[Any, Any]]:
    """(layer, module, "A"|"B") -> float32 array, from the adapter's safetensors only."""
    from safetensors import safe_open

    path = peft_dir / ADAPTER_WEIGHTS
    if not path.is_file():
        raise InputError(f"{peft_dir} has no {ADAPTER_WEIGHTS}; only safetensors adapters are "
                         "read (re-save it with safe_serialization=True).")
    out: dict[tuple[int, str, str], np.ndarray[Any, Any]] = {}
    try:
        with safe_open(str(path), framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118 (safe_open is not a mapping)
                match = _KEY.search(key)
                if not match or match["module"] not in GGUF_MODULES:
                    raise InputError(f"{path} holds tensor {key!r}, which a llama.cpp LoRA cannot "
                                     "carry; target only the attention and MLP linear layers.")
                tensor = handle.get_tensor(key).float().numpy()
                out[(int(match["layer"]), match["module"], match["ab"])] = tensor
    except InputError:
        raise
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        raise InputError(f"{path} is not a readable safetensors file ({exc}).") from exc
    if not out:
        raise InputError(f"{path} holds no LoRA tensors; the adapter is empty.")
    return out


def gguf_tensors(
    tensors: dict[tuple[int, str, str], np.ndarray[Any, Any]], base: BaseModelInfo, rank: int
) -> list[tuple[str, np.ndarray[Any, Any]]]:
    """Named lora_a/lora_b arrays in llama.cpp's layout, checked against the base's shape."""
    architecture(base.architecture, base.path)
    pairs = sorted({(layer, module) for layer, module, _ in tensors})
    named: list[tuple[str, np.ndarray[Any, Any]]] = []
    for layer, module in pairs:
        a, b = tensors.get((layer, module, "A")), tensors.get((layer, module, "B"))
        if a is None or b is None:
            raise InputError(f"layer {layer} {module} has only one of lora_A/lora_B; the adapter "
                             "is incomplete.")
        if layer >= base.n_layers or not _fits(module, a.shape, b.shape, base, rank):
            raise InputError(f"layer {layer} {module} (A {a.shape}, B {b.shape}) does not fit "
                             f"{base.name} ({base.n_layers} layers) at rank {rank}; the adapter "
                             "was trained for another base model.")
        if base.architecture in PERMUTED_ARCHS and module in ("q_proj", "k_proj"):
            b = permute_rows(b, base.n_head if module == "q_proj" else base.n_head_kv)
        name = f"blk.{layer}.{GGUF_MODULES[module]}.weight"
        named.append((f"{name}.lora_a", np.ascontiguousarray(a, dtype=np.float16)))
        named.append((f"{name}.lora_b", np.ascontiguousarray(b, dtype=np.float16)))
    return named


def _fits(module: str, a: tuple[int, ...], b: tuple[int, ...], base: BaseModelInfo,
          rank: int) -> bool:
    """Whether A (r x in) and B (out x r) have the shapes this module has in `base`."""
    hidden, ff = base.embedding_length, base.n_ff or None  # an unknown MLP width is not checked
    q, kv = base.n_head * base.head_dim, base.n_head_kv * base.head_dim
    want_in = {"o_proj": q, "down_proj": ff}.get(module, hidden)
    want_out = {"q_proj": q, "k_proj": kv, "v_proj": kv, "gate_proj": ff,
                "up_proj": ff}.get(module, hidden)
    return (a[0] == rank and b[1] == rank and want_in in (None, a[1])
            and want_out in (None, b[0]))


def export_gguf(peft_dir: Path, base: BaseModelInfo, out: Path) -> Path:
    """Write the PEFT adapter in `peft_dir` as a llama.cpp GGUF LoRA at `out`; returns `out`.

    Tensors are stored as f16 (what llama.cpp's own converter writes; half the memory of f32).
    """
    import gguf

    cfg = read_config(peft_dir)
    named = gguf_tensors(read_tensors(peft_dir), base, cfg.rank)
    with replacing(out) as tmp:
        writer = gguf.GGUFWriter(tmp, base.architecture)
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, cfg.alpha)
        writer.add_uint32("rune.export_version", EXPORT_VERSION)
        writer.add_string("rune.base_fingerprint", base.fingerprint)
        for name, array in named:
            writer.add_tensor(name, array)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return out
