"""llama.cpp backend: the quantized GGUF base on CPU, LoRA adapters swapped in about a millisecond.

The base is loaded once. Each adapter's GGUF is loaded once (`llama_adapter_lora_init`, a few
ms) into a cache bounded by `adapter_cache_mb`; the least recently used adapters are freed
(`llama_adapter_lora_free`) when it is full. A swap is `llama_set_adapters_lora` (well under a
millisecond). One context serves every request under a lock; it is reset before every request,
because a KV prefix computed under one adapter must never be reused under another, and because
a request's output must not depend on what ran before it. Only `logits` (probe scoring) keeps
KV rows from one call to the next, for the same adapters and the same leading tokens.
"""

from __future__ import annotations

import codecs
import ctypes
import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from rune_mcp.basemodel import BaseModelInfo
from rune_mcp.config import Settings
from rune_mcp.cpuload import backend_threads
from rune_mcp.errors import BackendError, InputError, ModelError
from rune_mcp.runtime.base import (
    Active,
    Adapters,
    AdapterSpec,
    FairLock,
    Generation,
    Message,
    Request,
    StreamingBackend,
    adapter_ids,
    rss_mb,
    stage_timings,
)
from rune_mcp.runtime.cache import AdapterCache

log = logging.getLogger(__name__)
Applied = tuple[tuple[str, float], ...]


def _load_lora(model: Any, path: Path, adapter_id: str) -> Any:
    import llama_cpp

    handle = llama_cpp.llama_adapter_lora_init(model, str(path).encode())
    if not handle:
        raise BackendError(f"llama.cpp refused the GGUF of adapter {adapter_id} ({path}); "
                           "re-export it with `rune` or remove the adapter.")
    return handle


def _free_lora(handle: Any) -> None:
    import llama_cpp

    llama_cpp.llama_adapter_lora_free(handle)


