"""`rune bench memory --quick` end to end: remember, recall, score six conditions, report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rune_mcp.bench.memory import CONDITIONS, bootstrap_ci, select_sessions, trajectory_text, with_context
from rune_mcp.capture import parse_path
from rune_mcp.cli import main
from rune_mcp.errors import UsageError


def test_bootstrap_interval_brackets_the_mean() -> None:
    low, high = bootstrap_ci([True] * 30 + [False] * 10)
    assert low < 0.75 < high and low > 0.5 and high < 0.95
    assert bootstrap_ci([True] * 5) == (1.0, 1.0)


def test_quick_picks_one_session_of_two_projects(dataset: Path) -> None:
    paths = sorted((dataset / "sessions").glob("*.jsonl"))
    chosen = select_sessions(paths, quick=True)
    assert len(chosen) == 2 and chosen[0].stem.rsplit("-", 1)[0] != chosen[1].stem.rsplit("-", 1)[0]
    assert select_sessions(paths, quick=False) == paths
    one = select_sessions(paths, quick=False, projects=1)
    assert len(one) > 1 and {p.stem.rsplit("-", 1)[0] for p in one} == {paths[0].stem.rsplit("-", 1)[0]}
    assert select_sessions(paths, quick=False, projects=99) == paths


def test_trajectory_text_holds_the_fix_and_context_goes_first(dataset: Path) -> None:
    path = sorted((dataset / "sessions").glob("*.jsonl"))[0]
    traj = parse_path(path)
    text = trajectory_text(traj)
    assert traj.task in text and "$ " in text and "Error: " in text
    messages = with_context([{"role": "user", "content": "question?"}], text)
    assert messages[0]["content"].endswith("question?") and text in messages[0]["content"]


def test_bad_folders_are_one_sentence(tmp_path: Path, dataset: Path) -> None:
    from rune_mcp.bench.memory import run
    from rune_mcp.config import load_settings

    class Args:
        sessions = tmp_path
        probes = dataset / "probes.jsonl"
        quick = True
        projects = None
        ablation = False
        json = None
        report = None
        from_json = None
        seed = None
        no_general = False

    with pytest.raises(UsageError, match="no \\*.jsonl"):
        run(Args(), load_settings())  # type: ignore[arg-type]


def test_projects_below_one_is_one_sentence(dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["bench", "memory", "--sessions", str(dataset / "sessions"), "--probes",
            str(dataset / "probes.jsonl"), "--projects", "0"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "--projects must be at least 1" in err and "Traceback" not in err


def _run(name: str, correct: list[bool]) -> dict[str, Any]:
    """A minimal ablation run: oracle-adapter results for four knowledge probes."""
    results = [
        {"probe_id": f"p{i}", "condition": "oracle_adapter", "source_session": "s-01", "correct": c}
        for i, c in enumerate(correct)
    ]
    acc = {"n": 4, "accuracy": sum(correct) / 4, "ci95": [0.0, 1.0]}
    return {
        "config": {"train_steps": 30, "lora_rank": 8, "target_modules": ["o_proj"], "sessions": ["s-01"],
                   "probes": 4, "lessons": {"episodes": name != "no_episodes", "qa": True}},
        "summary": {"accuracy": {"oracle_adapter": acc}, "general_accuracy": {},
                    "remember": {"seconds_mean": 1.0}},
        "results": results,
    }


def test_paired_difference_keeps_each_probe_with_its_pair() -> None:
    from rune_mcp.bench.report import paired_difference

    base = _run("baseline", [True, True, False, False])["results"]
    same = paired_difference(base, base, "oracle_adapter")
    assert same == (0.0, 0.0, 0.0)  # identical answers: no difference, no interval
    worse = paired_difference(base, _run("x", [True, False, False, False])["results"], "oracle_adapter")
    assert worse is not None and worse[0] == -0.25 and worse[1] <= -0.25 <= worse[2] <= 0.0
    assert paired_difference(base, base, "none") is None


def test_report_is_rewritten_from_the_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "ablation.json"
    runs = {"baseline": _run("baseline", [True, True, True, False]),
            "no_episodes": _run("no_episodes", [True, False, True, False])}
    source.write_text(json.dumps({"ablations": runs}))
    assert main(["bench", "memory", "--from-json", str(source), "--report", str(tmp_path / "r")]) == 0
    text = (tmp_path / "r" / "ablation.md").read_text()
    assert "oracle vs baseline" in text and "| no_episodes |" in text and "-25.0 (" in text
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    assert main(["bench", "memory", "--from-json", str(bad), "--report", str(tmp_path)]) == 2
    assert main(["bench", "memory", "--from-json", str(source)]) == 2
    assert main(["bench", "memory", "--probes", str(source)]) == 2
    err = capsys.readouterr().err
    assert "is not the JSON" in err and "needs --report" in err and "--sessions DIR" in err
    assert "Traceback" not in err


def _memory_data(free: bool) -> dict[str, Any]:
    """A two-probe memory run's JSON, with or without the free answers and the general guard."""
    from rune_mcp.bench.memory import summarize

    rows = []
    for cond in CONDITIONS:
        for i, verdict in enumerate(("right", "wrong")):
            row: dict[str, Any] = {"probe_id": f"s-01-cli_flag-{i + 1}", "condition": cond,
                                   "source_session": "s-01", "correct": i == 0, "adapter_id": None,
                                   "context_tokens": 0}
            if free:
                row["free"] = {"verdict": verdict, "degenerate": None if i else "glued: abab",
                               "tokens": 12}
            rows.append(row)
    summary = summarize(rows, [])
    if free:
        span = {"mean": 0.01, "min": 0.0, "max": 0.02}
        summary["general"] = {
            "base": {"nll_stdlib": 2.4, "stdlib_tokens": 900, "nll_answers": 0.6, "answer_tokens": 90,
                     "coding_passed": 2, "coding_total": 3},
            "conditions": {"oracle_adapter": {"adapters": 1, "nll_stdlib_delta": span,
                                              "nll_answers_delta": span, "coding_passed": span,
                                              "coding_base_passed": 2, "coding_total": 3}}}
    return {"config": {"sessions": ["s-01"]}, "results": rows, "summary": summary}


