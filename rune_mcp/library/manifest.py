"""The manifest: what an adapter is, where it came from, and the digests that prove its files.

`manifest.json` is the last file written into an adapter folder and the only one read to list,
index or recall adapters. Its `format_version` is checked on every read, so a library written
by a newer Rune fails with a clear sentence instead of being misread. The adapter id is the
SHA-256 of the file digests plus the fields that say what the adapter *is* (base model, method,
shape, source trajectory, parents): the same content added twice gets the same id.

The id leaves out the task wording and the other text an agent is shown, so that re-adding the
same weights stays a no-op; format 2 manifests record `metadata_sha256`, the digest of every
other field, so an edit of that text is caught like an edit of the weights. Format 1 manifests
(written before) have no such digest: they are read as before and their text is reported as
unverified (`text_verified`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from rune_mcp.errors import LibraryError
from rune_mcp.fsutil import file_digest
from rune_mcp.validation import problem

# 3: an adapter may hold `self_probes.json` (an older Rune would take it for a stray file).
FORMAT_VERSION = 3
# The version inside the hashed identity object. It stays 1 whatever the manifest format, so
# that adapters written by earlier formats keep their ids (the id scheme has not changed).
ID_SCHEME = 1
# The first manifest format that records `metadata_sha256`.
METADATA_DIGEST_SINCE = 2
MANIFEST = "manifest.json"
PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = "adapter_model.safetensors"
GGUF_FILE = "adapter.gguf"
SELF_PROBES = "self_probes.json"  # the session's held-out lessons (rune_mcp.library.selfprobes)
ADAPTER_FILES = (PEFT_CONFIG, PEFT_WEIGHTS, GGUF_FILE, SELF_PROBES)
ID_PATTERN = re.compile(r"^[0-9a-f]{64}$")

# The fields that make two adapters different things; task wording, timings and the creation
# time do not (re-adding the same weights for the same trajectory is a no-op).
IDENTITY_KEYS = (
    "base_fingerprint", "method", "rank", "alpha", "target_modules", "trajectory_id", "parents",
)
SOURCE_KEYS = ("agent", "session_id", "project", "trajectory_id")


def _blank(value: Any) -> Any:
    """`""` means "not given", as `None` does."""
    return None if value == "" else value


def _list(value: Any) -> Any:
    """An absent, null or empty list is the empty list."""
    return value or []


def _mapping(value: Any) -> Any:
    return value or {}


def _count(value: Any) -> Any:
    return value or 0


def _given(value: str) -> str:
    if not value:
        raise ValueError("must not be empty")
    return value


def _stripped(value: str) -> str:
    return _given(value.strip())


Text = Annotated[str | None, BeforeValidator(_blank)]
AdapterId = Annotated[str, StringConstraints(pattern=ID_PATTERN.pattern)]
Sha256 = Annotated[str, StringConstraints(pattern=ID_PATTERN.pattern)]
# What each field must hold, in the words of the error a user reads.
HINTS = {
    "base_fingerprint": "the base model's sha256", "task": "a non-empty text",
    "rank": "a positive integer", "alpha": "a number", "target_modules": "a list of module names",
    "parents": "a list of adapter ids", "parents[]": "an adapter id (64 hex digits)",
    "target_modules[]": "a module name", "training": "a mapping of statistics",
    "lesson_count": "an integer", "adapter_id": "a sha256 hex id", "sha256": "a sha256 hex digest",
    "size": "a byte count",
    "metadata_sha256": "a sha256 hex digest, present from format 2 on and only there",
    **{name: "text" for name in ("method", "agent", "session_id", "project", "trajectory_id",
                                 "embed_text", "created_at")},
}


class AdapterMeta(BaseModel):
    """The metadata `Library.add` receives; keys it does not know are kept as `extra`."""

    model_config = ConfigDict(strict=True, extra="allow")

    base_fingerprint: Annotated[str, AfterValidator(_given)]
    task: Annotated[str, AfterValidator(_stripped)]
    method: Text = None
    rank: Annotated[int | None, Field(ge=1)] = None
    alpha: float | None = None
    target_modules: Annotated[list[str], BeforeValidator(_list)] = []
    agent: Text = None
    session_id: Text = None
    project: Text = None
    trajectory_id: Text = None
    embed_text: Text = None
    lesson_count: Annotated[int, BeforeValidator(_count), Field(strict=False)] = 0
    training: Annotated[dict[str, Any], BeforeValidator(_mapping)] = {}
    parents: Annotated[list[AdapterId], BeforeValidator(_list)] = []


class FileEntry(BaseModel):
    """One adapter file as the manifest records it."""

    model_config = ConfigDict(strict=True, extra="forbid")

    sha256: Sha256
    size: Annotated[int, Field(ge=0)]


class Source(BaseModel):
    """Where the adapter came from: the session and the trajectory parsed from it."""

    model_config = ConfigDict(strict=True, extra="forbid")

    agent: str | None = None
    session_id: str | None = None
    project: str | None = None
    trajectory_id: str | None = None


class Manifest(BaseModel):
    """`manifest.json` as `build_manifest` writes it. Only validated: readers keep the parsed
    JSON itself, so the bytes an adapter id was computed from are the ones read back."""

    model_config = ConfigDict(strict=True, extra="forbid")

    format_version: int
    adapter_id: AdapterId
    base_fingerprint: str
    method: str | None = None
    rank: Annotated[int | None, Field(ge=1)] = None
    alpha: float | None = None
    target_modules: list[str] = []
    source: Source
    task: str
    embed_text: str | None = None
    lesson_count: int = 0
    training: dict[str, Any] = {}
    created_at: str | None = None
    parents: list[AdapterId] = []
    files: dict[str, FileEntry]
    extra: dict[str, Any] = {}
    metadata_sha256: Annotated[Sha256 | None, Field(validate_default=True)] = None

    @field_validator("metadata_sha256")
    @classmethod
    def _digest_by_format(cls, digest: str | None, info: ValidationInfo) -> str | None:
        # A format 2 manifest without its digest, or a format 1 manifest with one, was not
        # written by any Rune: read either as format 1 and its edited text would pass.
        version = info.data.get("format_version")
        if isinstance(version, int) and (digest is None) == (version >= METADATA_DIGEST_SINCE):
            raise ValueError("must be given from format 2 on and only there")
        return digest

    @field_validator("files")
    @classmethod
    def _adapter_files(cls, files: dict[str, FileEntry]) -> dict[str, FileEntry]:
        unknown = sorted(set(files) - set(ADAPTER_FILES))
        if unknown:
            raise ValueError(f"names {unknown[0]!r}, which is no adapter file")
        if PEFT_CONFIG not in files or PEFT_WEIGHTS not in files:
            raise ValueError(f"must list {PEFT_CONFIG} and {PEFT_WEIGHTS}")
        return files


def normalize_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """Check the metadata `Library.add` receives and fill defaults.

    `{"base_fingerprint": "ab..", "task": "fix x"}` -> the same plus method "lora", rank None,
    ..., embed_text "fix x", parents [], extra {}.
    """
    try:
        checked = AdapterMeta.model_validate(meta)
    except ValidationError as exc:
        raise LibraryError(f"adapter metadata {problem(exc, HINTS)}.") from None
    extra = dict(checked.model_extra or {})
    try:
        json.dumps([checked.training, extra])
    except (TypeError, ValueError) as exc:
        raise LibraryError(f"adapter metadata is not JSON-serializable ({exc}).") from exc
    return {
        "base_fingerprint": checked.base_fingerprint,
        "method": checked.method or "lora",
        "rank": checked.rank,
        "alpha": checked.alpha,
        "target_modules": sorted(checked.target_modules),
        "agent": checked.agent,
        "session_id": checked.session_id,
        "project": checked.project,
        "trajectory_id": checked.trajectory_id,
        "task": checked.task,
        "embed_text": checked.embed_text or checked.task,
        "lesson_count": checked.lesson_count,
        "training": checked.training,
        "parents": list(checked.parents),
        "extra": extra,
    }


def identity(files: dict[str, dict[str, Any]], flat: dict[str, Any]) -> dict[str, Any]:
    """The object whose canonical JSON hashes to the adapter id."""
    return {
        "format_version": ID_SCHEME,
        "files": {name: info["sha256"] for name, info in sorted(files.items())},
        **{key: flat.get(key) for key in IDENTITY_KEYS},
    }


def compute_id(files: dict[str, dict[str, Any]], flat: dict[str, Any]) -> str:
    blob = json.dumps(identity(files, flat), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def metadata_digest(manifest: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of every manifest field but `metadata_sha256` itself:
    the task, the embedded text, the source, the statistics and all else an agent is shown."""
    body = {key: value for key, value in manifest.items() if key != "metadata_sha256"}
    blob = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def text_verified(manifest: dict[str, Any]) -> bool:
    """True when the manifest's format records a digest of its text (checked on every read);
    False for a format 1 manifest, whose text no digest covers."""
    version = manifest.get("format_version")
    return isinstance(version, int) and version >= METADATA_DIGEST_SINCE


