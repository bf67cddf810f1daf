"""Self-probes in the library: stored as one of an adapter's files, read back, verified with
the rest, carried by export and import, and shown by `rune adapters show`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from helpers.embedding import CachingEmbedder
from helpers.tiny import adapter_meta

from rune_mcp.cli import main
from rune_mcp.config import Settings
from rune_mcp.errors import IntegrityError, LibraryError
from rune_mcp.library import Library
from rune_mcp.library.archive import export_adapters, import_archive
from rune_mcp.library.manifest import SELF_PROBES
from rune_mcp.library.records import AdapterDamaged
from rune_mcp.library.selfprobes import SelfProbe, read_self_probes, write_self_probes

PROBES = [
    SelfProbe(question="Which call posts the totals in harbor?",
              answer="Use `book.commit_totals(totals)`.",
              key_spans=["book.commit_totals(totals)", "book.commit_totals", "commit_totals"],
              lesson=[3, 8]),
    SelfProbe(question="I get `KeyError: 'cache'` in harbor. What should I do?",
              answer="Use `cache.fetch_entry(port)`.", key_spans=["cache.fetch_entry(port)"]),
]


def _probes_file(tmp_path: Path, probes: list[SelfProbe] = PROBES) -> Path:
    return write_self_probes(tmp_path / "probes" / SELF_PROBES, probes)


def test_an_adapters_self_probes_are_stored_with_it_and_read_back(
    library: Library, variants: list[Path], tmp_path: Path,
) -> None:
    (tmp_path / "probes").mkdir()
    record = library.add(variants[0], None, adapter_meta(0), _probes_file(tmp_path))
    assert library.self_probes(record.adapter_id) == PROBES
    assert SELF_PROBES in record.manifest["files"]
    assert sorted(os.listdir(record.path)) == sorted(
        ["adapter_config.json", "adapter_model.safetensors", "manifest.json", SELF_PROBES])
    assert os.stat(record.path / SELF_PROBES).st_mode & 0o777 == 0o444
    plain = library.add(variants[1], None, adapter_meta(1))
    assert library.self_probes(plain.adapter_id) == []
    # the probes are part of what the adapter is: the same weights with other probes differ
    other = write_self_probes(tmp_path / "other.json", PROBES[:1])
    assert library.add(variants[0], None, adapter_meta(0), other).adapter_id != record.adapter_id
    assert library.verify() == []


def test_edited_self_probes_fail_verification(
    library: Library, variants: list[Path], tmp_path: Path,
) -> None:
    (tmp_path / "probes").mkdir()
    record = library.add(variants[0], None, adapter_meta(0), _probes_file(tmp_path))
    path = record.path / SELF_PROBES
    os.chmod(path, 0o644)
    text = path.read_text().replace("commit_totals", "commit_total5")
    path.write_text(text)
    with pytest.raises(AdapterDamaged, match=f"{SELF_PROBES} does not match its sha256"):
        library.self_probes(record.adapter_id)
    assert [p.adapter_id for p in library.verify()] == [record.adapter_id]


def test_invalid_self_probes_are_refused_before_anything_is_stored(
    library: Library, variants: list[Path], tmp_path: Path,
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"version": 1, "probes": [{"question": "q", "answer": "a",
                                                         "key_spans": []}]}))
    with pytest.raises(LibraryError, match=r"invalid 'probes\[0\].key_spans'"):
        library.add(variants[0], None, adapter_meta(0), bad)
    bad.write_text("[")
    with pytest.raises(IntegrityError, match="is not readable JSON"):
        read_self_probes(bad)
    assert library.list() == []


def test_export_and_import_carry_the_self_probes(
    library: Library, variants: list[Path], tmp_path: Path, settings: Settings,
    real_embedder: CachingEmbedder,
) -> None:
    (tmp_path / "probes").mkdir()
    base = library.base_fingerprint()
    record = library.add(variants[0], None, adapter_meta(0, base=base), _probes_file(tmp_path))
    archive = export_adapters(library, tmp_path / "memory.tar", ids=[record.adapter_id]).path
    other = Library.open(settings.model_copy(update={"home": tmp_path / "home-b"}),
                         embedder=real_embedder)
    [imported] = import_archive(other, archive).imported
    assert imported.adapter_id == record.adapter_id
    assert other.self_probes(imported.adapter_id) == PROBES
    other.close()


def test_adapters_show_counts_the_self_probes(
    library: Library, variants: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "probes").mkdir()
    record = library.add(variants[0], None, adapter_meta(0), _probes_file(tmp_path))
    plain = library.add(variants[1], None, adapter_meta(1))
    assert main(["adapters", "show", record.adapter_id[:12]]) == 0
    assert "  self-probes: 2" in capsys.readouterr().out
    assert main(["adapters", "show", record.adapter_id[:12], "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["self_probes"] == 2
    assert main(["adapters", "show", plain.adapter_id[:12]]) == 0
    assert "  self-probes: -" in capsys.readouterr().out