def test_report_puts_both_accuracies_side_by_side(tmp_path: Path) -> None:
    from rune_mcp.bench.report import write_report

    data = _memory_data(free=True)
    assert data["summary"]["free_accuracy"]["none"]["accuracy"] == 0.5
    assert data["summary"]["free_accuracy"]["none"]["degenerate"] == 0.5
    text = write_report(data, tmp_path / "new").read_text()
    assert "| scored choices |" in text and "| free answers |" in text
    assert "| none | 50.0% |" in text and "| oracle_adapter | 1 | +0.0100 (+0.0000..+0.0200)" in text
    old = write_report(_memory_data(free=False), tmp_path / "old").read_text()
    assert "| none | 50.0% | " in old and "General ability" not in old  # earlier runs still report


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_quick_memory_benchmark_end_to_end(dataset: Path, tmp_path: Path) -> None:
    out, report = tmp_path / "memory.json", tmp_path / "report"
    rc = main(
        [
            "bench",
            "memory",
            "--sessions",
            str(dataset / "sessions"),
            "--probes",
            str(dataset / "probes.jsonl"),
            "--quick",
            "--json",
            str(out),
            "--report",
            str(report),
        ]
    )
    assert rc == 0
    data = json.loads(out.read_text())
    assert set(data) == {"config", "results", "summary", "general"}
    assert len(data["config"]["sessions"]) == 2 and data["config"]["quick"]
    rows = data["results"]
    keys = {"probe_id", "condition", "source_session", "correct", "scores", "adapter_id", "context_tokens"}
    assert all(keys <= set(r) for r in rows)
    assert {r["condition"] for r in rows} == set(CONDITIONS)
    adapters = set(data["config"]["adapters"].values())
    for r in rows:
        if r["condition"] == "oracle_adapter" and r["source_session"]:
            assert r["adapter_id"] == data["config"]["adapters"][r["source_session"]]
        if r["condition"] == "mismatched_adapter":
            assert r["adapter_id"] in adapters
            assert r["adapter_id"] != data["config"]["adapters"].get(r["source_session"] or "")
        if r["condition"] in ("none", "rag", "full_context"):
            assert r["adapter_id"] is None
        if r["condition"] in ("rag", "full_context") and r["source_session"]:
            assert r["context_tokens"] > 200
    summary = data["summary"]
    for cond in CONDITIONS:
        acc = summary["accuracy"][cond]
        assert acc["n"] > 0 and 0.0 <= acc["accuracy"] <= 1.0
        assert acc["ci95"][0] <= acc["accuracy"] <= acc["ci95"][1]
        assert summary["general_accuracy"][cond]["n"] > 0
    assert summary["context_tokens"]["none"] == 0 < summary["context_tokens"]["full_context"]
    assert 0.0 <= summary["recall"]["accuracy"] <= 1.0
    # the base model is the same weights under `none` and under `oracle_adapter` of a general probe
    by = {(r["probe_id"], r["condition"]): r for r in rows}
    for r in rows:
        if r["source_session"] is None and r["condition"] == "oracle_adapter":
            assert r["scores"] == by[(r["probe_id"], "none")]["scores"]
    # ... and an adapter is really on the context when one is named: its scores move
    moved = [r for r in rows if r["source_session"] and r["condition"] == "oracle_adapter"
             and r["scores"] != by[(r["probe_id"], "none")]["scores"]]
    assert moved, "the oracle adapter scored exactly like the base model on every probe"
    # every keyed probe answered freely under every condition, through run_with_memory
    free = [r["free"] for r in rows if r["source_session"]]
    assert free and all(f["verdict"] in ("right", "wrong") for f in free)
    assert all(isinstance(f["text"], str) and f["tokens"] >= 0 for f in free)
    assert all(r["free"] == {"verdict": "not scored"} for r in rows if r["source_session"] is None)
    for r in rows:
        if r["source_session"] and r["condition"] in ("oracle_adapter", "mismatched_adapter", "none",
                                                      "recalled_adapter"):
            assert r["free"]["adapter_id"] == r["adapter_id"]
    for cond in CONDITIONS:
        part = summary["free_accuracy"][cond]
        assert part["n"] == summary["accuracy"][cond]["n"] and 0.0 <= part["accuracy"] <= 1.0
        assert 0.0 <= part["degenerate"] <= 1.0 and part["tokens_mean"] > 0
    # the general guard: the base and each adapter the adapter conditions used
    general = data["general"]
    assert general["corpus"]["stdlib"]["tokens"] > 500 and general["base"]["coding_total"] == 3
    assert set(general["adapters"]) >= {r["adapter_id"] for r in rows
                                        if r["condition"] == "oracle_adapter" and r["adapter_id"]}
    oracle = summary["general"]["conditions"]["oracle_adapter"]
    assert oracle["adapters"] >= 2 and oracle["nll_stdlib_delta"]["mean"] is not None
    for name in ("report.md", "report.html", "accuracy.png", "context_tokens.png"):
        assert (report / name).stat().st_size > 0
    text = (report / "report.md").read_text()
    assert "95% CI" in text and "free answers" in text and "stdlib NLL delta" in text


def test_unknown_memory_conditions_are_refused_before_any_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    from rune_mcp.distill.probes import sample_paths

    session, probes = sample_paths()
    (tmp_path / "sessions").mkdir()
    shutil.copy(session, tmp_path / "sessions" / session.name)
    assert main(["bench", "memory", "--sessions", str(tmp_path / "sessions"), "--probes",
                 str(probes), "--conditions", "oracle_adapter,bogus", "--no-general"]) == 2
    err = capsys.readouterr().err
    assert "unknown ones (['bogus'])" in err and "choose among none, rag" in err
    assert "Traceback" not in err
    assert main(["bench", "memory", "--sessions", str(tmp_path / "sessions"), "--probes",
                 str(probes), "--conditions", "none,oracle_adapter", "--general-conditions",
                 "evolved"]) == 2
    err = capsys.readouterr().err
    assert "ones this run does not score (['evolved'])" in err and "Traceback" not in err
