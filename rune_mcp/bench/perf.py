"""`rune bench perf`: every speed and memory figure in one run, one JSON, one page with plots.

It runs the area benchmarks through their own commands (`rune bench parse`, `recall`,
`runtime`, `remember`, `cold`; each module owns its measurement), collects their JSON, and writes a
Markdown page (`performance.md`) with the machine described, tables and plots. A benchmark
whose module is not installed, or that fails, is reported as such rather than left out
silently. The load average is recorded before and after: on a shared machine it explains
slow figures.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import io
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

from rune_mcp.config import Settings
from rune_mcp.fsutil import atomic_write_text

# (benchmark, its command-line arguments for a JSON answer on stdout)
PARTS: dict[str, list[str]] = {
    "parse": ["--json"],
    "recall": ["--json"],
    "runtime": ["--json"],
    "remember": [],
    "cold": ["--json"],
}
QUICK_ARGS: dict[str, list[str]] = {
    "parse": ["--size-mb", "2", "--repeat", "1"],
    "recall": ["--sizes", "10,100,1000", "--queries", "20"],
    "remember": ["--sizes", "1000,2000"],
    "cold": ["--repeat", "2"],
}


def machine(settings: Settings) -> dict[str, Any]:
    """The machine the figures come from: CPU, cores, memory, GPU, library versions."""
    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "threads": settings.threads,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    with contextlib.suppress(OSError):
        cpu = Path("/proc/cpuinfo").read_text()
        info["cpu"] = next(
            (ln.split(":", 1)[1].strip() for ln in cpu.splitlines() if ln.startswith("model name")), None
        )
    with contextlib.suppress(OSError, ValueError, StopIteration):
        mem = Path("/proc/meminfo").read_text().splitlines()
        info["memory_gib"] = round(
            int(next(ln for ln in mem if ln.startswith("MemTotal")).split()[1]) / 2**20, 1
        )
    for name in ("torch", "llama_cpp", "transformers", "peft", "chromadb"):
        with contextlib.suppress(Exception):
            info[name] = importlib.import_module(name).__version__
    with contextlib.suppress(Exception):
        import torch

        info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return info


def run_part(name: str, extra: list[str], settings: Settings) -> dict[str, Any]:
    """Run `rune bench <name> ...` in this process; its JSON answer, or why there is none."""
    module_name = f"rune_mcp.bench.{name}"
    if importlib.util.find_spec(module_name) is None:
        return {"status": "missing", "reason": f"{module_name} is not installed"}
    parser = argparse.ArgumentParser(prog="rune bench")
    sub = parser.add_subparsers(dest="bench_command")
    importlib.import_module(module_name).register(sub)
    args = parser.parse_args([name, *PARTS[name], *extra])
    out = io.StringIO()
    start = time.perf_counter()
    try:
        with contextlib.redirect_stdout(out):
            rc = int(args.func(args, settings))
    except Exception as exc:  # one failing benchmark must not hide the others' figures
        return {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"}
    seconds = round(time.perf_counter() - start, 1)
    text = out.getvalue()
    try:
        data = json.loads(text[text.index("{") :])
    except ValueError:
        return {"status": "failed", "reason": f"exit {rc}; no JSON in its output", "output": text[-500:]}
    return {"status": "ok" if rc == 0 else f"exit {rc}", "seconds": seconds, "data": data}


def run_perf(settings: Settings, quick: bool, only: list[str] | None = None) -> dict[str, Any]:
    before = os.getloadavg()[0]
    parts = {}
    for name in only or list(PARTS):
        print(f"rune: bench {name}...", file=sys.stderr, flush=True)
        parts[name] = run_part(name, QUICK_ARGS.get(name, []) if quick else [], settings)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "machine": machine(settings),
        "quick": quick,
        "load_average": {"before": round(before, 2), "after": round(os.getloadavg()[0], 2)},
        "peak_rss_mb": round(peak, 1),
        "parts": parts,
    }


def register(sub: Any) -> None:
    p = sub.add_parser("perf", help="all speed and memory figures (parse, recall, runtime, remember, cold)")
    p.add_argument("--json", type=Path, help="write the combined JSON here")
    p.add_argument("--report", type=Path, help="write performance.md and its plots into this folder")
    p.add_argument("--quick", action="store_true", help="smaller sizes, for a first look")
    p.add_argument("--only", help="comma-separated subset of: " + ",".join(PARTS))
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from rune_mcp.bench.perfreport import write_performance
    from rune_mcp.errors import UsageError

    only = [x.strip() for x in args.only.split(",")] if args.only else None
    if only and set(only) - set(PARTS):
        raise UsageError(f"--only takes names among {', '.join(PARTS)}; got {args.only}.")
    data = run_perf(settings, args.quick, only)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.json, json.dumps(data, indent=1, default=str) + "\n")
    if args.report:
        page = write_performance(data, args.report, " ".join(["rune bench perf", *sys.argv[3:]]))
        print(f"wrote {page}", file=sys.stderr)
    print(json.dumps({k: v["status"] for k, v in data["parts"].items()}))
    return 0
