"""The one probe model: the bundled probe set document and generated JSONL load into it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rune_mcp.distill.probes import Probe, ProbeScore, load_probes, sample_paths
from rune_mcp.errors import UsageError
from rune_mcp.runtime.scoring import ChoiceScores


def test_the_bundled_probe_set_loads_in_the_short_form() -> None:
    session, path = sample_paths()
    probes = load_probes(path)
    assert probes.session == session and probes.general_prompt and probes.general_tokens == 40
    raw = json.loads(path.read_text())["probes"]
    for probe, entry in zip(probes.probes, raw, strict=True):
        assert probe.id == entry["name"] and probe.task == entry["prompt"]
        assert probe.chat() == [{"role": "user", "content": entry["prompt"]}]
        assert probe.correct == entry["correct"] and list(probe.choices[1:]) == entry["wrong"]
        assert probe.answer == 0 and probe.source_session == "sample_session"


def test_a_bad_probe_in_a_document_names_its_line(tmp_path: Path) -> None:
    _, path = sample_paths()
    text = path.read_text()
    bad = tmp_path / "probes.json"
    bad.write_text(text.replace('"correct": "read_window",', '"correct": "",'))
    line = next(n for n, t in enumerate(text.splitlines(), 1) if '"name": "error-fix"' in t) - 1
    with pytest.raises(UsageError, match=f"probes.json line {line} is not a valid probe .*distinct"):
        load_probes(bad)
    bad.write_text(text.replace('"format_version": 1', '"format_version": 7'))
    with pytest.raises(UsageError, match="format 7"):
        load_probes(bad)
    bad.write_text(text[: len(text) // 2])
    with pytest.raises(UsageError, match="line [0-9]+ is not valid JSON"):
        load_probes(bad)


def test_a_one_line_document_is_still_a_document(tmp_path: Path) -> None:
    _, path = sample_paths()
    one = tmp_path / "one.json"
    one.write_text(json.dumps(json.loads(path.read_text())))
    assert load_probes(one).probes == load_probes(path).probes


def test_rank_and_pass_follow_the_scoring_rule() -> None:
    probe = Probe.model_validate({"name": "p", "prompt": "q", "prefix": "", "correct": "a",
                                  "wrong": ["b", "c"]})
    tied = ProbeScore(probe, ChoiceScores([-1.0, -1.0, -2.0], [1, 1, 1], 4))
    assert tied.passed and tied.rank == 1 and tied.correct == -1.0
    behind = ProbeScore(probe, ChoiceScores([-1.5, -1.0, -2.0], [1, 1, 1], 4))
    assert not behind.passed and behind.rank == 2
    assert behind.to_dict() == {"name": "p", "correct": -1.5, "rank": 2, "candidates": 3,
                                "wrong": {"b": -1.0, "c": -2.0}}
