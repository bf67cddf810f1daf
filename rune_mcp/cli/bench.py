"""`rune bench ...`: every speed, memory and quality figure Rune reports comes from here.

Each benchmark lives in its own module `rune_mcp.bench.<name>` exposing `register(sub)`, so
anyone can rerun the command that produced a number in the docs.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

BENCH_MODULES = ("parse", "recall", "remember", "runtime", "memory", "perf", "cold", "dataset", "sweep",
                 "general", "merge", "repetition")


def register(sub: Any) -> None:
    bench = sub.add_parser("bench", help="run a benchmark and report its figures")
    # The benchmark modules import numpy and more: only `rune bench ...` loads them.
    bench.fill = lambda: register_benchmarks(bench)


def register_benchmarks(bench: Any) -> None:
    """Add every installed benchmark module's subcommand to the `bench` parser."""
    bench_sub = bench.add_subparsers(dest="bench_command", metavar="BENCHMARK", required=True)
    for name in BENCH_MODULES:
        module_name = f"rune_mcp.bench.{name}"
        if importlib.util.find_spec(module_name) is None:  # not built yet
            continue
        importlib.import_module(module_name).register(bench_sub)
