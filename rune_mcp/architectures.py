"""The base-model architectures Rune trains and serves adapters for, and what differs between them.

An adapter is trained in transformers on the dequantized GGUF and served by llama.cpp on the
GGUF itself; it only acts the same in both when three conversions agree for the architecture:

- llama.cpp's `convert_hf_to_gguf.py` permutes the rows of q and k per head for the llama
  layout only (its LlamaModel); Qwen2, Qwen3 and Gemma 3 keep transformers' order. A LoRA B of
  q/k must get the same permutation as the base's weights (`distill/gguf.py`).
- transformers' GGUF loader leaves a few hyperparameters at its defaults because the GGUF has no
  key for them or it does not read the one there is: Qwen3's head size (`attention.key_length`;
  Qwen3 heads are wider than hidden / heads) and Gemma 3's attention scale
  (`query_pre_attn_scalar`, which llama.cpp derives from the head size). `config_overrides`
  supplies them, so the derived model computes what llama.cpp computes.
- The LoRA tensors must target modules llama.cpp names in a block: the seven attention and MLP
  projections, present under the same names in all four architectures. Gemma 3's extra norms,
  Qwen2's q/k/v biases and Qwen3's q/k norms are base weights an adapter does not touch.

Each is checked end to end on a tiny model of the architecture (tests/distill/
test_architectures.py). Another architecture is refused rather than trained into an adapter that
llama.cpp would serve wrongly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rune_mcp.errors import ModelError

# Gemma 3 27B is the one size whose attention scale llama.cpp takes from hidden / heads rather
# than the head size (llama-model.cpp, LLM_ARCH_GEMMA3); it is recognised by its layer count.
GEMMA3_27B_LAYERS = 62


@dataclass(frozen=True)
class Architecture:
    """One supported `general.architecture` value and how its GGUF differs from transformers."""

    name: str
    families: str  # the model families users know it by
    permute_qk: bool  # convert_hf_to_gguf permutes q/k rows per head


ARCHITECTURES: dict[str, Architecture] = {arch.name: arch for arch in (
    Architecture("llama", "Llama, SmolLM, Mistral", permute_qk=True),
    Architecture("qwen2", "Qwen2, Qwen2.5", permute_qk=False),
    Architecture("qwen3", "Qwen3", permute_qk=False),
    Architecture("gemma3", "Gemma 3", permute_qk=False),
)}


def supported_names() -> str:
    """'llama (Llama, SmolLM, Mistral), qwen2 (...), ...' for error messages and docs."""
    return ", ".join(f"{a.name} ({a.families})" for a in ARCHITECTURES.values())


def architecture(name: str, path: object = "the base model") -> Architecture:
    """The supported architecture called `name`, or a one-sentence ModelError naming them."""
    found = ARCHITECTURES.get(name)
    if found is None:
        raise ModelError(f"{path} is a {name!r} model, which Rune cannot train adapters for; "
                         f"use a GGUF of a supported architecture: {supported_names()}.")
    return found


def config_overrides(name: str, n_layers: int, n_embd: int, n_head: int,
                     head_dim: int) -> dict[str, Any]:
    """transformers config attributes its GGUF loader gets wrong or leaves at a default."""
    overrides: dict[str, Any] = {}
    if name in ("qwen3", "gemma3"):
        overrides["head_dim"] = head_dim
    if name == "gemma3":
        # transformers scales attention by query_pre_attn_scalar ** -0.5, llama.cpp by
        # 1 / sqrt(head size), or 1 / sqrt(hidden / heads) on the 27B.
        wide = n_layers == GEMMA3_27B_LAYERS
        overrides["query_pre_attn_scalar"] = n_embd // n_head if wide else head_dim
    return overrides
