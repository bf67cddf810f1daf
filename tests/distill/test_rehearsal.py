"""Rehearsal examples: the base model's own answers to general prompts, generated once per base."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rune_mcp.config import Settings
from rune_mcp.distill.collate import render_examples
from rune_mcp.distill.rehearsal import bundled_prompts, generate_answers, rehearsal_examples
from rune_mcp.distill.train import load_base


@pytest.fixture(scope="module")
def tiny(tiny_dir: Path) -> Any:
    return load_base(Settings(threads=2), tiny_dir, "lora")


def test_bundled_prompts_are_general() -> None:
    prompts, max_tokens = bundled_prompts()
    assert len(prompts) >= 10 and max_tokens > 0
    assert len(set(prompts)) == len(prompts)
    # Nothing about the sample project may leak into what every adapter is trained on.
    assert not [p for p in prompts if "tidewater" in p.lower()]


def test_answers_are_generated_once_per_base_and_cached(
    settings: Settings, tiny: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = settings.with_overrides(cache_dir=settings.home / "cache")
    first = rehearsal_examples(s, "a" * 64, tiny.model, tiny.tokenizer)
    prompts, _ = bundled_prompts()
    assert [ex.prompt for ex in first] == prompts[: len(first)] and first
    assert {ex.kind for ex in first} == {"rehearsal"}
    assert len(list((s.cache_dir / "rehearsal").glob("*.json"))) == 1

    def fail(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("generated again although the answers are cached")

    monkeypatch.setattr("rune_mcp.distill.rehearsal.generate_answers", fail)
    again = rehearsal_examples(s, "a" * 64, tiny.model, tiny.tokenizer)
    assert again == first
    with pytest.raises(AssertionError, match="generated again"):
        rehearsal_examples(s, "b" * 64, tiny.model, tiny.tokenizer)  # another base: new answers


def test_corrupt_cache_is_regenerated(settings: Settings, tiny: Any) -> None:
    s = settings.with_overrides(cache_dir=settings.home / "cache")
    first = rehearsal_examples(s, "c" * 64, tiny.model, tiny.tokenizer)
    (cached,) = (s.cache_dir / "rehearsal").glob("*.json")
    key = json.loads(cached.read_text())["key"]
    for damaged in ("{not json", "[1, 2]", json.dumps({"version": 1, "key": key, "answers": [7]})):
        cached.write_text(damaged)
        assert rehearsal_examples(s, "c" * 64, tiny.model, tiny.tokenizer) == first
        assert json.loads(cached.read_text())["answers"]


def test_switched_off_gives_nothing(settings: Settings, tiny: Any) -> None:
    s = settings.with_overrides(lessons_rehearsal=False, cache_dir=settings.home / "cache")
    assert rehearsal_examples(s, "a" * 64, tiny.model, tiny.tokenizer) == []
    assert not (s.cache_dir / "rehearsal").exists()


def test_answer_cut_short_is_trained_without_an_end_of_turn(tiny: Any) -> None:
    [(text, ended)] = generate_answers(tiny.model, tiny.tokenizer, ["What is recursion?"], 5)
    assert not ended  # a random model does not stop within 5 tokens
    from rune_mcp.distill.lessons import Example

    cut = Example("rehearsal", "What is recursion?", text, 0.1, open_end=True)
    whole = Example("rehearsal", "What is recursion?", text, 0.1)
    eos = tiny.tokenizer.convert_tokens_to_ids("<|im_end|>")
    [r_cut, r_whole] = render_examples([cut, whole], tiny.tokenizer, 512)
    assert eos in r_whole.labels and eos not in r_cut.labels
    assert r_cut.input_ids == r_whole.input_ids[: len(r_cut.input_ids)]
