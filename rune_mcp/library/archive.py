"""Adapter archives: how a team shares a project's memory.

`export_adapters` writes verified adapters into one tar file (gzip when its name ends in `.gz`
or `.tgz`) whose root holds `archive.json`: the archive format version, the base model's
fingerprint, and for every adapter the digest of its manifest, its files with sizes and
SHA-256, and the record that indexes it. Each adapter follows as
`adapters/<id>/manifest.json` plus the files its manifest lists, byte for byte as stored.

`import_archive` trusts nothing in the file. It refuses, before anything is stored, an archive
of an unknown format version, one made for another base model (such adapters are never
applied), members that could escape the library (absolute paths, `..`, links, devices) and
any file that is not safetensors, GGUF, a JSON manifest or self-probes; every digest is checked
and nothing is ever unpickled. Members are copied out by name into a private staging folder
(tarfile's own extraction is never used), then stored one adapter at a time through
`Library.add_verified`, the same write-once, atomic, locked path distillation uses: an
interrupted import leaves whole adapters or none, and importing again completes it. Ids are
content addresses, so a second import of the same archive finds every adapter present.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import tarfile
import tempfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Annotated, Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rune_mcp import __version__
from rune_mcp.errors import IntegrityError, LibraryError, UsageError
from rune_mcp.fsutil import file_digest, replacing
from rune_mcp.library.library import Library
from rune_mcp.library.manifest import (
    ADAPTER_FILES,
    GGUF_FILE,
    ID_PATTERN,
    MANIFEST,
    SELF_PROBES,
    SOURCE_KEYS,
    FileEntry,
    Sha256,
    check_files,
    compute_id,
    normalize_meta,
    read_manifest,
)
from rune_mcp.library.records import AdapterRecord
from rune_mcp.library.store import PICKLE_SUFFIXES, check_sources
from rune_mcp.validation import problem

ARCHIVE_FORMAT = "rune-adapter-archive"
ARCHIVE_VERSION = 1
ARCHIVE_INDEX = "archive.json"
ADAPTERS = "adapters"
MAX_INDEX_BYTES = 64 << 20  # archive.json is read into memory; no honest one comes near this
_CHUNK = 1 << 20
# The manifest keys `Library.add` takes back (the manifest's `source` fields are added to them).
_META_KEYS = (
    "base_fingerprint", "method", "rank", "alpha", "target_modules", "task", "embed_text",
    "lesson_count", "training", "parents",
)
_NOTHING = "nothing was imported"
_READ_ERRORS = (tarfile.TarError, EOFError, zlib.error, OSError)

HINTS = {"sha256": "a sha256 hex digest", "size": "a byte count", "adapter_id": "a sha256 hex id",
         "base_fingerprint": "the base model's sha256", "adapters": "a non-empty list"}


class IndexRecord(BaseModel):
    """What indexes the adapter (the importer embeds `embed_text` with its own model)."""

    model_config = ConfigDict(strict=True, extra="forbid")

    task: str
    embed_text: str
    project: str | None
    agent: str | None
    session_id: str | None
    trajectory_id: str | None
    base_fingerprint: str
    created_at: str | None


class ArchivedAdapter(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    adapter_id: Sha256
    manifest_sha256: Sha256
    files: dict[str, FileEntry]  # as the manifest lists them
    index: IndexRecord


class ArchiveIndex(BaseModel):
    """`archive.json`, the archive's table of contents."""

    model_config = ConfigDict(strict=True, extra="forbid")

    format: Literal["rune-adapter-archive"]
    archive_version: int
    rune_version: str
    base_fingerprint: Sha256
    project: str | None = None
    adapters: Annotated[list[ArchivedAdapter], Field(min_length=1)]


@dataclass(frozen=True)
class ExportResult:
    path: Path
    adapter_ids: list[str]
    size_bytes: int


@dataclass(frozen=True)
class ImportResult:
    """The adapters of an archive: those stored now, and those the library already held."""

    imported: list[AdapterRecord]
    present: list[AdapterRecord]


