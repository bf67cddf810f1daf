"""PEFT -> GGUF export: the same adapter must act the same in transformers and in llama.cpp."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers.tiny import make_peft_adapter
from runtime.models import adapter_a, base, derived, hf, llama, rt_settings

from rune_mcp.basemodel import BaseModelInfo
from rune_mcp.distill.gguf import export_gguf, permute_rows
from rune_mcp.errors import InputError
from rune_mcp.runtime.base import AdapterSpec
from rune_mcp.runtime.llamacpp import LlamaCppBackend
from rune_mcp.runtime.transformers import TransformersBackend

__all__ = ["adapter_a", "base", "derived", "hf", "llama", "rt_settings"]  # fixtures used here

TEXT = ('def fibonacci(n: int) -> int:\n    """Return the n-th Fibonacci number."""\n'
        "    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n")


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def test_gguf_file_has_llama_cpp_lora_layout(adapter_a: AdapterSpec, base: BaseModelInfo) -> None:
    import gguf

    assert adapter_a.gguf_path is not None
    reader = gguf.GGUFReader(str(adapter_a.gguf_path))
    fields = {name: reader.fields[name].contents() for name in (
        "general.architecture", "general.type", "adapter.type", "adapter.lora.alpha",
        "rune.base_fingerprint")}
    assert fields == {"general.architecture": base.architecture, "general.type": "adapter",
                      "adapter.type": "lora", "adapter.lora.alpha": 16.0,
                      "rune.base_fingerprint": base.fingerprint}
    names = {t.name for t in reader.tensors}
    assert len(names) == base.n_layers * 7 * 2
    q_a = next(t for t in reader.tensors if t.name == "blk.0.attn_q.weight.lora_a")
    k_b = next(t for t in reader.tensors if t.name == "blk.0.attn_k.weight.lora_b")
    # numpy shapes: A is r x in, B is out x r (no transposes)
    assert tuple(q_a.data.shape) == (8, base.embedding_length)
    assert tuple(k_b.data.shape) == (base.n_head_kv * 64, 8)


def test_transformers_and_llama_cpp_agree_with_the_adapter(
    adapter_a: AdapterSpec, llama: LlamaCppBackend, hf: TransformersBackend
) -> None:
    with_lora = [(adapter_a, 1.0)]
    lc_base, hf_base = llama.logits(TEXT), hf.logits(TEXT)
    lc_lora, hf_lora = llama.logits(TEXT, with_lora), hf.logits(TEXT, with_lora)
    # the adapter really changes the model, and both runtimes change it the same way
    assert np.abs(hf_lora - hf_base).max() > 1.0
    assert _corr(lc_base, hf_base) > 0.99
    assert _corr(lc_lora, hf_lora) > 0.99
    assert _corr(lc_lora - lc_base, hf_lora - hf_base) > 0.8  # 0.90 measured
    assert (lc_lora.argmax(-1) == hf_lora.argmax(-1)).mean() >= 0.95
    # "Same greedy tokens" is checked teacher-forced (the argmax line above): free-running
    # generation forks after a few dozen tokens at a near-tie, since llama.cpp multiplies with
    # Q4_1 blocks and 8-bit activations and transformers with their fp32 dequantization.


def test_removing_the_adapter_restores_base_logits_exactly(
    adapter_a: AdapterSpec, llama: LlamaCppBackend
) -> None:
    before = llama.logits(TEXT)
    llama.logits(TEXT, [(adapter_a, 1.0)])
    after = llama.logits(TEXT)
    assert np.array_equal(before, after)


def _qk_only(src: Path, dst: Path) -> Path:
    """The q/k part of a PEFT adapter, where the permutation is all that matters."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(src / "adapter_model.safetensors"))
    dst.mkdir()
    save_file({k: v for k, v in tensors.items() if ".q_proj." in k or ".k_proj." in k},
              str(dst / "adapter_model.safetensors"))
    config = json.loads((src / "adapter_config.json").read_text())
    (dst / "adapter_config.json").write_text(
        json.dumps({**config, "target_modules": ["q_proj", "k_proj"]}))
    return dst


def test_without_the_qk_permutation_llama_cpp_disagrees(
    adapter_a: AdapterSpec, base: BaseModelInfo, llama: LlamaCppBackend, hf: TransformersBackend,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Guards the permutation: skipping it must visibly break agreement (so the test above can
    fail)."""
    assert adapter_a.peft_dir is not None
    folder = _qk_only(adapter_a.peft_dir, tmp_path / "qk")
    permuted = AdapterSpec("qk", base.fingerprint, folder,
                           export_gguf(folder, base, tmp_path / "qk.gguf"))
    monkeypatch.setattr("rune_mcp.distill.gguf.PERMUTED_ARCHS", frozenset())
    unpermuted = AdapterSpec("qk-unpermuted", base.fingerprint, folder,
                             export_gguf(folder, base, tmp_path / "qk-unpermuted.gguf"))
    lc_base, hf_base = llama.logits(TEXT), hf.logits(TEXT)
    hf_delta = hf.logits(TEXT, [(permuted, 1.0)]) - hf_base
    good = _corr(llama.logits(TEXT, [(permuted, 1.0)]) - lc_base, hf_delta)
    bad = _corr(llama.logits(TEXT, [(unpermuted, 1.0)]) - lc_base, hf_delta)
    print(f"q/k-only adapter effect correlation: permuted {good:.3f}, unpermuted {bad:.3f}")
    assert good > 0.5 and bad < good - 0.3, (good, bad)


def test_permute_rows_interleaves_the_rotary_halves_per_head() -> None:
    w = np.arange(8, dtype=np.float32).reshape(8, 1)  # 2 heads of 4 rows
    assert permute_rows(w, 2).ravel().tolist() == [0, 2, 1, 3, 4, 6, 5, 7]
    with pytest.raises(InputError, match="heads"):
        permute_rows(np.zeros((6, 1), dtype=np.float32), 2)


def test_export_writes_atomically_and_leaves_nothing_on_failure(
    base: BaseModelInfo, tmp_path: Path
) -> None:
    tiny = make_peft_adapter(tmp_path / "tiny")  # a 2-layer hidden-16 llama: shapes do not fit
    out = tmp_path / "out" / "a.gguf"
    with pytest.raises(InputError, match="another base model"):
        export_gguf(tiny, base, out)
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def test_export_refuses_what_llama_cpp_cannot_serve(
    adapter_a: AdapterSpec, base: BaseModelInfo, tmp_path: Path
) -> None:
    assert adapter_a.peft_dir is not None
    with pytest.raises(InputError, match="no adapter_config.json"):
        export_gguf(tmp_path, base, tmp_path / "x.gguf")
    folder = tmp_path / "variant"
    folder.mkdir()
    config = json.loads((adapter_a.peft_dir / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**config, "use_dora": True}))
    with pytest.raises(InputError, match="DoRA"):
        export_gguf(folder, base, tmp_path / "x.gguf")
    (folder / "adapter_config.json").write_text(json.dumps(config))
    (folder / "adapter_model.bin").write_bytes(b"not read: pickles are never loaded")
    with pytest.raises(InputError, match="only safetensors"):
        export_gguf(folder, base, tmp_path / "x.gguf")
    (folder / "adapter_model.safetensors").write_bytes(b"garbage")
    with pytest.raises(InputError, match="not a readable safetensors"):
        export_gguf(folder, base, tmp_path / "x.gguf")
    assert not (tmp_path / "x.gguf").exists()
