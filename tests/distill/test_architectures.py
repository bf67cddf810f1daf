"""Every supported architecture, end to end: GGUF base -> derived transformers model -> trained
LoRA -> GGUF adapter -> llama.cpp, with llama.cpp and transformers+PEFT computing the same logits.

Each base is a tiny random model of the architecture written as an f32 GGUF the way llama.cpp's
converter writes it (tests/helpers/archs.py), so the two runtimes differ only in how they apply
the adapter (f16 LoRA tensors in llama.cpp); agreement is checked to a few thousandths of the
adapter's own effect, where a wrong row order or a missed hyperparameter is off by its size.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers.archs import ARCHS, tiny_model, write_gguf_base
from helpers.tiny import PEFT_WARNING, make_peft_adapter

from distill.sessions import make_trajectory
from rune_mcp.architectures import ARCHITECTURES
from rune_mcp.basemodel import BaseModelInfo, ensure_derived, resolve_base
from rune_mcp.config import ALL_LINEAR, DEFAULT_TARGETS, Settings
from rune_mcp.distill.gguf import export_gguf
from rune_mcp.distill.lessons import compile_lessons
from rune_mcp.distill.train import load_base, train_adapter
from rune_mcp.errors import ModelError, TrainingError
from rune_mcp.runtime.base import AdapterSpec
from rune_mcp.runtime.llamacpp import LlamaCppBackend
from rune_mcp.runtime.transformers import TransformersBackend

pytestmark = pytest.mark.filterwarnings(PEFT_WARNING)
# Token ids, not text: the tiny sentencepiece vocabulary splits text differently in the two
# tokenizers (a real Gemma vocabulary does not); what is compared here is the model.
IDS = [1, 40, 72, 101, 108, 108, 111, 32, 119, 111, 114, 108, 100, 33, 10, 200, 150, 90, 60, 30]


@dataclass
class Stack:
    """One architecture's base in both runtimes."""

    arch: str
    model: Any  # the original transformers model the GGUF was written from
    settings: Settings
    info: BaseModelInfo
    derived: Path
    llama: LlamaCppBackend
    hf: TransformersBackend
    folder: Path


@pytest.fixture(scope="module", params=ARCHS)
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[Stack]:
    arch: str = request.param
    folder = tmp_path_factory.mktemp(f"arch-{arch}")
    model = tiny_model(arch)
    path = write_gguf_base(model, arch, folder / f"tiny-{arch}.gguf")
    settings = Settings(home=folder / "home", cache_dir=folder / "cache",
                        base_model=path, threads=1, context_size=256, seed=0, device="cpu")
    info = resolve_base(settings)
    derived = ensure_derived(settings, info, quiet=True)
    yield Stack(arch, model, settings, info, derived, LlamaCppBackend(settings, info),
                TransformersBackend(settings, info, device="cpu"), folder)


def _reference_logits(model: Any, ids: list[int]) -> np.ndarray[Any, Any]:
    import torch

    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0].float().numpy()  # type: ignore[no-any-return]


def _random_adapter(stack: Stack, name: str, targets: list[str], seed: int = 1) -> Path:
    """A PEFT LoRA of the derived model with random A and B, strong enough to move logits."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(stack.derived), dtype=torch.float32)
    torch.manual_seed(seed)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights=False)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing",
                                category=FutureWarning)
        peft_model = get_peft_model(model, config)
    out = stack.folder / name
    peft_model.save_pretrained(str(out), safe_serialization=True)
    return out


def _spec(stack: Stack, peft_dir: Path, name: str) -> AdapterSpec:
    gguf = export_gguf(peft_dir, stack.info, stack.folder / f"{name}.gguf")
    return AdapterSpec(name, stack.info.fingerprint, peft_dir=peft_dir, gguf_path=gguf)


def _deltas(stack: Stack, spec: AdapterSpec) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """The adapter's effect on the logits in llama.cpp and in transformers+PEFT."""
    lc = stack.llama.logits(IDS, [(spec, 1.0)]) - stack.llama.logits(IDS)
    hf = stack.hf.logits(IDS, [(spec, 1.0)]) - stack.hf.logits(IDS)
    return lc, hf


def _relative_error(lc: np.ndarray[Any, Any], hf: np.ndarray[Any, Any]) -> float:
    return float(np.abs(lc - hf).max() / np.abs(hf).max())


def test_the_gguf_layout_is_read_for_the_architecture(stack: Stack) -> None:
    cfg = stack.model.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    info = stack.info
    assert info.architecture == stack.arch
    assert (info.n_layers, info.n_head, info.n_head_kv) == (2, 4, 2)
    assert (info.embedding_length, info.head_dim, info.n_ff) == (64, head_dim, 128)
    if stack.arch in ("qwen3", "gemma3"):
        assert info.head_dim != info.embedding_length // info.n_head  # the case that needs it


