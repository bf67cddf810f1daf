"""The hypernetwork conditions of `rune bench memory`, end to end on the tiny llama base.

A tiny hypernetwork is meta-trained for two steps on one generated seed by the real
`meta_train`, then the benchmark remembers with it (`hyper`, `hyper+lora`), writes its bias
adapter, trains the multi-task LoRA of its training sessions and scores every condition on
the 2-layer random base the composition tests use, so a run takes seconds. The adapters
learn nothing on that base: the test checks what each condition applies to which probe.
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
from rune_mcp.bench.hyperconds import HYPER_CONDITIONS, HyperAdapters, training_trajectories
from rune_mcp.bench.memory import CONDITIONS, _conditions, gain_closed
from rune_mcp.cli import main
from rune_mcp.distill.hyper.checkpoint import INDEX, Checkpoint
from rune_mcp.distill.hyper.network import HyperConfig

pytestmark = [pytest.mark.filterwarnings(PEFT_WARNING),
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]
RUN = ("none", "oracle_adapter", "generated_adapter", "hyper_lora_5", "generated_mismatched",
       "bias_only", "multitask_lora")


@pytest.fixture
def tiny_env(monkeypatch: pytest.MonkeyPatch) -> Path:
    """The CLI's settings on the tiny base: 2 training steps, a context the guard's windows fit."""
    base = tiny_base(TEST_CACHE / "tiny-base")
    for key, value in {"BASE_MODEL": str(base), "CONTEXT_SIZE": "1024", "TRAIN_STEPS": "2",
                       "LESSONS_REHEARSAL": "false", "THREADS": "1", "DEVICE": "cpu"}.items():
        monkeypatch.setenv(f"RUNE_{key}", value)
    return base


@pytest.fixture
def hypernet(tiny_env: Path, tmp_path: Path) -> Path:
    """A tiny hypernetwork for the tiny base, meta-trained for 2 steps on seed 3 (the bench
    dataset is seed 7, so none of its sessions is a training session)."""
    from rune_mcp.basemodel import ensure_derived, resolve_base
    from rune_mcp.config import load_settings
    from rune_mcp.distill.hyper.train import MetaOptions, meta_train
    from rune_mcp.distill.train import load_base

    settings = load_settings()
    info = resolve_base(settings)
    loaded = load_base(settings, ensure_derived(settings, info, quiet=True), "lora")
    opts = MetaOptions(out=tmp_path / "hyper", train_seeds=[3], eval_seeds=[4], projects=2,
                       steps=2, eval_every=2, eval_sessions=1, batch_tokens=192, rank=2,
                       alpha=4.0, latent=16, heads=2, head_hidden=32, max_tokens=192,
                       learning_rate=5e-3)
    meta_train(settings, loaded, info.fingerprint, opts)
    return opts.out


def test_the_hypernetwork_conditions_are_named_not_run_by_default() -> None:
    assert not set(HYPER_CONDITIONS) & set(CONDITIONS)
    assert _conditions("bias_only,none") == ("bias_only", "none")


def test_each_hypernetwork_condition_runs_end_to_end(
    dataset: Path, tmp_path: Path, hypernet: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, report = tmp_path / "memory.json", tmp_path / "report"
    args = ["bench", "memory", "--sessions", str(dataset / "sessions"), "--probes",
            str(dataset / "probes.jsonl"), "--quick"]
    rc = main([*args, "--conditions", ",".join(RUN), "--hypernetwork", str(hypernet),
               "--json", str(out), "--report", str(report)])
    assert rc == 0
    data = json.loads(out.read_text())
    config, rows, summary = data["config"], data["results"], data["summary"]
    adapters = config["adapters"]  # session -> its gradient adapter
    hyper = config["hypernetwork"]
    index = json.loads((hypernet / INDEX).read_text())
    assert hyper["folder"] == str(hypernet) and hyper["step"] == 2
    assert hyper["sha256"] == index["weights"]["sha256"] and hyper["oracle_method"] == "lora"
    assert hyper["trained_on"] == []  # seed 3 trained it; the run's sessions are seed 7's
    generated = hyper["generated_adapter"]["adapters"]
    tuned = hyper["hyper_lora_5"]["adapters"]
    assert set(generated) == set(tuned) == set(adapters) and len(adapters) == 2
    assert hyper["generated_adapter"]["steps"] == [0, 0] and hyper["hyper_lora_5"]["steps"] == [5, 5]
    made = {*generated.values(), *tuned.values()}
    assert len(made) == 4 and not made & set(adapters.values())
    bias = hyper["bias_only"]["adapter_id"]
    multi = hyper["multitask_lora"]
    # the network's budget: its 2 steps, over the 6 sessions of seed 3 it trained on
    assert multi["steps"] == multi["planned_steps"] == 2 and multi["batch_tokens"] == 192
    assert multi["sessions"] == len(index["run"]["sessions"]["train"]) == 6
    assert len({bias, multi["adapter_id"], *made}) == 6
    assert {r["condition"] for r in rows} == set(RUN)
    by = {(r["probe_id"], r["condition"]): r for r in rows}
    for r in rows:
        cond, source = r["condition"], r["source_session"]
        if cond == "generated_adapter":
            assert r["adapter_id"] == (generated[source] if source else None)
        elif cond == "hyper_lora_5":
            assert r["adapter_id"] == (tuned[source] if source else None)
        elif cond == "generated_mismatched":
            other = next(name for name, i in generated.items() if i == r["adapter_id"])
            assert other.rsplit("-", 1)[0] != (source or "?").rsplit("-", 1)[0]
        elif cond in ("bias_only", "multitask_lora"):
            assert r["adapter_id"] == (bias if cond == "bias_only" else multi["adapter_id"])
        if cond in HYPER_CONDITIONS:
            assert r["free"].get("verdict") in (RIGHT, WRONG, "not scored")
    tuned_rows = [r for r in rows if r["condition"] == "hyper_lora_5" and r["source_session"]]
    assert any(r["scores"] != by[(r["probe_id"], "none")]["scores"] for r in tuned_rows)
    single = [r for r in rows if r["condition"] == "none" and r["source_session"]]
    for cond in RUN:
        assert summary["accuracy"][cond]["n"] == len(single)
        assert summary["general_accuracy"][cond]["n"] == 4
    closed = summary["hyper_gain_closed"]
    assert set(closed) == set(RUN) & set(HYPER_CONDITIONS)
    assert closed["generated_adapter"]["scored"]["gain"]["n"] == len(single)
    assert closed["generated_adapter"]["free"]["oracle_gain"]["n"] > 0
    # the general guard measures every adapter the hypernetwork conditions applied
    general = summary["general"]["conditions"]
    assert set(HYPER_CONDITIONS) - {"hyper_lora_10"} <= set(general)
    assert general["bias_only"]["adapters"] == general["multitask_lora"]["adapters"] == 1
    assert general["generated_adapter"]["adapters"] == 2
    assert bias in data["general"]["adapters"]
    text = (report / "report.md").read_text()
    assert "## Hypernetwork" in text and "## Share of the gradient adapter's gain closed" in text
    assert "| generated_adapter | " in text and "none of this run's sessions is among" in text
    assert "- multitask_lora: adapter" in text
    # a checkpoint that does not record its training seeds cannot make the multi-task LoRA
    bare = tmp_path / "bare"
    shutil.copytree(hypernet, bare)
    (bare / INDEX).write_text(json.dumps({**index, "run": {}}))
    capsys.readouterr()
    rc = main([*args, "--conditions", "none,multitask_lora", "--hypernetwork", str(bare),
               "--no-general"])
    err = capsys.readouterr().err
    assert rc == 2 and "records no training seeds" in err and "leave multitask_lora out" in err
    assert "remembered" not in err  # refused before anything trained


def test_the_hypernetwork_conditions_are_refused_without_a_checkpoint(
    dataset: Path, tmp_path: Path, tiny_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["bench", "memory", "--sessions", str(dataset / "sessions"), "--probes",
            str(dataset / "probes.jsonl"), "--quick", "--no-general"]
    rc = main([*args, "--conditions", "none,generated_adapter,bias_only"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "Traceback" not in err and err.count("\n") == 0
    assert "generated_adapter, bias_only need a hypernetwork checkpoint" in err
    assert "--hypernetwork DIR" in err and "`rune hyper train" in err
    assert main([*args, "--conditions", "hyper_lora_5", "--hypernetwork", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "there is no hypernetwork at" in err and "remembered" not in err


def test_the_training_sessions_are_generated_again_from_the_recorded_seeds(
    dataset: Path, tmp_path: Path
) -> None:
    """A checkpoint trained on the bench dataset's own seed: every session is a training one."""
    from rune_mcp.capture import parse_path
    from rune_mcp.config import load_settings

    paths = sorted((dataset / "sessions").glob("*.jsonl"))
    cfg = HyperConfig("f" * 64, 2, 64, ("o_proj",), ((64, 64),))
    run = {"options": {"train_seeds": [7], "projects": 2},
           "sessions": {"train": [f"7/{p.stem}" for p in paths[1:]]}}
    ckpt = Checkpoint(tmp_path, cfg, 1, "hyper-000001.safetensors", "0" * 64, run=run)
    settings = load_settings()
    regenerated = training_trajectories(settings, ckpt)
    assert sorted(regenerated) == [f"7/{p.stem}" for p in paths[1:]]
    sessions = {p.stem: parse_path(p) for p in paths}
    said: list[str] = []
    hyper = HyperAdapters(settings, None, ckpt, sessions, said.append)
    assert hyper.check_training() == [p.stem for p in paths[1:]]  # not the one left out
    assert said and said[0].startswith(f"warning: the hypernetwork was trained on {len(paths) - 1}")
    unknown = HyperAdapters(settings, None, Checkpoint(tmp_path, cfg, 1, "x", "0"), sessions,
                            said.append)
    assert unknown.check_training() is None and "unknown" in said[-1]


