"""The composition conditions of `rune bench memory`, end to end on the tiny llama base.

Everything is the real path (remembering the generated sessions, recall, llama.cpp applying
the run-time sum, PEFT's TIES merge, `rune evolve`'s search, the general guard), on a 2-layer
random base trained for 2 steps, so a run takes seconds. The adapters learn nothing on that
base: the test checks what each condition applies to which probe, not how well it answers.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import TEST_CACHE
from helpers.compose import tiny_base
from helpers.tiny import PEFT_WARNING

from rune_mcp.bench.answers import RIGHT, WRONG
from rune_mcp.bench.compose import COMPOSE_CONDITIONS
from rune_mcp.bench.memory import (
    CONDITIONS,
    _conditions,
    probe_type,
    select_probes,
    select_sessions,
    summarize,
)
from rune_mcp.cli import main
from rune_mcp.distill.probes import Probe
from rune_mcp.errors import UsageError

pytestmark = [pytest.mark.filterwarnings(PEFT_WARNING),
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]
RUN = ("none", "full_context", "oracle_adapter", *COMPOSE_CONDITIONS)


def test_the_composition_conditions_are_named_not_run_by_default(dataset: Path) -> None:
    assert _conditions(None) == CONDITIONS and not set(COMPOSE_CONDITIONS) & set(CONDITIONS)
    assert _conditions("evolved,none") == ("evolved", "none")
    with pytest.raises(UsageError, match="choose among .*project_ties"):
        _conditions("project_mean")
    paths = sorted((dataset / "sessions").glob("*.jsonl"))
    assert len(select_sessions(paths, quick=True)) == 2
    chosen = select_sessions(paths, quick=True, compose=True)
    assert [p.stem for p in chosen] == [p.stem for p in paths if p.stem.endswith(("-01", "-02"))]


@pytest.fixture
def tiny_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The CLI's settings on the tiny base: 2 training steps, a context the guard's windows
    fit, and a scored term weighty enough that the search's best composition beats its best
    single adapter, so that `evolved` answers with a stored merge."""
    base = tiny_base(TEST_CACHE / "tiny-base")
    for key, value in {"BASE_MODEL": str(base), "CONTEXT_SIZE": "1024", "TRAIN_STEPS": "2",
                       "LESSONS_REHEARSAL": "false", "THREADS": "1", "DEVICE": "cpu",
                       "EVOLVE_SCORED_WEIGHT": "100"}.items():
        monkeypatch.setenv(f"RUNE_{key}", value)
    return base


def _sessions(dataset: Path, folder: Path) -> Path:
    """Two sessions of the first project and one of the second: a project of one adapter
    composes to that adapter."""
    paths = sorted((dataset / "sessions").glob("*.jsonl"))
    projects = list(dict.fromkeys(p.stem.rsplit("-", 1)[0] for p in paths))
    keep = [p for p in paths if p.stem in (f"{projects[0]}-01", f"{projects[0]}-02",
                                           f"{projects[1]}-01")]
    folder.mkdir()
    for path in keep:
        shutil.copy(path, folder / path.name)
    return folder


