"""The write-once store: layout, manifests, digests, and every kind of bad input."""

from __future__ import annotations

import json
import os
import pickle
import stat
from pathlib import Path
from typing import Any

import pytest
from helpers.tiny import FAKE_BASE, PEFT_WARNING, adapter_meta, tiny_llama

from rune_mcp.errors import AdapterNotFoundError, IntegrityError, LibraryError
from rune_mcp.fsutil import file_digest
from rune_mcp.library import FORMAT_VERSION, Library
from rune_mcp.library.manifest import GGUF_FILE, MANIFEST, PEFT_CONFIG, PEFT_WEIGHTS


def test_add_writes_a_read_only_content_addressed_folder(
    library: Library, adapter_src: Path, gguf_src: Path
) -> None:
    record = library.add(adapter_src, gguf_src, adapter_meta(1))
    folder = library.root / record.adapter_id
    assert record.path == folder
    assert sorted(os.listdir(folder)) == sorted([PEFT_CONFIG, PEFT_WEIGHTS, GGUF_FILE, MANIFEST])
    for name in os.listdir(folder):
        assert not os.stat(folder / name).st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["format_version"] == FORMAT_VERSION
    assert manifest["adapter_id"] == record.adapter_id
    assert manifest["base_fingerprint"] == FAKE_BASE
    assert manifest["source"] == {
        "agent": "claude-code", "session_id": "session-1",
        "project": "/home/dev/tidewater", "trajectory_id": f"{1:064x}",
    }
    assert manifest["rank"] == 4 and manifest["target_modules"] == ["q_proj", "v_proj"]
    assert manifest["lesson_count"] == 3 and manifest["training"]["steps"] == 30
    assert manifest["created_at"].endswith("Z") and manifest["parents"] == []
    assert manifest["files"][PEFT_WEIGHTS]["sha256"] == file_digest(adapter_src / PEFT_WEIGHTS)
    assert manifest["files"][GGUF_FILE]["sha256"] == file_digest(gguf_src)
    assert record.gguf_path == folder / GGUF_FILE


@pytest.mark.filterwarnings(PEFT_WARNING)
def test_stored_adapter_loads_in_peft_as_is(library: Library, adapter_src: Path) -> None:
    import torch
    from peft import PeftModel

    record = library.get(library.add(adapter_src, None, adapter_meta(2)).adapter_id)
    model = PeftModel.from_pretrained(tiny_llama(seed=0), str(record.peft_dir))
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        with_adapter = model(ids).logits
        with model.disable_adapter():
            base = model(ids).logits
    assert not torch.allclose(with_adapter, base)  # the stored LoRA really changes the model
    assert record.gguf_path is None


def test_same_content_twice_is_a_no_op(library: Library, adapter_src: Path) -> None:
    first = library.add(adapter_src, None, adapter_meta(3))
    again = library.add(adapter_src, None, adapter_meta(3, task="worded differently"))
    assert again.adapter_id == first.adapter_id
    assert again.created_at == first.created_at and again.task == first.task
    assert library.store.ids() == [first.adapter_id]
    other = library.add(adapter_src, None, adapter_meta(4))  # another trajectory: new adapter
    assert other.adapter_id != first.adapter_id


def test_unknown_id_says_how_to_find_ids(library: Library, adapter_src: Path) -> None:
    library.add(adapter_src, None, adapter_meta(5))
    for wanted in ("f" * 64, "nonsense", "abcdef12"):
        with pytest.raises(AdapterNotFoundError, match="rune adapters ls"):
            library.get(wanted)
    with pytest.raises(AdapterNotFoundError, match="rune adapters ls"):
        library.remove("0" * 64)


def test_prefix_finds_the_adapter(library: Library, adapter_src: Path) -> None:
    record = library.add(adapter_src, None, adapter_meta(6))
    assert library.get(record.adapter_id[:8]).adapter_id == record.adapter_id


def _writable(path: Path) -> None:
    path.chmod(0o644)


def test_tampered_weights_are_reported_and_never_handed_out(
    library: Library, adapter_src: Path, gguf_src: Path
) -> None:
    good = library.add(adapter_src, gguf_src, adapter_meta(7))
    bad = library.add(adapter_src, gguf_src, adapter_meta(8))
    weights = bad.path / PEFT_WEIGHTS
    _writable(weights)
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # same size, different bytes
    weights.write_bytes(bytes(data))
    problems = library.verify()
    assert [(p.adapter_id, p.problem) for p in problems] == [
        (bad.adapter_id, f"{PEFT_WEIGHTS} does not match its sha256 (tampered)")
    ]
    with pytest.raises(IntegrityError, match="failed verification"):
        library.get(bad.adapter_id)
    stale = library.store.read(bad.adapter_id)  # a record from a listing or a recall
    with pytest.raises(IntegrityError):
        _ = stale.gguf_path
    with pytest.raises(IntegrityError):
        _ = stale.peft_dir
    assert library.get(good.adapter_id).verified


def test_truncated_gguf_is_reported(library: Library, adapter_src: Path, gguf_src: Path) -> None:
    record = library.add(adapter_src, gguf_src, adapter_meta(9))
    gguf = record.path / GGUF_FILE
    _writable(gguf)
    gguf.write_bytes(gguf.read_bytes()[:100])
    assert "wrong size" in library.verify()[0].problem


