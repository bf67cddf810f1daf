"""Fixtures for distillation tests: a hand-built trajectory and a tiny random model.

The tiny model (2 layers, hidden 64) uses the real base tokenizer and chat template, so
rendering and training run the same code as on the embedded model, in seconds.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from distill.sessions import make_trajectory
from rune_mcp.config import Settings, load_settings
from rune_mcp.trajectory import Trajectory


@pytest.fixture
def trajectory() -> Trajectory:
    return make_trajectory()


@pytest.fixture
def settings(rune_home: Path) -> Settings:
    return load_settings()


@pytest.fixture(scope="session")
def base_dir() -> Path:
    """The derived transformers form of the embedded base model (made once, cached)."""
    from rune_mcp.basemodel import ensure_derived, resolve_base

    settings = load_settings({"RUNE_CACHE_DIR": str(_cache())})
    return ensure_derived(settings, resolve_base(settings), quiet=True)


def _cache() -> Path:
    repo = Path(__file__).resolve().parents[2]
    return Path(os.environ.get("RUNE_TEST_CACHE", repo / ".test-cache"))


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory, base_dir: Path) -> Path:
    """A 2-layer random llama model with the base tokenizer, saved as safetensors."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=2048, tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    out = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    return out
