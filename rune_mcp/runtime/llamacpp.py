"""llama.cpp backend: the quantized GGUF base on CPU, LoRA adapters swapped in about a millisecond.

The base is loaded once. Each adapter's GGUF is loaded once (`llama_adapter_lora_init`, a few
ms) into a cache bounded by `adapter_cache_mb`; the least recently used adapters are freed
(`llama_adapter_lora_free`) when it is full. A swap is `llama_set_adapters_lora` (well under a
millisecond). One context serves every request under a lock; it is reset before every request,
because a KV prefix computed under one adapter must never be reused under another, and because
a request's output must not depend on what ran before it.
"""

from __future__ import annotations

import codecs
import ctypes
import logging
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rune_mcp.basemodel import BaseModelInfo
from rune_mcp.config import Settings
from rune_mcp.errors import BackendError, InputError, ModelError
from rune_mcp.runtime.base import (
    Active,
    AdapterSpec,
    FairLock,
    Generation,
    Message,
    StreamingBackend,
    check_base,
    normalize,
    rss_mb,
)

log = logging.getLogger(__name__)


@dataclass
class _Loaded:
    spec: AdapterSpec
    handle: Any  # llama_adapter_lora_p
    size_bytes: int


class AdapterCache:
    """GGUF adapters loaded into one llama model, least recently used freed beyond a byte limit.

    Not thread-safe by itself: the backend calls it under its lock.
    """

    def __init__(self, model: Any, limit_bytes: int, gguf_for: Any) -> None:
        self._model = model
        self._limit = limit_bytes
        self._gguf_for = gguf_for  # AdapterSpec -> Path of its GGUF (exported on demand)
        self._items: OrderedDict[str, _Loaded] = OrderedDict()
        self.loads = 0
        self.evictions = 0

    @property
    def size_bytes(self) -> int:
        return sum(item.size_bytes for item in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, adapter_id: object) -> bool:
        return adapter_id in self._items

    def get(self, spec: AdapterSpec, keep: frozenset[str], on_free: Any) -> Any:
        """The loaded handle of `spec`, loading it (and evicting others, never `keep`) if needed.

        `on_free(ids)` is called before handles are freed so the caller can detach them first.
        """
        item = self._items.get(spec.adapter_id)
        if item is not None:
            self._items.move_to_end(spec.adapter_id)
            return item.handle
        path = self._gguf_for(spec)
        size = path.stat().st_size
        self._evict(size, keep, on_free)
        handle = _load_lora(self._model, path, spec.adapter_id)
        self._items[spec.adapter_id] = _Loaded(spec, handle, size)
        self.loads += 1
        return handle

    def _evict(self, incoming: int, keep: frozenset[str], on_free: Any) -> None:
        victims: list[str] = []
        total = self.size_bytes + incoming
        for adapter_id, item in self._items.items():
            if total <= self._limit:
                break
            if adapter_id not in keep:
                victims.append(adapter_id)
                total -= item.size_bytes
        if victims:
            on_free(frozenset(victims))
        for adapter_id in victims:
            self._free(adapter_id)

    def _free(self, adapter_id: str) -> None:
        import llama_cpp

        item = self._items.pop(adapter_id)
        llama_cpp.llama_adapter_lora_free(item.handle)
        self.evictions += 1

    def clear(self) -> None:
        for adapter_id in list(self._items):
            self._free(adapter_id)


def _load_lora(model: Any, path: Path, adapter_id: str) -> Any:
    import llama_cpp

    handle = llama_cpp.llama_adapter_lora_init(model, str(path).encode())
    if not handle:
        raise BackendError(f"llama.cpp refused the GGUF of adapter {adapter_id} ({path}); "
                           "re-export it with `rune` or remove the adapter.")
    return handle


