"""The query encoder: a mean-pooling sentence-transformers model run by ONNX Runtime.

Recall embeds one short text per call, a few dozen tokens, where PyTorch spends most of the
time between operations rather than in them; ONNX Runtime, with its fused attention and
layer-norm kernels, gives the same vectors from the same weights faster (docs/library.md).

The transformer is exported to ONNX once per model and kept in the cache folder
(`<cache_dir>/onnx/<key>.onnx` beside `<key>.json`), so a later process starts with neither
PyTorch nor sentence-transformers: it reads the graph, checks it against the SHA-256 recorded
when it was written, and tokenizes with the `tokenizers` package from the model folder's
`tokenizer.json`. The key is a digest of everything the vectors depend on: the weights and
the tokenizer and pooling files of the model folder, and the onnx and onnxruntime versions. An
export is trusted only after its vectors, tokenized the way this module tokenizes, agree with
the model's own `encode`; a cache file that fails its digest is exported again. ONNX is a
protobuf graph, not a pickle: loading it runs no code from the file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rune_mcp.errors import RuneError
from rune_mcp.fsutil import atomic_write_bytes, atomic_write_json, locked

log = logging.getLogger(__name__)

CACHE_VERSION = 1
CACHE_DIR = "onnx"
MAX_DRIFT = 1e-4
MAX_THREADS = 4  # more threads do not speed up a one-sentence forward pass
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # hashed for identity, never loaded here
# Files of a sentence-transformers folder that change the tokens or the pooling.
CONFIG_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json",
                "special_tokens_map.json", "vocab.txt", "modules.json",
                "sentence_bert_config.json", "1_Pooling/config.json")
# Probes for the export check: case, accents, padding whitespace, and one text past any
# model's length limit, so tokenizing and truncating here must match the model's own.
PROBES = [
    "a short probe",
    "a longer probe sentence, with punctuation: to check lengths",
    "  Fix the LOGIN redirect (café, naïve, 東京) in api/v2  ",
    " ".join(f"token{i}" for i in range(400)),
]

Encode = Callable[[list[str]], Any]


@dataclass(frozen=True)
class EncoderConfig:
    """What the graph needs besides its weights: recorded at export, read back with it."""

    dim: int
    max_seq_length: int
    pad_id: int
    pad_token: str


class OnnxEncoder:
    """Unit vectors from the exported transformer: tokenizers -> ONNX Runtime -> mean pooling."""

    def __init__(self, graph: bytes, tokenizer_file: Path, config: EncoderConfig) -> None:
        from tokenizers import Tokenizer

        self.config = config
        self.dim = config.dim
        self._tokenizer: Any = Tokenizer.from_file(str(tokenizer_file))
        self._tokenizer.enable_truncation(max_length=config.max_seq_length)
        self._tokenizer.enable_padding(pad_id=config.pad_id, pad_token=config.pad_token)
        # One session, one thread per core up to MAX_THREADS. Unlike PyTorch's threads they
        # degrade gently when other processes hold the cores (a few ms slower at p95 than one
        # thread with busy loops on both cores), so one session serves both cases.
        self._session = _ort_session(graph, min(os.cpu_count() or 1, MAX_THREADS))

    @classmethod
    def build(cls, model: Any, reference: Encode, tokenizer_file: Path
              ) -> tuple[OnnxEncoder, bytes] | None:
        """Export `model` and check it against `reference` (its own encode): the encoder and
        its graph, or None where the model does not fit or the export disagrees."""
        try:
            graph = export_onnx(model)
            tokenizer = model.tokenizer
            config = EncoderConfig(dim=model_dimension(model),
                                   max_seq_length=int(model.max_seq_length),
                                   pad_id=int(tokenizer.pad_token_id),
                                   pad_token=str(tokenizer.pad_token))
            fast = cls(graph, tokenizer_file, config)
            drift = float(abs(fast.vectors(PROBES) - reference(PROBES)).max())
        except Exception as exc:  # an optimization only: any failure keeps the eager path
            log.debug("query fast path unavailable (%s); using the eager model", exc)
            return None
        if drift > MAX_DRIFT:
            log.debug("query fast path disagrees with the model by %.2g; not used", drift)
            return None
        return fast, graph

    def vectors(self, texts: list[str]) -> Any:
        """One unit vector per text, as a 2-D float32 array."""
        import numpy as np

        encodings = self._tokenizer.encode_batch(texts)
        ids = np.asarray([e.ids for e in encodings], dtype=np.int64)
        mask = np.asarray([e.attention_mask for e in encodings], dtype=np.int64)
        (hidden,) = self._session.run(None, {"input_ids": ids, "attention_mask": mask})
        weights = mask[..., None].astype(hidden.dtype)
        mean = (hidden * weights).sum(1) / np.clip(weights.sum(1), 1e-9, None)
        return mean / np.clip(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12, None)


class EncoderCache:
    """The exported graph of one model folder in the cache, keyed by the model's identity."""

    def __init__(self, folder: Path, key: str, tokenizer_file: Path) -> None:
        self.folder = folder
        self.key = key
        self.tokenizer_file = tokenizer_file
        self.graph_path = folder / f"{key}.onnx"
        self.record_path = folder / f"{key}.json"

    @classmethod
    def open(cls, cache_dir: Path, model_dir: Path) -> EncoderCache | None:
        """The cache entry for `model_dir`, or None where the model cannot be identified."""
        try:
            key = model_key(model_dir, cache_dir)
        except (OSError, RuneError) as exc:
            log.debug("no query encoder cache for %s (%s)", model_dir, exc)
            return None
        return cls(cache_dir / CACHE_DIR, key, model_dir / "tokenizer.json")

    def config(self) -> EncoderConfig | None:
        """The recorded config (dimension, ...) without reading the graph; None when absent."""
        record = self._record()
        return None if record is None else record[1]

    def load(self) -> OnnxEncoder | None:
        """The cached encoder, or None when there is none or its graph fails the digest."""
        record = self._record()
        if record is None:
            return None
        digest, config = record
        graph_path = self.graph_path
        try:
            graph = graph_path.read_bytes()
        except OSError:
            return None
        if hashlib.sha256(graph).hexdigest() != digest:
            log.warning("the cached query encoder %s is damaged; exporting it again", graph_path)
            return None
        try:
            return OnnxEncoder(graph, self.tokenizer_file, config)
        except Exception as exc:  # a graph this onnxruntime cannot run: export it again
            log.warning("the cached query encoder %s does not load (%s); exporting it again",
                        graph_path, exc)
            return None

    def store(self, graph: bytes, config: EncoderConfig) -> None:
        """Write the graph, then the record naming its digest (each file atomically)."""
        try:
            atomic_write_bytes(self.graph_path, graph)
            atomic_write_json(self.record_path, {
                "format_version": CACHE_VERSION, "sha256": hashlib.sha256(graph).hexdigest(),
                "config": asdict(config),
            })
        except OSError as exc:  # a read-only cache only costs an export in the next process
            log.debug("could not cache the query encoder in %s (%s)", self.folder, exc)

    @contextlib.contextmanager
    def exporting(self) -> Iterator[None]:
        """Hold this model's export lock, so concurrent processes export once between them."""
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(locked(self.folder / f"{self.key}.lock", timeout=300.0))
            except (OSError, RuneError) as exc:  # unwritable cache or a stuck exporter
                log.debug("exporting the query encoder without its lock (%s)", exc)
            yield

    def _record(self) -> tuple[str, EncoderConfig] | None:
        try:
            data = json.loads(self.record_path.read_text(encoding="utf-8"))
            if data.get("format_version") != CACHE_VERSION:
                return None
            return str(data["sha256"]), EncoderConfig(**data["config"])
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            return None


def model_key(model_dir: Path, cache_dir: Path) -> str:
    """What the cached graph depends on, as one hex digest (RuneError if no weights file)."""
    from importlib.metadata import PackageNotFoundError, version

    from rune_mcp.basemodel import file_sha256

    weights = next((model_dir / n for n in WEIGHT_FILES if (model_dir / n).is_file()), None)
    if weights is None:
        raise RuneError(f"{model_dir} holds no weights file ({', '.join(WEIGHT_FILES)}), so "
                        "its query encoder cannot be cached; the model embeds without it.")
    parts: dict[str, str] = {"cache_version": str(CACHE_VERSION),
                             "weights": file_sha256(weights, cache_dir)}  # memoized per stat
    for name in CONFIG_FILES:
        path = model_dir / name
        if path.is_file():
            parts[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    for package in ("onnx", "onnxruntime"):
        try:
            parts[package] = version(package)
        except PackageNotFoundError:
            parts[package] = "absent"
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def model_dimension(model: Any) -> int:
    """A sentence-transformers model's vector size (the method was renamed in version 5)."""
    dimension: Any = (getattr(model, "get_embedding_dimension", None)
                      or model.get_sentence_embedding_dimension)
    return int(dimension())


def export_onnx(model: Any) -> bytes:
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