def index_record(manifest: dict[str, Any]) -> dict[str, Any]:
    """The index record of an adapter, from its manifest (as `archive.json` lists it)."""
    source = manifest.get("source") or {}
    return {
        "task": manifest["task"],
        "embed_text": manifest.get("embed_text") or manifest["task"],
        **{key: source.get(key) for key in ("project", "agent", "session_id", "trajectory_id")},
        "base_fingerprint": manifest["base_fingerprint"],
        "created_at": manifest.get("created_at"),
    }


def meta_of(manifest: dict[str, Any]) -> dict[str, Any]:
    """The metadata `Library.add` takes that stores `manifest` again (the inverse of
    `build_manifest`): known fields, the `source` fields, and `extra` as unknown keys."""
    source = manifest.get("source") or {}
    meta = dict(manifest.get("extra") or {})
    meta.update({key: manifest.get(key) for key in _META_KEYS})
    meta.update({key: source.get(key) for key in SOURCE_KEYS})
    return meta


# --- export ------------------------------------------------------------------------------


def export_adapters(
    lib: Library, out: Path, ids: Sequence[str] = (), project: str | None = None
) -> ExportResult:
    """Write the adapters `ids` (or those of `project` for the current base) to `out`.

    Every adapter is verified first; one whose files fail their digests is refused with a
    sentence, and `out` is written atomically (a crash leaves no half archive under its name).
    """
    records = _select(lib, ids, project)
    bases = {r.base_fingerprint for r in records}
    if len(bases) > 1:
        raise UsageError(
            f"these adapters are for {len(bases)} different base models; export each base's "
            "adapters to an archive of its own (adapters of another base are never applied)."
        )
    index = {
        "format": ARCHIVE_FORMAT,
        "archive_version": ARCHIVE_VERSION,
        "rune_version": __version__,
        "base_fingerprint": bases.pop(),
        "project": project,
        "adapters": [_archived(r) for r in records],
    }
    _write_archive(out, index, records)
    return ExportResult(out, [r.adapter_id for r in records], out.stat().st_size)


def _select(lib: Library, ids: Sequence[str], project: str | None) -> list[AdapterRecord]:
    if bool(ids) == bool(project):
        raise UsageError("give either adapter IDs or --project PROJECT to export.")
    if project:
        records = _project_records(lib, project)
    else:
        full = list(dict.fromkeys(lib.store.resolve(i) for i in ids))
        records = [lib.store.read(i) for i in full]
    for record in records:
        problems = lib.store.problems(record.adapter_id)
        if problems:
            raise IntegrityError(
                f"adapter {record.adapter_id[:12]} failed verification ({'; '.join(problems)}), "
                "so it is not exported; leave it out, or remove it with `rune adapters rm "
                f"{record.adapter_id[:12]}`."
            )
    return sorted(records, key=lambda r: (r.created_at, r.adapter_id))


def _project_records(lib: Library, project: str) -> list[AdapterRecord]:
    """The project's adapters for the current base model (the only ones worth sharing)."""
    every = lib.list(project=project)
    current = lib.base_fingerprint()
    records = [r for r in every if r.base_fingerprint == current]
    if not records:
        detail = f"{len(every)} adapters, none for the current base model" if every else "none"
        raise UsageError(
            f"project {project!r} has {detail}, so there is nothing to export; "
            "`rune adapters ls` shows the projects."
        )
    return records


def _archived(record: AdapterRecord) -> dict[str, Any]:
    manifest = record.manifest
    return {
        "adapter_id": record.adapter_id,
        "manifest_sha256": file_digest(record.path / MANIFEST),
        "files": {n: {"sha256": i["sha256"], "size": i["size"]}
                  for n, i in sorted(manifest["files"].items())},
        "index": index_record(manifest),
    }


def _write_archive(out: Path, index: dict[str, Any], records: list[AdapterRecord]) -> None:
    if not out.parent.is_dir():
        raise UsageError(f"the folder {out.parent} does not exist; create it or choose another -o.")
    # the folder exists, so `replacing` only adds the fsync, rename and clean-up on failure
    with replacing(out) as tmp, tmp.open("wb") as raw, _compressor(raw, out) as stream, tarfile.open(
        fileobj=stream, mode="w", format=tarfile.PAX_FORMAT
    ) as tar:
        blob = (json.dumps(index, indent=2, sort_keys=True) + "\n").encode("utf-8")
        tar.addfile(_member(ARCHIVE_INDEX, len(blob)), io.BytesIO(blob))
        for record in records:
            _add_adapter(tar, record)


