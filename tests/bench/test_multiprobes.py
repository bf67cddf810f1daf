"""Multi-session probes: written after the rest with their own stream, judged lesson by lesson."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from rune_mcp.bench.answers import NOT_SCORED, RIGHT, WRONG, find_key, judge, judge_groups
from rune_mcp.bench.dataset import generate
from rune_mcp.bench.multiprobes import judgeable
from rune_mcp.distill.probes import Probe, load_probes
from rune_mcp.errors import UsageError

# sha256 of probes.jsonl and of the sessions (name, NUL, bytes, NUL, in name order) as the
# generator wrote them at commit 7d07677, before multi-session probes existed:
# (projects, seed) -> (probe lines, probes digest, sessions digest)
BEFORE = {
    (4, 0): (60, "af8a6ce0bb211ff8c2c18101b01cae50e1b90f2efd075404960804bd98cebb09",
             "eddffc9dfe85d3250549616b24892387f7aa2e681be7e00003a3bdb47e1a473f"),
    (4, 1): (60, "cf80e014eeb950cdaf8101bcca98402503cdde6a9ca7ac9497f10016d34b8eb9",
             "8262b8f9ac22a6bed55dade61990095f6df836738b30cb5a1e43a54cf6bb0141"),
    (2, 7): (36, "8936b2543b2679b0519d55b9a4698f82778418ddaf5d72f8df83bd01619d2fcc",
             "71df1c6fb1ac07bc20003e52bc4d6bc5ef232f4f66b9965ec02f07e4d15d6c2d"),
    (3, 5): (48, "0ef2e5bd2a971c86f21d5ffbd0f52eb87a6f1ebacd55dba47f9837f3aa1b0897",
             "3ac8b80baa54e498f09d33162f7aebe28febfee68fb6d6a87d2eec183df8f885"),
}


def _sessions_digest(out: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted((out / "sessions").glob("*.jsonl")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


@pytest.mark.parametrize(("projects", "seed"), sorted(BEFORE))
def test_old_seeds_keep_every_byte_and_multi_probes_come_after(
    tmp_path: Path, projects: int, seed: int
) -> None:
    count, probes_digest, sessions_digest = BEFORE[(projects, seed)]
    manifest = generate(tmp_path, projects=projects, seed=seed)
    lines = (tmp_path / "probes.jsonl").read_bytes().splitlines(keepends=True)
    head, tail = lines[:count], lines[count:]
    assert hashlib.sha256(b"".join(head)).hexdigest() == probes_digest
    assert _sessions_digest(tmp_path) == sessions_digest
    assert tail and all(b'"source_sessions"' in line for line in tail)
    assert not any(b'"source_sessions"' in line for line in head)
    assert manifest["multi_session_probe_count"] == len(tail)
    assert manifest["probe_count"] == len(lines)


def test_multi_session_probes_are_deterministic_and_cover_every_pair(tmp_path: Path) -> None:
    generate(tmp_path / "a", projects=4, seed=1)
    generate(tmp_path / "b", projects=4, seed=1)
    generate(tmp_path / "c", projects=4, seed=2)
    text = (tmp_path / "a" / "probes.jsonl").read_bytes()
    assert text == (tmp_path / "b" / "probes.jsonl").read_bytes()
    multi = [p for p in load_probes(tmp_path / "a" / "probes.jsonl").probes if p.multi_session]
    other = [p for p in load_probes(tmp_path / "c" / "probes.jsonl").probes if p.multi_session]
    assert [p.id for p in multi] != [p.id for p in other]
    manifest = json.loads((tmp_path / "a" / "dataset.json").read_text())
    project = {s["name"]: s["project"] for s in manifest["sessions"]}
    pairs = {tuple(p.source_sessions) for p in multi}
    for name in {s["project"] for s in manifest["sessions"]}:
        mine = sorted(n for n, proj in project.items() if proj == name)
        assert {(a, b) for i, a in enumerate(mine) for b in mine[i + 1:]} <= pairs
    assert len({p.id for p in multi}) == len(multi)
    for probe in multi:
        one, two = probe.source_sessions
        assert project[one] == project[two] and one < two and probe.source_session == two
        assert probe.task.startswith(f"{project[one]}: ") and len(probe.choices) == 4
        assert len(probe.key_groups) == 2 and not probe.right_keys


def test_each_lesson_of_a_multi_session_probe_is_taught_in_its_own_session(tmp_path: Path) -> None:
    generate(tmp_path, projects=4, seed=0)
    multi = [p for p in load_probes(tmp_path / "probes.jsonl").probes if p.multi_session]
    assert multi
    for probe in multi:
        for session, group in zip(probe.source_sessions, probe.key_groups, strict=True):
            raw = (tmp_path / "sessions" / f"{session}.jsonl").read_text()
            text = raw.replace('\\"', '"').replace("\\n", "\n")  # the JSON strings' text
            assert any(find_key(text, key) for key in group), (probe.id, session, group)
        assert probe.messages[-1].content not in raw, "probes ask in other words"


def test_only_the_form_holding_both_lessons_is_right(tmp_path: Path) -> None:
    for seed in (0, 1, 7):
        generate(tmp_path / str(seed), projects=4, seed=seed)
        for probe in load_probes(tmp_path / str(seed) / "probes.jsonl").probes:
            if not probe.multi_session:
                continue
            assert judgeable(probe), probe.id
            wrongs = [c for i, c in enumerate(probe.choices) if i != probe.answer]
            verdicts = [judge_groups(probe.prefix + c, probe.key_groups, probe.wrong_keys)
                        for c in wrongs]
            assert all(v.verdict == WRONG for v in verdicts), probe.id
            # two forms hold one lesson (a key of one group), one form neither
            held = sorted(sum(any(find_key(probe.prefix + c, k) for k in group)
                              for group in probe.key_groups) for c in wrongs)
            assert held == [0, 1, 1], probe.id


def test_judging_needs_a_key_of_every_group_and_no_wrong_key() -> None:
    groups = (("open_pool(",), ("tenant=",))
    wrong = ("connect(", "Queue(\"orders\")")
    both = "conn = db.open_pool(dsn)\nq = Queue(\"orders\", tenant = settings.TENANT)"
    assert judge_groups(both, groups, wrong).verdict == RIGHT
    assert judge_groups(both, groups, wrong).right == ("open_pool(", "tenant=")
    assert judge_groups("conn = db.open_pool(dsn)", groups, wrong).verdict == WRONG
    assert judge_groups("Queue('x', tenant=T)", groups, wrong).verdict == WRONG
    hedged = both + "\nor db.connect(dsn)"
    assert judge_groups(hedged, groups, wrong).verdict == WRONG
    assert judge_groups(hedged, groups, wrong).wrong == ("connect(",)
    assert judge_groups(both, (), wrong).verdict == NOT_SCORED
    # one group is the single-session rule
    assert judge("db.open_pool(dsn)", ["open_pool("], ["connect("]) == judge_groups(
        "db.open_pool(dsn)", [["open_pool("]], ["connect("])


def _multi(**change: object) -> dict[str, object]:
    raw: dict[str, object] = {
        "id": "p-01+02-multi-a+b", "task": "p: a; b",
        "messages": [{"role": "user", "content": "Two things."}], "prefix": "1. ",
        "choices": ["x\n\n2. y", "z\n\n2. y"], "answer": 0, "source_session": "p-02",
        "wrong_keys": ["z"], "source_sessions": ["p-01", "p-02"],
        "right_keys_all": [["x"], ["y"]],
    }
    return {**raw, **change}


def test_the_probe_model_takes_multi_session_probes_and_refuses_bad_ones(tmp_path: Path) -> None:
    probe = Probe.model_validate(_multi())
    assert probe.multi_session and probe.sessions == ("p-01", "p-02")
    assert probe.key_groups == (("x",), ("y",))
    assert Probe.model_validate_json(probe.jsonl()) == probe
    single = Probe.model_validate({**_multi(), "source_sessions": [], "right_keys_all": [],
                                   "right_keys": ["x"]})
    assert single.key_groups == (("x",),) and single.sessions == ("p-02",)
    assert "source_sessions" not in single.jsonl() and "right_keys_all" not in single.jsonl()
    cases = [
        (_multi(source_sessions=["p-02"]), "two or more distinct"),
        (_multi(source_sessions=["p-02", "p-02"]), "two or more distinct"),
        (_multi(source_session="p-01"), "is the last of source_sessions"),
        (_multi(right_keys=["x"]), "not both"),
        (_multi(right_keys_all=[["x"], []]), "every group"),
        (_multi(right_keys_all=[["x"], [" "]]), "non-empty strings"),
        (_multi(right_keys_all=[]), "needs right_keys"),
    ]
    bad = tmp_path / "bad.jsonl"
    for raw, message in cases:
        bad.write_text(json.dumps(raw) + "\n")
        with pytest.raises(UsageError, match=message):
            load_probes(bad)