def build_manifest(
    meta: dict[str, Any], files: dict[str, dict[str, Any]], created_at: str
) -> dict[str, Any]:
    """The manifest for normalized `meta` and `files` ({name: {"sha256", "size"}})."""
    manifest = _manifest_body(meta, files, created_at)
    manifest["metadata_sha256"] = metadata_digest(manifest)
    return manifest


def _manifest_body(
    meta: dict[str, Any], files: dict[str, dict[str, Any]], created_at: str
) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "adapter_id": compute_id(files, meta),
        "base_fingerprint": meta["base_fingerprint"],
        "method": meta["method"],
        "rank": meta["rank"],
        "alpha": meta["alpha"],
        "target_modules": meta["target_modules"],
        "source": {key: meta[key] for key in SOURCE_KEYS},
        "task": meta["task"],
        "embed_text": meta["embed_text"],
        "lesson_count": meta["lesson_count"],
        "training": meta["training"],
        "created_at": created_at,
        "parents": meta["parents"],
        "files": files,
        "extra": meta["extra"],
    }


def flat_fields(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest with `source` flattened, as `identity` expects it."""
    return {**manifest, **(manifest.get("source") or {})}


def check_version(version: Any, where: str) -> None:
    """Refuse data written by a newer (or unknown) format with one clear sentence."""
    if not isinstance(version, int) or isinstance(version, bool):
        raise LibraryError(f"{where} has no valid format_version; run `rune adapters verify`.")
    if version > FORMAT_VERSION:
        raise LibraryError(
            f"{where} was written by a newer Rune (library format {version}, this Rune reads "
            f"up to {FORMAT_VERSION}); upgrade Rune to use this library."
        )
    if version < 1:
        raise LibraryError(f"{where} has an invalid format_version {version}.")


class ManifestError(LibraryError):
    """A manifest that cannot be used. `str()` names the file (for people at a terminal);
    `summary` is a fixed phrase that quotes nothing read from disk, so it can be shown to an
    agent: a damaged manifest's values and field names are not to be trusted."""

    def __init__(self, message: str, summary: str) -> None:
        super().__init__(message)
        self.summary = summary


@dataclass(frozen=True)
class Finding:
    """One way an adapter folder differs from what its manifest promises.

    `detail` is for people and may name a file found on disk; `summary` is built only from
    Rune's own words and file names, so it is what an agent is shown.
    """

    detail: str
    summary: str


_PRIVATE = "the store holds only its own read-only copies"


def read_manifest(folder: Path) -> dict[str, Any]:
    """Parse and validate `folder/manifest.json`; ManifestError says what is wrong.

    The parsed JSON is returned as read (the `Manifest` model only checks it), so the id it
    hashes to is computed from exactly what is on disk. A manifest that is a symbolic link,
    or has other hard links, is refused before it is opened.
    """
    path = folder / MANIFEST
    found, _ = private_file(path, MANIFEST)
    if found is not None:
        if found.summary == f"{MANIFEST} is missing":
            raise ManifestError(f"adapter folder {folder} has no manifest.json.",
                                "its manifest is missing")
        raise ManifestError(f"{path}: {found.detail}; the adapter will not be used.",
                            f"its {found.summary.replace(MANIFEST, 'manifest', 1)}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ManifestError(f"adapter folder {folder} has no manifest.json.",
                            "its manifest is missing") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{path} is not readable JSON ({exc}).",
                            "its manifest is not readable JSON") from exc
    if not isinstance(data, dict):
        raise ManifestError(f"{path} is not a JSON object.", "its manifest is not a JSON object")
    try:
        check_version(data.get("format_version"), str(path))
    except LibraryError as exc:
        newer = "newer Rune" in str(exc)
        raise ManifestError(str(exc), "its manifest was written by a newer Rune" if newer
                            else "its manifest has no valid format version") from None
    try:
        Manifest.model_validate(data)
    except ValidationError as exc:
        raise ManifestError(
            f"{path} {problem(exc, HINTS)}; the adapter will not be used: remove it with "
            "`rune adapters rm`.",
            "its manifest has missing, unknown or invalid fields",
        ) from None
    return data


