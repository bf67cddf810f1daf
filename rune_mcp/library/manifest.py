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
from typing import Any

from rune_mcp.errors import LibraryError
from rune_mcp.fsutil import file_digest

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
KNOWN_META = {
    "base_fingerprint", "method", "rank", "alpha", "target_modules", "agent", "session_id",
    "project", "trajectory_id", "task", "embed_text", "lesson_count", "training", "parents",
}


def _opt_str(meta: dict[str, Any], key: str) -> str | None:
    value = meta.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise LibraryError(f"adapter metadata '{key}' must be text, got {type(value).__name__}.")
    return value


def normalize_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """Check the metadata `Library.add` receives and fill defaults.

    `{"base_fingerprint": "ab..", "task": "fix x"}` -> the same plus method "lora", rank None,
    ..., embed_text "fix x", parents [], extra {}.
    """
    fingerprint = _opt_str(meta, "base_fingerprint")
    task = meta.get("task")
    if not fingerprint:
        raise LibraryError("adapter metadata needs 'base_fingerprint' (the base model's sha256).")
    if not isinstance(task, str) or not task.strip():
        raise LibraryError("adapter metadata needs a non-empty 'task' text.")
    rank, alpha = meta.get("rank"), meta.get("alpha")
    if rank is not None and (not isinstance(rank, int) or isinstance(rank, bool) or rank < 1):
        raise LibraryError(f"adapter metadata 'rank' must be a positive integer, got {rank!r}.")
    if alpha is not None and not isinstance(alpha, int | float):
        raise LibraryError(f"adapter metadata 'alpha' must be a number, got {alpha!r}.")
    targets = meta.get("target_modules") or []
    parents = meta.get("parents") or []
    training = meta.get("training") or {}
    if not all(isinstance(t, str) for t in targets) or not isinstance(targets, list):
        raise LibraryError("adapter metadata 'target_modules' must be a list of module names.")
    if not isinstance(parents, list) or not all(
        isinstance(p, str) and ID_PATTERN.match(p) for p in parents
    ):
        raise LibraryError("adapter metadata 'parents' must be a list of adapter ids.")
    if not isinstance(training, dict):
        raise LibraryError("adapter metadata 'training' must be a mapping of statistics.")
    extra = {k: v for k, v in meta.items() if k not in KNOWN_META}
    try:
        json.dumps([training, extra])
    except (TypeError, ValueError) as exc:
        raise LibraryError(f"adapter metadata is not JSON-serializable ({exc}).") from exc
    return {
        "base_fingerprint": fingerprint,
        "method": _opt_str(meta, "method") or "lora",
        "rank": rank,
        "alpha": float(alpha) if alpha is not None else None,
        "target_modules": sorted(targets),
        "agent": _opt_str(meta, "agent"),
        "session_id": _opt_str(meta, "session_id"),
        "project": _opt_str(meta, "project"),
        "trajectory_id": _opt_str(meta, "trajectory_id"),
        "task": task.strip(),
        "embed_text": _opt_str(meta, "embed_text") or task.strip(),
        "lesson_count": int(meta.get("lesson_count") or 0),
        "training": training,
        "parents": list(parents),
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
    """Parse and sanity-check `folder/manifest.json`; LibraryError says what is wrong."""
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
    files = data.get("files")
    if not isinstance(files, dict) or PEFT_WEIGHTS not in files or PEFT_CONFIG not in files:
        raise LibraryError(f"{path} lists no adapter files.")
    for name, info in files.items():
        if name not in ADAPTER_FILES or not isinstance(info, dict) or "sha256" not in info:
            raise LibraryError(f"{path} has an invalid entry for file {name!r}.")
    for key in ("adapter_id", "base_fingerprint", "task"):
        if not isinstance(data.get(key), str):
            raise LibraryError(f"{path} lacks the field {key!r}.")
    if not isinstance(data.get("source"), dict):
        raise LibraryError(f"{path} lacks the field 'source'.")
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