class LlamaCppBackend(StreamingBackend):
    """The default CPU runtime."""

    name = "llamacpp"

    def __init__(self, settings: Settings, base: BaseModelInfo) -> None:
        from rune_mcp.runtime.ggml import open_llama

        self.settings = settings
        self.base = base
        self.fingerprint = base.fingerprint
        start = time.perf_counter()
        try:
            self._llm: Any = open_llama(
                str(base.path), n_ctx=settings.context_size,
                n_threads=settings.threads, n_threads_batch=settings.threads,
                seed=settings.seed, verbose=False,
            )
        except Exception as exc:  # llama-cpp-python raises ValueError for any load failure
            raise ModelError(f"llama.cpp could not load {base.path} ({exc}); check the file or "
                             "set RUNE_BASE_MODEL to a valid GGUF model.") from exc
        self.load_ms = (time.perf_counter() - start) * 1000
        self._formatter = _chat_formatter(self._llm, base)
        self._lock = FairLock()  # one context: requests and swaps take turns in order
        self._cache = AdapterCache(self._llm._model.model,
                                   settings.adapter_cache_mb << 20, self._gguf_for)
        self._active: Active = ()
        self._applied: tuple[tuple[str, float], ...] = ()
        # (adapters applied, prompt tokens) whose KV rows the last scoring left in the context
        self._scored: tuple[tuple[tuple[str, float], ...], list[int]] | None = None

    # --- adapters ---------------------------------------------------------------------
    @property
    def active(self) -> Active:
        return self._active

    def activate(self, adapters: Sequence[tuple[AdapterSpec, float]] | Sequence[AdapterSpec]) -> float:
        """Make `adapters` the default set. Loading happens here (under the context lock when an
        adapter is not cached yet); the context itself switches at the next request, so a swap
        never waits for a generation in progress."""
        target = normalize(adapters)
        start = time.perf_counter()
        for spec, _ in target:
            check_base(spec, self.fingerprint)
        if any(spec.adapter_id not in self._cache for spec, _ in target):
            with self._lock:
                keep = frozenset(spec.adapter_id for spec, _ in target)
                for spec, _ in target:
                    self._cache.get(spec, keep, self._detach)
        self._active = target  # one reference assignment: atomic for readers
        return (time.perf_counter() - start) * 1000

    def apply_now(self, adapters: Sequence[tuple[AdapterSpec, float]] | Sequence[AdapterSpec]) -> float:
        """Switch the context itself to `adapters` now, as a request does before its prompt;
        returns the ms spent (the warm swap figure of `rune bench runtime`)."""
        target = normalize(adapters)
        start = time.perf_counter()
        with self._lock:
            self._apply(target)
            self._llm.reset()
            self._scored = None
        return (time.perf_counter() - start) * 1000

    def _gguf_for(self, spec: AdapterSpec) -> Path:
        """The adapter's GGUF, exported once into the cache when the library holds only PEFT."""
        if spec.gguf_path is not None and spec.gguf_path.is_file():
            return spec.gguf_path
        if spec.peft_dir is None:
            raise BackendError(f"adapter {spec.adapter_id} has neither a GGUF file nor a PEFT "
                               "folder; remove it and remember the session again.")
        from rune_mcp.distill.gguf import export_gguf

        out = self.settings.cache_dir / "gguf" / f"{spec.adapter_id}.gguf"
        if not out.is_file():
            export_gguf(spec.peft_dir, self.base, out)
        return out

    def _apply(self, target: Active) -> None:
        """Put `target` on the context (lock held). Unchanged sets cost nothing."""
        import llama_cpp

        for spec, _ in target:
            check_base(spec, self.fingerprint)
        key = tuple((spec.adapter_id, scale) for spec, scale in target)
        if key == self._applied:
            return
        keep = frozenset(spec.adapter_id for spec, _ in target)
        handles = [self._cache.get(spec, keep, self._detach) for spec, _ in target]
        n = len(handles)
        array = (llama_cpp.llama_adapter_lora_p_ctypes * n)(*handles) if n else None
        scales = (ctypes.c_float * n)(*[s for _, s in target]) if n else None
        if llama_cpp.llama_set_adapters_lora(self._llm._ctx.ctx, array, n, scales) != 0:
            raise BackendError(f"llama.cpp could not apply adapters {list(keep)}; "
                               "they may not fit this base model.")
        self._applied = key

    def _detach(self, ids: frozenset[str]) -> None:
        """Take adapters about to be freed off the context, so no freed handle stays attached."""
        import llama_cpp

        if any(adapter_id in ids for adapter_id, _ in self._applied):
            llama_cpp.llama_set_adapters_lora(self._llm._ctx.ctx, None, 0, None)
            self._applied = ()

    # --- generation -------------------------------------------------------------------
    def _run(
        self,
        messages: Sequence[Message],
        max_tokens: int,
        temperature: float,
        seed: int | None,
        adapters: Sequence[tuple[AdapterSpec, float]] | Sequence[AdapterSpec] | None,
        result: Generation,
    ) -> Iterator[str]:
        import llama_cpp

        prompt = self._tokens(messages)
        target = self._active if adapters is None else normalize(adapters)
        with self._lock:
            start = time.perf_counter()
            self._apply(target)
            self._llm.reset()
            self._scored = None  # generation overwrites the context's KV rows
            swapped = time.perf_counter()
            budget = min(max_tokens, self.settings.context_size - len(prompt))
            self._llm.set_seed(self.settings.seed if seed is None else seed)
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            vocab = self._llm._model.vocab
            first = last = swapped
            count = 0
            for token in self._llm.generate(prompt, temp=temperature, reset=True):
                if count == 0:
                    first = time.perf_counter()
                if llama_cpp.llama_vocab_is_eog(vocab, token):
                    break
                count += 1
                piece = decoder.decode(self._llm.detokenize([token], special=False))
                last = time.perf_counter()
                if piece:
                    yield piece
                if count >= budget:
                    break
            tail = decoder.decode(b"", final=True)
            if tail:
                yield tail
            end = max(last, first)
        result.prompt_tokens, result.completion_tokens = len(prompt), count
        result.adapters = tuple((spec.adapter_id, scale) for spec, scale in target)
        gen_s = end - first
        result.timings = {
            "swap": (swapped - start) * 1000,
            "prompt": (first - swapped) * 1000,
            "generation": gen_s * 1000,
            # the first token comes out of the prompt pass; the rest are decode steps
            "tokens_per_s": (count - 1) / gen_s if count > 1 and gen_s > 0 else 0.0,
        }

    def _tokens(self, messages: Sequence[Message]) -> list[int]:
        if not messages:
            raise InputError("no messages to answer; pass at least one user message.")
        try:
            text = self._formatter(messages=list(messages)).prompt
        except Exception as exc:  # jinja2 errors from the model's own template
            raise InputError(f"the model's chat template rejected these messages ({exc}).") from exc
        tokens: list[int] = self._llm.tokenize(text.encode(), add_bos=False, special=True)
        if len(tokens) >= self.settings.context_size:
            raise InputError(f"the prompt has {len(tokens)} tokens but the context holds "
                             f"{self.settings.context_size}; shorten it or raise "
                             "RUNE_CONTEXT_SIZE.")
        return tokens

    def score_choices(
        self,
        messages: Sequence[Message],
        prefix: str,
        choices: Sequence[str],
        adapters: Sequence[tuple[AdapterSpec, float]] | Sequence[AdapterSpec] = (),
    ) -> ChoiceScores:
        """Mean log-probability per token of each choice after chat(messages) + prefix, with
        `adapters` on the context exactly as a request would have them.

        The prompt is evaluated once; each choice then reuses its KV cache.
        """
        if not choices or any(not c for c in choices):
            raise InputError("a probe needs non-empty choices.")
        with self._lock:  # the default set stays as it was: only this evaluation uses `adapters`
            self._apply(normalize(adapters))
            prompt = self._tokens(messages)
            keep = self._scored_prefix(prompt[:-1])
            self._scored = None
            try:
                result = _score(self._llm, prompt, prefix, choices, keep)
                self._scored = (self._applied, prompt[:-1])
                return result
            finally:
                self._llm.reset()  # others start from scratch; the KV rows stay for the next score

    def _scored_prefix(self, head: list[int]) -> int:
        """How many leading tokens of `head` the context still holds from the last scoring,
        under the same adapters. Probes share long prefixes (a session's text in the prompt,
        then several questions about it); re-evaluating them dominated benchmark time."""
        from llama_cpp import Llama

        if self._scored is None or self._scored[0] != self._applied:
            return 0
        return int(Llama.longest_token_prefix(self._scored[1], head))

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` in the served model's vocabulary."""
        return len(self._llm.tokenize(text.encode(), add_bos=False, special=False))

    def truncate_tokens(self, text: str, limit: int) -> str:
        """`text` cut to at most about `limit` tokens, keeping its start and end."""
        tokens = self._llm.tokenize(text.encode(), add_bos=False, special=False)
        if len(tokens) <= limit:
            return text
        half = max(1, limit // 2 - 4)
        head = self._llm.detokenize(tokens[:half]).decode("utf-8", "ignore")
        tail = self._llm.detokenize(tokens[-half:]).decode("utf-8", "ignore")
        return f"{head}\n[...]\n{tail}"

    def logits(self, text: str, adapters: Sequence[tuple[AdapterSpec, float]] | None = None) -> Any:
        """Next-token logits at every position of `text` (numpy, tokens x vocab), for tests
        comparing runtimes. Uses a second context over the same model so the serving context
        keeps its settings."""
        return _all_logits(self, text, normalize(adapters or ()))

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "backend": self.name,
                "rss_mb": round(rss_mb(), 1),
                "adapters_loaded": len(self._cache),
                "adapter_cache_mb": round(self._cache.size_bytes / (1 << 20), 2),
                "adapter_loads": self._cache.loads,
                "adapter_evictions": self._cache.evictions,
            }

    def close(self) -> None:
        import llama_cpp

        with self._lock:
            llama_cpp.llama_set_adapters_lora(self._llm._ctx.ctx, None, 0, None)
            self._applied = ()
            self._cache.clear()
            self._llm.close()


def _chat_formatter(llm: Any, base: BaseModelInfo) -> Any:
    """The GGUF's own chat template, rendered the way transformers renders it."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    template = llm.metadata.get("tokenizer.chat_template")
    if not template:
        raise ModelError(f"{base.path.name} has no chat template in its metadata; use an "
                         "instruction-tuned GGUF model.")
    model = llm._model
    eos, bos = model.token_eos(), model.token_bos()
    return Jinja2ChatFormatter(
        template=template,
        eos_token=model.token_get_text(eos) if eos != -1 else "",
        bos_token=model.token_get_text(bos) if bos != -1 else "",
        stop_token_ids=[eos],
    )


def _all_logits(backend: LlamaCppBackend, text: str, target: Active) -> Any:
    """Evaluate `text` with every position's logits kept, under `target` adapters."""
    import numpy as np

    llm: Any = backend._llm
    with backend._lock:
        backend._apply(target)
        tokens = llm.tokenize(text.encode(), add_bos=False, special=True)
        saved = llm._logits_all, llm.scores
        llm._logits_all = True
        llm.scores = np.zeros((len(tokens), llm._n_vocab), dtype=np.single)
        try:
            llm.reset()
            llm.eval(tokens)
            return np.array(llm.scores, copy=True)
        finally:
            llm._logits_all, llm.scores = saved
            llm.reset()


@dataclass(frozen=True)
class ChoiceScores:
    """Scores of a multiple-choice continuation, one per choice."""

    scores: list[float]  # mean log-probability per token
    tokens: list[int]  # tokens scored per choice
    prompt_tokens: int

    def best(self) -> int:
        return max(range(len(self.scores)), key=lambda i: self.scores[i])


def _split(llm: Any, prefix: str, choice: str) -> tuple[list[int], list[int]]:
    """Tokens of `prefix + choice` split into (context part, choice part).

    Tokenized together, so the boundary is the one the model would see: `"Call `x." + "open()"`
    may merge across the seam; the choice part starts where the prefix's own tokens stop
    matching."""
    whole: list[int] = llm.tokenize((prefix + choice).encode(), add_bos=False, special=False)
    alone: list[int] = llm.tokenize(prefix.encode(), add_bos=False, special=False) if prefix else []
    k = 0
    while k < min(len(whole), len(alone)) and whole[k] == alone[k]:
        k += 1
    k = min(k, len(whole) - 1)  # at least one choice token
    return whole[:k], whole[k:]


def _score(llm: Any, prompt: list[int], prefix: str, choices: Sequence[str], keep: int) -> ChoiceScores:
    """Evaluate the prompt once (its first `keep` tokens are already in the context), then
    each choice from its KV cache (context lock held)."""
    import numpy as np

    saved = llm._logits_all, llm.scores
    scores: list[float] = []
    counts: list[int] = []
    try:
        llm._logits_all = False
        llm.n_tokens = keep  # eval() drops the context's rows from here on
        llm.eval(prompt[keep:-1])
        base = llm.n_tokens
        for choice in choices:
            extra, cont = _split(llm, prefix, choice)
            seq = [prompt[-1], *extra, *cont]
            if base + len(seq) >= llm.n_ctx():
                raise InputError(f"the probe needs {base + len(seq)} tokens but the context holds "
                                 f"{llm.n_ctx()}; shorten it or raise RUNE_CONTEXT_SIZE.")
            llm.n_tokens = base
            llm._logits_all = True
            llm.scores = np.zeros((base + len(seq), llm._n_vocab), dtype=np.single)
            llm.eval(seq)
            rows = np.asarray(llm.scores[base + len(extra) : base + len(seq) - 1], dtype=np.float64)
            top = rows.max(axis=1, keepdims=True)
            logz = top[:, 0] + np.log(np.exp(rows - top).sum(axis=1))
            picked = rows[np.arange(len(cont)), cont]
            scores.append(float((picked - logz).mean()))
            counts.append(len(cont))
            llm._logits_all = False
    finally:
        llm._logits_all, llm.scores = saved
    return ChoiceScores(scores, counts, len(prompt))
