"""llama.cpp backend: swaps are exact, history-free, bounded in memory and safe under threads."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from rune_mcp.basemodel import BaseModelInfo
from rune_mcp.config import Settings
from rune_mcp.errors import InputError, IntegrityError, UsageError
from rune_mcp.runtime.base import AdapterSpec, Message, rss_mb
from rune_mcp.runtime.llamacpp import LlamaCppBackend
from runtime.models import PROMPT, runtime_settings

SHORT = 8


def _settled_rss() -> float:
    """RSS after returning freed heap pages to the system, so only live memory counts."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    return rss_mb()


def _text(backend: LlamaCppBackend, adapters: object = None, tokens: int = SHORT,
          messages: Sequence[Message] = PROMPT) -> str:
    return backend.generate(messages, max_tokens=tokens, adapters=adapters).text  # type: ignore[arg-type]


def test_deactivating_restores_the_base_output_exactly(
    llama: LlamaCppBackend, adapter_a: AdapterSpec
) -> None:
    base_text = _text(llama, ())
    llama.activate([adapter_a])
    assert llama.active == ((adapter_a, 1.0),)
    with_a = _text(llama)  # no adapters argument: the active set is used
    assert with_a == _text(llama, [adapter_a])
    llama.deactivate()
    assert not llama.active
    assert _text(llama) == base_text
    assert _text(llama, ()) == base_text


def test_a_then_b_then_a_equals_a_fresh_a(
    llama: LlamaCppBackend, adapter_a: AdapterSpec, adapter_b: AdapterSpec,
    base: BaseModelInfo, rt_settings: Settings,
) -> None:
    fresh = LlamaCppBackend(rt_settings, base)
    try:
        expected = fresh.generate(PROMPT, max_tokens=SHORT, adapters=[adapter_a]).text
        fresh_logits = fresh.logits("def add(a, b):\n    return", [(adapter_a, 1.0)])
    finally:
        fresh.close()
    _text(llama, [adapter_a])
    _text(llama, [adapter_b])
    assert _text(llama, [adapter_a]) == expected
    assert (llama.logits("def add(a, b):\n    return", [(adapter_a, 1.0)]) == fresh_logits).all()


def test_streaming_yields_the_same_text_as_generate(
    llama: LlamaCppBackend, adapter_b: AdapterSpec
) -> None:
    pieces = list(llama.stream(PROMPT, max_tokens=SHORT, adapters=[adapter_b]))
    assert len(pieces) > 1
    assert "".join(pieces) == _text(llama, [adapter_b])


def test_timings_are_reported(llama: LlamaCppBackend, adapter_a: AdapterSpec) -> None:
    out = llama.generate(PROMPT, max_tokens=SHORT, adapters=[adapter_a])
    assert set(out.timings) == {"swap", "prompt", "generation", "tokens_per_s"}
    assert out.completion_tokens == SHORT and out.prompt_tokens > 10
    assert out.timings["tokens_per_s"] > 0


