"""Training until held-out questions are answered: checked every N steps, stops when said."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from distill.sessions import make_trajectory
from rune_mcp.config import Settings
from rune_mcp.distill.answered import Check, answered_share
from rune_mcp.distill.lessons import compile_lessons
from rune_mcp.distill.train import load_base, train_adapter


def test_a_check_no_answer_can_pass_runs_every_n_steps(
    settings: Settings, tiny_dir: Path, tmp_path: Path
) -> None:
    s = settings.with_overrides(train_steps=6, learning_rate=1e-2, threads=2,
                                train_batch_tokens=512, lessons_qa=False, answer_check_every=2)
    loaded = load_base(s, tiny_dir, "lora")
    never = [Check("Which tidewater function reads gauges?", ("zz_no_such_key_zz",))]
    result = train_adapter(s, compile_lessons(make_trajectory(), s), loaded, tmp_path / "a",
                           checks=never)
    assert [step for step, _ in result.answered] == [2, 4, 6]
    assert all(share == 0.0 for _, share in result.answered)
    assert result.steps == 6 and not result.stopped_early


def test_training_stops_once_the_questions_are_answered(
    settings: Settings, tiny_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rune_mcp.distill import train

    s = settings.with_overrides(train_steps=8, learning_rate=1e-2, threads=2,
                                train_batch_tokens=512, lessons_qa=False, answer_check_every=2,
                                answer_check_share=0.5)
    shares = iter([0.0, 0.5])  # the second check reaches the share
    monkeypatch.setattr(train, "answered_share", lambda *_: next(shares))
    loaded = load_base(s, tiny_dir, "lora")
    result = train_adapter(s, compile_lessons(make_trajectory(), s), loaded, tmp_path / "b",
                           checks=[Check("q", ("k",))])
    assert result.answered == [(2, 0.0), (4, 0.5)]
    assert result.steps == 4 and result.stopped_early
    assert (tmp_path / "b" / "adapter_model.safetensors").is_file()  # stopped, still stored


def test_the_best_checked_weights_are_stored_not_the_last(
    settings: Settings, tiny_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from safetensors.torch import load_file

    from rune_mcp.distill import train

    s = settings.with_overrides(train_steps=6, learning_rate=1e-2, threads=2,
                                train_batch_tokens=512, lessons_qa=False, answer_check_every=2)
    lessons = compile_lessons(make_trajectory(), s)
    loaded = load_base(s, tiny_dir, "lora")
    # the same run stopped at step 2: the weights a best check at step 2 must give back
    early = train_adapter(s.with_overrides(train_steps=2, answer_check_every=0), lessons, loaded,
                          tmp_path / "two")
    shares = iter([0.5, 0.0, 0.5])  # step 2 best; the last step only ties it
    monkeypatch.setattr(train, "answered_share", lambda *_: next(shares))
    result = train_adapter(s, lessons, loaded, tmp_path / "best", checks=[Check("q", ("k",))])
    assert result.answered == [(2, 0.5), (4, 0.0), (6, 0.5)]
    assert result.steps == 6 and result.kept_step == 2 and early.steps == 2
    kept = load_file(str(tmp_path / "best" / "adapter_model.safetensors"))
    two = load_file(str(tmp_path / "two" / "adapter_model.safetensors"))
    assert kept.keys() == two.keys()
    assert all(torch.equal(kept[k], two[k]) for k in kept)
    assert result.to_dict()["kept_step"] == 2


def test_the_last_step_is_checked_when_the_period_skips_it(
    settings: Settings, tiny_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rune_mcp.distill import train

    s = settings.with_overrides(train_steps=5, learning_rate=1e-2, threads=2,
                                train_batch_tokens=512, lessons_qa=False, answer_check_every=2)
    shares = iter([0.0, 0.0, 0.5])
    monkeypatch.setattr(train, "answered_share", lambda *_: next(shares))
    loaded = load_base(s, tiny_dir, "lora")
    result = train_adapter(s, compile_lessons(make_trajectory(), s), loaded, tmp_path / "c",
                           checks=[Check("q", ("k",))])
    assert [step for step, _ in result.answered] == [2, 4, 5]
    assert result.kept_step == 5  # the last state was the best: nothing put back


def test_the_share_is_judged_on_real_answers(settings: Settings, base_dir: Path) -> None:
    loaded = load_base(settings.with_overrides(threads=2), base_dir, "lora")
    checks = [Check("What is the capital of France?", ("Paris",)),
              Check("What is the capital of France?", ("zz_no_such_key_zz",))]
    assert answered_share(loaded.model, loaded.tokenizer, checks, "cpu") == 0.5


def test_no_checks_answer_everything() -> None:
    assert answered_share(None, None, [], "cpu") == 1.0


def test_remember_checks_the_held_out_phrasings_it_stores() -> None:
    from rune_mcp.distill.remember import checks_of
    from rune_mcp.distill.selfprobes import split_self_probes

    s = Settings(lessons_facts=True)
    train, held = split_self_probes(compile_lessons(make_trajectory(), s), 0.25)
    checks = checks_of(held)
    assert checks and len(checks) == len(held)
    trained = {ex.prompt for ex in train}
    for check in checks:
        assert check.question not in trained  # never trained on these words
        assert check.keys  # and each has spans a right answer holds
