"""Opening the model through `open_llama`: multi-token batches work on every CPU, and the
AMX guard switches only the extra weight buffers off."""

from __future__ import annotations

from typing import Any

import pytest

from rune_mcp.basemodel import embedded_gguf_path
from rune_mcp.runtime import ggml


def test_a_multi_token_batch_decodes_on_this_machine() -> None:
    # Regression: llama.cpp's AMX kernels crashed on the first batch of several tokens
    # (a segmentation fault, taking the server down) on a virtualised Xeon.
    llm = ggml.open_llama(str(embedded_gguf_path()), n_ctx=256, n_threads=2, verbose=False)
    tokens = llm.tokenize(b"The quick brown fox jumps over the lazy dog, and then", add_bos=True)
    llm.eval(tokens)
    assert llm.n_tokens == len(tokens)


def test_the_guard_turns_off_only_the_extra_buffers(monkeypatch: pytest.MonkeyPatch) -> None:
    import llama_cpp.llama_cpp as low

    seen: list[bool] = []
    original = low.llama_model_default_params

    class FakeLlama:
        def __init__(self, model_path: str, **kwargs: Any) -> None:
            params = low.llama_model_default_params()
            seen.append(bool(params.use_extra_bufts))

    monkeypatch.setattr("llama_cpp.Llama", FakeLlama)
    for amx, expected in ((True, False), (False, True)):
        monkeypatch.setattr(ggml, "has_amx", lambda amx=amx: amx)
        ggml.open_llama("model.gguf", n_ctx=8)
        assert seen[-1] is expected
    assert low.llama_model_default_params is original