def test_the_share_of_the_gradient_adapters_gain_closed() -> None:
    def row(pid: str, cond: str, correct: bool, free: str = "not scored") -> dict[str, object]:
        return {"probe_id": pid, "condition": cond, "source_session": "s-01", "correct": correct,
                "free": {"verdict": free}}

    rows = [row("a", "none", False, WRONG), row("b", "none", False, WRONG),
            row("a", "oracle_adapter", True, RIGHT), row("b", "oracle_adapter", True, WRONG),
            row("a", "generated_adapter", True, WRONG), row("b", "generated_adapter", False, WRONG),
            row("a", "bias_only", False, RIGHT), row("b", "bias_only", False, RIGHT)]
    assert gain_closed(rows, ["none", "generated_adapter"]) == {}  # no gradient adapter ran
    out = gain_closed(rows, ["none", "oracle_adapter", "generated_adapter", "bias_only"])
    assert set(out) == {"generated_adapter", "bias_only"}
    gen = out["generated_adapter"]
    assert gen["scored"]["share"] == 0.5 and gen["scored"]["gain"]["points"] == 50.0
    assert gen["scored"]["oracle_gain"]["points"] == 100.0
    assert gen["free"]["share"] == 0.0 and gen["free"]["oracle_gain"]["points"] == 50.0
    assert out["bias_only"]["free"]["share"] == 2.0 and out["bias_only"]["scored"]["share"] == 0.0
    flat = [r for r in rows if r["condition"] != "oracle_adapter"]
    flat += [row("a", "oracle_adapter", False, WRONG), row("b", "oracle_adapter", False, WRONG)]
    assert gain_closed(flat, ["none", "oracle_adapter", "bias_only"])["bias_only"]["scored"][
        "share"] is None  # the gradient adapter gained nothing: there is nothing to close
