"""Sharing a project's memory: `rune adapters export` / `import` and every refusal."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from helpers.embedding import TableEmbedder
from helpers.tiny import FAKE_BASE, adapter_meta

from rune_mcp.cli import main
from rune_mcp.config import Settings
from rune_mcp.errors import IntegrityError, RuneError, UsageError
from rune_mcp.fsutil import file_digest
from rune_mcp.library import Library
from rune_mcp.library.archive import (
    ARCHIVE_INDEX,
    ARCHIVE_VERSION,
    export_adapters,
    import_archive,
)
from rune_mcp.library.embed import Embedder
from rune_mcp.library.manifest import GGUF_FILE, MANIFEST, PEFT_CONFIG, PEFT_WEIGHTS

TASKS = [
    "fix the flaky postgres connection timeout in the billing worker",
    "add a dark mode toggle to the settings page",
    "speed up the csv export of monthly invoices",
]
TESTS_DIR = Path(__file__).resolve().parent.parent


@pytest.fixture
def other(settings: Settings, tmp_path: Path, real_embedder: Embedder) -> Iterator[Library]:
    """A teammate's library: a second RUNE_HOME with the same base model."""
    lib = Library.open(settings.model_copy(update={"home": tmp_path / "home-b"}),
                       embedder=real_embedder)
    yield lib
    lib.close()


@pytest.fixture
def ids(library: Library, variants: list[Path], gguf_src: Path) -> list[str]:
    """Three adapters of the tidewater project for the current base; the first has a GGUF."""
    base = library.base_fingerprint()
    return [
        library.add(variants[i], gguf_src if i == 0 else None,
                    adapter_meta(i, task=task, base=base)).adapter_id
        for i, task in enumerate(TASKS)
    ]


@pytest.fixture
def archive(library: Library, ids: list[str], tmp_path: Path) -> Path:
    return export_adapters(library, tmp_path / "memory.tar", ids=ids).path


def _snapshot(lib: Library) -> tuple[list[tuple[str, int, str]], set[str]]:
    """Every file under the adapters folder (path, size, digest) and the index's ids."""
    files = sorted(
        (str(p.relative_to(lib.root)), p.stat().st_size, file_digest(p))
        for p in lib.root.rglob("*") if p.is_file()
    ) if lib.root.exists() else []
    return files, lib.index_ids()


def _members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path, "r:*") as tar:
        out = {}
        for member in tar.getmembers():
            handle = tar.extractfile(member)
            assert handle is not None
            out[member.name] = handle.read()
        return out


