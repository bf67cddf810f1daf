"""The embedder: the ONNX Runtime query path must give the vectors the model itself gives,
from a cached, verified export that later processes load without PyTorch."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rune_mcp.config import Settings
from rune_mcp.library.embed import SentenceTransformerEmbedder, get_embedder
from rune_mcp.library.queryencoder import CACHE_DIR, EncoderCache, OnnxEncoder, model_key

HEAVY = ("torch", "transformers", "sentence_transformers", "onnx")

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


def test_text_past_the_length_limit_is_cut_as_the_model_cuts_it(
    embedder: SentenceTransformerEmbedder,
) -> None:
    long = " ".join(f"step {i} of the migration failed" for i in range(120))  # > 256 tokens
    np.testing.assert_allclose(np.asarray(embedder.embed([long])), embedder._encode([long]),
                               atol=1e-5)


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
            return embedder.model.preprocess(texts)

    model = ClsPooled(embedder.model)
    pooling = model[1]
    original = pooling.get_config_dict
    pooling.get_config_dict = lambda: {**original(), "pooling_mode": "cls"}
    try:
        assert OnnxEncoder.build(model, embedder._encode, embedder.path / "tokenizer.json") is None
    finally:
        del pooling.get_config_dict


def test_onnx_path_that_disagrees_is_not_used(embedder: SentenceTransformerEmbedder) -> None:
    def wrong(texts: list[str]) -> Any:
        return embedder._encode(texts) * 0.5

    assert OnnxEncoder.build(embedder.model, wrong, embedder.path / "tokenizer.json") is None


def _copy_cache(embedder: SentenceTransformerEmbedder, to: Path) -> tuple[Path, Path]:
    """The module embedder's cached export of MiniLM, copied into a cache folder of its own."""
    embedder.embed(["make sure the cache holds the export"])
    cache = embedder._cache
    assert isinstance(cache, EncoderCache) and cache.record_path.is_file()
    (to / CACHE_DIR).mkdir(parents=True)
    for path in (cache.graph_path, cache.record_path):
        shutil.copyfile(path, to / CACHE_DIR / path.name)
    return to / CACHE_DIR / cache.graph_path.name, to / CACHE_DIR / cache.record_path.name


def test_cached_export_serves_queries_without_loading_the_model(
    embedder: SentenceTransformerEmbedder, tmp_path: Path
) -> None:
    _copy_cache(embedder, tmp_path)
    fresh = SentenceTransformerEmbedder(embedder.path, tmp_path)
    vectors = fresh.embed(TEXTS[:2])
    assert fresh.query_path == "onnx" and fresh.dim == embedder.dim
    assert fresh._model is None, "a cached query encoder must not need the model"
    np.testing.assert_allclose(np.asarray(vectors), embedder._encode(TEXTS[:2]), atol=1e-5)


@pytest.mark.parametrize("damage", ["graph", "record"])
def test_damaged_cache_is_exported_again(
    embedder: SentenceTransformerEmbedder, tmp_path: Path, damage: str
) -> None:
    graph, record = _copy_cache(embedder, tmp_path)
    if damage == "graph":
        data = bytearray(graph.read_bytes())
        data[len(data) // 2] ^= 0xFF  # one flipped byte inside the weights
        graph.write_bytes(bytes(data))
    else:
        record.write_text("{not json")
    fresh = SentenceTransformerEmbedder(embedder.path, tmp_path)
    fresh._model = embedder.model  # the export needs the model; spare the test a second load
    vectors = fresh.embed(TEXTS[:1])
    assert fresh.query_path == "onnx"
    written = json.loads(record.read_text())
    assert hashlib.sha256(graph.read_bytes()).hexdigest() == written["sha256"]
    np.testing.assert_allclose(np.asarray(vectors), embedder._encode(TEXTS[:1]), atol=1e-5)


def test_cache_key_follows_the_tokenizer_and_the_weights(
    embedder: SentenceTransformerEmbedder, tmp_path: Path
) -> None:
    folder = tmp_path / "model"
    shutil.copytree(embedder.path, folder, ignore=shutil.ignore_patterns("model.safetensors"))
    (folder / "model.safetensors").symlink_to(embedder.path / "model.safetensors")
    cache = tmp_path / "cache"
    assert model_key(folder, cache) == model_key(embedder.path, cache)  # same files, same key
    tokenizer = folder / "tokenizer.json"
    tokenizer.write_text(tokenizer.read_text().replace('"[UNK]"', '"[UNKNOWN]"'))
    changed = model_key(folder, cache)
    assert changed != model_key(embedder.path, cache)
    (folder / "model.safetensors").unlink()
    (folder / "model.safetensors").write_bytes(b"other weights")
    assert model_key(folder, cache) not in (changed, model_key(embedder.path, cache))


def _embed_in_a_new_process(cache_dir: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    code = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from rune_mcp.config import Settings\n"
        "from rune_mcp.library.embed import get_embedder\n"
        f"e = get_embedder(Settings(cache_dir=Path({str(cache_dir)!r})))\n"
        "vector = e.embed(['build the query path'])[0]\n"
        "assert e.query_path == 'onnx', e.query_path\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "sys.stderr.write(json.dumps({'vector': vector, 'heavy': heavy}))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=300, check=False)


def test_export_and_cached_load_write_nothing_to_stdout(
    embedder: SentenceTransformerEmbedder, tmp_path: Path
) -> None:
    """`rune serve` speaks JSON-RPC on stdout: the export, the cache and the session print
    nothing there; and a process that finds the export cached imports no PyTorch at all."""
    cache = tmp_path / "cache"
    first = _embed_in_a_new_process(cache, tmp_path)  # an empty cache: exports and writes it
    assert first.returncode == 0, first.stderr[-2000:]
    second = _embed_in_a_new_process(cache, tmp_path)
    assert second.returncode == 0, second.stderr[-2000:]
    assert first.stdout == second.stdout == ""
    exported, cached = (json.loads(p.stderr[p.stderr.index('{"vector"'):]) for p in (first, second))
    assert "torch" in exported["heavy"], "the first process should have exported the encoder"
    assert cached["heavy"] == [], f"the cached query path imported {cached['heavy']}"
    np.testing.assert_allclose(cached["vector"], exported["vector"], atol=1e-6)
    np.testing.assert_allclose(cached["vector"], embedder._encode(["build the query path"])[0],
                               atol=1e-5)
