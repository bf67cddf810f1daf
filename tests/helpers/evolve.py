"""Adapters whose fitness is known by construction, trained for real on the tiny llama base.

Each lesson is a question whose answer names one call. Trained for real (the project's own
`train_adapter` on the tiny base's derived form, exported to GGUF by the project's export), a
LoRA adapter answers its own question with that call, and the bare base answers noise:

- `own_adapters`: one adapter per lesson, each trained on its own lesson only: the right
  adapter for a lesson answers it, the other does not;
- `split_adapters`: one rank-16 adapter trained on both lessons, cut into its two rank-8
  halves (LoRA's update is a sum over rank components, so the halves applied together at
  scale 1 are exactly the whole): alone, a half answers neither lesson; together they answer
  both. A composition then truly beats every single adapter, which is what an evolve run has
  to find.

Each stored adapter holds one lesson as its self-probe, as a remembered session would.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from helpers.tiny import adapter_meta
from rune_mcp.basemodel import BaseModelInfo, ensure_derived
from rune_mcp.config import Settings
from rune_mcp.distill.gguf import export_gguf
from rune_mcp.distill.lessons import Example
from rune_mcp.distill.selfprobes import key_spans
from rune_mcp.library.selfprobes import SELF_PROBES, SelfProbe, write_self_probes

LESSONS = (
    ("Which call posts the totals in harbor?", "Use `book.commit_totals(totals)`."),
    ("Which call reads the tide cache in harbor?", "Use `cache.fetch_entry(port)`."),
)
RANK = 16


def evolve_settings(settings: Settings) -> Settings:
    """Training that lets the tiny model take a lesson in, and a small, quick search."""
    return settings.with_overrides(
        train_steps=400, learning_rate=1e-2, lora_rank=RANK, lora_alpha=2.0 * RANK,
        lessons_rehearsal=False, context_size=512, evolve_generations=4,
        evolve_drift_tokens=256, evolve_answer_tokens=24)


def probe(lesson: tuple[str, str]) -> SelfProbe:
    question, answer = lesson
    return SelfProbe(question=question, answer=answer, key_spans=key_spans(question, answer))


def train(settings: Settings, info: BaseModelInfo, lessons: tuple[tuple[str, str], ...],
          out: Path) -> Path:
    """A LoRA adapter of the tiny base trained on `lessons`; its PEFT folder."""
    from rune_mcp.distill.remember import get_loaded
    from rune_mcp.distill.train import train_adapter

    ensure_derived(settings, info, quiet=True)
    loaded = get_loaded(settings, info, "lora")
    examples = [Example("qa", q, a, 1.0) for q, a in lessons]
    train_adapter(settings, examples, loaded, out)
    return out


def split_rank(peft: Path, outs: tuple[Path, Path]) -> tuple[Path, Path]:
    """The adapter at `peft` cut into its first and second halves of rank components, each
    with alpha halved, so that its scaling alpha/r stays that of the whole."""
    from safetensors.numpy import load_file, save_file

    config = json.loads((peft / "adapter_config.json").read_text())
    tensors = load_file(str(peft / "adapter_model.safetensors"))
    half = int(config["r"]) // 2
    for i, out in enumerate(outs):
        cut = slice(i * half, (i + 1) * half)
        part = {name: (value[cut] if "lora_A" in name else value[:, cut] if "lora_B" in name
                       else value).copy() for name, value in tensors.items()}
        out.mkdir(parents=True, exist_ok=True)
        save_file(part, str(out / "adapter_model.safetensors"))
        (out / "adapter_config.json").write_text(json.dumps(
            {**config, "r": half, "lora_alpha": float(config["lora_alpha"]) / 2}))
    return outs


def store(lib: Any, info: BaseModelInfo, peft: Path, n: int, probes: list[SelfProbe],
          project: str, task: str) -> str:
    """Export the adapter at `peft`, store it with `probes` as its self-probes; its id."""
    config = json.loads((peft / "adapter_config.json").read_text())
    gguf = export_gguf(peft, info, peft.parent / f"{peft.name}.gguf")
    probes_file = write_self_probes(peft.parent / f"{peft.name}-{SELF_PROBES}", probes)
    meta = adapter_meta(n, task=task, base=info.fingerprint, rank=int(config["r"]),
                        alpha=float(config["lora_alpha"]),
                        target_modules=sorted(config["target_modules"]), project=project)
    return str(lib.add(peft, gguf, meta, probes_file).adapter_id)


def own_adapters(lib: Any, settings: Settings, info: BaseModelInfo, folder: Path,
                 project: str) -> list[str]:
    """One adapter per lesson, trained on it alone (see the module docstring)."""
    ids = []
    for i, lesson in enumerate(LESSONS):
        peft = train(settings, info, (lesson,), folder / f"own-{i}")
        ids.append(store(lib, info, peft, 100 + i, [probe(lesson)], project, lesson[0]))
    return ids


def split_adapters(lib: Any, settings: Settings, info: BaseModelInfo, folder: Path,
                   project: str) -> list[str]:
    """The two halves of one adapter trained on both lessons (see the module docstring)."""
    whole = train(settings, info, LESSONS, folder / "whole")
    halves = split_rank(whole, (folder / "half-0", folder / "half-1"))
    return [store(lib, info, peft, 200 + i, [probe(LESSONS[i])], project, LESSONS[i][0])
            for i, peft in enumerate(halves)]