def _repack(src: Path, dst: Path, files: dict[str, bytes],
            extra: Sequence[tuple[tarfile.TarInfo, bytes | None]] = ()) -> Path:
    """Write `files` (name -> bytes) and raw `extra` members as a tar at `dst`."""
    with tarfile.open(dst, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info, raw in extra:
            tar.addfile(info, io.BytesIO(raw) if raw is not None else None)
    return dst


def _edit_index(files: dict[str, bytes], edit: Callable[[dict[str, Any]], None]) -> None:
    index = json.loads(files[ARCHIVE_INDEX])
    edit(index)
    files[ARCHIVE_INDEX] = json.dumps(index).encode()


# --- export and import --------------------------------------------------------------------


def test_round_trip_between_two_libraries(
    library: Library, other: Library, ids: list[str], archive: Path
) -> None:
    index = json.loads(_members(archive)[ARCHIVE_INDEX])
    assert index["format"] == "rune-adapter-archive"
    assert index["archive_version"] == ARCHIVE_VERSION
    assert index["base_fingerprint"] == library.base_fingerprint()
    listed = {entry["adapter_id"]: entry for entry in index["adapters"]}
    assert set(listed) == set(ids)
    first = library.get(ids[0])
    entry = listed[ids[0]]
    assert entry["manifest_sha256"] == file_digest(first.path / MANIFEST)
    assert sorted(entry["files"]) == sorted([PEFT_CONFIG, PEFT_WEIGHTS, GGUF_FILE])
    assert entry["files"][PEFT_WEIGHTS] == {
        "sha256": file_digest(first.path / PEFT_WEIGHTS),
        "size": (first.path / PEFT_WEIGHTS).stat().st_size,
    }
    assert entry["index"]["embed_text"] == TASKS[0]

    result = import_archive(other, archive)
    assert sorted(r.adapter_id for r in result.imported) == sorted(ids)
    assert result.present == []
    assert other.verify() == []
    for adapter_id in ids:  # byte for byte the same adapter, creation time included
        for name in (MANIFEST, PEFT_CONFIG, PEFT_WEIGHTS):
            assert (other.root / adapter_id / name).read_bytes() == (
                library.root / adapter_id / name).read_bytes()
    hits = other.recall("the postgres connection keeps timing out in billing", k=1)
    assert [h.record.adapter_id for h in hits] == [ids[0]]
    assert other.get(ids[0]).gguf_path == other.root / ids[0] / GGUF_FILE


def test_a_format_1_adapter_round_trips_and_is_stored_with_a_digest_of_its_text(
    library: Library, other: Library, ids: list[str], tmp_path: Path
) -> None:
    path = library.root / ids[1] / MANIFEST
    old = {k: v for k, v in json.loads(path.read_text()).items() if k != "metadata_sha256"}
    path.chmod(0o644)
    path.write_text(json.dumps({**old, "format_version": 1}, indent=2, sort_keys=True) + "\n")
    assert not library.get(ids[1]).text_verified
    archive = export_adapters(library, tmp_path / "old.tar", ids=[ids[1]]).path
    [record] = import_archive(other, archive).imported
    assert record.adapter_id == ids[1] and record.text_verified and other.verify() == []
    assert other.get(ids[1]).task == old["task"]


def test_importing_twice_changes_nothing(other: Library, ids: list[str], archive: Path) -> None:
    import_archive(other, archive)
    before = _snapshot(other)
    mtimes = {p: p.stat().st_mtime_ns for p in other.root.rglob("*")}
    again = import_archive(other, archive)
    assert again.imported == []
    assert sorted(r.adapter_id for r in again.present) == sorted(ids)
    assert _snapshot(other) == before
    assert {p: p.stat().st_mtime_ns for p in other.root.rglob("*")} == mtimes


def test_project_export_takes_the_projects_adapters_for_the_current_base(
    library: Library, ids: list[str], variants: list[Path], tmp_path: Path, other: Library
) -> None:
    base = library.base_fingerprint()
    elsewhere = library.add(variants[3], None, adapter_meta(3, base=base, project="/srv/other"))
    foreign = library.add(variants[4], None, adapter_meta(4))  # tidewater, another base
    result = export_adapters(library, tmp_path / "tidewater.tar.gz", project="tidewater")
    assert sorted(result.adapter_ids) == sorted(ids)
    assert elsewhere.adapter_id not in result.adapter_ids
    assert foreign.adapter_id not in result.adapter_ids
    assert result.path.read_bytes()[:2] == b"\x1f\x8b"  # gzip
    index = json.loads(_members(result.path)[ARCHIVE_INDEX])
    assert index["project"] == "tidewater"
    assert sorted(r.adapter_id for r in import_archive(other, result.path).imported) == sorted(ids)
    with pytest.raises(UsageError, match="project 'nowhere' has none"):
        export_adapters(library, tmp_path / "x.tar", project="nowhere")


def test_export_is_reproducible_and_atomic(library: Library, ids: list[str], tmp_path: Path) -> None:
    one = export_adapters(library, tmp_path / "one.tgz", ids=ids).path.read_bytes()
    two = export_adapters(library, tmp_path / "two.tgz", ids=list(reversed(ids))).path.read_bytes()
    assert one == two  # the same adapters give the same bytes (an archive can live in git)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == []


def test_export_refuses_an_adapter_that_fails_its_digests(
    library: Library, ids: list[str], tmp_path: Path
) -> None:
    weights = library.root / ids[1] / PEFT_WEIGHTS
    weights.chmod(0o644)
    weights.write_bytes(weights.read_bytes()[:-1] + b"!")
    with pytest.raises(IntegrityError) as err:
        export_adapters(library, tmp_path / "memory.tar", ids=ids)
    message = str(err.value)
    assert message.startswith(f"adapter {ids[1][:12]} failed verification")
    assert "not exported" in message and message.count(". ") == 0
    assert not (tmp_path / "memory.tar").exists()
    with pytest.raises(IntegrityError):
        export_adapters(library, tmp_path / "memory.tar", project="tidewater")


def test_export_needs_ids_or_a_project_and_one_base(
    library: Library, ids: list[str], variants: list[Path], tmp_path: Path
) -> None:
    with pytest.raises(UsageError, match="either adapter IDs or --project"):
        export_adapters(library, tmp_path / "x.tar")
    with pytest.raises(UsageError, match="either adapter IDs or --project"):
        export_adapters(library, tmp_path / "x.tar", ids=ids, project="tidewater")
    foreign = library.add(variants[4], None, adapter_meta(4)).adapter_id
    with pytest.raises(UsageError, match="2 different base models"):
        export_adapters(library, tmp_path / "x.tar", ids=[ids[0], foreign])


# --- refusals: the library is never changed ------------------------------------------------


def _flip_weights(files: dict[str, bytes]) -> None:
    name = next(n for n in files if n.endswith(PEFT_WEIGHTS))
    files[name] = files[name][:-1] + bytes([files[name][-1] ^ 1])


def _edit_task(files: dict[str, bytes]) -> None:
    name = next(n for n in files if n.endswith(MANIFEST))
    manifest = json.loads(files[name])
    manifest["task"] = "something else entirely"
    files[name] = json.dumps(manifest, indent=2, sort_keys=True).encode()


def _edit_task_everywhere(files: dict[str, bytes]) -> None:
    """The task edited in a manifest, and archive.json made to agree (digest and record)."""
    _edit_task(files)
    name = next(n for n in files if n.endswith(MANIFEST))
    adapter_id = name.split("/")[1]

    def edit(index: dict[str, Any]) -> None:
        entry = next(e for e in index["adapters"] if e["adapter_id"] == adapter_id)
        entry["manifest_sha256"] = hashlib.sha256(files[name]).hexdigest()
        entry["index"]["task"] = "something else entirely"
    _edit_index(files, edit)


def _claim_other_digest(files: dict[str, bytes]) -> None:
    def edit(index: dict[str, Any]) -> None:
        index["adapters"][0]["files"][PEFT_CONFIG]["sha256"] = "ab" * 32
    _edit_index(files, edit)


def _version(version: int) -> Callable[[dict[str, bytes]], None]:
    def change(files: dict[str, bytes]) -> None:
        _edit_index(files, lambda index: index.update(archive_version=version))
    return change


def _drop_last_adapter(files: dict[str, bytes]) -> None:
    last = sorted(n for n in files if n != ARCHIVE_INDEX)[-1]
    del files[last]


def _drop_index(files: dict[str, bytes]) -> None:
    del files[ARCHIVE_INDEX]


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


ADAPTER = "adapters/" + "a" * 64
EDITS: dict[str, tuple[Callable[[dict[str, bytes]], None], str]] = {
    "bad-digest": (_flip_weights, "failed verification .*does not match its sha256"),
    "edited-manifest": (_edit_task, "does not match its digest in archive.json"),
    "edited-task-and-listing": (_edit_task_everywhere,
                                "failed verification .*does not match its metadata_sha256"),
    "edited-listing": (_claim_other_digest, "describes adapter .* differently"),
    "newer-version": (_version(ARCHIVE_VERSION + 1), "written by a newer Rune .*upgrade Rune"),
    "unknown-version": (_version(0), "unknown archive format 0"),
    "missing-member": (_drop_last_adapter, "lacks .*truncated or incomplete"),
    "no-index": (_drop_index, "no archive.json at its root"),
}
MEMBERS: dict[str, tuple[tarfile.TarInfo, bytes | None, str]] = {
    "dotdot": (_member("../x"), b"x", r"'\.\./x' points outside the library"),
    "dotdot-inside": (_member(f"{ADAPTER}/../../../x"), b"x", "points outside the library"),
    "absolute": (_member("/etc/x"), b"x", "'/etc/x' has an absolute path"),
    "symlink": (_member(f"{ADAPTER}/{PEFT_WEIGHTS}", tarfile.SYMTYPE, "/etc/passwd"), None,
                "is a symbolic link"),
    "hardlink": (_member(f"{ADAPTER}/{PEFT_WEIGHTS}", tarfile.LNKTYPE, "archive.json"), None,
                 "is a hard link"),
    "device": (_member(f"{ADAPTER}/{PEFT_WEIGHTS}", tarfile.CHRTYPE), None,
               "is a device or other special file"),
    "fifo": (_member(f"{ADAPTER}/fifo", tarfile.FIFOTYPE), None, "is a device"),
    "bin": (_member(f"{ADAPTER}/pytorch_model.bin"), b"\x80\x04", "is a pickle file"),
    "pt": (_member(f"{ADAPTER}/adapter.pt"), b"\x80\x04", "is a pickle file"),
    "pkl": (_member("evil.pkl"), b"\x80\x04", "is a pickle file"),
    "other-file": (_member(f"{ADAPTER}/notes.txt"), b"hi", "is not an adapter file"),
}


@pytest.fixture
def held(other: Library, variants: list[Path]) -> tuple[list[tuple[str, int, str]], set[str]]:
    """The teammate's library already holds an adapter of its own; returns its snapshot."""
    other.add(variants[4], None, adapter_meta(9, task="their own adapter",
                                              base=other.base_fingerprint()))
    return _snapshot(other)


def _refused(other: Library, path: Path, pattern: str,
             held: tuple[list[tuple[str, int, str]], set[str]]) -> str:
    with pytest.raises(RuneError, match=pattern) as err:
        import_archive(other, path)
    assert _snapshot(other) == held
    message = str(err.value)
    assert "\n" not in message and message.endswith(".")
    return message


@pytest.mark.parametrize("case", list(EDITS))
def test_import_refuses_a_damaged_archive(
    case: str, other: Library, archive: Path, tmp_path: Path,
    held: tuple[list[tuple[str, int, str]], set[str]],
) -> None:
    edit, pattern = EDITS[case]
    files = _members(archive)
    edit(files)
    message = _refused(other, _repack(archive, tmp_path / "bad.tar", files), pattern, held)
    assert "nothing was imported" in message


@pytest.mark.parametrize("case", list(MEMBERS))
def test_import_refuses_unsafe_members(
    case: str, other: Library, archive: Path, tmp_path: Path,
    held: tuple[list[tuple[str, int, str]], set[str]],
) -> None:
    info, data, pattern = MEMBERS[case]
    if data is not None:
        info.size = len(data)
    bad = _repack(archive, tmp_path / "bad.tar", _members(archive), [(info, data)])
    _refused(other, bad, pattern, held)
    assert not (tmp_path / "x").exists() and not (tmp_path.parent / "x").exists()


def test_import_refuses_another_base(
    library: Library, other: Library, variants: list[Path], tmp_path: Path,
    held: tuple[list[tuple[str, int, str]], set[str]],
) -> None:
    foreign = library.add(variants[0], None, adapter_meta(0)).adapter_id  # FAKE_BASE
    path = export_adapters(library, tmp_path / "foreign.tar", ids=[foreign]).path
    message = _refused(other, path, "for the base model", held)
    assert FAKE_BASE[:12] in message and other.base_fingerprint()[:12] in message
    assert "never applied" in message


def test_import_refuses_what_is_not_a_whole_archive(
    other: Library, archive: Path, library: Library, ids: list[str], tmp_path: Path,
    held: tuple[list[tuple[str, int, str]], set[str]],
) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("these are not adapters\n" * 100)
    _refused(other, text, "is not a tar archive", held)
    empty = tmp_path / "empty.tar"
    empty.write_bytes(b"")
    _refused(other, empty, "is not a tar archive", held)
    data = archive.read_bytes()
    cut = tmp_path / "cut.tar"
    cut.write_bytes(data[: len(data) // 2])
    _refused(other, cut, "truncated", held)
    zipped = export_adapters(library, tmp_path / "memory.tar.gz", ids=ids).path.read_bytes()
    cut_gz = tmp_path / "cut.tar.gz"
    cut_gz.write_bytes(zipped[: len(zipped) * 2 // 3])
    _refused(other, cut_gz, "truncated", held)
    junk_gz = tmp_path / "junk.tar.gz"
    junk_gz.write_bytes(gzip.compress(b"not a tar at all" * 100))
    _refused(other, junk_gz, "is not a tar archive", held)
    with pytest.raises(UsageError, match="is not a file"):
        import_archive(other, tmp_path / "missing.tar")


# --- a killed import -----------------------------------------------------------------------

CHILD = """
import os, signal, sys
from pathlib import Path
from helpers.embedding import TableEmbedder
from rune_mcp.config import load_settings
from rune_mcp.library import Library, store
from rune_mcp.library.archive import import_archive

real, calls = store._copy_synced, [0]

def dying_copy(src, dst):
    calls[0] += 1
    if calls[0] == int(sys.argv[3]):  # half the file written, then SIGKILL
        dst.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
        os.kill(os.getpid(), signal.SIGKILL)
    return real(src, dst)

store._copy_synced = dying_copy
lib = Library.open(load_settings(), embedder=TableEmbedder.load(Path(sys.argv[1])))
import_archive(lib, Path(sys.argv[2]))
"""


def test_a_killed_import_leaves_whole_adapters_and_completes_when_rerun(
    other: Library, archive: Path, ids: list[str], real_embedder: Embedder, tmp_path: Path
) -> None:
    table = TableEmbedder.build(real_embedder, TASKS).save(tmp_path / "table.json")
    env = {**os.environ, "RUNE_HOME": str(other.settings.home), "TMPDIR": str(tmp_path),
           "PYTHONPATH": str(TESTS_DIR)}
    # Each adapter copies its config and weights; call 6 is the third adapter's weights
    # (the first has a GGUF too, so 7 copies in all: call 6 is still the third adapter).
    proc = subprocess.run([sys.executable, "-c", CHILD, str(table), str(archive), "6"],
                          env=env, capture_output=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    order = [e["adapter_id"] for e in json.loads(_members(archive)[ARCHIVE_INDEX])["adapters"]]
    stored = other.store.ids()
    assert len(stored) == 2 and set(stored) < set(ids)
    assert set(stored) == set(order[:2])  # archive order; the third was being written
    assert other.store.leftovers()  # the killed writer's hidden folder, never an adapter
    assert other.verify() == []  # whole adapters only; the index was repaired
    result = import_archive(other, archive)
    assert [r.adapter_id for r in result.imported] == order[2:]
    assert sorted(r.adapter_id for r in result.present) == sorted(order[:2])
    assert other.verify() == [] and other.store.leftovers() == []
    assert other.index_ids() == set(ids)


# --- the command line ----------------------------------------------------------------------


def test_cli_export_and_import(
    capsys: pytest.CaptureFixture[str], ids: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "shared" / "memory.tar.gz"
    assert main(["adapters", "export", "--project", "tidewater", "-o", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err
    out.parent.mkdir()
    assert main(["adapters", "export", ids[0][:8], ids[1], "-o", str(out), "--json"]) == 0
    exported = json.loads(capsys.readouterr().out)
    assert sorted(exported["adapters"]) == sorted(ids[:2])
    assert exported["size_bytes"] == out.stat().st_size

    monkeypatch.setenv("RUNE_HOME", str(tmp_path / "teammate"))
    assert main(["adapters", "import", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.count("imported") == 3 and "2 adapters imported, 0 already present." in printed
    assert main(["adapters", "import", str(out), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["imported"] == [] and sorted(again["already_present"]) == sorted(ids[:2])
    assert main(["adapters", "import", str(tmp_path / "shared")]) == 2
    assert "is not a file" in capsys.readouterr().err
    bogus = tmp_path / "bogus.tar"
    bogus.write_text("nope")
    assert main(["adapters", "import", str(bogus)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("rune: ") and err.count("\n") == 1 and "is not a tar archive" in err
