"""Several processes on one library, and a writer killed with SIGKILL at random points."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import random
import signal
import time
from collections import Counter
from multiprocessing.context import ForkServerContext
from pathlib import Path

import pytest
from helpers.embedding import TableEmbedder
from helpers.tiny import FAKE_BASE, adapter_variant

from rune_mcp.config import Settings
from rune_mcp.library import Library
from rune_mcp.library.embed import Embedder

from .workers import PRELOAD, add_many, read_loop, task_text


@pytest.fixture(scope="module")
def ctx() -> ForkServerContext:
    """Children fork from a server that has already imported Rune and Chroma."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    assert isinstance(context, ForkServerContext)
    return context


@pytest.fixture
def table(tmp_path: Path, real_embedder: Embedder) -> str:
    texts = [task_text(n) for n in range(40)]
    return str(TableEmbedder.build(real_embedder, texts).save(tmp_path / "table.json"))


@pytest.fixture
def sources(tmp_path: Path, adapter_src: Path) -> list[str]:
    return [str(adapter_variant(adapter_src, tmp_path / f"src-{i}", i)) for i in range(5)]


def _env(settings: Settings) -> dict[str, str]:
    env = {"RUNE_HOME": str(settings.home)}
    if settings.chroma_url:
        env["RUNE_CHROMA_URL"] = settings.chroma_url
    return env


def _check_agreement(lib: Library, expected: int) -> None:
    """All adapters whole, index == manifests, and each task finds exactly its adapters."""
    ids = lib.store.ids()
    assert len(ids) == expected
    assert lib.verify() == []
    assert lib.index_ids() == set(ids)
    by_task = Counter(r.task for r in lib.list())
    for text, count in by_task.items():
        hits = lib.recall(text, k=100, min_similarity=0.999, base_fingerprint=FAKE_BASE)
        assert sorted(h.record.task for h in hits) == [text] * count


def test_eight_writers_and_a_reader_at_once(
    index_mode: str, ctx: ForkServerContext, settings: Settings, table: str, sources: list[str],
    tmp_path: Path,
) -> None:
    env = _env(settings)
    writers = [ctx.Process(target=add_many, args=(env, table, sources, w * 25, 25))
               for w in range(8)]
    errors = tmp_path / "reader-errors.txt"
    reader = ctx.Process(target=read_loop, args=(env, table, 40, str(errors)))
    for proc in [*writers, reader]:
        proc.start()
    for proc in [*writers, reader]:
        proc.join(timeout=600)
        assert proc.exitcode == 0
    assert errors.read_text() == ""
    lib = Library.open(settings, embedder=TableEmbedder.load(Path(table)))
    _check_agreement(lib, 200)


def _one_run_seconds(ctx: ForkServerContext, env: dict[str, str], table: str,
                     sources: list[str]) -> float:
    """How long one adding process lives once the library exists: the span kills are drawn
    from. The first run creates the library and index, which later runs do not, so it is run
    but not timed (timed, it made the span so long that most kills came after the exit)."""
    span = 0.0
    for first in (10_000, 10_004):
        start = time.monotonic()
        proc = ctx.Process(target=add_many, args=(env, table, sources, first, 4))
        proc.start()
        proc.join(timeout=300)
        assert proc.exitcode == 0
        span = time.monotonic() - start
    return span


@pytest.mark.parametrize(
    "points", [50, pytest.param(200, marks=pytest.mark.slow)], ids=lambda n: f"{n}-kills"
)
def test_killed_writer_never_leaves_a_torn_adapter(
    points: int, ctx: ForkServerContext, settings: Settings, table: str, sources: list[str]
) -> None:
    env = _env(settings)
    lib = Library.open(settings, embedder=TableEmbedder.load(Path(table)))
    span = _one_run_seconds(ctx, env, table, sources)
    rng = random.Random(20240601)
    first, interrupted = 0, 0
    for _ in range(points):
        proc = ctx.Process(target=add_many, args=(env, table, sources, first, 4))
        first += 4
        proc.start()
        time.sleep(rng.uniform(0.0, span))
        if proc.pid is not None and proc.exitcode is None:
            # A forkserver child is reaped by the server, not by us: it may be gone already.
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
        proc.join(timeout=60)
        home = settings.home
        if (home / "index" / "dirty").exists() or lib.store.leftovers():
            interrupted += 1  # killed in the middle of a write
        for adapter_id in lib.store.ids():  # no torn adapter is ever visible
            assert lib.store.problems(adapter_id) == [], adapter_id
    assert interrupted >= points // 5, f"only {interrupted} kills landed inside a write"
    _check_agreement(Library.open(settings, embedder=TableEmbedder.load(Path(table))),
                     len(lib.store.ids()))