def test_the_derived_model_is_the_model_llama_cpp_serves(stack: Stack) -> None:
    """The transformers form of the GGUF computes what the original model computed, and what
    llama.cpp computes from the GGUF (f32 throughout, so only summation order differs)."""
    import torch
    from transformers import AutoModelForCausalLM

    derived = AutoModelForCausalLM.from_pretrained(str(stack.derived), dtype=torch.float32)
    reference = _reference_logits(stack.model, IDS)
    assert np.abs(_reference_logits(derived, IDS) - reference).max() < 1e-4
    assert np.abs(stack.llama.logits(IDS) - reference).max() < 2e-3
    assert set(DEFAULT_TARGETS) | set(ALL_LINEAR) <= {
        name.rsplit(".", 1)[-1] for name, _ in derived.named_modules()}


def test_a_trained_adapter_acts_the_same_in_llama_cpp(stack: Stack) -> None:
    """Train -> export -> serve, with every linear module targeted (q/k included)."""
    settings = stack.settings.with_overrides(
        target_modules=list(ALL_LINEAR), train_steps=6, learning_rate=1e-2, lora_rank=4,
        lora_alpha=8.0, train_batch_tokens=512, max_example_tokens=128, lessons_qa=False)
    loaded = load_base(settings, stack.derived, "lora")
    result = train_adapter(settings, compile_lessons(make_trajectory(), settings), loaded,
                           stack.folder / "trained")
    assert result.losses[-1] < result.losses[0]
    lc, hf = _deltas(stack, _spec(stack, result.peft_dir, "trained"))
    error = _relative_error(lc, hf)
    print(f"{stack.arch}: trained adapter effect {np.abs(hf).max():.3f}, relative error {error:.4f}")
    assert np.abs(hf).max() > 0.05  # the adapter really changes the model
    assert error < 0.02, error


def test_the_qk_row_order_is_right_for_the_architecture(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A q/k-only adapter agrees with the architecture's own rule and visibly disagrees with the
    other one (llama permutes, the others do not), so the agreement above can fail."""
    peft_dir = _random_adapter(stack, "qk", ["q_proj", "k_proj"])
    right = _relative_error(*_deltas(stack, _spec(stack, peft_dir, "qk-right")))
    permuted = ARCHITECTURES[stack.arch].permute_qk
    monkeypatch.setattr("rune_mcp.distill.gguf.PERMUTED_ARCHS",
                        frozenset() if permuted else frozenset({stack.arch}))
    wrong = _relative_error(*_deltas(stack, _spec(stack, peft_dir, "qk-wrong")))
    print(f"{stack.arch}: q/k adapter relative error {right:.4f} right, {wrong:.3f} wrong")
    assert right < 0.02 and wrong > 0.3, (right, wrong)


def test_an_unsupported_architecture_is_refused_in_one_sentence(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", cache_dir=tmp_path / "cache")
    phi3 = BaseModelInfo(path=tmp_path / "phi3.gguf", sha256="f" * 64, size_bytes=1,
                         architecture="phi3", name="phi3", n_layers=2, n_head=2, n_head_kv=1,
                         embedding_length=16, head_dim=8, n_ff=32, embedded=False)
    peft_dir = make_peft_adapter(tmp_path / "peft")
    attempts: list[Callable[[], Path]] = [
        lambda: ensure_derived(settings, phi3, quiet=True),
        lambda: export_gguf(peft_dir, phi3, tmp_path / "x.gguf")]
    for attempt in attempts:
        with pytest.raises(ModelError) as caught:
            attempt()
        message = str(caught.value)
        assert "'phi3'" in message and all(name in message for name in ARCHITECTURES)
        assert message.count(". ") == 0 and message.endswith(".")
    assert not (tmp_path / "x.gguf").exists() and not (tmp_path / "cache" / "models").exists()


def test_targets_llama_cpp_cannot_serve_are_refused_before_training(
    settings: Settings, tiny_dir: Path, tmp_path: Path
) -> None:
    settings = settings.with_overrides(target_modules=["o_proj", "lm_head"], lessons_qa=False)
    loaded = load_base(settings, tiny_dir, "lora")
    with pytest.raises(TrainingError, match=r"\['lm_head'\] cannot be served by llama.cpp"):
        train_adapter(settings, compile_lessons(make_trajectory(), settings), loaded,
                      tmp_path / "never")
    assert not (tmp_path / "never").exists()
