"""run_with_memory and `rune run`: recall -> swap -> answer, and every refusal on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rune_mcp.cli import main
from rune_mcp.config import Settings
from rune_mcp.errors import AdapterNotFoundError, IntegrityError, UsageError
from rune_mcp.library import AdapterRecord, Library
from rune_mcp.runtime.base import AdapterSpec
from rune_mcp.runtime.llamacpp import LlamaCppBackend
from rune_mcp.runtime.run import run_with_memory
from runtime.models import runtime_settings

TASK = "fix the failing acme database connection test by using open_pool instead of connect"
PROMPT = "Write a function that fetches all orders from the acme database."


def _store(settings: Settings, spec: AdapterSpec, task: str, base: str | None = None) -> AdapterRecord:
    assert spec.peft_dir is not None
    meta = {"base_fingerprint": base or spec.base_fingerprint, "task": task, "method": "lora",
            "rank": 8, "alpha": 16.0, "session_id": f"s-{task[:8]}", "trajectory_id": task}
    files = Path(settings.home / "src" / spec.adapter_id)
    files.mkdir(parents=True)
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (files / name).write_bytes((spec.peft_dir / name).read_bytes())
    return Library.open(settings).add(files, spec.gguf_path, meta)


@pytest.fixture
def settings(rune_home: Path) -> Settings:
    return runtime_settings(rune_home)


def test_recall_picks_the_matching_adapter_and_answers_with_it(
    settings: Settings, llama: LlamaCppBackend, adapter_a: AdapterSpec
) -> None:
    record = _store(settings, adapter_a, TASK)
    result = run_with_memory(settings, PROMPT, task="connect to the acme database",
                             max_tokens=8, backend=llama)
    assert result.adapter_id == record.adapter_id
    assert result.similarity is not None and result.similarity >= settings.recall_min_similarity
    assert set(result.timings) >= {"embed", "recall", "swap", "prompt", "generation",
                                   "tokens_per_s"}
    spec = AdapterSpec.from_record(record)
    assert result.text == llama.generate([{"role": "user", "content": PROMPT}], max_tokens=8,
                                         adapters=[spec]).text
    unrelated = run_with_memory(settings, "Translate 'good morning' into French.",
                                max_tokens=4, backend=llama)
    assert unrelated.adapter_id is None and unrelated.similarity is None
    bare = run_with_memory(settings, PROMPT, adapter="none", max_tokens=8, backend=llama)
    assert bare.adapter_id is None
    assert bare.text == llama.generate([{"role": "user", "content": PROMPT}], max_tokens=8,
                                       adapters=()).text
    by_id = run_with_memory(settings, PROMPT, adapter=record.adapter_id[:12], max_tokens=8,
                            backend=llama)
    assert (by_id.adapter_id, by_id.text) == (record.adapter_id, result.text)


def test_bad_adapters_are_refused_before_loading(
    settings: Settings, llama: LlamaCppBackend, adapter_a: AdapterSpec, adapter_b: AdapterSpec
) -> None:
    loads = llama.stats()["adapter_loads"]
    with pytest.raises(AdapterNotFoundError, match="no adapter has the id"):
        run_with_memory(settings, PROMPT, adapter="0123456789ab", backend=llama)
    alien = _store(settings, adapter_b, "another base's task", base="c" * 64)
    with pytest.raises(IntegrityError, match="trained for base model cccccccccccc"):
        run_with_memory(settings, PROMPT, adapter=alien.adapter_id, backend=llama)
    tampered = _store(settings, adapter_a, TASK)
    weights = tampered.path / "adapter_model.safetensors"
    weights.chmod(0o644)
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="failed verification"):
        run_with_memory(settings, PROMPT, adapter=tampered.adapter_id, backend=llama)
    with pytest.raises(UsageError, match="prompt is empty"):
        run_with_memory(settings, "  ", backend=llama)
    assert llama.stats()["adapter_loads"] == loads


def test_rune_run_json(settings: Settings, adapter_a: AdapterSpec,
                       capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNE_THREADS", "1")
    monkeypatch.setenv("RUNE_CONTEXT_SIZE", "1024")
    record = _store(settings, adapter_a, TASK)
    code = main(["run", PROMPT, "--task", "acme database connection", "--max-tokens", "6",
                 "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["adapter_id"] == record.adapter_id
    assert set(out) >= {"text", "adapter_id", "similarity", "timings"} and out["text"]
    code = main(["run", PROMPT, "--adapter", "none", "--max-tokens", "4", "--json"])
    assert code == 0 and json.loads(capsys.readouterr().out)["adapter_id"] is None
    assert main(["run", PROMPT, "--adapter", "feedfacecafe"]) == 1
    assert "rune: no adapter has the id" in capsys.readouterr().err


def _flip_last_byte(path: Path) -> None:
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # same size: only the digest tells
    path.write_bytes(bytes(data))


def test_auto_recall_skips_a_damaged_best_match_and_answers_with_the_next(
    settings: Settings, llama: LlamaCppBackend, adapter_a: AdapterSpec, adapter_b: AdapterSpec
) -> None:
    first = _store(settings, adapter_a, TASK)
    second = _store(settings, adapter_b, TASK.replace("acme", "acme billing"))
    query = "connect to the acme database"
    best = run_with_memory(settings, PROMPT, task=query, max_tokens=4, backend=llama)
    assert best.adapter_id in (first.adapter_id, second.adapter_id) and best.skipped == []
    damaged, other = (first, second) if best.adapter_id == first.adapter_id else (second, first)
    _flip_last_byte(damaged.path / "adapter_model.safetensors")
    result = run_with_memory(settings, PROMPT, task=query, max_tokens=4, backend=llama)
    assert result.adapter_id == other.adapter_id and result.similarity is not None
    assert [d.adapter_id for d in result.skipped] == [damaged.adapter_id]
    shown = result.to_dict()["skipped"][0]
    assert shown["adapter_id"] == damaged.adapter_id and str(settings.home) not in shown["problem"]
    _flip_last_byte(other.path / "adapter_model.safetensors")
    neither = run_with_memory(settings, PROMPT, task=query, max_tokens=4, backend=llama)
    assert neither.adapter_id is None and len(neither.skipped) == 2  # the bare base answers


def test_an_explicit_damaged_adapter_fails_in_one_sentence_without_a_path(
    settings: Settings, llama: LlamaCppBackend, adapter_a: AdapterSpec
) -> None:
    record = _store(settings, adapter_a, TASK)
    (record.path / "manifest.json").chmod(0o644)
    (record.path / "manifest.json").write_text("{ not json")
    with pytest.raises(IntegrityError) as err:
        run_with_memory(settings, PROMPT, adapter=record.adapter_id, backend=llama)
    message = str(err.value)
    assert message.startswith(f"adapter {record.adapter_id[:12]} failed verification")
    assert str(settings.home) not in message and message.count(". ") == 0
