"""`rune bench cold`: whole `rune` processes timed on a real library, targets checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rune_mcp.bench.cold import TARGETS_S, format_table, run_bench, summarize
from rune_mcp.cli import main
from rune_mcp.config import load_settings


def test_first_run_is_reported_apart_and_the_median_meets_the_target() -> None:
    row = summarize("hook", [2.0, 0.2, 0.4, 0.25], 0.3)
    assert (row["first_s"], row["min_s"], row["median_s"]) == (2.0, 0.2, 0.25)
    assert row["met"] is True and row["command"] == "rune hook"
    assert summarize("hook", [0.1, 0.5, 0.6], 0.3)["met"] is False  # a fast first run is apart
    assert summarize("run", [1.0], 3.0)["median_s"] == 1.0  # one run: it is all there is


def test_recall_and_hook_are_timed_on_a_real_library() -> None:
    result = run_bench(load_settings(), repeat=1, adapters=2, shared_cache=True,
                       commands=("recall", "hook"))
    rows = {r["command"]: r for r in result["rows"]}
    assert set(rows) == {"rune recall", "rune hook"}
    for row in rows.values():
        assert len(row["runs_s"]) == 2 and 0 < row["min_s"] <= row["median_s"]
        assert row["target_s"] == TARGETS_S[row["command"].split()[1]]
    assert result["recall_hits"] >= 1, "recall found none of the stored adapters"
    assert result["hook_job_queued"] and result["hook_started_no_worker"]
    assert result["library"]["adapters"] == 2
    assert "rune recall" in format_table(result) and "run's own timings" not in format_table(result)


@pytest.mark.slow
def test_cold_bench_times_all_three_commands_and_writes_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cold.json"
    assert main(["bench", "cold", "--repeat", "1", "--adapters", "3", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert [r["command"] for r in data["rows"]] == ["rune run", "rune recall", "rune hook"]
    assert data["adapter_applied"] is True and data["cache"] == "fresh"
    assert {"embed", "recall", "prompt", "generation"} <= set(data["run_timings_ms"])
    assert "median_s" in capsys.readouterr().out


def test_cold_bench_refuses_unknown_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "cold", "--commands", "run,serve"]) == 2
    err = capsys.readouterr().err
    assert "--commands takes names among run, recall, hook" in err and "Traceback" not in err


def test_threads_are_carried_only_when_set(tmp_path: Path) -> None:
    from rune_mcp.bench.cold import command_env

    unset = command_env(load_settings({}), tmp_path, tmp_path, tmp_path)
    assert "RUNE_THREADS" not in unset  # the timed commands pick the idle cores themselves
    chosen = command_env(load_settings({"RUNE_THREADS": "1"}), tmp_path, tmp_path, tmp_path)
    assert chosen["RUNE_THREADS"] == "1"
