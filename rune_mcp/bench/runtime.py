"""`rune bench runtime`: what memory costs at inference time on this machine.

Measures, on the configured base model: the cold load of an adapter (GGUF -> llama.cpp) and a
warm swap between two loaded adapters (ms); generation speed with and without an adapter
(tokens/s and their ratio, target >= 0.9); llama.cpp against transformers on the CPU, same
prompt, one run each; and resident memory with 1, 10 and 100 adapters in the cache.

The adapters are real LoRA adapters of the base with the distillation settings' rank and
target modules (`lora_rank`, `target_modules`) and seeded random weights: speed and memory
do not depend on what an adapter learned. They are written to a temporary folder and removed afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from rune_mcp.config import Settings

RUNS = 7  # generations per condition; the median is reported
PROMPT = [{"role": "user", "content": "Write a Python function that parses an ISO 8601 date "
                                      "string and returns a datetime, with a docstring."}]


def register(sub: Any) -> None:
    p = sub.add_parser("runtime", help="time adapter swaps, generation speed and adapter memory")
    p.add_argument("--json", nargs="?", const="-", metavar="OUT",
                   help="write JSON to OUT (or stdout when OUT is omitted)")
    p.add_argument("--tokens", type=int, default=128, help="tokens per generation (default 128)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: setting)")
    p.add_argument("--adapters", type=int, default=100,
                   help="adapters for the memory figure (default 100)")
    p.add_argument("--skip-transformers", action="store_true",
                   help="skip the llama.cpp vs transformers comparison")
    p.set_defaults(func=run)


def settled_rss() -> float:
    """Resident MiB after freed heap pages go back to the system (only live memory counts)."""
    from rune_mcp.runtime.base import rss_mb

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: free pages stay counted
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    return rss_mb()


def make_adapters(settings: Settings, base: Any, folder: Path, count: int) -> list[Any]:
    """`count` distinct adapters: one real PEFT export, then seeded GGUF variants of it."""
    import numpy as np

    from rune_mcp.basemodel import ensure_derived
    from rune_mcp.distill.gguf import export_gguf
    from rune_mcp.runtime.base import AdapterSpec

    peft_dir = _random_peft(settings, ensure_derived(settings, base, quiet=True), folder / "peft")
    first = export_gguf(peft_dir, base, folder / "a0.gguf")
    specs = [AdapterSpec("bench-0", base.fingerprint, peft_dir, first)]
    rng = np.random.default_rng(0)
    for i in range(1, count):
        path = _gguf_variant(first, folder / f"a{i}.gguf", rng)
        specs.append(AdapterSpec(f"bench-{i}", base.fingerprint, None, path))
    return specs


def _random_peft(settings: Settings, derived: Path, out: Path) -> Path:
    import warnings

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(derived), dtype=torch.float32)
    torch.manual_seed(0)  # PEFT draws A from the global generator
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # peft vs transformers 5 renames
        config = LoraConfig(r=settings.lora_rank, lora_alpha=settings.lora_alpha,  # type: ignore[arg-type]
                            target_modules=list(settings.target_modules))
        peft_model = get_peft_model(model, config)
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for name, param in peft_model.named_parameters():
                if "lora_B" in name:
                    param.copy_(torch.randn(param.shape, generator=gen) * 0.02)
        peft_model.save_pretrained(str(out), safe_serialization=True)
    return out


def _gguf_variant(src: Path, dst: Path, rng: Any) -> Path:
    import gguf
    import numpy as np

    reader = gguf.GGUFReader(str(src))
    writer = gguf.GGUFWriter(str(dst), str(reader.fields["general.architecture"].contents()))
    writer.add_type("adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", float(reader.fields["adapter.lora.alpha"].contents()))
    for tensor in reader.tensors:
        data = np.asarray(tensor.data, dtype=np.float32)
        noisy = data + rng.normal(0, 0.001, data.shape).astype(np.float32)
        writer.add_tensor(tensor.name, noisy.astype(np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dst


def _median_ms(fn: Any, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def measure_llamacpp(settings: Settings, base: Any, specs: list[Any], tokens: int) -> dict[str, Any]:
    from rune_mcp.runtime.llamacpp import LlamaCppBackend

    rss_start = settled_rss()
    llm = LlamaCppBackend(settings, base)
    out: dict[str, Any] = {"base_load_ms": round(llm.load_ms, 1)}
    rss_base = settled_rss()
    out["rss_base_mb"] = round(rss_base, 1)
    out["rss_model_mb"] = round(rss_base - rss_start, 1)
    cold = [llm.activate([spec]) for spec in specs[:10]]
    out["cold_load_ms"] = round(statistics.median(cold), 2)
    a, b = specs[0], specs[1]
    flip = iter(range(10**9))
    out["warm_swap_ms"] = round(_median_ms(
        lambda: llm.apply_now([a] if next(flip) % 2 else [b]), 1000), 4)
    out["activate_ms"] = round(_median_ms(lambda: llm.activate([a]), 1000), 4)
    llm.generate(PROMPT, max_tokens=8)  # warm-up
    base_tps, lora_tps = [], []
    for _ in range(RUNS):  # alternate so drift in machine load hits both alike
        base_tps.append(llm.generate(PROMPT, max_tokens=tokens, adapters=()).timings)
        lora_tps.append(llm.generate(PROMPT, max_tokens=tokens, adapters=[a]).timings)
    out["tokens_per_s_base"] = round(statistics.median(t["tokens_per_s"] for t in base_tps), 1)
    out["tokens_per_s_adapter"] = round(statistics.median(t["tokens_per_s"] for t in lora_tps), 1)
    out["adapter_speed_ratio"] = round(out["tokens_per_s_adapter"] / out["tokens_per_s_base"], 3)
    out["prompt_ms_base"] = round(statistics.median(t["prompt"] for t in base_tps), 1)
    out["prompt_ms_adapter"] = round(statistics.median(t["prompt"] for t in lora_tps), 1)
    out["rss_mb_by_cached_adapters"] = _memory(llm, specs, rss_base)
    llm.close()
    return out


def _memory(llm: Any, specs: list[Any], rss_base: float) -> dict[str, float]:
    llm.deactivate()
    llm._cache.clear()  # start from an empty cache
    figures: dict[str, float] = {}
    for n in (1, 10, 100):
        if n > len(specs):
            break
        for spec in specs[:n]:
            llm.activate([spec])
        rss = settled_rss()
        figures[str(n)] = round(rss, 1)
        figures[f"{n}_over_base"] = round(rss - rss_base, 1)
    return figures


def measure_transformers(settings: Settings, base: Any, tokens: int) -> dict[str, Any]:
    from rune_mcp.runtime.transformers import TransformersBackend

    hf = TransformersBackend(settings, base, device="cpu")
    hf.generate(PROMPT, max_tokens=4)  # warm-up
    timings = hf.generate(PROMPT, max_tokens=tokens, adapters=()).timings
    return {"load_ms": round(hf.load_ms, 1), "tokens_per_s": round(timings["tokens_per_s"], 1),
            "prompt_ms": round(timings["prompt"], 1)}


def run(args: argparse.Namespace, settings: Settings) -> int:
    import json
    import os
    import sys

    from rune_mcp.basemodel import resolve_base
    from rune_mcp.cli.output import emit_json
    from rune_mcp.fsutil import atomic_write_json

    if args.threads:
        settings = settings.with_overrides(threads=args.threads)
    settings = settings.with_overrides(adapter_cache_mb=max(settings.adapter_cache_mb, 2048))
    base = resolve_base(settings)
    result: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "threads": settings.threads,
                                          "base": base.name, "tokens": args.tokens}}
    with tempfile.TemporaryDirectory(prefix="rune-bench-runtime-") as tmp:
        specs = make_adapters(settings, base, Path(tmp), max(2, args.adapters))
        result["llamacpp"] = measure_llamacpp(settings, base, specs, args.tokens)
    if not args.skip_transformers:
        hf = measure_transformers(settings, base, min(args.tokens, 64))
        result["transformers_cpu"] = hf
        result["llamacpp_vs_transformers_speed"] = round(
            result["llamacpp"]["tokens_per_s_base"] / max(hf["tokens_per_s"], 1e-9), 1)
    if args.json == "-":
        emit_json(result)
    else:
        if args.json:
            atomic_write_json(Path(args.json), result)
        print(json.dumps(result, indent=2), file=sys.stderr if args.json else sys.stdout)
    return 0
