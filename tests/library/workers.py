"""Child-process bodies for the multi-process and crash tests.

They run in processes forked from a forkserver that has already imported Rune and Chroma, so
starting one costs milliseconds; they use a `TableEmbedder` (real vectors computed by the
parent) so no child loads the embedding model.
"""

from __future__ import annotations

import os
from pathlib import Path

from helpers.embedding import TableEmbedder
from helpers.tiny import adapter_meta

from rune_mcp.config import load_settings
from rune_mcp.library import Library

PRELOAD = ["rune_mcp.library", "rune_mcp.library.library", "helpers.embedding", "chromadb",
           "chromadb.api.rust"]


def task_text(n: int) -> str:
    """Task wording for adapter `n`; 40 distinct texts, so the parent embeds few."""
    topics = ["database timeout", "login redirect", "csv export", "image resize", "dark mode",
              "flaky test", "memory leak", "slow query"]
    return f"fix the {topics[n % 8]} problem in service {n % 5}"


def _library(env: dict[str, str], table: str) -> Library:
    # The forkserver started with the environment of its time: set this test's explicitly.
    os.environ.pop("RUNE_CHROMA_URL", None)
    os.environ.update(env)
    return Library.open(load_settings(), embedder=TableEmbedder.load(Path(table)))


def add_many(env: dict[str, str], table: str, sources: list[str], first: int, count: int) -> None:
    """Add adapters `first` .. `first + count - 1`, cycling through the source folders."""
    lib = _library(env, table)
    for n in range(first, first + count):
        lib.add(Path(sources[n % len(sources)]), None, adapter_meta(n, task=task_text(n)))


def read_loop(env: dict[str, str], table: str, rounds: int, errors: str) -> None:
    """List, load and recall while writers work; append anything unexpected to `errors`."""
    from helpers.tiny import FAKE_BASE

    lib = _library(env, table)
    problems = []
    for i in range(rounds):
        try:
            for record in lib.list():
                lib.get(record.adapter_id)  # digests must always match: no torn adapter
            lib.recall(task_text(i), k=3, min_similarity=-1.0, base_fingerprint=FAKE_BASE)
        except Exception as exc:  # the test reports whatever went wrong
            problems.append(f"{type(exc).__name__}: {exc}")
    Path(errors).write_text("\n".join(problems))
