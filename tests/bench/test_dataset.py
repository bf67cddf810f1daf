"""The dataset generator: deterministic, varied, realistic enough to parse into episodes."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import pytest

from rune_mcp.bench.dataset import generate
from rune_mcp.bench.quirks import KINDS
from rune_mcp.capture import parse_path
from rune_mcp.cli import main
from rune_mcp.distill.probes import MULTI_FIELDS, Probe, load_probes
from rune_mcp.errors import UsageError


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    generate(tmp_path / "a", projects=2, seed=3)
    generate(tmp_path / "b", projects=2, seed=3)
    generate(tmp_path / "c", projects=2, seed=4)
    assert _tree(tmp_path / "a") == _tree(tmp_path / "b")
    assert _tree(tmp_path / "a")["probes.jsonl"] != _tree(tmp_path / "c")["probes.jsonl"]


def test_at_least_eight_kinds_of_quirk(dataset: Path) -> None:
    manifest = json.loads((dataset / "dataset.json").read_text())
    assert len(set(manifest["kinds"])) >= 8
    assert set(manifest["kinds"]) <= set(KINDS)
    assert manifest["seed"] == 7 and manifest["projects"] == 2


def test_every_session_parses_into_one_episode_per_quirk(dataset: Path) -> None:
    manifest = json.loads((dataset / "dataset.json").read_text())
    for session in manifest["sessions"]:
        traj = parse_path(dataset / "sessions" / f"{session['name']}.jsonl")
        assert traj.format == "claude-code"
        assert traj.project_name == session["project"]
        assert traj.task.startswith(session["task"][:40])
        assert len(traj.episodes) == len(session["quirks"]), session["name"]
        assert all(ep.fix for ep in traj.episodes)


def test_sessions_carry_real_transcript_noise(dataset: Path) -> None:
    lines = [
        json.loads(line)
        for f in sorted((dataset / "sessions").glob("*.jsonl"))
        for line in f.read_text().splitlines()
    ]
    types = {line["type"] for line in lines}
    assert {"user", "assistant", "progress", "system", "file-history-snapshot"} <= types
    ids = [line["message"]["id"] for line in lines if line["type"] == "assistant"]
    assert len(ids) > len(set(ids)), "assistant messages are split over lines sharing message.id"
    results = [line for line in lines if "toolUseResult" in line]
    assert any(isinstance(r["toolUseResult"], dict) and "stdout" in r["toolUseResult"] for r in results)
    assert any(isinstance(r["toolUseResult"], str) for r in results), "errors carry a string result"
    assert max(len(r["message"]["content"][0]["content"]) for r in results) > 3000, "long tool output"
    chain = {line["uuid"] for line in lines if "uuid" in line}
    assert all(line["parentUuid"] in chain for line in lines if line.get("parentUuid"))


def test_later_sessions_depend_on_earlier_ones(dataset: Path) -> None:
    manifest = json.loads((dataset / "dataset.json").read_text())
    by_project: dict[str, list[dict[str, object]]] = {}
    for s in manifest["sessions"]:
        by_project.setdefault(str(s["project"]), []).append(s)
    for sessions in by_project.values():
        assert sessions[0]["depends_on"] == []
        assert all(s["depends_on"] == [p["name"]] for p, s in itertools.pairwise(sessions))


def test_probes_are_valid_and_their_knowledge_is_in_the_source_session(dataset: Path) -> None:
    probes = load_probes(dataset / "probes.jsonl").probes
    assert len({p.id for p in probes}) == len(probes)
    general = [p for p in probes if p.source_session is None]
    assert len(general) >= 8
    answers = {p.answer for p in probes}
    assert len(answers) > 1, "answers are shuffled among positions"
    for probe in probes:
        if probe.source_session is None or probe.multi_session:
            continue  # multi-session probes: tests/bench/test_multiprobes.py
        text = (dataset / "sessions" / f"{probe.source_session}.jsonl").read_text()
        answer = probe.correct
        question = probe.messages[0].content
        given = question + probe.prefix + probe.task
        words = [w for w in re.findall(r"[A-Za-z_][\w-]{3,}", answer) if w not in given]
        found = answer.strip("`") in text or any(w in text for w in words)
        assert found, (probe.id, answer)
        assert question not in text, "probes ask in other words"


def test_the_probes_file_is_the_probe_model_line_by_line(dataset: Path) -> None:
    text = (dataset / "probes.jsonl").read_text()
    probes = load_probes(dataset / "probes.jsonl").probes
    assert "".join(p.jsonl() for p in probes) == text
    # a single-session probe's line leaves the multi-session fields out; a multi-session one has all
    single = [f for f in Probe.model_fields if f not in MULTI_FIELDS]
    assert list(json.loads(text.splitlines()[0])) == single
    assert list(json.loads(text.splitlines()[-1])) == list(Probe.model_fields)


def test_bad_input_is_one_sentence_naming_the_line(tmp_path: Path, dataset: Path) -> None:
    with pytest.raises(UsageError, match="at least 2"):
        generate(tmp_path, projects=1)
    good = (dataset / "probes.jsonl").read_text().splitlines()[0]

    def variant(**change: object) -> str:
        return json.dumps({**json.loads(good), **change})

    cases = [
        ('{"id": "x"}', r"line 1 is not a valid probe \(task: Field required\)"),
        ("not json", r"line 1 is not a valid probe \(it is not one JSON object\)"),
        (good + "\n" + variant(answer=9), r"line 2 .*answer 9 is outside"),
        (good + "\n\n" + variant(choices=["", "b"]), r"line 3 .*distinct non-empty"),
        (variant(choices=["a", "a"]), r"line 1 .*distinct non-empty"),
        (variant(messages=[{"role": "bot", "content": "q"}]), r"line 1 .*messages\.0\.role"),
        (variant(answer="1"), r"line 1 .*answer"),
        (variant(extra=1), r"line 1 .*extra"),
    ]
    bad = tmp_path / "bad.jsonl"
    for text, message in cases:
        bad.write_text(text + "\n")
        with pytest.raises(UsageError, match=message) as caught:
            load_probes(bad)
        assert str(caught.value).startswith(str(bad)), caught.value
    bad.write_text("\n")
    with pytest.raises(UsageError, match="holds no probes"):
        load_probes(bad)
    with pytest.raises(UsageError, match="cannot read"):
        load_probes(tmp_path / "missing.jsonl")


def test_cli_writes_the_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["bench", "make-dataset", "--out", str(tmp_path / "d"), "--projects", "3", "--seed", "1"]) == 0
    )
    assert "9 sessions of 3 projects" in capsys.readouterr().out
    assert len(list((tmp_path / "d" / "sessions").glob("*.jsonl"))) == 9


def test_the_generator_writes_free_answer_keys_for_every_kind(tmp_path: Path) -> None:
    from rune_mcp.bench.answers import RIGHT, find_key, judge
    from rune_mcp.bench.memory import kind_of

    covered: set[str] = set()
    for seed in (0, 1, 7):
        generate(tmp_path / str(seed), projects=4, seed=seed)
        for probe in load_probes(tmp_path / str(seed) / "probes.jsonl").probes:
            if probe.source_session is None:
                assert not probe.right_keys, "general controls are not scored as free answers"
                continue
            if probe.multi_session:
                continue  # test_multi_session_probes_need_both_lessons
            kind = kind_of(probe.id)
            assert kind and probe.right_keys and probe.wrong_keys, probe.id
            covered.add(kind)
            # the correct choice written out shows the lesson; no other choice does
            assert judge(probe.prefix + probe.correct, probe.right_keys, probe.wrong_keys).verdict == RIGHT
            for i, choice in enumerate(probe.choices):
                if i != probe.answer:
                    verdict = judge(probe.prefix + choice, probe.right_keys, probe.wrong_keys)
                    assert verdict.verdict != RIGHT, (probe.id, choice)
            # echoing the question shows nothing either way
            question = probe.messages[-1].content
            assert not [k for k in (*probe.right_keys, *probe.wrong_keys) if find_key(question, k)], probe.id
    assert covered == set(KINDS)


def test_probes_written_before_keys_still_load(tmp_path: Path, dataset: Path) -> None:
    lines = []
    for line in (dataset / "probes.jsonl").read_text().splitlines():
        raw = json.loads(line)
        raw.pop("right_keys")
        raw.pop("wrong_keys")
        lines.append(json.dumps(raw))
    old = tmp_path / "old.jsonl"
    old.write_text("\n".join(lines) + "\n")
    probes = load_probes(old).probes
    assert probes and all(p.right_keys == () and p.wrong_keys == () for p in probes)
    with pytest.raises(UsageError, match="needs right_keys"):
        load_probes(_write(tmp_path, {**json.loads(lines[0]), "wrong_keys": ["x"]}))


def _write(tmp_path: Path, raw: dict[str, object]) -> Path:
    path = tmp_path / "one.jsonl"
    path.write_text(json.dumps(raw) + "\n")
    return path


def test_five_sessions_a_project_teach_every_kind_once_and_parse(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "make-dataset", "--out", str(tmp_path / "d"), "--projects", "2",
                 "--seed", "4", "--sessions", "5"]) == 0
    assert "10 sessions of 2 projects" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "d" / "dataset.json").read_text())
    for project in {s["project"] for s in manifest["sessions"]}:
        mine = [s for s in manifest["sessions"] if s["project"] == project]
        kinds = [k for s in mine for k in s["quirks"]]
        assert len(mine) == 5 and sorted(kinds) == sorted(KINDS)  # each kind once
        traj = parse_path(tmp_path / "d" / "sessions" / f"{mine[-1]['name']}.jsonl")
        assert len(traj.episodes) == len(mine[-1]["quirks"])
    assert manifest["multi_session_probe_count"] > 12  # more pairs of sessions to combine
    assert main(["bench", "make-dataset", "--out", str(tmp_path / "e"), "--sessions", "6"]) == 2
    assert "--sessions must be 1 to 5" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()
