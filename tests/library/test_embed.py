"""The embedder: the ONNX Runtime query path must give the vectors the model itself gives."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rune_mcp.config import Settings
from rune_mcp.library.embed import OnnxEncoder, SentenceTransformerEmbedder, get_embedder

TEXTS = [
    "fix the login redirect loop in the api",
    "csv export is missing the header row when the table is empty, see issue 42",
    "a",
    "Speed up the DATABASE pool: connections time out under load (pgbouncer, 300 clients)",
]


@pytest.fixture(scope="module")
def embedder() -> SentenceTransformerEmbedder:
    real = get_embedder(Settings())
    assert isinstance(real, SentenceTransformerEmbedder)
    return real


def test_query_path_is_onnx_and_matches_the_model(embedder: SentenceTransformerEmbedder) -> None:
    fast = [embedder.embed([t])[0] for t in TEXTS]  # one text at a time: the query path
    assert embedder._fast is not None, "the ONNX query path was not built for MiniLM"
    eager = embedder._encode(TEXTS)
    np.testing.assert_allclose(np.asarray(fast), eager, atol=1e-5)


def test_padded_small_batch_matches_the_large_batch_path(
    embedder: SentenceTransformerEmbedder,
) -> None:
    small = embedder.embed(TEXTS)  # <= 4 texts of different lengths: ONNX, padded
    large = embedder.embed(TEXTS * 3)[: len(TEXTS)]  # > 4 texts: the model's own encode
    np.testing.assert_allclose(np.asarray(small), np.asarray(large), atol=1e-5)
    assert all(abs(float(np.linalg.norm(v)) - 1.0) < 1e-5 for v in small)


def test_model_that_does_not_fit_keeps_the_eager_path(
    embedder: SentenceTransformerEmbedder,
) -> None:
    class ClsPooled(list[Any]):
        """The real modules, but claiming CLS pooling, which the ONNX path does not do."""

        def preprocess(self, texts: list[str]) -> Any:
            return embedder._model.preprocess(texts)

    model = ClsPooled(embedder._model)
    pooling = model[1]
    original = pooling.get_config_dict
    pooling.get_config_dict = lambda: {**original(), "pooling_mode": "cls"}
    try:
        assert OnnxEncoder.build(model, embedder._encode) is None
    finally:
        del pooling.get_config_dict


def test_onnx_path_that_disagrees_is_not_used(embedder: SentenceTransformerEmbedder) -> None:
    def wrong(texts: list[str]) -> Any:
        return embedder._encode(texts) * 0.5

    assert OnnxEncoder.build(embedder._model, wrong) is None


def test_cpu_watch_counts_other_processes_not_this_one(monkeypatch: pytest.MonkeyPatch) -> None:
    from rune_mcp.library import embed

    samples = iter([
        (0.0, 100.0, 10.0),
        (1.0, 101.0, 11.0),  # one core busy, all of it this process: both cores are free
        (1.1, 101.2, 11.1),  # too soon after: the last answer stands
        (2.0, 102.0, 11.0),  # one core busy with another process: one core left
        (3.0, 104.0, 11.0),  # both busy with others: still one thread, never zero
    ])
    monkeypatch.setattr(embed, "_busy_sample", lambda: next(samples))
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(os, "getloadavg", lambda: (5.0, 5.0, 5.0))
    watch = embed.CpuWatch()
    assert watch.idle_cores() == 1  # no window yet: the load average says busy
    assert [watch.idle_cores() for _ in range(4)] == [2, 2, 1, 1]


def test_cpu_watch_without_proc_uses_the_load_average(monkeypatch: pytest.MonkeyPatch) -> None:
    from rune_mcp.library import embed

    monkeypatch.setattr(embed, "_busy_sample", lambda: None)
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    monkeypatch.setattr(os, "getloadavg", lambda: (2.0, 2.0, 2.0))
    assert embed.CpuWatch().idle_cores() == 3  # one other process's worth of load


def test_busy_sample_reads_this_machine() -> None:
    from rune_mcp.library import embed

    first = embed._busy_sample()
    if first is None:
        pytest.skip("no /proc/stat on this system: the load-average estimate is used")
    sum(i * i for i in range(200_000))  # some CPU time of our own
    second = embed._busy_sample()
    assert second is not None and second[0] > first[0] and second[2] > first[2]
    assert second[1] >= first[1]


def test_building_the_query_path_writes_nothing_to_stdout(tmp_path: Path) -> None:
    """`rune serve` speaks JSON-RPC on stdout: the export and session must print nothing."""
    code = (
        "from rune_mcp.config import Settings\n"
        "from rune_mcp.library.embed import get_embedder\n"
        "e = get_embedder(Settings())\n"
        "e.embed(['build the query path'])\n"
        "assert e.query_path == 'onnx', e.query_path\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout == ""
