"""The anchor: KL(base || adapter) on rehearsal examples, zero for the base itself."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from distill.sessions import make_trajectory
from rune_mcp.config import Settings
from rune_mcp.distill.anchor import anchor_loss, base_targets
from rune_mcp.distill.collate import render_examples
from rune_mcp.distill.lessons import Example, compile_lessons
from rune_mcp.distill.train import _peft_model, load_base, train_adapter

GENERAL = [Example("rehearsal", "Name a prime number.", "Seven is a prime number.", 0.5),
           Example("rehearsal", "What is 2 + 2?", "2 + 2 is 4.", 0.5)]


def test_the_anchor_is_zero_at_the_base_and_grows_as_the_adapter_moves(
    settings: Settings, tiny_dir: Path
) -> None:
    s = settings.with_overrides(threads=2)
    loaded = load_base(s, tiny_dir, "lora")
    model = _peft_model(s, loaded)
    try:
        items = render_examples(GENERAL, loaded.tokenizer, 128)
        pad = int(loaded.tokenizer.pad_token_id)
        targets = base_targets(model, items, "cpu", k=8)
        assert set(targets) == {id(r) for r in items}
        # LoRA starts with B = 0: the adapter is the base, so the KL is zero
        at_base = abs(float(anchor_loss(model, items, targets, pad, "cpu").detach()))
        assert at_base < 1e-7
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.normal_(0, 0.5)
        moved = anchor_loss(model, items, targets, pad, "cpu")
        # a random tiny model spreads its mass thin, so the KL is small, but far from zero
        assert float(moved.detach()) > 1e-5
        moved.backward()  # it trains the adapter
        assert any(p.grad is not None and float(p.grad.abs().sum()) > 0
                   for n, p in model.named_parameters() if "lora_" in n)
    finally:
        loaded.model = model.unload()


def test_training_with_a_kl_anchor_runs_and_learns(
    settings: Settings, tiny_dir: Path, tmp_path: Path
) -> None:
    s = settings.with_overrides(train_steps=8, learning_rate=1e-2, threads=2,
                                train_batch_tokens=512, lessons_qa=False, rehearsal_loss="kl")
    examples = [*compile_lessons(make_trajectory(), s), *GENERAL]
    loaded = load_base(s, tiny_dir, "lora")
    result = train_adapter(s, examples, loaded, tmp_path / "peft")
    assert result.steps == 8 and all(math.isfinite(x) for x in result.losses)
    assert result.losses[-1] < result.losses[0]