def test_each_composition_condition_runs_end_to_end(
    dataset: Path, tmp_path: Path, tiny_env: Path
) -> None:
    sessions = _sessions(dataset, tmp_path / "sessions")
    out, report = tmp_path / "memory.json", tmp_path / "report"
    rc = main(["bench", "memory", "--sessions", str(sessions), "--probes",
               str(dataset / "probes.jsonl"), "--quick", "--conditions", ",".join(RUN),
               "--evolve-budget-s", "120", "--general-conditions", "project_sum,evolved",
               "--json", str(out), "--report", str(report)])
    assert rc == 0
    data = json.loads(out.read_text())
    config, rows, summary = data["config"], data["results"], data["summary"]
    adapters = config["adapters"]  # session -> its adapter
    singles = set(adapters.values())
    first, second = sorted({name.rsplit("-", 1)[0] for name in adapters})
    assert len(adapters) == 3 and config["evolve"]["budget_s"] == 120
    training = config["training"]  # the record says what made its adapters
    assert training["rehearsal_loss"] == "ce" and training["anchor_code_tokens"] == 0
    assert training["teacher_weight"] == 0.0
    remembered = config["remembered"]  # and how each adapter's training went
    assert set(remembered) == set(adapters)
    assert all(r["steps"] >= 1 and r["taught"] == 0 and r["kept_step"] is None
               and r["seconds"] > 0 for r in remembered.values())
    assert config["evolve"]["probes"] == 4 and config["general_conditions"] == ["project_sum",
                                                                               "evolved"]
    comps = config["compositions"]
    project = {p.rsplit("/", 1)[-1]: part for p, part in comps.items()}
    big = project[first]
    assert set(project) == {first, second} and big["sum_scale"] == 0.5
    assert project[second]["adapters"] == [adapters[f"{second}-01"]] and "ties" not in project[second]
    assert big["ties"]["adapter_id"] not in singles and big["ties"]["weights"] == [1.0, 1.0]
    evolved = big["evolved"]
    assert evolved["merged"] and evolved["adapter_id"] == evolved["stored"] not in singles
    assert evolved["best"]["fitness"] > evolved["best_single"]["fitness"]
    assert {r["condition"] for r in rows} == set(RUN)
    by = {(r["probe_id"], r["condition"]): r for r in rows}
    for r in rows:
        cond, name = r["condition"], r["source_session"]
        mine = (name or "").rsplit("-", 1)[0] if name else r.get("project", "").rsplit("/", 1)[-1]
        if cond == "best_single":
            assert r["adapter_id"] in singles
        elif cond in COMPOSE_CONDITIONS and mine == second:
            assert r["adapter_id"] == adapters[f"{second}-01"]  # one adapter: itself
        elif cond == "project_sum":
            assert r["adapter_id"] == ",".join(f"{i}:0.5" for i in big["adapters"])
            assert r["scores"] != by[(r["probe_id"], "none")]["scores"]  # the sum is applied
            assert r["free"].get("verdict") in (RIGHT, WRONG, "not scored")
        elif cond == "project_ties":
            assert r["adapter_id"] == big["ties"]["adapter_id"]
        elif cond == "evolved":
            assert r["adapter_id"] == evolved["adapter_id"]
    # multi-session probes (both sessions of the first project) are scored and reported apart
    multi = [r for r in rows if probe_type(r) == "multi"]
    assert multi and all(r["source_sessions"] == [f"{first}-01", f"{first}-02"] for r in multi)
    assert {r["condition"] for r in multi} == set(RUN)
    single = [r for r in rows if probe_type(r) == "single" and r["condition"] == "none"]
    for cond in RUN:
        assert summary["accuracy"][cond]["n"] == len(single)
        assert summary["multi_accuracy"][cond]["n"] == len(multi) // len(RUN)
        assert summary["multi_free_accuracy"][cond]["n"] == len(multi) // len(RUN)
        assert summary["general_accuracy"][cond]["n"] == 4
    oracle = [r for r in multi if r["condition"] == "oracle_adapter"]
    assert all(r["adapter_id"] == adapters[f"{first}-02"] for r in oracle)  # the later session's
    full = [r for r in multi if r["condition"] == "full_context"]  # both sessions' texts
    assert all(r["context_session"] == f"{first}-01+{first}-02" for r in full)
    one = [r for r in rows if r["condition"] == "full_context" and probe_type(r) == "single"]
    assert min(r["context_tokens"] for r in full) > max(r["context_tokens"] for r in one) / 2
    # the general guard measures the compositions as they were applied, and only those named
    general = summary["general"]["conditions"]
    assert {"project_sum", "evolved"} <= set(general)
    assert "project_ties" not in general and general["oracle_adapter"]["adapters"] == 0
    assert general["project_sum"]["adapters"] == 2  # the sum, and the lone adapter
    assert any("," in a for a in data["general"]["adapters"])
    compared = summary["compositions_compared"]
    assert {"multi: evolved - best_single", "single: evolved - oracle_adapter"} <= set(compared)
    assert compared["multi: project_sum - best_single"]["scored"]["n"] == len(multi) // len(RUN)
    text = (report / "report.md").read_text()
    assert "## Single-session, multi-session and control probes" in text
    assert "| multi: evolved - best_single | " in text
    assert "| evolved |" in text and "## Compositions" in text and "summed at scale 0.5" in text
    assert f"evolved: {evolved['evaluations']} compositions" in text


