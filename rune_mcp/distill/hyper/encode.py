"""The encoder: the frozen base model reads a session; its per-layer mean-pooled states are
what the hypernetwork sees.

Two views of a session can be read. `lessons` (the default) encodes each compiled lesson
(prompt and answer, in the base's chat template, as training renders them), one text each:
the lesson compiler has already picked what is worth keeping, and the network can be asked
to answer phrasings it did not see (held-out paraphrases). `trajectory` encodes the redacted
session text itself (what `rune bench memory`'s full_context condition puts in the prompt) in
windows of `max_tokens`, to compare how much the compiler adds. Reading with the frozen base
means the encoder costs no parameters and speaks the same representation the adapter acts on
(Doc-to-LoRA); the states of one text are a [layers, hidden] matrix, about 69 KB on
SmolLM2-135M, so a training set's encodings are computed once and kept.

`StateCache` keeps them across runs too (safetensors, one file per session under
`cache_dir/hyper-states/`), addressed by a digest of everything they depend on: the base's
fingerprint, its dtype, the pad token and the exact token lists. Encoding is most of a
meta-training run's time on CPU (about 21 s a session here), and a changed lesson compiler,
tokenizer or base gives other tokens or another fingerprint, so a stale entry is never read.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from rune_mcp.distill.collate import IGNORE, Rendered, render_examples
from rune_mcp.distill.lessons import Example
from rune_mcp.trajectory import Trajectory

log = logging.getLogger(__name__)
MAX_WINDOWS = 16  # a trajectory longer than this many windows keeps its first and last ones


def lesson_tokens(examples: Sequence[Example], tokenizer: Any, max_tokens: int) -> list[list[int]]:
    """One token list per lesson: its prompt and answer as training renders them."""
    return [r.input_ids for r in render_examples(examples, tokenizer, max_tokens)]


def trajectory_tokens(traj: Trajectory, tokenizer: Any, max_tokens: int) -> list[list[int]]:
    """The session's text in consecutive windows of `max_tokens` tokens (at most MAX_WINDOWS:
    the middle of a very long session goes first, as the lesson compiler's clips do)."""
    from rune_mcp.bench.memory import trajectory_text

    ids = list(tokenizer(trajectory_text(traj), add_special_tokens=False)["input_ids"])
    windows = [ids[i:i + max_tokens] for i in range(0, len(ids), max_tokens)] or [[0]]
    if len(windows) > MAX_WINDOWS:
        half = MAX_WINDOWS // 2
        windows = windows[:half] + windows[-(MAX_WINDOWS - half):]
    return windows


def session_tokens(
    source: str, traj: Trajectory, examples: Sequence[Example], tokenizer: Any, max_tokens: int
) -> list[list[int]]:
    """The texts the encoder reads for `source` ("lessons", "answers" or "trajectory")."""
    if source == "trajectory":
        return trajectory_tokens(traj, tokenizer, max_tokens)
    return lesson_tokens(examples, tokenizer, max_tokens)


def pool_starts(source: str, rendered: Sequence[Rendered]) -> list[int] | None:
    """Where pooling starts in each lesson text (`rendered`, as `lesson_tokens` reads them):
    for `answers`, each lesson's first answer token (the whole lesson is read, so the
    answer's states have seen its question, but only the answer's are averaged: the prompt's
    template and wording are alike in every session and drown the few tokens that name the
    fix); None (from the first token) otherwise."""
    if source != "answers":
        return None
    return [next((i for i, label in enumerate(r.labels) if label != IGNORE), 0) for r in rendered]


@torch.no_grad()
def pooled_states(
    model: Any, token_lists: Sequence[list[int]], pad: int, batch_tokens: int = 4096,
    starts: Sequence[int] | None = None,
) -> Tensor:
    """[texts, layers, hidden] float32: each text's hidden states after every decoder layer,
    averaged over its tokens (from `starts[i]` on, when given). Runs the decoder stack only
    (no vocabulary projection)."""
    device = next(model.parameters()).device
    decoder = model.base_model  # the stack without the LM head (LlamaModel, Qwen2Model, ...)
    order = sorted(range(len(token_lists)), key=lambda i: len(token_lists[i]))
    batches: list[list[int]] = []
    for i in order:  # ascending lengths: the text added last is the longest of its batch
        if batches and len(token_lists[i]) * (len(batches[-1]) + 1) <= batch_tokens:
            batches[-1].append(i)
        else:
            batches.append([i])
    out: list[Tensor | None] = [None] * len(token_lists)
    for batch in batches:
        firsts = [starts[i] if starts else 0 for i in batch]
        pooled_batch = _pool(decoder, [token_lists[i] for i in batch], pad, device, firsts)
        for i, pooled in zip(batch, pooled_batch, strict=True):
            out[i] = pooled
    return torch.stack([t for t in out if t is not None])


def _pool(decoder: Any, seqs: list[list[int]], pad: int, device: Any,
          firsts: list[int]) -> list[Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    ids, mask = ids.to(device), mask.to(device)
    hidden = decoder(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    layers = torch.stack([h.float() for h in hidden[1:]], dim=1)  # [batch, layers, width, hidden]
    pooled_mask = mask.clone()
    for row, first in enumerate(firsts):
        pooled_mask[row, : min(first, len(seqs[row]) - 1)] = 0  # at least one token pooled
    weights = pooled_mask.float()[:, None, :, None]
    pooled = (layers * weights).sum(dim=2) / weights.sum(dim=2).clamp(min=1.0)
    return list(pooled.cpu())


@dataclass(frozen=True)
class StateCache:
    """`pooled_states` kept on disk by a digest of what they depend on (module docstring)."""

    folder: Path
    model_key: str  # the base's fingerprint and dtype

    @classmethod
    def of(cls, cache_dir: Path, fingerprint: str, model: Any) -> StateCache:
        dtype = str(next(model.parameters()).dtype)
        return cls(cache_dir / "hyper-states", f"{fingerprint}/{dtype}")

    def path(self, token_lists: Sequence[list[int]], pad: int,
             starts: Sequence[int] | None = None) -> Path:
        what: list[Any] = [self.model_key, pad, [list(t) for t in token_lists]]
        if starts is not None:  # the key without starts stays what it was: old entries hold
            what.append(list(starts))
        payload = json.dumps(what)
        return self.folder / f"{hashlib.sha256(payload.encode()).hexdigest()}.safetensors"

    def states(self, model: Any, token_lists: Sequence[list[int]], pad: int,
               starts: Sequence[int] | None = None) -> Tensor:
        """The states of `token_lists` (pooled from `starts`): read when cached, else encoded
        and stored."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file, save

        from rune_mcp.fsutil import atomic_write_bytes

        path = self.path(token_lists, pad, starts)
        if path.is_file():
            try:
                states = load_file(str(path))["states"]
                if states.shape[0] == len(token_lists):
                    return states
            except (SafetensorError, KeyError, OSError) as exc:  # damaged: encode it again
                log.warning("re-encoding %s: %s", path.name, exc)
        states = pooled_states(model, token_lists, pad, starts=starts)
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, save({"states": states.contiguous()}))
        return states