class LlamaCppBackend(StreamingBackend):
    """The default CPU runtime."""

    name = "llamacpp"

    def __init__(self, settings: Settings, base: BaseModelInfo) -> None:
        from rune_mcp.runtime.ggml import open_llama

        self.settings = settings
        self.base = base
        self.fingerprint = base.fingerprint
        self.threads = backend_threads(settings)  # the idle cores, unless RUNE_THREADS is set
        start = time.perf_counter()
        try:
            self._llm: Any = open_llama(
                str(base.path), n_ctx=settings.context_size,
                n_threads=self.threads, n_threads_batch=self.threads,
                seed=settings.seed, verbose=False,
            )
        except Exception as exc:  # llama-cpp-python raises ValueError for any load failure
            raise ModelError(f"llama.cpp could not load {base.path} ({exc}); check the file or "
                             "set RUNE_BASE_MODEL to a valid GGUF model.") from exc
        self.load_ms = (time.perf_counter() - start) * 1000
        self._formatter = _chat_formatter(self._llm, base)
        self._lock = FairLock()  # one context: requests and swaps take turns in order
        self._cache: AdapterCache[Any] = AdapterCache(
            settings.adapter_cache_mb << 20,
            load=lambda spec: _load_lora(self._llm._model.model, self._gguf_for(spec), spec.adapter_id),
            free=_free_lora, size=lambda spec: self._gguf_for(spec).stat().st_size,
            before_free=self._detach)
        self._applied: Applied = ()
        # (adapters applied, tokens) whose KV rows the last `logits` call left in the context
        self._kept: tuple[Applied, list[int]] | None = None

    # --- adapters ---------------------------------------------------------------------
    def apply_now(self, adapters: Adapters) -> float:
        """Switch the context itself to `adapters` now, as a request does before its prompt;
        returns the ms spent (the warm swap figure of `rune bench runtime`)."""
        target = self._resolve(adapters)
        start = time.perf_counter()
        with self._lock:
            self._apply(target)
            self._reset()
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

        key = adapter_ids(target)
        if key == self._applied:
            return
        handles = self._cache.ensure(target)
        n = len(handles)
        array = (llama_cpp.llama_adapter_lora_p_ctypes * n)(*handles) if n else None
        scales = (ctypes.c_float * n)(*[s for _, s in target]) if n else None
        if llama_cpp.llama_set_adapters_lora(self._llm._ctx.ctx, array, n, scales) != 0:
            raise BackendError(f"llama.cpp could not apply adapters {[i for i, _ in key]}; "
                               "they may not fit this base model.")
        self._applied = key

    def _detach(self, ids: frozenset[str]) -> None:
        """Take adapters about to be freed off the context, so no freed handle stays attached."""
        import llama_cpp

        if any(adapter_id in ids for adapter_id, _ in self._applied):
            llama_cpp.llama_set_adapters_lora(self._llm._ctx.ctx, None, 0, None)
            self._applied = ()

    def _reset(self) -> None:
        """Empty the context (lock held): the next evaluation starts from nothing."""
        self._llm.reset()
        self._kept = None

    # --- generation -------------------------------------------------------------------
    def _run(self, request: Request, target: Active, result: Generation) -> Iterator[str]:
        import llama_cpp

        prompt = self.chat_tokens(request.messages)
        with self._lock:
            start = time.perf_counter()
            self._apply(target)
            self._reset()  # generation overwrites the context's KV rows
            swapped = time.perf_counter()
            budget = min(request.max_tokens, self.settings.context_size - len(prompt))
            self._llm.set_seed(self.settings.seed if request.seed is None else request.seed)
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            vocab = self._llm._model.vocab
            first = last = swapped
            count = 0
            for token in self._llm.generate(prompt, temp=request.temperature, reset=True,
                                            logits_processor=self._guard(len(prompt))):
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
        result.adapters = adapter_ids(target)
        result.timings = stage_timings(start, swapped, first, end, count)

    def _guard(self, prompt_tokens: int) -> Any:
        """The repetition guard for one request (`rune_mcp.runtime.repetition`), or None."""
        if not self.settings.repeat_ngram:
            return None
        from llama_cpp import LogitsProcessorList

        from rune_mcp.runtime.repetition import NGramGuard

        return LogitsProcessorList([NGramGuard(prompt_tokens, self.settings.repeat_ngram,
                                               self.settings.repeat_times)])

    # --- tokens and logits ------------------------------------------------------------
    def tokenize(self, text: str, special: bool = False) -> list[int]:
        return list(self._llm.tokenize(text.encode(), add_bos=False, special=special))

    def detokenize(self, tokens: Sequence[int]) -> str:
        return str(self._llm.detokenize(list(tokens)).decode("utf-8", "ignore"))

    def chat_tokens(self, messages: Sequence[Message]) -> list[int]:
        if not messages:
            raise InputError("no messages to answer; pass at least one user message.")
        try:
            text = self._formatter(messages=list(messages)).prompt
        except Exception as exc:  # jinja2 errors from the model's own template
            raise InputError(f"the model's chat template rejected these messages ({exc}).") from exc
        tokens = self.tokenize(text, special=True)
        if len(tokens) >= self.settings.context_size:
            raise InputError(f"the prompt has {len(tokens)} tokens but the context holds "
                             f"{self.settings.context_size}; shorten it or raise "
                             "RUNE_CONTEXT_SIZE.")
        return tokens

    def logits(self, tokens: str | Sequence[int], adapters: Adapters = (), first: int = 0) -> Any:
        """Next-token logits at positions `first`.. of `tokens`, with `adapters` on the context
        for this evaluation only. The leading tokens the last call left in the context, under
        the same adapters, are not evaluated again: probes share long prefixes (a session's
        text in the prompt, then several questions and choices), and evaluating them again
        dominated benchmark time."""
        ids = self.tokenize(tokens, special=True) if isinstance(tokens, str) else list(tokens)
        if not 0 <= first < len(ids):
            raise InputError(f"logits from position {first} of {len(ids)} tokens: there is none.")
        if len(ids) >= self._llm.n_ctx():
            raise InputError(f"the text needs {len(ids)} tokens but the context holds "
                             f"{self._llm.n_ctx()}; shorten it or raise RUNE_CONTEXT_SIZE.")
        target = self._resolve(adapters)
        with self._lock:
            self._apply(target)
            return self._eval(ids, first)

    def _eval(self, ids: list[int], first: int) -> Any:
        """Evaluate `ids` from what the context holds, keeping rows `first`.. (lock held)."""
        import numpy as np

        llm: Any = self._llm
        keep = self._reusable(ids[:first])
        self._kept = None
        saved = llm._logits_all, llm.scores
        try:
            llm.n_tokens = keep  # eval() drops the context's rows from here on
            llm._logits_all = False
            llm.eval(ids[keep:first])
            llm._logits_all = True
            llm.scores = np.zeros((len(ids), llm._n_vocab), dtype=np.single)
            llm.eval(ids[first:])
            rows = np.array(llm.scores[first:], copy=True)
            self._kept = (self._applied, ids)
            return rows
        finally:
            llm._logits_all, llm.scores = saved
            llm.reset()  # requests start from scratch; the KV rows stay for the next call

    def _reusable(self, head: list[int]) -> int:
        """How many leading tokens of `head` the context still holds, under the same adapters."""
        from llama_cpp import Llama

        if self._kept is None or self._kept[0] != self._applied:
            return 0
        return int(Llama.longest_token_prefix(self._kept[1], head))

    # --- the rest ---------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"backend": self.name, "rss_mb": round(rss_mb(), 1), **self._cache.stats()}

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
