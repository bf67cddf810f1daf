"""Training on a tiny random llama model: LoRA, QLoRA on CPU, divergence, interrupts."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import pytest

from distill.sessions import make_trajectory
from rune_mcp.config import Settings
from rune_mcp.distill.lessons import compile_lessons
from rune_mcp.distill.train import (
    EXPLODE_STEPS,
    Divergence,
    Loaded,
    load_base,
    lr_factor,
    make_batches,
    train_adapter,
    weighted_loss,
)
from rune_mcp.errors import TrainingError


def _fast(settings: Settings, **values: object) -> Settings:
    # The tiny model's 49k-token output layer dominates its cost: keep batches small.
    base: dict[str, object] = {"train_steps": 4, "learning_rate": 1e-2, "threads": 2,
                               "train_batch_tokens": 512, "lessons_qa": False}
    base.update(values)
    return settings.with_overrides(**base)


def test_lora_trains_and_saves_a_peft_folder(
    settings: Settings, tiny_dir: Path, tmp_path: Path
) -> None:
    s = _fast(settings, train_steps=12)
    examples = compile_lessons(make_trajectory(), s)
    loaded = load_base(s, tiny_dir, "lora")
    seen: list[tuple[int, int]] = []
    result = train_adapter(s, examples, loaded, tmp_path / "peft",
                           lambda step, total, msg: seen.append((step, total)))
    assert seen == [(i, 12) for i in range(1, 13)]
    assert result.steps == 12 and math.isfinite(result.final_loss)
    assert result.losses[-1] < result.losses[0]  # it learns
    assert result.method == "lora" and result.device == "cpu"
    config = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert config["r"] == s.lora_rank and set(config["target_modules"]) == set(s.target_modules)
    assert (tmp_path / "peft" / "adapter_model.safetensors").is_file()
    assert not list((tmp_path / "peft").glob("*.bin"))
    # The shared base model comes back without LoRA layers for the next session.
    assert not any("lora_" in name for name, _ in loaded.model.named_parameters())


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_qlora_runs_on_cpu_with_an_nf4_base(
    settings: Settings, tiny_dir: Path, tmp_path: Path
) -> None:
    s = _fast(settings, train_steps=2)
    loaded = load_base(s, tiny_dir, "qlora")
    import bitsandbytes as bnb

    linear4bit: Any = getattr(bnb.nn, "Linear4bit")  # noqa: B009 (not re-exported for mypy)
    linear4: list[Any] = [m for m in loaded.model.modules() if isinstance(m, linear4bit)]
    assert linear4 and linear4[0].weight.quant_type == "nf4"
    assert linear4[0].weight.quant_state.nested  # double quantization
    result = train_adapter(s, compile_lessons(make_trajectory(), s), loaded, tmp_path / "q")
    assert result.method == "qlora" and math.isfinite(result.final_loss)
    assert (tmp_path / "q" / "adapter_model.safetensors").is_file()


def test_divergence_stops_and_writes_nothing(
    settings: Settings, tiny_dir: Path, tmp_path: Path
) -> None:
    # An infinite step turns the weights into inf/NaN at once: the next loss is not finite.
    s = _fast(settings, train_steps=5, learning_rate=math.inf)
    loaded = load_base(s, tiny_dir, "lora")
    with pytest.raises(TrainingError, match="diverged"):
        train_adapter(s, compile_lessons(make_trajectory(), s), loaded, tmp_path / "peft")
    assert not (tmp_path / "peft").exists()


def _verdicts(losses: list[float]) -> list[bool]:
    watch = Divergence()
    return [watch.diverged(value) for value in losses]


def test_one_hard_batch_is_not_divergence_but_a_run_of_them_is() -> None:
    # A measured normal run: an easy first batch (0.49), later one of new facts at 4.76.
    # Against the first loss alone that was called divergence; against the mean it is not.
    assert not any(_verdicts([0.49, 1.2, 2.1, 1.5, 4.76, 1.1, 0.9]))
    # One exploding step is forgiven by a normal one after it, however high it was.
    assert not any(_verdicts([1.0, 1.0, 9.0, 1.0, 50.0, 1.2]))
    # EXPLODE_STEPS in a row are divergence, even when the second is below the first: a
    # measured run at learning rate 1e4 (the exploded 23.4 must not lift the bar for 17.3).
    assert EXPLODE_STEPS == 2
    assert _verdicts([3.50, 23.41, 17.31]) == [False, False, True]
    assert _verdicts([1.0, float("nan")]) == [False, True]  # not finite: at once
    assert _verdicts([float("inf")]) == [True]


def test_interrupt_writes_nothing(settings: Settings, tiny_dir: Path, tmp_path: Path) -> None:
    s = _fast(settings, train_steps=5)
    loaded = load_base(s, tiny_dir, "lora")

    def stop(step: int, total: int, message: str) -> None:
        if step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_adapter(s, compile_lessons(make_trajectory(), s), loaded, tmp_path / "peft", stop)
    assert not (tmp_path / "peft").exists()
    assert not any("lora_" in name for name, _ in loaded.model.named_parameters())


def test_unlikelihood_option_trains(settings: Settings, tiny_dir: Path, tmp_path: Path) -> None:
    s = _fast(settings, train_steps=3, unlikelihood_weight=0.5)
    loaded = load_base(s, tiny_dir, "lora")
    result = train_adapter(s, compile_lessons(make_trajectory(), s), loaded, tmp_path / "ul")
    assert math.isfinite(result.final_loss) and result.steps == 3


def test_time_budget_stops_early(settings: Settings, tiny_dir: Path, tmp_path: Path) -> None:
    s = _fast(settings, train_steps=500, train_time_budget_s=0.01)
    loaded = load_base(s, tiny_dir, "lora")
    result = train_adapter(s, compile_lessons(make_trajectory(), s), loaded, tmp_path / "tb")
    assert result.stopped_early and result.steps < 500
    assert (tmp_path / "tb" / "adapter_config.json").is_file()


def test_no_examples_is_a_training_error(
    settings: Settings, tiny_dir: Path, tmp_path: Path
) -> None:
    loaded: Loaded = load_base(settings, tiny_dir, "lora")
    with pytest.raises(TrainingError, match="no lessons"):
        train_adapter(settings, [], loaded, tmp_path / "none")


def test_batches_respect_the_token_budget() -> None:
    from rune_mcp.distill.collate import Rendered

    items = [Rendered(list(range(n)), list(range(n))) for n in (10, 50, 20, 300, 5)]
    batches = make_batches(items, 100, seed=0)
    assert sorted(len(r.input_ids) for b in batches for r in b) == [5, 10, 20, 50, 300]
    for batch in batches:
        assert len(batch) == 1 or max(len(r.input_ids) for r in batch) * len(batch) <= 100


def test_cosine_schedule_falls_from_one_to_a_tenth() -> None:
    assert [lr_factor("constant", i, 30) for i in (0, 15, 29)] == [1.0, 1.0, 1.0]
    factors = [lr_factor("cosine", i, 30) for i in range(30)]
    assert factors[0] == pytest.approx(1.0) and factors[-1] == pytest.approx(0.1)
    assert all(a > b for a, b in itertools.pairwise(factors))
    assert lr_factor("cosine", 40, 30) == pytest.approx(0.1)  # past the end: stays at the floor


def test_uniform_weights_give_the_models_own_loss(
    settings: Settings, tiny_dir: Path
) -> None:
    import torch

    loaded = load_base(settings, tiny_dir, "lora")
    ids = torch.tensor([[5, 9, 11, 3, 7, 2]])
    labels = torch.tensor([[-100, -100, 11, 3, 7, 2]])
    with torch.no_grad():
        out = loaded.model(input_ids=ids, labels=labels)
        ones = (labels != -100).float()
        assert float(weighted_loss(out.logits, labels, ones)) == pytest.approx(float(out.loss),
                                                                                rel=1e-5)
        heavy = ones.clone()
        heavy[0, 4] = 5.0  # one target weighs more: the loss moves toward its cross-entropy
        assert float(weighted_loss(out.logits, labels, heavy)) != pytest.approx(float(out.loss))


def test_key_weight_and_cosine_schedule_train(
    settings: Settings, tiny_dir: Path, tmp_path: Path
) -> None:
    s = _fast(settings, train_steps=6, answer_key_weight=3.0, lr_schedule="cosine")
    loaded = load_base(s, tiny_dir, "lora")
    result = train_adapter(s, compile_lessons(make_trajectory(), s), loaded, tmp_path / "kw")
    assert result.steps == 6 and math.isfinite(result.final_loss)
    assert result.losses[-1] < result.losses[0]
