"""Run-time compositions: several stored adapters applied to one request, each at its scale.

Where `rune run --adapter`, `run_with_memory` and `recall_adapter` take an adapter they also
take a composition:

- `project`: the project's stored merge, when one covers every single-session adapter the
  project has for this base (the fittest, then the newest); otherwise every one of those
  adapters, at equal scales summing to 1;
- ids with scales: `4f1c2e9a:0.5,9a0b7d11:0.5` (an id without a scale has scale 1), or the
  same as a JSON list, `[{"adapter_id": "4f1c2e9a", "scale": 0.5}, ...]` or
  `[["4f1c2e9a", 0.5], ...]`.

Each adapter is verified before use, and a composition whose adapters were trained for
different base models is refused in one sentence. How a backend applies one: llama.cpp sums
the adapters' updates with their scales in the same pass (`llama_set_adapters_lora`);
transformers makes them PEFT's active adapters, each layer's scaling set to the adapter's own
times its scale; vLLM serves one adapter per request, so it gets a materialised `cat` merge
(rune_mcp.runtime.catmerge), which is that same sum.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Literal

from rune_mcp.errors import UsageError
from rune_mcp.library.lineage import check_one_base, leaf_ancestors, lineage_of, parents_of
from rune_mcp.library.records import AdapterRecord
from rune_mcp.runtime.base import AdapterSpec, check_base

PROJECT = "project"
MAX_PARTS = 32
_ID = re.compile(r"^[0-9a-fA-F]{6,64}$")
_FORMS = ("'project', ids with scales ('4f1c2e9a:0.5,9a0b7d11:0.5') or a JSON list of "
          "{\"adapter_id\", \"scale\"}")


@dataclass(frozen=True)
class Part:
    """One adapter of a composition as the caller named it: an id or prefix and a scale."""

    adapter: str
    scale: float


@dataclass
class Composition:
    """Verified adapters with their scales; `kind` says where they came from: `merge` (the
    project's stored merge), `sum` (the project's adapters at equal scales) or `given`."""

    kind: Literal["merge", "sum", "given"]
    adapters: list[tuple[AdapterRecord, float]]
    project: str | None = None

    def target(self) -> list[tuple[AdapterSpec, float]]:
        """What a backend applies."""
        return [(AdapterSpec.from_record(record), scale) for record, scale in self.adapters]

    @property
    def value(self) -> str:
        """The `adapter` argument that applies exactly this composition again."""
        return ",".join(f"{record.adapter_id}:{scale:.6g}" for record, scale in self.adapters)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "project": self.project, "adapter": self.value,
                "adapters": [{"adapter_id": r.adapter_id, "scale": s, "task": r.task}
                             for r, s in self.adapters]}


def is_composition(adapter: str) -> bool:
    """Whether an `adapter` argument names a composition rather than one id, auto or none."""
    text = adapter.strip()
    return text == PROJECT or text.startswith("[") or "," in text or ":" in text


def parse_parts(text: str) -> list[Part]:
    """`"4f1c2e:0.5,9a0b7d"` -> `[Part("4f1c2e", 0.5), Part("9a0b7d", 1.0)]`; JSON lists too."""
    text = text.strip()
    items = _json_items(text) if text.startswith("[") else [_pair(p) for p in text.split(",")]
    if not 1 <= len(items) <= MAX_PARTS:
        raise UsageError(f"a composition names 1 to {MAX_PARTS} adapters; got {len(items)}.")
    parts = [_part(adapter, scale) for adapter, scale in items]
    names = [p.adapter.lower() for p in parts]
    if len(set(names)) != len(names):
        raise UsageError("an adapter is named twice in the composition; name each once.")
    return parts


def _pair(piece: str) -> tuple[Any, Any]:
    adapter, _, scale = piece.strip().partition(":")
    return adapter.strip(), scale.strip() or 1.0


def _json_items(text: str) -> list[tuple[Any, Any]]:
    try:
        data = json.loads(text)
    except ValueError:
        raise UsageError(f"the composition is not valid JSON; give {_FORMS}.") from None
    if not isinstance(data, list):
        raise UsageError(f"a JSON composition is a list; give {_FORMS}.")
    items = []
    for item in data:
        if isinstance(item, dict) and set(item) <= {"adapter_id", "scale"} and "adapter_id" in item:
            items.append((item["adapter_id"], item.get("scale", 1.0)))
        elif isinstance(item, list) and len(item) == 2:
            items.append((item[0], item[1]))
        else:
            raise UsageError("each item of a JSON composition is {\"adapter_id\", \"scale\"} "
                             "or [adapter_id, scale].")
    return items


def _part(adapter: Any, scale: Any) -> Part:
    if not isinstance(adapter, str) or not _ID.match(adapter):
        raise UsageError(f"a composition names adapters by id (6 to 64 hex digits); give {_FORMS}.")
    try:
        value = float(scale)
    except (TypeError, ValueError):
        raise UsageError(f"adapter {adapter[:12]} has a scale that is not a number.") from None
    if isinstance(scale, bool) or not math.isfinite(value) or not -4.0 <= value <= 4.0:
        raise UsageError(f"adapter {adapter[:12]} has scale {scale}; scales are finite numbers "
                         "from -4 to 4.")
    return Part(adapter, value)


def given(lib: Any, parts: list[Part], fingerprint: str) -> Composition:
    """The named adapters, verified, of one base, the loaded one."""
    records: list[AdapterRecord] = [lib.get(part.adapter) for part in parts]
    if len({r.adapter_id for r in records}) != len(records):
        raise UsageError("an adapter is named twice in the composition; name each once.")
    _check_bases(records, fingerprint)
    return Composition("given", list(zip(records, [p.scale for p in parts], strict=True)))


def for_project(lib: Any, project: str, fingerprint: str) -> Composition:
    """The project's stored merge covering all its adapters, or all of them at equal scales."""
    everything = {r.adapter_id: r for r in lib.list()}
    mine = [r for r in lib.inventory(project=project).records if r.base_fingerprint == fingerprint]
    singles = [r for r in mine if not parents_of(r)]
    if not singles:
        raise UsageError(f"project {project} has no adapters for the loaded base model; "
                         "remember one of its sessions first.")
    wanted = {r.adapter_id for r in singles}
    merges = [r for r in mine if parents_of(r)
              and leaf_ancestors(everything, r.adapter_id) >= wanted]
    if merges:
        best = max(merges, key=_fitness_then_date)
        return Composition("merge", [(lib.get(best.adapter_id), 1.0)], project)
    verified = [lib.get(r.adapter_id) for r in sorted(singles, key=lambda r: r.created_at)]
    _check_bases(verified, fingerprint)
    return Composition("sum", [(r, 1.0 / len(verified)) for r in verified], project)


def _fitness_then_date(record: AdapterRecord) -> tuple[bool, float, str]:
    lineage = lineage_of(record)
    fitness = lineage.fitness if lineage is not None else None
    return fitness is not None, fitness or 0.0, record.created_at


def _check_bases(records: list[AdapterRecord], fingerprint: str) -> None:
    check_one_base(records)
    for record in records:
        check_base(AdapterSpec.from_record(record), fingerprint)


def project_of_task(lib: Any, task: str, fingerprint: str) -> str:
    """The project of the adapter recall finds for `task`: the project the task belongs to."""
    hits = lib.recall(task, k=1, base_fingerprint=fingerprint)
    if not hits or not hits[0].record.project:
        raise UsageError("adapter 'project' needs a project: pass project, or a task that "
                         "recalls one of the project's adapters.")
    return str(hits[0].record.project)


def compose(lib: Any, adapter: str, fingerprint: str, task: str,
            project: str | None = None) -> Composition:
    """The composition an `adapter` argument names (`is_composition(adapter)` holds)."""
    text = adapter.strip()
    if text == PROJECT:
        return for_project(lib, project or project_of_task(lib, task, fingerprint), fingerprint)
    return given(lib, parse_parts(text), fingerprint)