def private_file(path: Path, name: str) -> tuple[Finding | None, os.stat_result | None]:
    """`path`'s own status when it is a regular file with no other name; else the finding.

    The store only ever writes fresh read-only copies (one link each). A symbolic link points
    where the store's guarantees do not reach, and a second hard link lets the bytes change
    through a name outside the store, after they were verified; neither is ever loaded.
    """
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return Finding(f"{name} is missing", f"{name} is missing"), None
    except OSError as exc:
        return Finding(f"{name} cannot be read ({exc.strerror})", f"{name} cannot be read"), None
    if stat.S_ISLNK(info.st_mode):
        return Finding(f"{name} is a symbolic link ({_PRIVATE})",
                       f"{name} is a symbolic link"), None
    if not stat.S_ISREG(info.st_mode):
        return Finding(f"{name} is not a regular file", f"{name} is not a regular file"), None
    if info.st_nlink > 1:
        return Finding(f"{name} has {info.st_nlink - 1} other hard link(s) ({_PRIVATE})",
                       f"{name} is hard-linked elsewhere"), None
    return None, info


def folder_finding(folder: Path) -> Finding | None:
    """What is wrong with the adapter folder itself (None: a real folder, or none at all)."""
    try:
        info = os.lstat(folder)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return Finding(f"the adapter folder cannot be read ({exc.strerror})",
                       "its folder cannot be read")
    if stat.S_ISLNK(info.st_mode):
        return Finding(f"the adapter folder is a symbolic link ({_PRIVATE})",
                       "its folder is a symbolic link")
    if not stat.S_ISDIR(info.st_mode):
        return Finding("the adapter's name holds a file, not a folder", "it is not a folder")
    return None


