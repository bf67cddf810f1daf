"""vLLM backend: hand serving to a multi-LoRA vLLM server when one machine's CPU is not enough.

The server is started separately (`docs/vllm.md`) with LoRA and runtime adapter loading on.
Before an adapter's first use Rune registers it by its PEFT folder
(`POST /v1/load_lora_adapter` with `lora_name` and `lora_path`); each request then selects it by
name through the OpenAI-compatible API (`"model": <adapter id>`). vLLM itself keeps the hot
adapters on the GPU and batches requests for different adapters together. A composition
(several adapters, or one at a scale other than 1) is written once as its `cat` merge, which
is exactly the sum of the adapters at their scales, and registered like any adapter; its rank
is the sum of theirs, so the server's `--max-lora-rank` must allow it.

Only the standard library's HTTP client is used, so this backend adds no dependency.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

from rune_mcp.basemodel import BaseModelInfo
from rune_mcp.config import Settings
from rune_mcp.errors import BackendError, InputError
from rune_mcp.runtime.base import (
    Active,
    AdapterSpec,
    Generation,
    Request,
    StreamingBackend,
    adapter_ids,
    stage_timings,
)
from rune_mcp.runtime.cache import AdapterCache
from rune_mcp.runtime.catmerge import composition_key, materialise

log = logging.getLogger(__name__)
TIMEOUT_S = 600.0


class VllmBackend(StreamingBackend):
    """Talks to a running vLLM server; the base model lives there, not in this process."""

    name = "vllm"

    def __init__(self, settings: Settings, base: BaseModelInfo) -> None:
        self.settings = settings
        self.fingerprint = base.fingerprint
        self.url = settings.vllm_url.rstrip("/")
        self._key = os.environ.get("VLLM_API_KEY")  # the variable `vllm serve` itself reads
        self._lock = threading.Lock()
        # what this process has registered; the server keeps the adapters, so no budget here
        self._cache: AdapterCache[str] = AdapterCache(None, load=self._load, free=lambda _: None)
        self.model = self._base_model_id()

    # --- HTTP -------------------------------------------------------------------------
    def _request(self, path: str, body: dict[str, Any] | None = None) -> Any:
        """One JSON request; returns the open response (caller closes it)."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        request = urllib.request.Request(self.url + path, data=data, headers=headers,
                                         method="GET" if body is None else "POST")
        try:
            return urllib.request.urlopen(request, timeout=TIMEOUT_S)
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")[:300]
            raise _HttpError(exc.code, detail) from exc
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise BackendError(f"no vLLM server answers at {self.url} ({reason}); start one as "
                               "docs/vllm.md shows or set RUNE_VLLM_URL.") from exc

    def _json(self, path: str, body: dict[str, Any] | None = None) -> Any:
        try:
            with self._request(path, body) as response:
                return json.loads(response.read() or b"null")
        except _HttpError as exc:
            raise BackendError(f"vLLM at {self.url} answered {exc.code} to {path}: "
                               f"{exc.detail}") from exc
        except ValueError as exc:
            raise BackendError(f"vLLM at {self.url} sent invalid JSON for {path}; is that "
                               "URL really a vLLM server?") from exc

    def _base_model_id(self) -> str:
        data = self._json("/v1/models")
        models = data.get("data", []) if isinstance(data, dict) else []
        for model in models:
            if not model.get("parent"):  # LoRA modules name their base as parent
                return str(model["id"])
        raise BackendError(f"the vLLM server at {self.url} lists no base model.")

    # --- adapters ---------------------------------------------------------------------
    def _prepare(self, target: Active) -> None:
        """Register the target's adapter with the server if this process has not yet."""
        super()._prepare(self._served(target))

    def _served(self, target: Active) -> Active:
        """What the server applies for `target`: vLLM takes one adapter per request at scale
        1, so several adapters, or one at another scale, are served as their materialised
        `cat` merge (rune_mcp.runtime.catmerge), registered under a name of its own."""
        if len(target) <= 1 and all(scale == 1.0 for _, scale in target):
            return target
        folder = materialise(target, self.settings.cache_dir)
        name = f"rune-composition-{composition_key(target)[:16]}"
        return ((AdapterSpec(name, self.fingerprint, peft_dir=folder), 1.0),)

    def _load(self, spec: AdapterSpec) -> str:
        if spec.peft_dir is None:
            raise BackendError(f"adapter {spec.adapter_id} has no PEFT folder for vLLM to load.")
        body = {"lora_name": spec.adapter_id, "lora_path": str(spec.peft_dir)}
        try:
            with self._request("/v1/load_lora_adapter", body) as response:
                response.read()
        except _HttpError as exc:
            if "already" in exc.detail.lower():  # registered by an earlier Rune process
                return spec.adapter_id
            raise BackendError(f"vLLM at {self.url} refused adapter {spec.adapter_id} "
                               f"({exc.code}: {exc.detail}); was it started with --enable-lora "
                               "and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True?") from exc
        return spec.adapter_id

    # --- generation -------------------------------------------------------------------
    def _run(self, request: Request, target: Active, result: Generation) -> Iterator[str]:
        if not request.messages:
            raise InputError("no messages to answer; pass at least one user message.")
        start = time.perf_counter()
        served = self._served(target)
        super()._prepare(served)
        model = served[0][0].adapter_id if served else self.model
        result.adapters = adapter_ids(target)
        swapped = first = time.perf_counter()
        seed = self.settings.seed if request.seed is None else request.seed
        body = {"model": model, "messages": list(request.messages), "max_tokens": request.max_tokens,
                "temperature": request.temperature, "seed": seed,
                "stream": True, "stream_options": {"include_usage": True}}
        pieces = 0
        try:
            response = self._request("/v1/chat/completions", body)
        except _HttpError as exc:
            raise BackendError(f"vLLM at {self.url} answered {exc.code}: {exc.detail}") from exc
        with response:
            for event in _events(response):
                for choice in event.get("choices") or []:
                    piece = (choice.get("delta") or {}).get("content") or ""
                    if piece:
                        if pieces == 0:
                            first = time.perf_counter()
                        pieces += 1
                        yield piece
                usage = event.get("usage") or {}
                result.prompt_tokens = int(usage.get("prompt_tokens") or result.prompt_tokens)
                result.completion_tokens = int(usage.get("completion_tokens")
                                               or result.completion_tokens)
        result.timings = stage_timings(start, swapped, first, time.perf_counter(),
                                       result.completion_tokens or pieces)


class _HttpError(Exception):
    def __init__(self, code: int, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code, self.detail = code, detail


def _events(response: Any) -> Iterator[dict[str, Any]]:
    """Server-sent events of an OpenAI-style stream: `data: {...}` lines until `data: [DONE]`."""
    for raw in response:
        line = raw.decode("utf-8", "replace").strip()
        if not line.startswith("data:"):
            continue
        payload = line[5:].strip()
        if payload == "[DONE]":
            return
        try:
            yield json.loads(payload)
        except ValueError as exc:
            raise BackendError(f"vLLM sent an unreadable stream event: {payload[:100]!r}.") from exc
