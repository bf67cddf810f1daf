"""The anchor: KL(base || adapter) on rehearsal examples, zero for the base itself."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from distill.sessions import make_trajectory
from rune_mcp.config import Settings
from rune_mcp.distill.anchor import CODE_WINDOW, anchor_loss, base_targets, code_windows
from rune_mcp.distill.collate import render_examples
from rune_mcp.distill.lessons import Example, compile_lessons
from rune_mcp.distill.train import _load_start, _peft_model, load_base, train_adapter

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


def test_code_windows_are_raw_source_trained_at_every_position(
    settings: Settings, tiny_dir: Path
) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_dir))
    windows = code_windows(tokenizer, 300)
    assert [len(w.input_ids) for w in windows] == [CODE_WINDOW, CODE_WINDOW, 300 - 2 * CODE_WINDOW]
    assert all(w.labels == w.input_ids and w.kind == "anchor" for w in windows)
    assert "def " in tokenizer.decode([t for w in windows for t in w.input_ids])
    assert code_windows(tokenizer, 0) == []


def _code_kl(s: Settings, tiny_dir: Path, peft_dir: Path | None) -> float:
    """Mean KL(base || model) on the anchor's windows, the model the base with `peft_dir`."""
    loaded = load_base(s, tiny_dir, "lora")
    windows = code_windows(loaded.tokenizer, 512)
    pad = int(loaded.tokenizer.pad_token_id)
    model = _peft_model(s, loaded)
    if peft_dir is not None:
        _load_start(model, peft_dir)
    targets = base_targets(model, windows, "cpu")
    with torch.no_grad():
        return float(anchor_loss(model, windows, targets, pad, "cpu"))


def test_the_code_anchor_keeps_source_closer_to_the_base(
    settings: Settings, tiny_dir: Path, tmp_path: Path
) -> None:
    s = settings.with_overrides(train_steps=8, learning_rate=2e-2, threads=2,
                                train_batch_tokens=512, lessons_qa=False, lessons_rehearsal=False)
    examples = compile_lessons(make_trajectory(), s)
    train_adapter(s, examples, load_base(s, tiny_dir, "lora"), tmp_path / "free")
    # a random tiny model spreads its mass thin, so its KLs are about 1e-4: the weight makes the
    # anchor's pull show against the lessons' loss within eight steps
    held_s = s.with_overrides(anchor_code_tokens=512, anchor_weight=1000.0)
    held = train_adapter(held_s, examples, load_base(held_s, tiny_dir, "lora"), tmp_path / "held")
    assert held.steps == 8 and all(math.isfinite(x) for x in held.losses)
    free_kl, held_kl = _code_kl(s, tiny_dir, tmp_path / "free"), _code_kl(s, tiny_dir, tmp_path / "held")
    assert _code_kl(s, tiny_dir, None) < 1e-7  # the measure is zero at the base
    assert held_kl < 0.5 * free_kl, (held_kl, free_kl)
