"""The content-addressed, write-once store of adapter folders under `<RUNE_HOME>/adapters/`.

An adapter is written into a hidden temporary folder, every file fsynced, `manifest.json`
last, and the folder renamed to its id in one step: a reader (another process, or this one
after a crash) sees either no adapter or a whole one. Removal renames the folder to a hidden
trash name first, so it disappears at once too. Hidden leftovers of a crashed writer are
swept by the next writer. Callers (the `Library`) hold the library lock around every write.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rune_mcp.errors import AdapterNotFoundError, LibraryError
from rune_mcp.fsutil import atomic_write_json, fsync_dir
from rune_mcp.library.manifest import (
    FORMAT_VERSION,
    GGUF_FILE,
    ID_PATTERN,
    MANIFEST,
    PEFT_CONFIG,
    PEFT_WEIGHTS,
    SELF_PROBES,
    ManifestError,
    build_manifest,
    check_files,
    check_version,
    folder_finding,
    manifest_findings,
    normalize_meta,
    read_manifest,
)
from rune_mcp.library.records import AdapterDamaged, AdapterRecord, Damaged

log = logging.getLogger(__name__)

LIBRARY_FILE = "library.json"
TMP_PREFIX = ".tmp-"
TRASH_PREFIX = ".trash-"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
_FIND_IDS = "`rune adapters ls` lists the ids"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _copy_synced(src: Path, dst: Path) -> dict[str, Any]:
    """Copy `src` to `dst`, fsync it, make it read-only; return its size and sha256."""
    import hashlib

    digest = hashlib.sha256()
    size = 0
    with src.open("rb") as fin, dst.open("xb") as fout:
        while chunk := fin.read(1 << 20):
            digest.update(chunk)
            fout.write(chunk)
            size += len(chunk)
        fout.flush()
        os.fsync(fout.fileno())
    os.chmod(dst, 0o444)
    return {"sha256": digest.hexdigest(), "size": size}


def _check_safetensors(path: Path) -> None:
    """A safetensors file starts with an 8-byte little-endian header length and a JSON header."""
    try:
        with path.open("rb") as handle:
            length = int.from_bytes(handle.read(8), "little")
            if not 2 <= length <= 100_000_000:
                raise ValueError("bad header length")
            header = json.loads(handle.read(length))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise LibraryError(f"{path} is not a valid safetensors file ({exc}).") from exc
    if not isinstance(header, dict) or not any(k != "__metadata__" for k in header):
        raise LibraryError(f"{path} holds no tensors.")


def check_sources(peft_dir: Path, gguf_file: Path | None) -> None:
    """Refuse anything but a PEFT safetensors adapter (and a real GGUF file) before copying."""
    if not peft_dir.is_dir():
        raise LibraryError(f"{peft_dir} is not a folder holding a PEFT adapter.")
    weights = peft_dir / PEFT_WEIGHTS
    if not weights.is_file():
        pickles = [p.name for p in peft_dir.iterdir() if p.suffix in PICKLE_SUFFIXES]
        hint = (
            f" (found {', '.join(pickles)}: pickle weights are never accepted; save with "
            "safe_serialization=True)" if pickles else ""
        )
        raise LibraryError(f"{peft_dir} has no {PEFT_WEIGHTS}{hint}.")
    _check_safetensors(weights)
    try:
        config = json.loads((peft_dir / PEFT_CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LibraryError(f"{peft_dir / PEFT_CONFIG} is missing or not JSON ({exc}).") from exc
    if not isinstance(config, dict) or "peft_type" not in config:
        raise LibraryError(f"{peft_dir / PEFT_CONFIG} is not a PEFT adapter config.")
    if gguf_file is not None:
        try:
            with gguf_file.open("rb") as handle:
                magic = handle.read(4)
        except OSError as exc:
            raise LibraryError(f"cannot read the GGUF file {gguf_file} ({exc}).") from exc
        if magic != b"GGUF":
            raise LibraryError(f"{gguf_file} is not a GGUF file.")


class AdapterStore:
    """Adapter folders on disk. Reading needs no lock; writing needs the library lock."""

    def __init__(self, root: Path) -> None:
        self.root = root

    # --- reading -------------------------------------------------------------------------

    def check_format(self) -> None:
        """Raise LibraryError when the library was written by a newer Rune."""
        path = self.root / LIBRARY_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            raise LibraryError(f"{path} is not readable JSON ({exc}); restore or delete it.") from exc
        check_version(data.get("format_version") if isinstance(data, dict) else None, str(path))

    def library_id(self) -> str:
        """A random id made when the library is created; names its index collection."""
        path = self.root / LIBRARY_FILE
        with contextlib.suppress(FileNotFoundError, ValueError, OSError):
            data = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(data, dict) and isinstance(data.get("library_id"), str):
                return str(data["library_id"])
        return ""

    def ensure_library_file(self) -> str:
        """Create `library.json` once (caller holds the lock); return the library id."""
        existing = self.library_id()
        if existing:
            return existing
        library_id = uuid.uuid4().hex
        atomic_write_json(
            self.root / LIBRARY_FILE,
            {"format_version": FORMAT_VERSION, "library_id": library_id, "created_at": _now()},
        )
        return library_id

    def _raise_library_format(self) -> None:
        """Record in `library.json` that it now holds manifests of this format (caller holds
        the lock): an older Rune then refuses the library in one sentence, instead of leaving
        out, one by one, the adapters it cannot read."""
        path = self.root / LIBRARY_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return  # absent or unreadable: check_format and ensure_library_file speak for it
        version = data.get("format_version") if isinstance(data, dict) else None
        if isinstance(version, int) and version < FORMAT_VERSION:
            atomic_write_json(path, {**data, "format_version": FORMAT_VERSION})

    def ids(self) -> list[str]:
        """Ids of the adapter folders present (sorted); hidden temp and trash folders are not.
        Any entry named like an id counts, a link or a file too: it is then a damaged one."""
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return []
        return sorted(name for name in names if ID_PATTERN.match(name))

    def is_empty(self) -> bool:
        """True when no adapter is present; stops at the first one (cheap for big libraries)."""
        try:
            with os.scandir(self.root) as entries:
                return not any(ID_PATTERN.match(entry.name) for entry in entries)
        except FileNotFoundError:
            return True

    def folder(self, adapter_id: str) -> Path:
        return self.root / adapter_id

    def resolve(self, adapter_id: str) -> str:
        """The full id for `adapter_id` or a unique prefix of at least 6 characters."""
        wanted = adapter_id.strip().lower()
        if ID_PATTERN.match(wanted):
            if os.path.lexists(self.root / wanted):
                return wanted
        elif len(wanted) >= 6 and all(c in "0123456789abcdef" for c in wanted):
            matches = [i for i in self.ids() if i.startswith(wanted)]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise AdapterNotFoundError(
                    f"adapter id prefix {adapter_id!r} matches {len(matches)} adapters; give more "
                    f"characters ({_FIND_IDS})."
                )
        raise AdapterNotFoundError(f"no adapter has the id {adapter_id!r}; {_FIND_IDS}.")

    def read(self, adapter_id: str) -> AdapterRecord:
        """The record of a present adapter, from its manifest (files not yet verified).

        AdapterNotFoundError when it is not there; AdapterDamaged (one sentence, no path)
        when its folder is a link, or its manifest is unreadable, is a link, does not hash to
        the id, or no longer matches its own metadata digest.
        """
        folder = self.root / adapter_id
        found = folder_finding(folder)
        if found is not None:
            raise AdapterDamaged(Damaged.of(adapter_id, [found]))
        if not folder.is_dir():
            raise AdapterNotFoundError(f"no adapter has the id {adapter_id!r}; {_FIND_IDS}.")
        try:
            manifest = read_manifest(folder)
        except ManifestError as exc:
            log.debug("adapter %s: %s", adapter_id[:12], exc)
            raise AdapterDamaged(Damaged(adapter_id, exc.summary)) from None
        findings = manifest_findings(folder, manifest)
        if findings:
            raise AdapterDamaged(Damaged.of(adapter_id, findings))
        return AdapterRecord(adapter_id, folder, manifest)

    def records(self) -> Iterator[AdapterRecord]:
        """Every adapter with a usable manifest; damaged ones are logged and skipped (`scan`
        names them)."""
        for adapter_id in self.ids():
            try:
                yield self.read(adapter_id)
            except AdapterNotFoundError:
                continue  # removed by another process since the listing
            except LibraryError as exc:
                log.warning("skipping adapter %s: %s", adapter_id[:12], exc)

    def scan(self) -> tuple[list[AdapterRecord], list[Damaged]]:
        """Every adapter, as a usable record or a damaged one. Manifests are read and files
        `lstat`ed (links, sizes, missing and stray files), not hashed."""
        records, damaged = [], []
        for adapter_id in self.ids():
            try:
                records.append(self.read(adapter_id).check(digests=False))
            except AdapterNotFoundError:
                continue  # removed by another process since the listing
            except AdapterDamaged as exc:
                damaged.append(exc.damage)
        return records, damaged

    def problems(self, adapter_id: str) -> list[str]:
        """`check_files` for one adapter, including an unreadable manifest or a linked
        folder, as sentences for people (they may name paths)."""
        folder = self.root / adapter_id
        found = folder_finding(folder)
        if found is not None:
            return [found.detail]
        try:
            manifest = read_manifest(folder)
        except LibraryError as exc:
            return [str(exc)]
        return check_files(folder, manifest)

    # --- writing (caller holds the library lock) ---------------------------------------

    def write(
        self,
        peft_dir: Path,
        gguf_file: Path | None,
        meta: dict[str, Any],
        created_at: str | None = None,
        self_probes: Path | None = None,
    ) -> tuple[AdapterRecord, bool]:
        """Store an adapter; return its record and whether it was new.

        The same content again returns the existing record untouched. An existing folder with
        the same id that fails verification is replaced by the good copy being added.
        `created_at` (default: now) is kept by imports, so a shared adapter keeps its date.
        `self_probes` (a `self_probes.json`, validated here) is copied in with the weights,
        before the folder is published, so it is one of the adapter's files.
        """
        from rune_mcp.library.selfprobes import read_self_probes

        flat = normalize_meta(meta)
        check_sources(peft_dir, gguf_file)
        if self_probes is not None:
            read_self_probes(self_probes)
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f"{TMP_PREFIX}{uuid.uuid4().hex}"
        tmp.mkdir()
        try:
            files = {
                PEFT_CONFIG: _copy_synced(peft_dir / PEFT_CONFIG, tmp / PEFT_CONFIG),
                PEFT_WEIGHTS: _copy_synced(peft_dir / PEFT_WEIGHTS, tmp / PEFT_WEIGHTS),
            }
            if gguf_file is not None:
                files[GGUF_FILE] = _copy_synced(gguf_file, tmp / GGUF_FILE)
            if self_probes is not None:
                files[SELF_PROBES] = _copy_synced(self_probes, tmp / SELF_PROBES)
            manifest = build_manifest(flat, files, created_at or _now())
            adapter_id = manifest["adapter_id"]
            final = self.root / adapter_id
            if os.path.lexists(final):
                if not self.problems(adapter_id):
                    return self.read(adapter_id), False
                log.warning("replacing damaged adapter %s with the copy being added", adapter_id)
                self._to_trash(adapter_id)
            atomic_write_json(tmp / MANIFEST, manifest, mode=0o444)
            fsync_dir(tmp)
            self._raise_library_format()
            os.rename(tmp, final)
            fsync_dir(self.root)
            return AdapterRecord(adapter_id, final, manifest, _verified=True), True
        finally:
            if tmp.exists():
                _rmtree(tmp)

    def delete(self, adapter_id: str) -> bool:
        """Remove an adapter folder (atomically hidden first); False when it was not there.
        A link or a file in a folder's place is removed itself (never what it points to)."""
        if not os.path.lexists(self.root / adapter_id):
            return False
        trash = self._to_trash(adapter_id)
        _rmtree(trash)
        return True

    def _to_trash(self, adapter_id: str) -> Path:
        trash = self.root / f"{TRASH_PREFIX}{adapter_id}-{uuid.uuid4().hex[:8]}"
        os.rename(self.root / adapter_id, trash)
        fsync_dir(self.root)
        return trash

    def sweep(self) -> int:
        """Delete hidden leftovers of crashed writers (caller holds the lock); return how many."""
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return 0
        swept = 0
        for name in names:
            if name.startswith((TMP_PREFIX, TRASH_PREFIX)):
                _rmtree(self.root / name)
                swept += 1
        return swept

    def leftovers(self) -> list[str]:
        """Names of hidden temporary or trash folders (a writer crashed, or is writing now)."""
        try:
            return sorted(
                n for n in os.listdir(self.root) if n.startswith((TMP_PREFIX, TRASH_PREFIX))
            )
        except FileNotFoundError:
            return []


def _rmtree(path: Path) -> None:
    """Delete a folder; its files being read-only does not matter on POSIX (the folder is
    writable), and a folder already gone is fine (another sweeper got there first). A link or
    a file standing where a folder belongs is unlinked, so a link's target is never touched."""
    with contextlib.suppress(FileNotFoundError):
        if path.is_symlink() or not path.is_dir():
            path.unlink()
        else:
            shutil.rmtree(path)