def test_evolved_is_refused_before_scoring_without_self_probes(
    dataset: Path, tmp_path: Path, tiny_env: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("RUNE_SELF_PROBE_SHARE", "0")
    sessions = _sessions(dataset, tmp_path / "sessions")
    rc = main(["bench", "memory", "--sessions", str(sessions), "--probes",
               str(dataset / "probes.jsonl"), "--quick", "--conditions", "evolved", "--no-general"])
    err = capsys.readouterr().err
    assert rc == 2 and "holds any (self_probe_share is 0?)" in err and "Traceback" not in err
    assert "scored" not in err  # refused before any probe was scored
    assert main(["bench", "memory", "--sessions", str(sessions), "--probes",
                 str(dataset / "probes.jsonl"), "--evolve-budget-s", "0"]) == 2
    assert "--evolve-budget-s must be a positive" in capsys.readouterr().err


def _probe(pid: str, source: str | None, sessions: list[str] | None = None) -> Probe:
    keys = {"right_keys_all": [["x"], ["y"]]} if sessions else {"right_keys": ["x"]} if source else {}
    return Probe.model_validate({
        "id": pid, "task": "p: a", "messages": [{"role": "user", "content": "q"}], "prefix": "",
        "choices": ["x", "z"], "answer": 0, "source_session": source,
        "source_sessions": sessions or [], **keys})


def test_a_multi_session_probe_is_kept_only_with_all_its_sessions() -> None:
    multi = _probe("p-01+02-multi-a+b", "p-02", ["p-01", "p-02"])
    single = _probe("p-02-x", "p-02")
    control = _probe("general-01", None)
    probes = [single, multi, control]
    assert select_probes(probes, {"p-01", "p-02"}, quick=False) == [single, multi, control]
    assert select_probes(probes, {"p-02"}, quick=False, subset=True) == [single, control]


def test_multi_session_rows_are_summarised_apart() -> None:
    def row(pid: str, cond: str, correct: bool, sessions: list[str] | None = None,
            source: str | None = "s-01") -> dict[str, object]:
        out: dict[str, object] = {"probe_id": pid, "condition": cond, "source_session": source,
                                  "correct": correct, "adapter_id": None, "context_tokens": 0,
                                  "free": {"verdict": RIGHT if correct else WRONG,
                                           "degenerate": None, "tokens": 5}}
        if sessions:
            out["source_sessions"] = sessions
        return out

    single = [row("s-01-cli_flag-1", c, True) for c in ("none", "evolved")]
    multi = [row("s-00+01-multi-a+b", "none", False, ["s-00", "s-01"]),
             row("s-00+01-multi-a+b", "evolved", True, ["s-00", "s-01"])]
    control = [row("general-01", c, True, source=None) for c in ("none", "evolved")]
    assert [probe_type(r) for r in (single[0], multi[0], control[0])] == ["single", "multi", "control"]
    before = summarize(single + control, [])
    after = summarize(single + multi + control, [])
    for key in ("accuracy", "free_accuracy", "general_accuracy", "by_kind"):
        assert after[key] == before[key], key  # what single-session figures meant is kept
    assert "multi_accuracy" not in before
    assert after["multi_accuracy"]["none"]["accuracy"] == 0.0
    assert after["multi_accuracy"]["evolved"]["accuracy"] == 1.0
    assert after["multi_free_accuracy"]["evolved"]["accuracy"] == 1.0


def test_compositions_are_compared_on_the_same_probes_in_points() -> None:
    from rune_mcp.bench.memory import compositions_compared

    def row(pid: str, cond: str, correct: bool, free: str, multi: bool) -> dict[str, object]:
        out: dict[str, object] = {"probe_id": pid, "condition": cond, "source_session": "s-02",
                                  "correct": correct, "free": {"verdict": free}}
        if multi:
            out["source_sessions"] = ["s-01", "s-02"]
        return out

    rows = [row("m1", "best_single", False, WRONG, True), row("m2", "best_single", False, WRONG, True),
            row("m1", "evolved", True, RIGHT, True), row("m2", "evolved", False, RIGHT, True),
            row("s1", "oracle_adapter", True, RIGHT, False), row("s2", "oracle_adapter", True, RIGHT, False),
            row("s1", "evolved", True, RIGHT, False), row("s2", "evolved", False, "not scored", False),
            row("s1", "best_single", True, RIGHT, False), row("s2", "best_single", True, RIGHT, False)]
    out = compositions_compared(rows, ["best_single", "evolved"])
    assert set(out) == {"multi: evolved - best_single"}  # oracle_adapter did not run
    out = compositions_compared(rows, ["best_single", "evolved", "oracle_adapter"])
    multi = out["multi: evolved - best_single"]
    assert multi["scored"]["points"] == 50.0 and multi["scored"]["n"] == 2
    assert multi["free"]["points"] == 100.0 and multi["free"]["ci95"] == [100.0, 100.0]
    own = out["single: evolved - oracle_adapter"]
    assert own["scored"]["points"] == -50.0 and own["scored"]["ci95"][0] <= -50.0
    assert own["free"] == {"n": 1, "points": 0.0, "ci95": [0.0, 0.0]}  # s2 was not judged
    assert out["single: best_single - oracle_adapter"]["scored"]["points"] == 0.0


def test_evolved_answers_as_recall_does_when_no_merge_was_stored() -> None:
    from types import SimpleNamespace
    from typing import Any, cast

    from rune_mcp.bench.compose import Compositions
    from rune_mcp.bench.report import _evolved_answer

    class Lib:
        def get(self, adapter_id: str) -> Any:
            return SimpleNamespace(project="/home/dev/p")

    comps = Compositions(cast(Any, None), Lib(), cast(Any, None), {"p-01": "a", "p-02": "b"},
                         1.0, lambda _: None)
    found: dict[str, Any] = {"adapter_id": None, "merged": False}
    comps.evolved = lambda project: found  # type: ignore[method-assign]
    comps.best_single = lambda task: f"recalled for {task}"  # type: ignore[method-assign]
    probe = _probe("p-01-x", "p-01")
    assert comps.adapter("evolved", probe) == "recalled for p: a"  # what a user is left with
    found.update(adapter_id="m" * 64, merged=True)
    assert comps.adapter("evolved", probe) == "m" * 64
    assert _evolved_answer(found) == "its stored merge mmmmmmmmmmmm"
    assert _evolved_answer({"adapter_id": None, "merged": False}).startswith("recall's single")
    assert _evolved_answer({"adapter_id": "b" * 64, "merged": False}) == (
        "its best single adapter bbbbbbbbbbbb")  # a record written before the routing bar
