"""Tiny random models of each supported architecture, written as GGUF base models.

Users bring their own GGUF (Llama, Qwen, Gemma families); tests cannot download one, so they
build it: a 2-layer model with random weights from transformers' own config class, converted to
GGUF the way llama.cpp's `convert_hf_to_gguf.py` converts that architecture (tensor names from
the `gguf` package's name map, the per-head q/k row permutation on llama only, Gemma's RMSNorm
weights stored as `w + 1`, no `output.weight` where the embeddings are tied), with a small real
vocabulary (byte-level BPE, or Gemma's sentencepiece) and a chat template, so both llama.cpp and
transformers' GGUF loader read it as they would a downloaded model. Weights stay f32: what
differs between the two runtimes is then the adapter's handling, not quantization.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ARCHS = ("llama", "qwen2", "qwen3", "gemma3")

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
GEMMA_CHAT = ("{{ bos_token }}{% for m in messages %}<start_of_turn>"
              "{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n{{ m['content'] }}"
              "<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n"
              "{% endif %}")
BPE_SPECIAL = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
BPE_MERGES = ("Ġ t", "h e", "i n", "e r", "Ġ a", "o n", "r e", "Ġt he")
SPM_SPECIAL = ("<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>")
SPM_PIECES = ("▁", "▁t", "he", "in", "er", "▁a", "on", "re", "▁the", "▁def", "▁return")


@dataclass(frozen=True)
class Vocab:
    """A tokenizer as GGUF metadata describes it."""

    model: str  # tokenizer.ggml.model
    pre: str | None
    tokens: list[str]
    types: list[int]
    scores: list[float] | None
    merges: list[str] | None
    bos: int
    eos: int
    pad: int
    add_bos: bool
    template: str


def _bpe_vocab() -> Vocab:
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    spelled: dict[int, str] = bytes_to_unicode()  # type: ignore[no-untyped-call]
    tokens = [spelled[b] for b in range(256)] + [m.replace(" ", "") for m in BPE_MERGES]
    tokens += list(BPE_SPECIAL)
    types = [1] * (len(tokens) - len(BPE_SPECIAL)) + [3] * len(BPE_SPECIAL)
    end, start_of_text = tokens.index("<|im_end|>"), tokens.index("<|endoftext|>")
    return Vocab("gpt2", "qwen2", tokens, types, None, list(BPE_MERGES), start_of_text, end,
                 start_of_text, False, CHATML)


def _spm_vocab() -> Vocab:
    tokens = list(SPM_SPECIAL) + [f"<0x{b:02X}>" for b in range(256)] + list(SPM_PIECES)
    types = [3, 3, 3, 2, 3, 3] + [6] * 256 + [1] * len(SPM_PIECES)
    scores = [0.0] * (len(SPM_SPECIAL) + 256) + [-float(i) for i in range(len(SPM_PIECES))]
    return Vocab("llama", None, tokens, types, scores, None, 2, tokens.index("<end_of_turn>"), 0,
                 True, GEMMA_CHAT)


def vocab_for(arch: str) -> Vocab:
    return _spm_vocab() if arch == "gemma3" else _bpe_vocab()


def tiny_model(arch: str, seed: int = 0) -> Any:
    """A 2-layer model of `arch` with random weights, sized to the tiny vocabulary.

    Qwen3 and Gemma3 get a head size other than hidden / heads (as the real ones have), Qwen2
    its q/k/v biases and tied embeddings, Gemma3 its q/k norms and four norms per block.
    """
    import torch
    import transformers as tf

    vocab = vocab_for(arch)
    common: dict[str, Any] = {
        "vocab_size": len(vocab.tokens), "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "max_position_embeddings": 512, "rms_norm_eps": 1e-6, "bos_token_id": vocab.bos,
        "eos_token_id": vocab.eos, "pad_token_id": vocab.pad}
    extra: dict[str, dict[str, Any]] = {
        "llama": {"tie_word_embeddings": False},
        "qwen2": {"tie_word_embeddings": True},
        "qwen3": {"head_dim": 32, "tie_word_embeddings": False},
        "gemma3": {"head_dim": 32, "query_pre_attn_scalar": 32, "sliding_window": 256,
                   "tie_word_embeddings": True},
    }
    classes: dict[str, tuple[Any, Any]] = {
        "llama": (tf.LlamaConfig, tf.LlamaForCausalLM),
        "qwen2": (tf.Qwen2Config, tf.Qwen2ForCausalLM),
        "qwen3": (tf.Qwen3Config, tf.Qwen3ForCausalLM),
        "gemma3": (tf.Gemma3TextConfig, tf.Gemma3ForCausalLM),
    }
    config_class, model_class = classes[arch]
    torch.manual_seed(seed)
    model: Any = model_class(config_class(**common, **extra[arch]))
    model.eval()
    centre = 0.0 if arch == "gemma3" else 1.0  # Gemma's norm weights are offsets from one
    with torch.no_grad():  # random norms and biases, so a wrong offset or a lost bias shows
        for name, param in model.named_parameters():
            if "norm" in name:
                param.copy_(centre + 0.2 * torch.randn(param.shape))
            elif name.endswith(".bias"):
                param.copy_(0.1 * torch.randn(param.shape))
    return model


def _llama_permute(w: np.ndarray[Any, Any], n_head: int) -> np.ndarray[Any, Any]:
    """convert_hf_to_gguf's LlamaModel.permute: rotary halves interleaved per head."""
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def _tensors(model: Any, arch: str) -> list[tuple[str, np.ndarray[Any, Any]]]:
    import gguf

    cfg = model.config
    arch_id = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch)
    names = gguf.get_tensor_name_map(arch_id, cfg.num_hidden_layers)
    out: list[tuple[str, np.ndarray[Any, Any]]] = []
    for hf_name, tensor in model.state_dict().items():
        if hf_name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue  # tied: llama.cpp reuses token_embd, as the converter leaves it out
        data = tensor.float().numpy()
        if arch == "llama" and hf_name.endswith("q_proj.weight"):
            data = _llama_permute(data, cfg.num_attention_heads)
        if arch == "llama" and hf_name.endswith("k_proj.weight"):
            data = _llama_permute(data, cfg.num_key_value_heads)
        if arch == "gemma3" and hf_name.endswith("norm.weight"):
            data = data + 1.0  # Gemma3RMSNorm multiplies by (1 + w); llama.cpp by w
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise ValueError(f"no GGUF name for {hf_name}")
        out.append((name, np.ascontiguousarray(data, dtype=np.float32)))
    return out


