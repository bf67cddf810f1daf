"""The manifest as a typed record: the same bytes and ids as before, one-sentence errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rune_mcp.errors import LibraryError
from rune_mcp.library.manifest import (
    MANIFEST,
    AdapterMeta,
    Manifest,
    ManifestError,
    build_manifest,
    compute_id,
    flat_fields,
    metadata_digest,
    normalize_meta,
    read_manifest,
    text_verified,
)

META: dict[str, Any] = {
    "base_fingerprint": "ab" * 32, "task": "  make the date parser accept ISO weeks ",
    "method": "lora", "rank": 8, "alpha": 16, "target_modules": ["v_proj", "q_proj"],
    "agent": "claude-code", "session_id": "s-1", "project": "/home/dev/acme",
    "trajectory_id": "cd" * 32, "lesson_count": 12, "training": {"steps": 30, "final_loss": 0.25},
    "parents": ["ef" * 32], "embed_text": "", "custom": {"k": [1, 2]},
}
FILES = {"adapter_model.safetensors": {"sha256": "01" * 32, "size": 1234},
         "adapter_config.json": {"sha256": "23" * 32, "size": 56}}
# The id this metadata had before the manifest became a typed record: existing adapters keep
# their ids only while this holds.
KNOWN_ID = "9f174a11bede792a9ab2ba9fab1497dd88fc62e52799667bd6c0f0042cbc66da"


def _manifest() -> dict[str, Any]:
    return build_manifest(normalize_meta(META), FILES, "2026-01-01T00:00:00.000Z")


def _write(folder: Path, data: Any) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / MANIFEST).write_text(json.dumps(data))
    return folder


def test_ids_and_fields_are_unchanged() -> None:
    manifest = _manifest()
    assert manifest["adapter_id"] == KNOWN_ID
    assert manifest["alpha"] == 16.0 and isinstance(manifest["alpha"], float)
    assert manifest["target_modules"] == ["q_proj", "v_proj"]
    assert manifest["task"] == manifest["embed_text"] == "make the date parser accept ISO weeks"
    assert manifest["extra"] == {"custom": {"k": [1, 2]}}
    assert manifest["source"] == {"agent": "claude-code", "session_id": "s-1",
                                  "project": "/home/dev/acme", "trajectory_id": "cd" * 32}


def test_the_models_know_every_field_the_writer_writes() -> None:
    assert set(Manifest.model_fields) == set(_manifest())
    assert set(AdapterMeta.model_fields) | {"custom"} == set(META)


def test_a_manifest_reads_back_as_written(tmp_path: Path) -> None:
    folder = _write(tmp_path / KNOWN_ID, _manifest())
    data = read_manifest(folder)
    assert data == _manifest()
    assert compute_id(data["files"], flat_fields(data)) == KNOWN_ID


def _format_1() -> dict[str, Any]:
    """The manifest as Rune wrote it before format 2: no metadata digest."""
    data = {k: v for k, v in _manifest().items() if k != "metadata_sha256"}
    return {**data, "format_version": 1}


def test_format_1_manifests_read_as_before_and_keep_their_ids(tmp_path: Path) -> None:
    data = read_manifest(_write(tmp_path / KNOWN_ID, _format_1()))
    assert compute_id(data["files"], flat_fields(data)) == KNOWN_ID
    assert not text_verified(data) and text_verified(_manifest())


def test_the_metadata_digest_covers_every_field_but_itself() -> None:
    manifest = _manifest()
    assert manifest["metadata_sha256"] == metadata_digest(manifest)
    for key in set(manifest) - {"metadata_sha256"}:
        edited = {**manifest, key: "edited"}
        assert metadata_digest(edited) != manifest["metadata_sha256"], key


@pytest.mark.parametrize("data", [
    {k: v for k, v in _manifest().items() if k != "metadata_sha256"},
    {**_format_1(), "metadata_sha256": "ab" * 32},
], ids=["format-2-without-digest", "format-1-with-digest"])
def test_a_digest_that_does_not_fit_the_format_is_refused(
    tmp_path: Path, data: dict[str, Any]
) -> None:
    with pytest.raises(ManifestError, match="invalid 'metadata_sha256'") as err:
        read_manifest(_write(tmp_path / KNOWN_ID, data))
    assert err.value.summary == "its manifest has missing, unknown or invalid fields"


@pytest.mark.parametrize("change, says", [
    ({"rank": "8"}, "invalid 'rank': it must be a positive integer, got '8'"),
    ({"source": {"agent": 3}}, "invalid 'source.agent': it must be text, got 3"),
    ({"bogus": 1}, "the unknown field 'bogus'"),
    ({"files": {"adapter_config.json": FILES["adapter_config.json"]}},
     "it must list adapter_config.json and adapter_model.safetensors"),
    ({"files": {**FILES, "adapter_model.bin": {"sha256": "0" * 64, "size": 1}}},
     "names 'adapter_model.bin', which is no adapter file"),
    ({"files": {**FILES, "adapter.gguf": {"sha256": "zz", "size": 1}}},
     "invalid 'files[\"adapter.gguf\"].sha256': it must be a sha256 hex digest, got 'zz'"),
])
def test_a_bad_manifest_is_one_sentence_naming_file_field_and_remedy(
    tmp_path: Path, change: dict[str, Any], says: str
) -> None:
    folder = _write(tmp_path / KNOWN_ID, {**_manifest(), **change})
    with pytest.raises(LibraryError) as err:
        read_manifest(folder)
    message = str(err.value)
    assert message.startswith(str(folder / MANIFEST)) and says in message
    assert message.endswith("remove it with `rune adapters rm`.") and message.count(". ") == 0


def test_missing_field_names_it(tmp_path: Path) -> None:
    data = {k: v for k, v in _manifest().items() if k != "source"}
    with pytest.raises(LibraryError, match="lacks the field 'source'"):
        read_manifest(_write(tmp_path / KNOWN_ID, data))


@pytest.mark.parametrize("change, says", [
    ({"base_fingerprint": ""}, "'base_fingerprint': it must be the base model's sha256, got ''"),
    ({"task": " "}, "'task': it must be a non-empty text, got ' '"),
    ({"rank": True}, "'rank': it must be a positive integer, got True"),
    ({"parents": ["x"]}, "'parents[0]': it must be an adapter id (64 hex digits), got 'x'"),
    ({"target_modules": ["q_proj", 3]}, "'target_modules[1]': it must be a module name, got 3"),
    ({"training": [1]}, "'training': it must be a mapping of statistics, got [1]"),
])
def test_bad_metadata_is_one_sentence(change: dict[str, Any], says: str) -> None:
    with pytest.raises(LibraryError) as err:
        normalize_meta({**META, **change})
    assert str(err.value) == f"adapter metadata has an invalid {says}."


def test_metadata_defaults() -> None:
    meta = normalize_meta({"base_fingerprint": "ab" * 32, "task": "fix x", "rank": None,
                           "target_modules": None, "parents": None, "lesson_count": None})
    assert meta == {
        "base_fingerprint": "ab" * 32, "method": "lora", "rank": None, "alpha": None,
        "target_modules": [], "agent": None, "session_id": None, "project": None,
        "trajectory_id": None, "task": "fix x", "embed_text": "fix x", "lesson_count": 0,
        "training": {}, "parents": [], "extra": {},
    }
    with pytest.raises(LibraryError, match=r"lacks the field 'base_fingerprint' \(the base"):
        normalize_meta({"task": "fix x"})
