"""The runtime: one base model kept loaded, recalled adapters swapped onto it per request.

`get_backend(settings)` returns the process-wide backend (built once; the base model is the
expensive part). `auto` picks transformers + bitsandbytes NF4 when a CUDA GPU is present and
llama.cpp otherwise; `vllm` talks to a vLLM server. Each backend is imported lazily, so a
machine without torch's GPU build or without a vLLM server never touches them.
"""

from __future__ import annotations

import threading
from pathlib import Path

from rune_mcp.basemodel import resolve_base
from rune_mcp.config import Settings
from rune_mcp.runtime.base import AdapterSpec, Backend, Generation, Message

__all__ = ["AdapterSpec", "Backend", "Generation", "Message", "close_backends", "get_backend",
           "resolve_kind"]

_backends: dict[tuple[str, ...], Backend] = {}
_lock = threading.Lock()


def resolve_kind(settings: Settings) -> str:
    """`auto` -> `transformers` with CUDA, else `llamacpp`; other values as they are."""
    if settings.backend != "auto":
        return settings.backend
    if settings.device == "cpu" or not _torch_has_gpu_build():
        return "llamacpp"
    import torch

    return "transformers" if torch.cuda.is_available() else "llamacpp"


def _torch_has_gpu_build() -> bool:
    """False when the installed torch is built without CUDA and ROCm (or is absent), read from
    its `version.py` without importing torch, which takes seconds a CPU-only `rune run` does
    not need. True whenever that file cannot be read: then torch itself is asked."""
    import importlib.util
    import re

    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return False
    try:
        text = (Path(next(iter(spec.submodule_search_locations))) / "version.py").read_text()
    except (OSError, StopIteration):
        return True
    builds = re.findall(r"^(cuda|hip)\s*(?::[^=]*)?=\s*(.+?)\s*$", text, re.MULTILINE)
    if {name for name, _ in builds} != {"cuda", "hip"}:
        return True  # a layout this check does not know: ask torch
    return any(value != "None" for _, value in builds)


def get_backend(settings: Settings, kind: str | None = None) -> Backend:
    """The shared backend for these settings, loading the base model on first use."""
    kind = kind or resolve_kind(settings)
    key = (kind, str(settings.base_model), str(settings.cache_dir), str(settings.threads),
           str(settings.context_size), settings.vllm_url, str(settings.adapter_cache_mb),
           settings.device)
    with _lock:
        backend = _backends.get(key)
        if backend is None:
            backend = _build(kind, settings)
            _backends[key] = backend
        return backend


def _build(kind: str, settings: Settings) -> Backend:
    base = resolve_base(settings)
    if kind == "llamacpp":
        from rune_mcp.runtime.llamacpp import LlamaCppBackend

        return LlamaCppBackend(settings, base)
    if kind == "transformers":
        from rune_mcp.runtime.transformers import TransformersBackend

        return TransformersBackend(settings, base)
    from rune_mcp.runtime.vllm import VllmBackend

    return VllmBackend(settings, base)


def close_backends() -> None:
    """Free every shared backend (tests and long-lived servers changing settings)."""
    with _lock:
        for backend in _backends.values():
            backend.close()
        _backends.clear()