def _rope_theta(cfg: Any) -> float:
    params = getattr(cfg, "rope_parameters", None) or {}
    params = params.get("full_attention", params)
    return float(params.get("rope_theta", getattr(cfg, "rope_theta", 10000.0)))


def _parameters(writer: Any, model: Any, arch: str) -> None:
    cfg = model.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_rope_freq_base(_rope_theta(cfg))
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_file_type(0)  # all f32
    if arch == "llama":
        writer.add_vocab_size(cfg.vocab_size)
        writer.add_rope_dimension_count(head_dim)
    else:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    if arch == "gemma3":
        writer.add_sliding_window(cfg.sliding_window)


def _vocab(writer: Any, vocab: Vocab) -> None:
    writer.add_tokenizer_model(vocab.model)
    if vocab.pre:
        writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.types)
    if vocab.scores is not None:
        writer.add_token_scores(vocab.scores)
    if vocab.merges is not None:
        writer.add_token_merges(vocab.merges)
    writer.add_bos_token_id(vocab.bos)
    writer.add_eos_token_id(vocab.eos)
    writer.add_pad_token_id(vocab.pad)
    writer.add_add_bos_token(vocab.add_bos)
    if vocab.model == "llama":
        writer.add_unk_token_id(vocab.tokens.index("<unk>"))
        writer.add_add_space_prefix(False)
    writer.add_chat_template(vocab.template)


def write_gguf_base(model: Any, arch: str, out: Path) -> Path:
    """Write `model` (from `tiny_model(arch)`) as an f32 GGUF base model at `out`."""
    import gguf

    writer = gguf.GGUFWriter(str(out), arch)
    writer.add_name(f"tiny-{arch}")
    _parameters(writer, model, arch)
    _vocab(writer, vocab_for(arch))
    for name, data in _tensors(model, arch):
        writer.add_tensor(name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out
