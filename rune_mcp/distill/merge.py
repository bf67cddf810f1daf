"""Stored compositions: several adapters merged by PEFT into one, exported, stored with lineage.

PEFT's `add_weighted_adapter` merges on the derived transformers form of the base (loaded on
CPU in float32; only the LoRA layers are computed on), the result is exported to GGUF like
any trained adapter and stored in the library, its manifest naming its parents and recipe
(rune_mcp.library.lineage). What each method does, in PEFT's own terms:

- `cat`: the parents' A and B stacked (rank = the sum of ranks, each parent's scale folded
  into its A), so the merge is exactly the weighted sum of the parents' updates: the same as
  applying the parents at those scales at run time.
- `svd`: the weighted sum of the updates, cut back by SVD to the largest parent rank (exact
  when the sum has no higher rank).
- `linear`: A and B averaged separately (the square root of each weight on each side); all
  parents need one rank, and the product has cross terms (B1 A2, B2 A1), so it is not the sum.
- `ties`, `dare_ties`, `dare_linear`: as `linear`, with TIES trimming to `density` and sign
  election, or DARE's random drop to `density` and rescale; one rank needed. DARE is seeded
  (the `seed` setting), so the same merge gives the same adapter.

Merging is never automatic: interference between independently trained adapters is real, so
a merge is made when asked for, and is stored with whatever fitness it was chosen by.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rune_mcp.basemodel import BaseModelInfo, ensure_derived, resolve_base
from rune_mcp.config import Settings
from rune_mcp.errors import LibraryError, UsageError
from rune_mcp.library.lineage import (
    EQUAL_RANK_METHODS,
    RANDOM_METHODS,
    Lineage,
    check_one_base,
    check_recipe,
    merge_meta,
)
from rune_mcp.library.records import AdapterRecord
from rune_mcp.runtime.base import AdapterSpec, check_base

log = logging.getLogger(__name__)
MERGED = "merged"
CONFIG = "adapter_config.json"


@dataclass(frozen=True)
class MergeResult:
    """The stored merge and how long merging, exporting and storing took."""

    record: AdapterRecord
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"adapter_id": self.record.adapter_id, "task": self.record.task,
                "method": self.record.method, "parents": self.record.manifest["parents"],
                "seconds": round(self.seconds, 3)}


def merge_adapters(
    settings: Settings,
    ids: Sequence[str],
    method: str,
    weights: Sequence[float] | None = None,
    density: float | None = None,
    fitness: float | None = None,
    library: Any = None,
) -> MergeResult:
    """Merge the adapters `ids` (full ids or unique prefixes) by `method` with `weights`
    (default: equal, summing to 1) into one stored adapter; returns it. Storing the same
    merge again returns the adapter already stored."""
    from rune_mcp.library import Library

    start = time.perf_counter()
    lib = library if library is not None else Library.open(settings)
    parents = _parents(lib, ids)
    chosen = [float(w) for w in weights] if weights is not None else [1 / len(parents)] * len(parents)
    check_recipe(method, chosen, density, len(parents))
    check_one_base(parents)
    info = resolve_base(settings)
    for parent in parents:  # merging runs on the configured base: it must be theirs
        check_base(AdapterSpec.from_record(parent), info.fingerprint)
    _check_ranks(method, parents)
    lineage = Lineage(method=method, weights=chosen,  # type: ignore[arg-type]
                      density=None if density is None else float(density),
                      seed=settings.seed if method in RANDOM_METHODS else None,
                      fitness=None if fitness is None else float(fitness))
    with tempfile.TemporaryDirectory(prefix="rune-merge-") as tmp:
        peft_dir = _merge(settings, info, parents, lineage, Path(tmp))
        gguf = _export(peft_dir, info, Path(tmp) / "adapter.gguf")
        config = json.loads((peft_dir / CONFIG).read_text(encoding="utf-8"))
        meta = merge_meta(parents, lineage, int(config["r"]), float(config["lora_alpha"]),
                          list(config.get("target_modules") or []), time.perf_counter() - start)
        record = lib.add(peft_dir, gguf, meta)
    log.info("merged %d adapters (%s) into %s", len(parents), method, record.adapter_id[:12])
    return MergeResult(record, time.perf_counter() - start)


def _parents(lib: Any, ids: Sequence[str]) -> list[AdapterRecord]:
    """The parents, verified (a damaged one is refused), each named once."""
    parents: list[AdapterRecord] = [lib.get(adapter_id) for adapter_id in ids]
    seen: set[str] = set()
    for parent in parents:
        if parent.adapter_id in seen:
            raise UsageError(f"adapter {parent.adapter_id[:12]} is named twice; name each "
                             "adapter of a merge once.")
        seen.add(parent.adapter_id)
    return parents


def peft_rank(record: AdapterRecord) -> int:
    """The rank in the adapter's own PEFT config (the largest, with per-module ranks)."""
    config = json.loads((record.peft_dir / CONFIG).read_text(encoding="utf-8"))
    pattern = config.get("rank_pattern") or {}
    return max([int(config.get("r", 8)), *(int(r) for r in pattern.values())])


