"""The `rune` entry point: exit codes, one-sentence errors, `config show`, `doctor`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from rune_mcp.cli import main


def run_rune(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rune_mcp", *args], capture_output=True,
                          text=True, timeout=300, env=env)


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: rune" in capsys.readouterr().err


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["frobnicate"])
    assert exit_info.value.code == 2
    assert "rune: argument COMMAND: invalid choice" in capsys.readouterr().err


def test_config_show_json(capsys: pytest.CaptureFixture[str], rune_home: Path) -> None:
    assert main(["config", "show", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    rows = {row["name"]: row for row in data["settings"]}
    assert rows["home"]["value"] == str(rune_home)
    assert rows["home"]["source"] == "env:RUNE_HOME"
    assert rows["lora_rank"]["help"]


def test_config_show_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "show"]) == 0
    out = capsys.readouterr().out
    assert "lora_rank" in out and "default" in out


def test_bad_config_is_one_sentence_without_traceback(rune_home: Path) -> None:
    rune_home.mkdir(parents=True)
    (rune_home / "rune.toml").write_text("recall_k = 'x'\n")
    result = run_rune("config", "show")
    assert result.returncode == 1
    assert result.stderr.startswith("rune: ")
    assert "Traceback" not in result.stderr
    assert "recall_k" in result.stderr
    debug = run_rune("--debug", "config", "show")
    assert "Traceback" in debug.stderr


def test_doctor_passes_here(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is True
    names = {c["name"] for c in data["checks"]}
    assert {"python", "torch", "llama.cpp", "chromadb", "base model", "embedder",
            "RUNE_HOME"} <= names


def test_doctor_reports_unwritable_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("RUNE_HOME", str(blocker / "home"))
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "[FAIL] RUNE_HOME" in out
    assert "set RUNE_HOME" in out


def test_doctor_reports_missing_base_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RUNE_BASE_MODEL", str(tmp_path / "nope.gguf"))
    assert main(["doctor", "--json"]) == 1
    checks = {c["name"]: c for c in json.loads(capsys.readouterr().out)["checks"]}
    assert checks["base model"]["ok"] is False
    assert "does not exist" in checks["base model"]["detail"]


@pytest.mark.parametrize(("variant", "says", "code"), [
    ("{not json", "JSON object of settings", 2),
    ("[1, 2]", "JSON object of settings", 2),
    ('{"train_steps": "many"}', "train_steps", 1),
])
def test_bench_sweep_refuses_bad_variants_before_loading_anything(
    capsys: pytest.CaptureFixture[str], variant: str, says: str, code: int
) -> None:
    assert main(["bench", "sweep", variant]) == code
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


HEAVY = ("torch", "transformers", "sentence_transformers", "peft", "chromadb", "onnxruntime",
         "llama_cpp", "mcp")  # mcp: the MCP SDK, most of a second, only `rune serve` needs it


def _in_a_new_process(argv: list[str], stdin: str, env: dict[str, str]) -> dict[str, Any]:
    """Run `rune ARGV` through `main` in a fresh interpreter; its exit code and which heavy
    modules and benchmark modules it imported."""
    code = (
        "import json, sys\n"
        "from rune_mcp.cli import main\n"
        f"rc = main({argv!r})\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "bench = sorted(m for m in sys.modules if m.startswith('rune_mcp.bench'))\n"
        "sys.stderr.write(json.dumps({'rc': rc, 'heavy': heavy, 'bench': bench}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], input=stdin, capture_output=True,
                          text=True, timeout=300, env=env, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return dict(json.loads(proc.stderr[proc.stderr.rindex('{"rc"'):]))


def test_hook_queues_the_session_without_loading_models_or_the_index(tmp_path: Path) -> None:
    """An agent waits for its hooks: `rune hook` must never import torch, transformers,
    Chroma, ONNX Runtime, llama.cpp or the MCP SDK, and still queue the session."""
    from rune_mcp.bench.cold import JOB_DELAY_S, sleeping_worker
    from rune_mcp.config import load_settings
    from rune_mcp.distill.queue import JobQueue

    transcripts = tmp_path / "transcripts"
    transcripts.mkdir()
    transcript = transcripts / "session.jsonl"
    shutil.copyfile(Path(__file__).parents[1] / "rune_mcp" / "data" / "sample_session.jsonl",
                    transcript)
    env = {**os.environ, "RUNE_ALLOWED_ROOTS": str(transcripts),
           "RUNE_IDLE_SECONDS": str(JOB_DELAY_S)}
    event = json.dumps({"hook_event_name": "Stop", "session_id": "s-1",
                        "transcript_path": str(transcript)})
    queue = JobQueue(load_settings(env))
    with sleeping_worker(queue, transcript):  # a live worker: the hook starts none
        seen = _in_a_new_process(["hook", "claude-code"], event, env)
    assert seen["rc"] == 0
    assert seen["heavy"] == [], f"`rune hook` imported {seen['heavy']}"
    assert seen["bench"] == []
    assert [(j.source, j.session_id) for j in queue.recent() if j.source == "hook"] == [
        ("hook", "s-1")]


def test_benchmark_modules_load_only_for_rune_bench(capsys: pytest.CaptureFixture[str]) -> None:
    seen = _in_a_new_process(["config", "show", "--json"], "", dict(os.environ))
    assert seen["rc"] == 0 and seen["bench"] == [] and seen["heavy"] == []
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "cold", "--help"])
    assert exit_info.value.code == 0
    assert "--repeat" in capsys.readouterr().out