@pytest.mark.parametrize(
    "damage",
    [
        lambda m: "{ not json",
        lambda m: json.dumps({**m, "task": "a different story"} | {"rank": 64}),
        lambda m: json.dumps({k: v for k, v in m.items() if k != "files"}),
        lambda m: json.dumps([1, 2]),
    ],
    ids=["not-json", "edited", "no-files", "not-object"],
)
def test_corrupt_manifest_is_reported_and_skipped(
    library: Library, adapter_src: Path, damage: Any
) -> None:
    keep = library.add(adapter_src, None, adapter_meta(10))
    record = library.add(adapter_src, None, adapter_meta(11))
    manifest = record.path / MANIFEST
    _writable(manifest)
    manifest.write_text(damage(json.loads(manifest.read_text())))
    problems = [p for p in library.verify() if p.adapter_id == record.adapter_id]
    assert problems, "verify must report the damaged manifest"
    with pytest.raises(LibraryError):
        library.get(record.adapter_id)
    assert [r.adapter_id for r in library.list()] == [keep.adapter_id]


class _Trap:
    """Unpickling this creates a file: proof that something loaded the pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def test_pickle_file_in_adapter_folder_is_never_loaded(
    library: Library, adapter_src: Path, tmp_path: Path
) -> None:
    record = library.add(adapter_src, None, adapter_meta(12))
    marker = tmp_path / "unpickled"
    record.path.joinpath("adapter_model.bin").write_bytes(pickle.dumps(_Trap(marker)))
    problems = library.verify()
    assert [p.problem for p in problems] == ["unexpected file adapter_model.bin (never loaded)"]
    with pytest.raises(IntegrityError):
        library.get(record.adapter_id)
    library.list()
    library.recall(record.task, base_fingerprint=FAKE_BASE, min_similarity=-1)
    assert not marker.exists()


def test_pickle_only_adapter_is_refused(library: Library, adapter_src: Path, tmp_path: Path) -> None:
    peft = tmp_path / "pickled"
    peft.mkdir()
    (peft / PEFT_CONFIG).write_bytes((adapter_src / PEFT_CONFIG).read_bytes())
    marker = tmp_path / "unpickled"
    (peft / "adapter_model.bin").write_bytes(pickle.dumps(_Trap(marker)))
    with pytest.raises(LibraryError, match="pickle weights are never accepted"):
        library.add(peft, None, adapter_meta(13))
    assert not marker.exists() and library.store.ids() == []


def test_non_gguf_and_bad_meta_are_refused(
    library: Library, adapter_src: Path, tmp_path: Path
) -> None:
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"not a gguf file")
    with pytest.raises(LibraryError, match="not a GGUF file"):
        library.add(adapter_src, fake, adapter_meta(14))
    with pytest.raises(LibraryError, match="base_fingerprint"):
        library.add(adapter_src, None, adapter_meta(14, base=""))
    with pytest.raises(LibraryError, match="task"):
        library.add(adapter_src, None, adapter_meta(14) | {"task": " "})
    with pytest.raises(LibraryError, match="parents"):
        library.add(adapter_src, None, adapter_meta(14, parents=["not-an-id"]))
    with pytest.raises(LibraryError, match="rank"):
        library.add(adapter_src, None, adapter_meta(14, rank=0))
    assert library.store.ids() == []


def test_newer_library_format_is_a_clear_error(
    library: Library, adapter_src: Path, settings: Any
) -> None:
    record = library.add(adapter_src, None, adapter_meta(15))
    manifest = record.path / MANIFEST
    _writable(manifest)
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "format_version": 99}))
    with pytest.raises(LibraryError, match="newer Rune"):
        library.get(record.adapter_id)
    (library.root / "library.json").write_text(json.dumps({"format_version": 99}))
    with pytest.raises(LibraryError, match=r"newer Rune \(library format 99"):
        Library.open(settings)


def test_leftovers_of_a_crashed_writer_are_invisible_and_swept(
    library: Library, adapter_src: Path
) -> None:
    library.add(adapter_src, None, adapter_meta(16))
    torn = library.root / ".tmp-deadbeef"
    torn.mkdir()
    (torn / PEFT_WEIGHTS).write_bytes(b"half")
    assert len(library.list()) == 1 and library.verify() == []
    library.add(adapter_src, None, adapter_meta(17))
    assert not torn.exists()


def test_remove_and_forget_session(library: Library, adapter_src: Path) -> None:
    a = library.add(adapter_src, None, adapter_meta(18, session_id="s-1"))
    b = library.add(adapter_src, None, adapter_meta(19, session_id="s-1"))
    c = library.add(adapter_src, None, adapter_meta(20, session_id="s-2"))
    assert library.remove(a.adapter_id[:10]) == a.adapter_id
    assert not a.path.exists()
    assert library.forget_session("s-1") == [b.adapter_id]
    assert library.forget_session("s-1") == []
    assert library.store.ids() == [c.adapter_id] == sorted(library.index_ids())
    assert library.verify() == []


def test_list_filters_and_find_by_trajectory(library: Library, adapter_src: Path) -> None:
    a = library.add(adapter_src, None, adapter_meta(21, project="/work/alpha"))
    b = library.add(adapter_src, None, adapter_meta(22, project="/work/beta/"))
    assert [r.adapter_id for r in library.list(project="beta")] == [b.adapter_id]
    assert [r.adapter_id for r in library.list(project="/work/alpha")] == [a.adapter_id]
    assert [r.adapter_id for r in library.list()] == [b.adapter_id, a.adapter_id]
    assert len(library.list(limit=1)) == 1
    found = library.find_by_trajectory(f"{22:064x}")
    assert found is not None and found.adapter_id == b.adapter_id
    assert library.find_by_trajectory("nope") is None
