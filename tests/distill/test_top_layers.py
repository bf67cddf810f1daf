"""LoRA in the upper layers only: the adapter holds just those layers, and trains."""

from __future__ import annotations

import math
from pathlib import Path

from safetensors.torch import load_file

from distill.sessions import make_trajectory
from rune_mcp.config import Settings
from rune_mcp.distill.lessons import compile_lessons
from rune_mcp.distill.train import load_base, train_adapter


def test_only_the_top_layers_get_lora_weights(
    settings: Settings, tiny_dir: Path, tmp_path: Path
) -> None:
    s = settings.with_overrides(train_steps=4, learning_rate=1e-2, threads=2,
                                train_batch_tokens=512, lessons_qa=False, lora_top_layers=1)
    loaded = load_base(s, tiny_dir, "lora")
    result = train_adapter(s, compile_lessons(make_trajectory(), s), loaded, tmp_path / "peft")
    assert all(math.isfinite(x) for x in result.losses)
    names = list(load_file(str(tmp_path / "peft" / "adapter_model.safetensors")))
    assert names and all(".layers.1." in n for n in names)  # the upper of the two layers only
    everywhere = settings.with_overrides(train_steps=1, threads=2, lessons_qa=False,
                                         train_batch_tokens=512)
    full = train_adapter(everywhere, compile_lessons(make_trajectory(), everywhere), loaded,
                         tmp_path / "all")
    assert result.trainable_params * 2 == full.trainable_params
