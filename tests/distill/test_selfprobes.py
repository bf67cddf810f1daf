"""Self-probes: which phrasings are held out, and a remembered session storing them.

The split is checked on the lessons the compiler makes of a hand-built session and on
constructed lesson groups; the end-to-end test remembers a session on the tiny llama base
(real training, a few steps) and reads the adapter's self-probes back from the library.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from conftest import TEST_CACHE
from helpers.compose import tiny_stack
from helpers.tiny import PEFT_WARNING

from distill.sessions import FIXED, make_trajectory
from rune_mcp.config import Settings
from rune_mcp.distill.lessons import Example, compile_lessons
from rune_mcp.distill.selfprobes import (
    MIN_PHRASINGS,
    key_spans,
    lesson_key,
    split_self_probes,
    to_probes,
)
from rune_mcp.library import Library
from rune_mcp.library.manifest import SELF_PROBES


def _qa(question: str, answer: str, steps: tuple[int, ...] = (1, 2), kind: str = "qa") -> Example:
    return Example(kind, question, answer, 0.8, None, steps)  # type: ignore[arg-type]


def _lesson(n: int, steps: tuple[int, ...], kind: str = "qa") -> list[Example]:
    return [_qa(f"Question {i} about lesson {steps}?", f"Use `fix_{steps[0]}_{i}()` here.", steps, kind)
            for i in range(n)]


def test_key_spans_are_the_answers_backticked_names_the_question_lacks() -> None:
    assert key_spans("What fails with `a()`?", "`a()` fails; use `db.open(x)`.") == [
        "db.open(x)", "db.open", "open"]
    line = "readings = tidewater.gauges.read_window(station_id, hours=24)"
    assert key_spans("What goes wrong with `readings = fetch(station_id)`?", f"Use `{line}`.") == [
        "tidewater.gauges.read_window", "read_window"]
    assert key_spans("How do I test?", "Run `pytest -q`.") == ["pytest -q"]
    assert key_spans("Which command runs `pytest -q`?", "`pytest -q`") == []
    assert key_spans("How?", "In the project, use the new call.") == []


def test_the_split_is_deterministic_whatever_the_order(settings: Settings) -> None:
    examples = compile_lessons(make_trajectory(), settings) + _lesson(12, (40, 41), "fact")
    train, held = split_self_probes(examples, 0.25)
    assert split_self_probes(examples, 0.25) == (train, held)
    shuffled = list(examples)
    random.Random(3).shuffle(shuffled)
    train2, held2 = split_self_probes(shuffled, 0.25)
    assert sorted(held2, key=repr) == sorted(held, key=repr)
    assert [e for e in examples if e in train2] == train  # order kept, same members
    assert len(train) + len(held) == len(examples) and not set(held) & set(train)
    assert [ex.steps for ex in held].count((40, 41)) == 3  # floor(0.25 x 12)


def test_every_lesson_keeps_a_phrasing_and_only_lessons_of_three_give_probes(
    settings: Settings,
) -> None:
    examples = [*_lesson(2, (1, 2)), *_lesson(3, (3, 4)), *_lesson(4, (5, 6)),
                *compile_lessons(make_trajectory(), settings)]
    train, held = split_self_probes(examples, 0.9)
    lessons = {lesson_key(ex) for ex in examples if ex.kind in ("qa", "fact")}
    assert lessons <= {lesson_key(ex) for ex in train}  # one phrasing of each stays
    counts = {key: sum(1 for ex in held if lesson_key(ex) == key) for key in lessons}
    assert counts[("steps", (1, 2))] == 0 and counts[("steps", (3, 4))] == 2
    assert counts[("steps", (5, 6))] == 3
    assert all(ex.kind in ("qa", "fact") for ex in held)
    assert all(key_spans(ex.prompt, ex.answer) for ex in held)
    assert split_self_probes(examples, 0.0) == (examples, [])


def test_examples_without_steps_are_grouped_by_their_answer() -> None:
    same = [_qa(f"Where is the code, take {i}?", "`harbor/ledger.py`", ()) for i in range(3)]
    lone = [_qa(f"Which file, take {i}?", f"`harbor/file_{i}.py`", ()) for i in range(3)]
    _, held = split_self_probes(same + lone, 0.25)
    assert len(held) == 1 and held[0] in same  # the three distinct answers are three lessons
    assert MIN_PHRASINGS == 3


def test_probes_carry_the_question_answer_and_key_spans() -> None:
    probe = to_probes([_qa("Which call?", "Use `ledger.commit_totals(t)`.", (3, 8))])[0]
    assert probe.question == "Which call?" and probe.answer == "Use `ledger.commit_totals(t)`."
    assert probe.key_spans == ["ledger.commit_totals(t)", "ledger.commit_totals", "commit_totals"]
    assert probe.lesson == [3, 8] and probe.kind == "qa"


@pytest.mark.filterwarnings(PEFT_WARNING)
def test_remember_holds_the_probes_out_and_stores_them_with_the_adapter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from rune_mcp.distill import remember
    from rune_mcp.distill.train import train_adapter

    settings, _ = tiny_stack(tmp_path, TEST_CACHE)
    # without facts the session's one fix has five phrasings, so exactly one is held out
    settings = settings.with_overrides(train_steps=2, lessons_rehearsal=False, context_size=512,
                                       lessons_facts=False)
    trained: list[Example] = []

    def spy(cfg: Settings, examples: list[Example], *args: Any, **kwargs: Any) -> Any:
        trained.extend(examples)
        return train_adapter(cfg, examples, *args, **kwargs)

    monkeypatch.setattr(remember, "train_adapter", spy)
    result = remember.remember_trajectory(settings, make_trajectory())
    lib = Library.open(settings)
    probes = lib.self_probes(result.adapter_id)
    assert result.self_probes == len(probes) == 1
    assert probes[0].question.startswith("What goes wrong with")
    assert probes[0].key_spans == ["tidewater.gauges.read_window", "read_window"]
    assert FIXED in probes[0].answer
    assert probes[0].question not in {ex.prompt for ex in trained}  # held out of training
    assert result.examples == len(trained)
    record = lib.get(result.adapter_id)
    assert SELF_PROBES in record.manifest["files"]
    assert record.manifest["training"]["self_probes"] == 1
    stored = json.loads((record.path / SELF_PROBES).read_text())
    assert stored["version"] == 1 and stored["probes"][0]["question"] == probes[0].question
    again = remember.remember_trajectory(settings, make_trajectory())
    assert again.reused and again.adapter_id == result.adapter_id and again.self_probes == 1