def test_thousand_swaps_during_concurrent_seeded_requests(
    llama: LlamaCppBackend, adapter_a: AdapterSpec, adapter_b: AdapterSpec
) -> None:
    """Four threads generate (sampled, seeded) while a fifth swaps the default adapter set
    1,000 times. Three threads name their own sets, one uses whatever set is active when its
    request starts. Consecutive requests use different sets, so the context switches adapters
    between nearly every pair. Every output equals its single-request result; memory is flat."""
    sets: list[object] = [[adapter_a], [adapter_b], (), [(adapter_b, 1.0), (adapter_a, 0.3)]]
    prompt = [{"role": "user", "content": "Name a fruit."}]

    def one(adapters: object, seed: int) -> tuple[str, tuple[tuple[str, float], ...]]:
        out = llama.generate(prompt, max_tokens=4, temperature=0.9, seed=seed,
                             adapters=adapters)  # type: ignore[arg-type]
        return out.text, out.adapters

    refs = {used: text for text, used in (one(s, 7) for s in sets)}
    assert len(refs) == 4 and len(set(refs.values())) > 1
    held = llama.stats()["adapters_loaded"]  # the backend is shared: other tests loaded theirs
    rss_warm: list[float] = []  # once every thread has run a few requests (per-thread buffers)
    loads: list[int] = []
    done = threading.Event()
    results: list[list[tuple[str, tuple[tuple[str, float], ...]]]] = [[] for _ in range(4)]
    errors: list[BaseException] = []
    swaps = [0]

    def worker(i: int) -> None:
        try:
            while not done.is_set() or len(results[i]) < 3:
                results[i].append(one(sets[i] if i < 3 else None, 7))
        except BaseException as exc:
            errors.append(exc)
            done.set()

    def swapper() -> None:
        try:
            while not done.is_set() and min(len(r) for r in results) < 5:
                time.sleep(0.01)
            rss_warm.append(_settled_rss())
            loads.append(llama.stats()["adapter_loads"])
            n = 0
            # at least 1,000 swaps, and on until the default-set thread has seen two sets
            while n < 1000 or (len({u for _, u in results[3][5:]}) < 2 and n < 100_000):
                llama.activate(sets[(n + 1) % 4])  # type: ignore[arg-type]
                n += 1
                swaps[0] = n
                time.sleep(0.005)  # spread the swaps over many requests
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    llama.activate([adapter_a])
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    threads.append(threading.Thread(target=swapper))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    llama.deactivate()
    assert not errors
    assert swaps[0] >= 1000
    for i in range(4):
        assert len(results[i]) >= 3
        assert all(text == refs[used] for text, used in results[i])
    assert len({used for _, used in results[3]}) > 1  # the default set really changed under it
    assert llama.stats()["adapters_loaded"] == held  # a composed set is its parts, no copy
    assert llama.stats()["adapter_loads"] == loads[0]  # swaps reuse loaded adapters
    # Flat, not equal: allocator and interpreter noise in a long test process is tens of MB,
    # while a leak of one adapter's tensors or of 64 KB per swap would exceed 64 MB here.
    assert _settled_rss() - rss_warm[0] < 64


def test_cache_is_bounded_and_evicted_adapters_reload(
    base: BaseModelInfo, adapter_a: AdapterSpec, adapter_b: AdapterSpec, tmp_path: Path,
    llama: LlamaCppBackend,
) -> None:
    assert adapter_a.gguf_path is not None
    size_mb = adapter_a.gguf_path.stat().st_size / (1 << 20)
    small = LlamaCppBackend(runtime_settings(tmp_path, adapter_cache_mb=int(size_mb) + 1),
                            base)
    try:
        first = _text(small, [adapter_a])
        _text(small, [adapter_b])
        stats = small.stats()
        assert stats["adapters_loaded"] == 1 and stats["adapter_evictions"] == 1
        assert _text(small, [adapter_a]) == first == _text(llama, [adapter_a])
        assert small.stats()["adapter_loads"] == 3
        # a composed set larger than the cache still loads: the set itself is never evicted
        _text(small, [adapter_a, adapter_b])
        assert small.stats()["adapters_loaded"] == 2
    finally:
        small.close()


def test_adapter_of_another_base_is_refused_before_loading(
    llama: LlamaCppBackend, adapter_a: AdapterSpec
) -> None:
    loads = llama.stats()["adapter_loads"]
    alien = AdapterSpec("alien", "f" * 64, adapter_a.peft_dir, adapter_a.gguf_path)
    with pytest.raises(IntegrityError, match="trained for base model ffffffffffff"):
        llama.generate(PROMPT, max_tokens=2, adapters=[alien])
    with pytest.raises(IntegrityError):
        llama.activate([alien])
    assert llama.stats()["adapter_loads"] == loads


def test_bad_requests_are_one_sentence_errors(
    llama: LlamaCppBackend, adapter_a: AdapterSpec
) -> None:
    with pytest.raises(InputError, match="no messages"):
        llama.generate([], max_tokens=2)
    with pytest.raises(InputError, match="RUNE_CONTEXT_SIZE"):
        llama.generate([{"role": "user", "content": "word " * 2000}], max_tokens=2)
    with pytest.raises(UsageError, match="repeat"):
        llama.activate([adapter_a, adapter_a])
