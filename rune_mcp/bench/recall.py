"""`rune bench recall`: recall latency (embedding + index query) as the library grows.

It builds a throw-away library in a temporary folder, grows it to each requested size and
times `Library.recall` for a set of task phrasings never stored: embedding the task, querying
the index (embedded Chroma, or the server in `chroma_url`), and reading the hits' manifests.
It also times adding the index records themselves (the target sizes summed, e.g. 10,000).

What is synthetic, and why: the adapter folders are written with the store's own manifest
code but without fsync (durability is not what is measured, and 10,000 fsynced writes take
minutes), and their weights are one small file; the stored task vectors are real embeddings
of 500 generated task texts, each reused with a little noise so every record is distinct.
Target: p95 <= 15 ms at 10,000 adapters on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from rune_mcp.config import Settings

BENCH_BASE = "b" * 64
_VERBS = ["fix", "add", "refactor", "speed up", "debug", "write tests for", "document", "remove"]
_THINGS = ["login redirect", "csv export", "database pool", "image resize", "rate limiter",
           "search endpoint", "payment webhook", "cache invalidation", "config loader",
           "websocket reconnect", "pdf report", "email queue", "feature flag", "dark mode"]
_WHERE = ["in the api", "in the cli", "in the worker", "in the admin page", "for mobile",
          "in the scheduler", "in the importer"]
_QUERIES = [
    "the login page keeps redirecting in a loop", "csv download is missing the header row",
    "database connections time out under load", "thumbnails come out blurry",
    "requests get rejected by the rate limiter too early", "search returns stale results",
    "stripe webhook signature check fails", "cache is not cleared after an update",
    "settings file is ignored when an env var is set", "socket drops and never reconnects",
]


def _task(rng: random.Random) -> str:
    return f"{rng.choice(_VERBS)} the {rng.choice(_THINGS)} {rng.choice(_WHERE)}"


def _write_fast(root: Path, weights: bytes, config: bytes, n: int, task: str) -> None:
    """One valid adapter folder (it verifies), written without fsync for the benchmark."""
    import hashlib

    from rune_mcp.library.manifest import (
        MANIFEST,
        PEFT_CONFIG,
        PEFT_WEIGHTS,
        build_manifest,
        normalize_meta,
    )

    files = {
        PEFT_CONFIG: {"sha256": hashlib.sha256(config).hexdigest(), "size": len(config)},
        PEFT_WEIGHTS: {"sha256": hashlib.sha256(weights).hexdigest(), "size": len(weights)},
    }
    meta = normalize_meta({"base_fingerprint": BENCH_BASE, "task": task,
                           "trajectory_id": f"{n:064x}", "session_id": f"bench-{n}",
                           "project": f"/bench/project-{n % 20}"})
    manifest = build_manifest(meta, files, "2026-01-01T00:00:00.000Z")
    folder = root / manifest["adapter_id"]
    folder.mkdir(parents=True)
    (folder / PEFT_CONFIG).write_bytes(config)
    (folder / PEFT_WEIGHTS).write_bytes(weights)
    (folder / MANIFEST).write_text(json.dumps(manifest))


def _tiny_peft_files() -> tuple[bytes, bytes]:
    from safetensors.numpy import save

    tensors = {"base_model.model.layers.0.q_proj.lora_A.weight": np.zeros((4, 16), np.float32),
               "base_model.model.layers.0.q_proj.lora_B.weight": np.zeros((16, 4), np.float32)}
    config = json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8,
                         "target_modules": ["q_proj"]}).encode()
    return save(tensors), config


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {"p50_ms": round(pick(0.50) * 1e3, 2), "p95_ms": round(pick(0.95) * 1e3, 2),
            "mean_ms": round(statistics.fmean(ordered) * 1e3, 2)}


def run_bench(settings: Settings, sizes: list[int], queries: int) -> dict[str, Any]:
    from rune_mcp.library import Library
    from rune_mcp.library.embed import get_embedder
    from rune_mcp.library.library import Library as _Library
    from rune_mcp.runtime.base import rss_mb

    embedder = get_embedder(settings)
    rng = random.Random(0)
    pool_texts = [_task(rng) for _ in range(500)]
    pool = np.asarray(embedder.embed(pool_texts), dtype=np.float32)
    before, start = rss_mb(), time.perf_counter()
    embedder.embed(["build the query path"])  # the first query builds the fast path
    query_path = {
        "kind": getattr(embedder, "query_path", "eager"),
        "first_query_s": round(time.perf_counter() - start, 4),  # ms: it may be built already
        "rss_added_mb": round(rss_mb() - before, 1),
    }
    weights, config = _tiny_peft_files()
    results: dict[str, Any] = {"sizes": [], "queries_per_size": queries, "query_path": query_path}
    with tempfile.TemporaryDirectory(prefix="rune-bench-recall-") as tmp:
        lib: _Library = Library.open(settings.with_overrides(home=Path(tmp)), embedder=embedder)
        index = lib._open_index()
        nprng = np.random.default_rng(0)
        have, add_seconds = 0, 0.0
        for size in sorted(sizes):
            entries = []
            for n in range(have, size):
                text = pool_texts[n % len(pool_texts)]
                _write_fast(lib.root, weights, config, n, text)
            for record in (lib.store.read(i) for i in lib.store.ids()):
                if int(record.trajectory_id or "0", 16) < have:
                    continue
                n = int(record.trajectory_id or "0", 16)
                vector = pool[n % len(pool)] + nprng.normal(0, 0.02, pool.shape[1])
                vector /= np.linalg.norm(vector)
                entries.append(_Library._entry(record, [float(x) for x in vector]))
            start = time.perf_counter()
            for at in range(0, len(entries), 1000):
                index.upsert(entries[at : at + 1000])
            add_seconds += time.perf_counter() - start
            have = size
            results["sizes"].append(_time_recall(lib, embedder, size, queries))
        results["index_add_seconds_total"] = round(add_seconds, 2)
        results["index_records_added"] = have
    return results


def _time_recall(lib: Any, embedder: Any, size: int, queries: int) -> dict[str, Any]:
    texts = [f"{_QUERIES[i % len(_QUERIES)]} ({i})" for i in range(queries + 5)]
    for text in texts[:5]:  # warm-up: first query loads and caches everything
        lib.recall(text, k=3, min_similarity=-1.0, base_fingerprint=BENCH_BASE)
    total, embed_only, eager_only = [], [], []
    for text in texts[5:]:
        start = time.perf_counter()
        embedder.embed([text])
        embed_only.append(time.perf_counter() - start)
        start = time.perf_counter()
        hits = lib.recall(text, k=3, min_similarity=-1.0, base_fingerprint=BENCH_BASE)
        total.append(time.perf_counter() - start)
        assert hits, "recall returned nothing from a full index"
    eager: Any = getattr(embedder, "embed_eager", None)
    for text in texts[5:] if eager is not None else []:
        # The PyTorch path on the same texts, for the ratio; a loop of its own because its
        # threads keep spinning a moment after each call and would slow the recall timed next.
        start = time.perf_counter()
        eager([text])
        eager_only.append(time.perf_counter() - start)
    row = {"adapters": size, "recall": _percentiles(total), "embedding": _percentiles(embed_only)}
    if eager_only:
        row["embedding_eager"] = _percentiles(eager_only)
    return row


def register(sub: Any) -> None:
    p = sub.add_parser("recall", help="time recall (embedding + query) at growing library sizes")
    p.add_argument("--sizes", default="10,100,1000,10000", help="library sizes (comma-separated)")
    p.add_argument("--queries", type=int, default=100, help="timed recalls per size")
    p.add_argument("--json", nargs="?", const="-", metavar="OUT",
                   help="write JSON to OUT (stdout when OUT is omitted)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from rune_mcp.cli.output import emit_json
    from rune_mcp.errors import UsageError

    try:
        sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    except ValueError as exc:
        raise UsageError(f"--sizes must be comma-separated integers, got {args.sizes!r}.") from exc
    if not sizes or sizes[0] < 1 or args.queries < 1:
        raise UsageError("--sizes needs positive sizes and --queries a positive count.")
    result = run_bench(settings, sizes, args.queries)
    result.update({"cpu_count": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2),
                   "index": "server " + settings.chroma_url if settings.chroma_url else "embedded",
                   "target_p95_ms_at_10000": 15.0})
    if args.json == "-":
        emit_json(result)
    else:
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        q = result["query_path"]
        print(f"query path: {q['kind']}, built by the first query in {q['first_query_s']} s, "
              f"+{q['rss_added_mb']} MB resident")
        for row in result["sizes"]:
            r, e = row["recall"], row["embedding"]
            eager = row.get("embedding_eager")
            versus = f"; PyTorch path p50 {eager['p50_ms']} ms, p95 {eager['p95_ms']} ms" if eager else ""
            print(f"{row['adapters']:>6} adapters: recall p50 {r['p50_ms']} ms, p95 {r['p95_ms']}"
                  f" ms (embedding alone p50 {e['p50_ms']} ms, p95 {e['p95_ms']} ms{versus})")
        print(f"adding {result['index_records_added']} index records took "
              f"{result['index_add_seconds_total']} s; load average {result['load_avg_1m']} on "
              f"{result['cpu_count']} cores; target p95 <= 15 ms at 10,000")
    return 0
