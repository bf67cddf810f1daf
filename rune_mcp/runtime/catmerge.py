"""A run-time composition written out as one PEFT adapter, for servers that take one per request.

vLLM applies a single LoRA per request. A composition `[(a, 0.5), (b, 0.5)]` is therefore
materialised as the rank-concatenating merge PEFT calls `cat`: A = [0.5 s_a A_a; 0.5 s_b A_b],
B = [B_a, B_b] (s: each adapter's own alpha / r), rank r_a + r_b, alpha = rank, so that
B A = 0.5 s_a B_a A_a + 0.5 s_b B_b A_b, exactly what llama.cpp computes with the two
adapters at those scales. A module only one adapter targets gets zeros in the other's rows.

Only tensors are combined, no base model is loaded. The folder is content-addressed, named by
the digest of the adapter ids (themselves digests of the adapters' content) and scales, written
once into `<cache_dir>/compositions/` and renamed into place whole.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rune_mcp.errors import BackendError
from rune_mcp.fsutil import fsync_dir
from rune_mcp.runtime.base import Active, AdapterSpec

CATMERGE_VERSION = 1
CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<ab>[AB])\.weight$")


def composition_key(target: Active) -> str:
    """The digest naming a composition: its adapters' ids and scales, in order."""
    body = {"version": CATMERGE_VERSION, "adapters": [[s.adapter_id, scale] for s, scale in target]}
    return hashlib.sha256(json.dumps(body, separators=(",", ":")).encode()).hexdigest()


def materialise(target: Active, cache_dir: Path) -> Path:
    """The PEFT folder of the `cat` merge of `target`, written once under `cache_dir`."""
    out = cache_dir / "compositions" / composition_key(target)[:32]
    if (out / WEIGHTS).is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        config, tensors = cat_merge(target)
        _save(tmp, config, tensors)
        with contextlib.suppress(FileExistsError, OSError):
            os.rename(tmp, out)  # another process may have put the same bytes there first
        fsync_dir(out.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    if not (out / WEIGHTS).is_file():
        raise BackendError(f"could not write the composed adapter into {out.parent}; check "
                           "that the cache folder is writable.")
    return out


def cat_merge(target: Active) -> tuple[dict[str, Any], dict[str, Any]]:
    """The merged adapter_config and tensors (torch, float32) of `target`."""
    import torch

    loaded = [(_config(spec), _tensors(spec), scale) for spec, scale in target]
    modules = sorted({m for _, tensors, _ in loaded for m, _ in tensors})
    shapes = {m: _shape(m, loaded) for m in modules}
    merged: dict[str, Any] = {}
    for module in modules:
        n_in, n_out = shapes[module]
        parts_a, parts_b = [], []
        for config, tensors, scale in loaded:
            rank = int(config["r"])
            a, b = tensors.get((module, "A")), tensors.get((module, "B"))
            factor = scale * _scaling(config)
            parts_a.append(a * factor if a is not None else torch.zeros(rank, n_in))
            parts_b.append(b if b is not None else torch.zeros(n_out, rank))
        merged[f"{module}.lora_A.weight"] = torch.cat(parts_a, dim=0).contiguous()
        merged[f"{module}.lora_B.weight"] = torch.cat(parts_b, dim=1).contiguous()
    rank = sum(int(config["r"]) for config, _, _ in loaded)
    config = {**loaded[0][0], "r": rank, "lora_alpha": rank, "use_rslora": False,
              "rank_pattern": {}, "alpha_pattern": {}, "base_model_name_or_path": None,
              "target_modules": sorted({t for c, _, _ in loaded for t in _targets(c)})}
    return config, merged


def _config(spec: AdapterSpec) -> dict[str, Any]:
    if spec.peft_dir is None:
        raise BackendError(f"adapter {spec.adapter_id} has no PEFT folder to compose.")
    try:
        config = json.loads((spec.peft_dir / CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BackendError(f"adapter {spec.adapter_id}'s {CONFIG} is unreadable ({exc}).") from exc
    if config.get("rank_pattern") or config.get("alpha_pattern") or config.get("use_dora"):
        raise BackendError(f"adapter {spec.adapter_id} has per-module ranks or DoRA, which a "
                           "composition cannot concatenate; compose plain LoRA adapters.")
    return dict(config)


def _scaling(config: dict[str, Any]) -> float:
    rank, alpha = int(config["r"]), float(config["lora_alpha"])
    return alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank


def _targets(config: dict[str, Any]) -> list[str]:
    targets = config.get("target_modules") or []
    return [targets] if isinstance(targets, str) else [str(t) for t in targets]


def _tensors(spec: AdapterSpec) -> dict[tuple[str, str], Any]:
    """(module key, "A"|"B") -> float32 tensor, from the adapter's safetensors only."""
    from safetensors import safe_open

    assert spec.peft_dir is not None  # _config checked it
    out: dict[tuple[str, str], Any] = {}
    with safe_open(str(spec.peft_dir / WEIGHTS), framework="pt") as handle:
        for key in handle.keys():  # noqa: SIM118 (safe_open is not a mapping)
            match = _KEY.match(key)
            if not match:
                raise BackendError(f"adapter {spec.adapter_id} holds tensor {key!r}, which is "
                                   "no LoRA A or B matrix; compose plain LoRA adapters.")
            out[(match["module"], match["ab"])] = handle.get_tensor(key).float()
    return out


def _shape(module: str, loaded: Sequence[tuple[Any, dict[tuple[str, str], Any], float]]
           ) -> tuple[int, int]:
    """(in, out) features of `module`, from the first adapter that has it."""
    for _, tensors, _ in loaded:
        a, b = tensors.get((module, "A")), tensors.get((module, "B"))
        if a is not None and b is not None:
            return int(a.shape[1]), int(b.shape[0])
    raise BackendError(f"module {module} has only one of lora_A/lora_B; an adapter is incomplete.")


def _save(folder: Path, config: dict[str, Any], tensors: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    save_file(tensors, str(folder / WEIGHTS), metadata={"format": "pt"})
    (folder / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n",
                                 encoding="utf-8")
    for name in (WEIGHTS, CONFIG):
        with (folder / name).open("rb") as handle:
            os.fsync(handle.fileno())
    fsync_dir(folder)