@contextlib.contextmanager
def _compressor(raw: IO[bytes], out: Path) -> Iterator[IO[bytes]]:
    """gzip for `.gz`/`.tgz` names (no timestamp, so the same adapters give the same bytes)."""
    if not out.name.endswith((".gz", ".tgz")):
        yield raw
        return
    with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as stream:
        yield cast(IO[bytes], stream)


def _member(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o644, 0
    return info


def _add_adapter(tar: tarfile.TarFile, record: AdapterRecord) -> None:
    names = [MANIFEST, *sorted(record.manifest["files"])]
    for name in names:
        path = record.path / name
        with path.open("rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            tar.addfile(_member(f"{ADAPTERS}/{record.adapter_id}/{name}", size), handle)


# --- import ------------------------------------------------------------------------------


def import_archive(lib: Library, path: Path) -> ImportResult:
    """Check the archive at `path` completely, then store its adapters and index them.

    Every refusal is one sentence naming what is wrong, raised before anything is stored.
    """
    if not path.is_file():
        raise UsageError(f"{path} is not a file; give the archive `rune adapters export` wrote.")
    with tempfile.TemporaryDirectory(prefix="rune-import-") as staging:
        index = _unpack(path, Path(staging), lib)
        staged = [_check_staged(Path(staging), entry, index, path) for entry in index.adapters]
        imported: list[AdapterRecord] = []
        present: list[AdapterRecord] = []
        for folder, manifest in staged:
            gguf = folder / GGUF_FILE if GGUF_FILE in manifest["files"] else None
            probes = folder / SELF_PROBES if SELF_PROBES in manifest["files"] else None
            record, created = lib.add_verified(
                folder, gguf, meta_of(manifest), manifest.get("created_at"), probes
            )
            (imported if created else present).append(record)
    return ImportResult(imported, present)


def _unpack(path: Path, staging: Path, lib: Library) -> ArchiveIndex:
    """Read and check the archive's members and table of contents; copy its files out."""
    with _open_tar(path) as tar:
        try:
            members = _checked_members(tar.getmembers())
            index = _read_index(tar, members, path)
            _check_base(index, lib, path)
            _check_listing(index, members)
            for name, member in members.items():
                if name != ARCHIVE_INDEX:
                    _copy_out(tar, member, staging / name)
        except _READ_ERRORS as exc:
            raise LibraryError(
                f"{path} is truncated or damaged ({_one_line(exc)}), so {_NOTHING}; export it "
                "again."
            ) from None
    return index


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


@contextlib.contextmanager
def _open_tar(path: Path) -> Iterator[tarfile.TarFile]:
    try:
        # Plain or compressed, by content; closed by the `with` below once it opened.
        tar = tarfile.open(path, mode="r:*")  # noqa: SIM115
    except _READ_ERRORS:
        raise LibraryError(
            f"{path} is not a tar archive (plain or compressed), so {_NOTHING}; give the file "
            "`rune adapters export` wrote."
        ) from None
    with tar:
        yield tar


def _checked_members(members: list[tarfile.TarInfo]) -> dict[str, tarfile.TarInfo]:
    """The archive's regular files by name; anything unsafe or unexpected is refused."""
    files: dict[str, tarfile.TarInfo] = {}
    for member in members:
        name = _checked_name(member)
        if member.isdir():
            continue
        if name in files:
            raise LibraryError(f"the archive holds {name!r} twice, so {_NOTHING}.")
        files[name] = member
    return files


def _checked_name(member: tarfile.TarInfo) -> str:
    name = member.name
    refuse = f"archive member {name!r}"
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise LibraryError(f"{refuse} has an absolute path, so {_NOTHING}.")
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if ".." in parts:
        raise LibraryError(f"{refuse} points outside the library ('..'), so {_NOTHING}.")
    if member.issym() or member.islnk():
        kind = "a symbolic link" if member.issym() else "a hard link"
        raise LibraryError(f"{refuse} is {kind}, which an adapter archive never holds, so {_NOTHING}.")
    if not (member.isfile() or member.isdir()):
        raise LibraryError(f"{refuse} is a device or other special file, so {_NOTHING}.")
    if PurePosixPath(name).suffix.lower() in PICKLE_SUFFIXES:
        raise LibraryError(
            f"{refuse} is a pickle file, which Rune never loads (only safetensors, GGUF and "
            f"the JSON manifests and self-probes), so {_NOTHING}."
        )
    if not _expected(parts, member.isdir()):
        raise LibraryError(
            f"{refuse} is not an adapter file (an archive holds only safetensors, GGUF and "
            f"the JSON manifests), so {_NOTHING}."
        )
    return "/".join(parts)


def _expected(parts: tuple[str, ...], is_dir: bool) -> bool:
    """The layout `export_adapters` writes: archive.json, adapters/<id>/<adapter file>."""
    if is_dir:
        return parts == (ADAPTERS,) or (
            len(parts) == 2 and parts[0] == ADAPTERS and bool(ID_PATTERN.match(parts[1]))
        )
    if parts == (ARCHIVE_INDEX,):
        return True
    return (
        len(parts) == 3 and parts[0] == ADAPTERS and bool(ID_PATTERN.match(parts[1]))
        and parts[2] in (*ADAPTER_FILES, MANIFEST)
    )


def _read_index(tar: tarfile.TarFile, members: dict[str, tarfile.TarInfo], path: Path) -> ArchiveIndex:
    member = members.get(ARCHIVE_INDEX)
    if member is None:
        raise LibraryError(
            f"{path} has no {ARCHIVE_INDEX} at its root, so it is not a Rune adapter archive "
            f"and {_NOTHING}."
        )
    if member.size > MAX_INDEX_BYTES:
        raise LibraryError(f"{path}'s {ARCHIVE_INDEX} is {member.size} bytes, far too big; {_NOTHING}.")
    handle = tar.extractfile(member)
    assert handle is not None  # a regular file, checked above
    try:
        data = json.loads(handle.read())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LibraryError(f"{path}'s {ARCHIVE_INDEX} is not JSON ({exc}), so {_NOTHING}.") from None
    _check_version(data, path)
    try:
        return ArchiveIndex.model_validate(data)
    except ValidationError as exc:
        raise LibraryError(f"{path}'s {ARCHIVE_INDEX} {problem(exc, HINTS)}, so {_NOTHING}.") from None


def _check_version(data: Any, path: Path) -> None:
    """An unknown version is refused before its contents are read as this version's."""
    if not isinstance(data, dict) or data.get("format") != ARCHIVE_FORMAT:
        raise LibraryError(
            f"{path}'s {ARCHIVE_INDEX} does not describe a Rune adapter archive, so {_NOTHING}."
        )
    version = data.get("archive_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise LibraryError(f"{path}'s {ARCHIVE_INDEX} has no valid archive_version, so {_NOTHING}.")
    if version > ARCHIVE_VERSION:
        raise LibraryError(
            f"{path} was written by a newer Rune (archive format {version}, this Rune reads "
            f"format {ARCHIVE_VERSION}), so {_NOTHING}; upgrade Rune to import it."
        )
    if version != ARCHIVE_VERSION:
        raise LibraryError(f"{path} has the unknown archive format {version}, so {_NOTHING}.")


def _check_base(index: ArchiveIndex, lib: Library, path: Path) -> None:
    current = lib.base_fingerprint()
    if index.base_fingerprint != current:
        raise IntegrityError(
            f"{path} holds adapters for the base model {index.base_fingerprint[:12]}, but the "
            f"current base model is {current[:12]}; adapters of another base are never "
            f"applied, so {_NOTHING}."
        )


def _check_listing(index: ArchiveIndex, members: dict[str, tarfile.TarInfo]) -> None:
    """The members are exactly the files `archive.json` lists, with the sizes it gives."""
    listed = {ARCHIVE_INDEX: -1}
    for entry in index.adapters:
        folder = f"{ADAPTERS}/{entry.adapter_id}"
        listed[f"{folder}/{MANIFEST}"] = -1
        listed.update({f"{folder}/{name}": info.size for name, info in entry.files.items()})
    if len(listed) != 1 + sum(1 + len(e.files) for e in index.adapters):
        raise LibraryError(f"{ARCHIVE_INDEX} lists an adapter twice, so {_NOTHING}.")
    for name, size in listed.items():
        member = members.get(name)
        if member is None:
            raise LibraryError(
                f"the archive lacks {name}, which {ARCHIVE_INDEX} lists; it is truncated or "
                f"incomplete, so {_NOTHING}."
            )
        if size >= 0 and member.size != size:
            raise IntegrityError(
                f"{name} is {member.size} bytes where {ARCHIVE_INDEX} says {size}; the archive "
                f"was altered, so {_NOTHING}."
            )
    unlisted = sorted(set(members) - set(listed))
    if unlisted:
        raise LibraryError(f"the archive holds {unlisted[0]}, which {ARCHIVE_INDEX} does not list, "
                           f"so {_NOTHING}.")


def _copy_out(tar: tarfile.TarFile, member: tarfile.TarInfo, dst: Path) -> None:
    """Copy one checked member's bytes to `dst` (a path built from checked name parts)."""
    source = tar.extractfile(member)
    assert source is not None  # a regular file, checked above
    with source, _staged_file(dst) as out:
        while chunk := source.read(_CHUNK):  # a short read here means a truncated archive
            try:
                out.write(chunk)
            except OSError as exc:
                raise _staging_error(dst, exc) from None


@contextlib.contextmanager
def _staged_file(dst: Path) -> Iterator[IO[bytes]]:
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        out = dst.open("xb")
    except OSError as exc:
        raise _staging_error(dst, exc) from None
    with out:
        yield out


def _staging_error(dst: Path, exc: OSError) -> LibraryError:
    """Writing the staging copy failed: the disk's fault, not the archive's."""
    return LibraryError(
        f"cannot write the staging copy {dst} ({exc}), so {_NOTHING}; free some space in the "
        "temporary folder (TMPDIR) and import again."
    )


def _check_staged(
    staging: Path, entry: ArchivedAdapter, index: ArchiveIndex, path: Path
) -> tuple[Path, dict[str, Any]]:
    """Verify one copied-out adapter completely; return its folder and manifest."""
    adapter_id = entry.adapter_id
    short = adapter_id[:12]
    folder = staging / ADAPTERS / adapter_id
    altered = f"the archive was altered or damaged, so {_NOTHING}"
    if file_digest(folder / MANIFEST) != entry.manifest_sha256:
        raise IntegrityError(
            f"the manifest of adapter {short} does not match its digest in {ARCHIVE_INDEX}; {altered}."
        )
    try:
        manifest = read_manifest(folder)
    except LibraryError as exc:
        raise LibraryError(f"the manifest of adapter {short} in {path} is unusable ({exc}); "
                           f"{_NOTHING}.") from None
    problems = check_files(folder, manifest)
    if problems:
        raise IntegrityError(f"adapter {short} failed verification ({'; '.join(problems)}); {altered}.")
    listed = {n: {"sha256": i.sha256, "size": i.size} for n, i in entry.files.items()}
    recorded = {n: {"sha256": i["sha256"], "size": i["size"]} for n, i in manifest["files"].items()}
    if listed != recorded or index_record(manifest) != entry.index.model_dump():
        raise IntegrityError(
            f"{ARCHIVE_INDEX} describes adapter {short} differently from its manifest; {altered}."
        )
    if manifest["base_fingerprint"] != index.base_fingerprint:
        raise IntegrityError(
            f"adapter {short} is for the base model {manifest['base_fingerprint'][:12]}, not the "
            f"archive's {index.base_fingerprint[:12]}; {altered}."
        )
    gguf = folder / GGUF_FILE if GGUF_FILE in manifest["files"] else None
    try:
        check_sources(folder, gguf)  # safetensors header and GGUF magic, as every add checks
    except LibraryError as exc:
        raise LibraryError(f"adapter {short} in {path} is unusable ({exc}); {_NOTHING}.") from None
    if compute_id(manifest["files"], normalize_meta(meta_of(manifest))) != adapter_id:
        raise IntegrityError(
            f"adapter {short}'s manifest would not be stored under its own id; {altered}."
        )
    return folder, manifest
