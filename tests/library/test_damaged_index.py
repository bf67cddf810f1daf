"""A damaged embedded index is moved aside (never deleted) and rebuilt from the manifests;
the adapters themselves are never touched."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers.tiny import FAKE_BASE, adapter_meta

from rune_mcp import doctor
from rune_mcp.cli import main
from rune_mcp.config import Settings
from rune_mcp.fsutil import file_digest
from rune_mcp.library import Library
from rune_mcp.library.embed import Embedder
from rune_mcp.quarantine import quarantined

TASKS = [
    "fix the flaky postgres connection timeout in the integration tests",
    "add a dark mode toggle to the React settings page",
    "speed up the image thumbnail resize pipeline",
]


def _filled(settings: Settings, embedder: Embedder, variants: list[Path]) -> list[str]:
    library = Library.open(settings, embedder=embedder)
    ids = [library.add(path, None, adapter_meta(i, task=task)).adapter_id
           for i, (path, task) in enumerate(zip(variants, TASKS, strict=False))]
    library._open_index().close()  # let go of Chroma's files, as a finished process would
    return ids


def _adapter_digests(settings: Settings) -> dict[str, str]:
    root = settings.home / "adapters"
    return {str(p.relative_to(root)): file_digest(p) for p in root.rglob("*") if p.is_file()}


def _recalls_everything(settings: Settings, embedder: Embedder, ids: list[str]) -> Library:
    fresh = Library.open(settings, embedder=embedder)
    for adapter_id, task in zip(ids, TASKS, strict=False):
        hits = fresh.recall(task, k=1, base_fingerprint=FAKE_BASE)
        assert [h.record.adapter_id for h in hits] == [adapter_id]
    assert fresh.verify() == [] and fresh.index_ids() == set(ids)
    return fresh


@pytest.mark.parametrize("where", ["index/chroma", "index"])
def test_a_file_where_the_index_folder_should_be(
    settings: Settings, real_embedder: Embedder, variants: list[Path], where: str
) -> None:
    ids = _filled(settings, real_embedder, variants)
    before = _adapter_digests(settings)
    place = settings.home / where

    shutil.rmtree(place)
    place.write_text("not a folder\n")
    _recalls_everything(settings, real_embedder, ids)
    moved = quarantined(settings.home)
    assert [m.path.name.split(".damaged-")[0] for m in moved] == [place.name]
    assert moved[0].path.read_text() == "not a folder\n"
    assert "Chroma could not open it" in moved[0].reason and "manifests" in moved[0].outcome
    assert _adapter_digests(settings) == before


def test_garbage_chroma_database_is_moved_aside_and_rebuilt(
    settings: Settings, real_embedder: Embedder, variants: list[Path]
) -> None:
    ids = _filled(settings, real_embedder, variants)
    db = settings.home / "index" / "chroma" / "chroma.sqlite3"
    db.write_bytes(b"\0garbage" * 512)
    _recalls_everything(settings, real_embedder, ids)
    (moved,) = quarantined(settings.home)
    assert moved.path.name.startswith("chroma.damaged-")
    assert (moved.path / "chroma.sqlite3").read_bytes() == b"\0garbage" * 512
    assert "file is not a database" in moved.reason


def test_reindex_and_verify_heal_a_damaged_index(
    settings: Settings, real_embedder: Embedder, variants: list[Path]
) -> None:
    ids = _filled(settings, real_embedder, variants)
    chroma = settings.home / "index" / "chroma"

    shutil.rmtree(chroma)
    chroma.write_bytes(b"x")
    assert Library.open(settings, embedder=real_embedder).verify() == []
    chroma_again = settings.home / "index" / "chroma"
    assert chroma_again.is_dir()
    Library.open(settings, embedder=real_embedder)._open_index().close()
    shutil.rmtree(chroma_again)
    chroma_again.write_bytes(b"y")
    assert Library.open(settings, embedder=real_embedder).reindex() == len(ids)
    assert len(quarantined(settings.home)) == 2


def test_doctor_names_a_damaged_index_and_repair_rebuilds_it(
    settings: Settings, real_embedder: Embedder, variants: list[Path],
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    ids = _filled(settings, real_embedder, variants)
    before = _adapter_digests(settings)
    db = settings.home / "index" / "chroma" / "chroma.sqlite3"
    data = bytearray(db.read_bytes())
    data[4096 : 4096 * 3] = b"\xa5" * (4096 * 2)  # two spoiled pages past the header
    db.write_bytes(bytes(data))
    monkeypatch.setattr(doctor, "environment", lambda settings: [])
    monkeypatch.setattr("rune_mcp.library.library.get_embedder", lambda settings: real_embedder)
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "[FAIL] adapter index: the adapter index is damaged (its Chroma database" in out
    assert main(["doctor", "--repair"]) == 0
    out = capsys.readouterr().out
    assert f"rebuilt from the manifests of {len(ids)} adapter(s)" in out
    assert "[ok ] adapter index" in out and "[warn] quarantined: the adapter index" in out
    _recalls_everything(settings, real_embedder, ids)
    assert _adapter_digests(settings) == before