def manifest_findings(folder: Path, manifest: dict[str, Any]) -> list[Finding]:
    """The manifest checked against the folder's id and its own digest (cheap: no file read)."""
    findings = []
    expected_id = compute_id(manifest["files"], flat_fields(manifest))
    if manifest.get("adapter_id") != folder.name or expected_id != folder.name:
        findings.append(Finding("manifest does not hash to the folder's id (manifest edited)",
                                "its manifest was edited (it no longer hashes to its id)"))
    if text_verified(manifest) and manifest.get("metadata_sha256") != metadata_digest(manifest):
        findings.append(Finding(
            "manifest does not match its metadata_sha256 (its task, text or settings edited)",
            "its manifest was edited (its text no longer matches its recorded digest)",
        ))
    return findings


def inspect_folder(folder: Path, manifest: dict[str, Any], digests: bool = True) -> list[Finding]:
    """Every way the folder differs from its manifest; [] means intact.

    Without `digests` only what `lstat` and a listing show is checked (links, sizes, missing
    and stray files): cheap enough for every listing and recall. Extra files (a pickle dropped
    beside the weights, say) count: they are never loaded, and their presence means tampering.
    """
    found = folder_finding(folder)
    if found is not None:
        return [found]
    findings = manifest_findings(folder, manifest)
    manifest_file, _ = private_file(folder / MANIFEST, MANIFEST)
    if manifest_file is not None:
        findings.append(manifest_file)
    for name, info in sorted(manifest["files"].items()):
        finding = _file_finding(folder / name, name, info, digests)
        if finding is not None:
            findings.append(finding)
    return findings + _stray_findings(folder, manifest)


def _file_finding(path: Path, name: str, info: dict[str, Any], digests: bool) -> Finding | None:
    found, status = private_file(path, name)
    if found is not None or status is None:
        return found
    if status.st_size != info.get("size"):
        return Finding(f"{name} has the wrong size (tampered or truncated)",
                       f"{name} has the wrong size")
    if digests:
        try:
            digest = file_digest(path)
        except OSError as exc:
            return Finding(f"{name} cannot be read ({exc.strerror})", f"{name} cannot be read")
        if digest != info["sha256"]:
            return Finding(f"{name} does not match its sha256 (tampered)",
                           f"{name} does not match its sha256")
    return None


def _stray_findings(folder: Path, manifest: dict[str, Any]) -> list[Finding]:
    allowed = {*manifest["files"], MANIFEST}
    try:
        names = sorted(os.listdir(folder))
    except OSError as exc:
        return [Finding(f"the adapter folder cannot be listed ({exc.strerror})",
                        "its folder cannot be listed")]
    return [
        Finding(f"unexpected file {name} (never loaded)", "an unexpected file is in its folder")
        for name in names if name not in allowed
    ]


def check_files(folder: Path, manifest: dict[str, Any]) -> list[str]:
    """Every way the folder differs from its manifest, as sentences for people; [] means
    intact (`inspect_folder` with digests)."""
    return [finding.detail for finding in inspect_folder(folder, manifest)]
