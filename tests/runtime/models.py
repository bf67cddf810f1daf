"""Runtime test models: the embedded SmolLM2 base, two real adapters for it, shared backends.

The adapters are real PEFT LoRA adapters of the real base (all seven linear modules, r=8) with
seeded random B matrices large enough to change the model's answers; they are built once per
session, exported to GGUF with `export_gguf`, and loaded by backends that live for the whole
session (loading the base is the slow part, and the runtime is built to load it once).
`tests/runtime/conftest.py` and `tests/test_export.py` both import these fixtures; the builders
are memoized, so each object exists once per test process however many modules use it.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
import warnings
from pathlib import Path

import pytest
from conftest import TEST_CACHE

from rune_mcp.basemodel import BaseModelInfo, ensure_derived, resolve_base
from rune_mcp.config import ALL_LINEAR, Settings
from rune_mcp.distill.gguf import export_gguf
from rune_mcp.runtime.base import AdapterSpec
from rune_mcp.runtime.llamacpp import LlamaCppBackend
from rune_mcp.runtime.transformers import TransformersBackend

PROMPT = [{"role": "user", "content": "Write a Python function that reverses a string."}]


def runtime_settings(home: Path, **overrides: object) -> Settings:
    # One llama.cpp thread: on a busy shared CPU, two threads spin at every barrier and run
    # about ten times slower than one. No repetition guard: these backends check the
    # arithmetic of adapters on plain greedy decoding (tests/runtime/test_repetition.py
    # checks the guard).
    values: dict[str, object] = {"home": home, "cache_dir": TEST_CACHE, "threads": 1,
                                 "context_size": 1024, "seed": 0, "repeat_ngram": 0}
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def make_smollm_adapter(derived: Path, out: Path, seed: int, sigma: float = 0.04) -> Path:
    """A PEFT LoRA of the real base whose B matrices are seeded noise of scale `sigma`."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(derived), dtype=torch.float32)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=list(ALL_LINEAR))
    torch.manual_seed(seed)  # PEFT draws A from the global generator: same seed, same adapter
    with warnings.catch_warnings():
        # peft calls a transformers method that transformers 5 has renamed.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing",
                                category=FutureWarning)
        peft_model = get_peft_model(model, config)
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, param in peft_model.named_parameters():
                if "lora_B" in name:
                    param.copy_(torch.randn(param.shape, generator=gen) * sigma)
        peft_model.save_pretrained(str(out), safe_serialization=True)
    return out


def _scratch(prefix: str) -> Path:
    """A temporary folder removed when the test process ends (session objects live that long)."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, folder, True)
    return folder


@functools.cache
def _settings() -> Settings:
    return runtime_settings(_scratch("rune-rt-home-"))


@functools.cache
def _base() -> BaseModelInfo:
    return resolve_base(_settings())


@functools.cache
def _adapter(seed: int) -> AdapterSpec:
    base = _base()
    derived = ensure_derived(_settings(), base, quiet=True)
    folder = make_smollm_adapter(derived, _scratch("rune-rt-a-") / "peft",
                                 seed=seed)
    gguf = export_gguf(folder, base, folder / "adapter.gguf")
    return AdapterSpec(f"adapter-{seed}", base.fingerprint, peft_dir=folder, gguf_path=gguf)


@functools.cache
def _llama() -> LlamaCppBackend:
    return LlamaCppBackend(_settings(), _base())


@functools.cache
def _hf() -> TransformersBackend:
    return TransformersBackend(_settings(), _base(), device="cpu")


@pytest.fixture(scope="session")
def rt_settings() -> Settings:
    return _settings()


@pytest.fixture(scope="session")
def base() -> BaseModelInfo:
    return _base()


@pytest.fixture(scope="session")
def derived() -> Path:
    return ensure_derived(_settings(), _base(), quiet=True)


@pytest.fixture(scope="session")
def adapter_a() -> AdapterSpec:
    return _adapter(1)


@pytest.fixture(scope="session")
def adapter_b() -> AdapterSpec:
    return _adapter(2)


@pytest.fixture(scope="session")
def llama() -> LlamaCppBackend:
    return _llama()


@pytest.fixture(scope="session")
def hf() -> TransformersBackend:
    return _hf()
