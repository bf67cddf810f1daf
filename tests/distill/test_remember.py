"""`rune remember` end to end on the embedded base model, with very short training."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from rune_mcp.basemodel import resolve_base
from rune_mcp.cli import main
from rune_mcp.config import Settings, load_settings
from rune_mcp.distill.probes import sample_paths
from rune_mcp.distill.remember import remember_trajectory
from rune_mcp.errors import TrainingError
from rune_mcp.library import Library
from rune_mcp.trajectory import Step, Trajectory

FAST_ENV = {"RUNE_TRAIN_STEPS": "2", "RUNE_TRAIN_BATCH_TOKENS": "256", "RUNE_THREADS": "2"}


@pytest.fixture
def fast(monkeypatch: pytest.MonkeyPatch, rune_home: Path) -> Settings:
    for key, value in FAST_ENV.items():
        monkeypatch.setenv(key, value)
    return load_settings()


def _stored(settings: Settings) -> list[str]:
    return [r.adapter_id for r in Library.open(settings).list()]


def _leftovers(settings: Settings) -> list[Path]:
    tmp = settings.home / "tmp"
    return list(tmp.iterdir()) if tmp.is_dir() else []


def test_cli_remember_stores_then_reuses(
    fast: Settings, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    session, _ = sample_paths()
    assert main(["remember", str(session), "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert {"adapter_id", "lessons", "seconds", "final_loss", "method"} <= set(first)
    assert first["method"] == "lora" and not first["reused"]
    assert first["lessons"] == 3 and first["examples"] >= 10  # 2 episodes + the final state
    assert math.isfinite(first["final_loss"])
    record = Library.open(fast).get(first["adapter_id"])
    assert record.base_fingerprint == resolve_base(fast).fingerprint
    assert record.gguf_path is not None and record.gguf_path.is_file()
    assert (record.peft_dir / "adapter_model.safetensors").is_file()
    assert record.manifest["training"]["kinds"]["attempt"] == 2
    assert not _leftovers(fast)

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("the same trajectory must not be trained twice")

    monkeypatch.setattr("rune_mcp.distill.remember.train_adapter", no_training)
    assert main(["remember", str(session)]) == 0
    out = capsys.readouterr().out
    assert f"already remembered as adapter {first['adapter_id']}" in out
    assert _stored(fast) == [first["adapter_id"]]


def test_too_little_to_learn_stores_nothing(fast: Settings) -> None:
    traj = Trajectory(format="generic", session_id="empty", task="say hi",
                      steps=[Step(0, "user", text="say hi")], project="/p/x")
    with pytest.raises(TrainingError, match="no assistant actions"):
        remember_trajectory(fast, traj)
    chat = Trajectory(format="generic", session_id="chat", task="say hi", project="/p/x",
                      steps=[Step(0, "user", text="say hi"), Step(1, "assistant", text="hi")])
    with pytest.raises(TrainingError, match="too little to learn"):
        remember_trajectory(fast, chat)
    assert _stored(fast) == []


def test_divergence_and_interrupt_store_nothing(fast: Settings) -> None:
    from rune_mcp.capture import parse_path

    traj = parse_path(sample_paths()[0])
    with pytest.raises(TrainingError, match="diverged"):
        remember_trajectory(fast.with_overrides(learning_rate=1e4, train_steps=8), traj)

    def interrupt(step: int, total: int, message: str) -> None:
        if step == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        remember_trajectory(fast, traj, progress=interrupt)
    assert _stored(fast) == [] and not _leftovers(fast)


def test_adapters_of_another_base_are_not_reused(
    fast: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rune_mcp.capture import parse_path

    traj = parse_path(sample_paths()[0])
    real = resolve_base(fast)
    other = dataclasses.replace(real, sha256="0" * 64)
    monkeypatch.setattr("rune_mcp.distill.remember.resolve_base", lambda settings: other)
    old = remember_trajectory(fast, traj)
    monkeypatch.setattr("rune_mcp.distill.remember.resolve_base", lambda settings: real)
    new = remember_trajectory(fast, traj)
    assert not new.reused and new.adapter_id != old.adapter_id
    again = remember_trajectory(fast, traj)
    assert again.reused and again.adapter_id == new.adapter_id


def test_unknown_method_is_one_sentence(fast: Settings) -> None:
    from rune_mcp.capture import parse_path

    with pytest.raises(TrainingError, match="unknown training method"):
        remember_trajectory(fast, parse_path(sample_paths()[0]), method="full")


REAL_SESSIONS = {  # file -> lessons `rune remember` finds in it (measured; see docs/distillation.md)
    "claude-code/d-kimuson-claude-code-viewer/1af7fc5e-8455-4414-9ccd-011d40f70b2a.jsonl": 1,
    "claude-code/d-kimuson-claude-code-viewer/5c0375b4-57a5-4f26-b12d-d022ee4e51b7.jsonl": 2,
    "claude-code/d-kimuson-claude-code-viewer/fe5e1c67-53e7-4862-81ae-d0e013e3270b.jsonl": 1,
    "claude-code/marot-spotter/258c7280-ae70-4798-800f-63464d01a85d.jsonl": 3,
}


@pytest.mark.parametrize("name", sorted(REAL_SESSIONS))
def test_real_transcripts_are_remembered_within_the_budget(
    fast: Settings, transcripts_dir: Path, name: str
) -> None:
    from rune_mcp.capture import parse_path
    from rune_mcp.distill.lessons import compile_lessons

    traj = parse_path(transcripts_dir / name)
    result = remember_trajectory(fast, traj)
    assert result.lessons == REAL_SESSIONS[name] and not result.reused
    record = Library.open(fast).get(result.adapter_id)
    assert record.session_id == traj.session_id and record.gguf_path is not None
    kinds = record.manifest["training"]["kinds"]
    assert kinds.get("rehearsal", 0) > 0 and sum(kinds.values()) == result.examples
    lessons = compile_lessons(traj, fast)  # the budget holds however long the session was
    assert sum(len(ex.prompt) + len(ex.answer) for ex in lessons) * 2 // 7 <= fast.lesson_token_budget
    assert not _leftovers(fast)


def test_real_transcript_with_nothing_to_learn_is_refused(
    fast: Settings, transcripts_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = transcripts_dir / "codex/simonw-sample_codex_session.jsonl"
    assert main(["remember", str(path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == ("rune: session test-session has too little to learn from (no error fixed and no "
                   "working action); nothing was stored.")
    assert _stored(fast) == []
