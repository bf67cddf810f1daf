"""transformers backend on CPU (fp32): PEFT adapters by name, mixed-adapter batches, streaming."""

from __future__ import annotations

import pytest

from rune_mcp.errors import IntegrityError
from rune_mcp.runtime.base import AdapterSpec
from rune_mcp.runtime.transformers import TransformersBackend
from runtime.models import PROMPT

OTHER = [{"role": "user", "content": "What is a list comprehension in Python? Answer briefly."}]


def test_mixed_adapter_batch_equals_one_request_at_a_time(
    hf: TransformersBackend, adapter_a: AdapterSpec, adapter_b: AdapterSpec
) -> None:
    requests = [(PROMPT, adapter_a), (OTHER, None), (PROMPT, adapter_b), (OTHER, adapter_a)]
    batch = hf.generate_batch(requests, max_tokens=8)
    single = [hf.generate(m, max_tokens=8, adapters=[s] if s else ()) for m, s in requests]
    assert [g.text for g in batch] == [g.text for g in single]
    assert [g.adapters for g in batch] == [(("adapter-1", 1.0),), (), (("adapter-2", 1.0),),
                                          (("adapter-1", 1.0),)]


def test_switching_never_reloads_the_base_and_deactivate_restores_it(
    hf: TransformersBackend, adapter_a: AdapterSpec, adapter_b: AdapterSpec
) -> None:
    base_model = hf.model
    before = hf.stats()  # the backend is shared: other tests may have loaded adapters of theirs
    base_text = hf.generate(PROMPT, max_tokens=8, adapters=()).text
    hf.activate([adapter_a])
    hf.generate(PROMPT, max_tokens=8)
    hf.activate([(adapter_a, 0.5), (adapter_b, 0.5)])
    composed = hf.generate(PROMPT, max_tokens=8)
    assert composed.adapters == (("adapter-1", 0.5), ("adapter-2", 0.5))
    hf.deactivate()
    assert hf.generate(PROMPT, max_tokens=8).text == base_text
    assert hf.model is base_model
    after = hf.stats()
    # a composed set is its two parts, never a third (merged) adapter
    assert after["adapter_loads"] - before["adapter_loads"] <= 2
    assert (after["adapters_loaded"] - before["adapters_loaded"]
            == after["adapter_loads"] - before["adapter_loads"])


def test_streaming_matches_generate(hf: TransformersBackend, adapter_b: AdapterSpec) -> None:
    pieces = list(hf.stream(PROMPT, max_tokens=8, adapters=[adapter_b]))
    assert "".join(pieces).strip() == hf.generate(PROMPT, max_tokens=8,
                                                  adapters=[adapter_b]).text.strip()


def test_adapter_of_another_base_is_refused(
    hf: TransformersBackend, adapter_a: AdapterSpec
) -> None:
    alien = AdapterSpec("alien", "e" * 64, adapter_a.peft_dir, adapter_a.gguf_path)
    with pytest.raises(IntegrityError, match="trained for base model eeeeeeeeeeee"):
        hf.activate([alien])


@pytest.mark.gpu
def test_nf4_base_on_cuda(rt_settings: object, base: object, adapter_a: AdapterSpec) -> None:
    gpu = TransformersBackend(rt_settings, base, device="cuda")  # type: ignore[arg-type]
    assert gpu.quantized
    out = gpu.generate(PROMPT, max_tokens=16, adapters=[adapter_a])
    assert out.completion_tokens > 0 and out.timings["tokens_per_s"] > 0