def _check_ranks(method: str, parents: Sequence[AdapterRecord]) -> None:
    if method not in EQUAL_RANK_METHODS:
        return
    ranks = [peft_rank(p) for p in parents]
    if len(set(ranks)) > 1:
        raise UsageError(f"the {method} merge needs adapters of one rank, and these have ranks "
                         f"{', '.join(map(str, ranks))}; use --method cat or svd.")


def _merge(settings: Settings, info: BaseModelInfo, parents: Sequence[AdapterRecord],
           lineage: Lineage, tmp: Path) -> Path:
    """PEFT's weighted merge of the parents, saved as a PEFT folder under `tmp`."""
    import torch
    from peft import PeftModel

    model = load_float32_base(ensure_derived(settings, info, quiet=True))
    names = [f"parent{i}" for i in range(len(parents))]
    try:
        with warnings.catch_warnings():
            # peft calls a transformers method that transformers 5 has renamed.
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing",
                                    category=FutureWarning)
            peft: Any = PeftModel.from_pretrained(model, str(parents[0].peft_dir),
                                                  adapter_name=names[0], is_trainable=False)
            for name, parent in zip(names[1:], parents[1:], strict=True):
                peft.load_adapter(str(parent.peft_dir), adapter_name=name, is_trainable=False)
            torch.manual_seed(lineage.seed or 0)  # DARE's drop is random
            peft.add_weighted_adapter(names, list(lineage.weights), MERGED,
                                      combination_type=lineage.method, density=lineage.density)
            peft.save_pretrained(str(tmp / "peft"), selected_adapters=[MERGED],
                                 safe_serialization=True)
    except (ValueError, RuntimeError, KeyError) as exc:
        raise LibraryError(f"PEFT could not merge these adapters ({exc}); check that they "
                           "were trained for this base model.") from exc
    out = tmp / "peft" / MERGED
    _normalise_config(out / CONFIG)
    return out


def load_float32_base(folder: Path) -> Any:
    """The derived base in float32 on CPU, without a weight-loading bar on the terminal."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as transformers_logging

    hf_logging: Any = transformers_logging  # its helpers are untyped
    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        return AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    finally:
        if bar:
            hf_logging.enable_progress_bar()


def _normalise_config(path: Path) -> None:
    """PEFT folds every parent's scale into the merged weights and means the merge to apply at
    scale 1 (alpha = r); an rsLoRA flag copied from a parent would make that sqrt(r), so it is
    cleared. The local path of the derived base is dropped: the same merge made on another
    machine then has the same bytes, and so the same id."""
    config = json.loads(path.read_text(encoding="utf-8"))
    config.update({"lora_alpha": config["r"], "use_rslora": False,
                   "base_model_name_or_path": None})
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _export(peft_dir: Path, info: BaseModelInfo, out: Path) -> Path:
    from rune_mcp.distill.gguf import export_gguf

    return export_gguf(peft_dir, info, out)
