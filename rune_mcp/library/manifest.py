"""The manifest: what an adapter is, where it came from, and the digests that prove its files.

`manifest.json` is the last file written into an adapter folder and the only one read to list,
index or recall adapters. Its `format_version` is checked on every read, so a library written
by a newer Rune fails with a clear sentence instead of being misread. The adapter id is the
SHA-256 of the file digests plus the fields that say what the adapter *is* (base model, method,
shape, source trajectory, parents): the same content added twice gets the same id.
"""

from __future__ import annotations

import hashlib
import json
import re
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
    field_validator,
)

from rune_mcp.errors import LibraryError
from rune_mcp.fsutil import file_digest
from rune_mcp.validation import problem

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = "adapter_model.safetensors"
GGUF_FILE = "adapter.gguf"
ADAPTER_FILES = (PEFT_CONFIG, PEFT_WEIGHTS, GGUF_FILE)
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
        "format_version": FORMAT_VERSION,
        "files": {name: info["sha256"] for name, info in sorted(files.items())},
        **{key: flat.get(key) for key in IDENTITY_KEYS},
    }


def compute_id(files: dict[str, dict[str, Any]], flat: dict[str, Any]) -> str:
    blob = json.dumps(identity(files, flat), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def build_manifest(
    meta: dict[str, Any], files: dict[str, dict[str, Any]], created_at: str
) -> dict[str, Any]:
    """The manifest for normalized `meta` and `files` ({name: {"sha256", "size"}})."""
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


def read_manifest(folder: Path) -> dict[str, Any]:
    """Parse and validate `folder/manifest.json`; LibraryError says what is wrong.

    The parsed JSON is returned as read (the `Manifest` model only checks it), so the id it
    hashes to is computed from exactly what is on disk.
    """
    path = folder / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise LibraryError(f"adapter folder {folder} has no manifest.json.") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LibraryError(f"{path} is not readable JSON ({exc}).") from exc
    if not isinstance(data, dict):
        raise LibraryError(f"{path} is not a JSON object.")
    check_version(data.get("format_version"), str(path))
    try:
        Manifest.model_validate(data)
    except ValidationError as exc:
        raise LibraryError(
            f"{path} {problem(exc, HINTS)}; the adapter will not be used: remove it with "
            "`rune adapters rm`."
        ) from None
    return data


def check_files(folder: Path, manifest: dict[str, Any]) -> list[str]:
    """Every way the folder differs from its manifest, as sentences; [] means intact.

    Extra files (a pickle dropped beside the weights, say) count as a problem: they are never
    loaded, and an adapter folder holding them has been tampered with.
    """
    problems = []
    expected_id = compute_id(manifest["files"], flat_fields(manifest))
    if manifest.get("adapter_id") != folder.name or expected_id != folder.name:
        problems.append("manifest does not hash to the folder's id (manifest edited)")
    for name, info in sorted(manifest["files"].items()):
        path = folder / name
        if not path.is_file():
            problems.append(f"{name} is missing")
        elif path.stat().st_size != info.get("size"):
            problems.append(f"{name} has the wrong size (tampered or truncated)")
        elif file_digest(path) != info["sha256"]:
            problems.append(f"{name} does not match its sha256 (tampered)")
    allowed = {*manifest["files"], MANIFEST}
    for entry in sorted(p.name for p in folder.iterdir()):
        if entry not in allowed:
            problems.append(f"unexpected file {entry} (never loaded)")
    return problems
