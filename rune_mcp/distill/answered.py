"""Training until the lessons are said: held-out questions answered in free generation.

A fixed step count is a guess: one session's lessons are said after ten steps, another's not
after thirty. With `answer_check_every = N`, every N steps the model in training answers the
session's held-out phrasings (its self-probes: questions it never trained on, each with the key
spans a right answer holds) greedily, in one left-padded batch, and training stops once
`answer_check_share` of them are answered right (a key span present), or when `train_steps`
or `train_time_budget_s` runs out. The judging rule is the free-answer rule of
`rune bench memory` (`rune_mcp.bench.answers.find_key`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

CHECK_TOKENS = 48  # enough for the first sentence, where a fact's answer names it


@dataclass(frozen=True)
class Check:
    """One held-out question and the spans a right answer holds (any one of them)."""

    question: str
    keys: tuple[str, ...]


def answered_share(model: Any, tokenizer: Any, checks: Sequence[Check], device: str) -> float:
    """The share of `checks` the model answers right now (greedy, `CHECK_TOKENS` tokens)."""
    import torch

    from rune_mcp.bench.answers import find_key

    if not checks:
        return 1.0
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": c.question}],
                                           tokenize=False, add_generation_prompt=True)
             for c in checks]
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # generation continues from the right edge
    try:
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    finally:
        tokenizer.padding_side = side
    enc = enc.to(device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=CHECK_TOKENS, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
    finally:
        if was_training:
            model.train()
    answers = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    right = sum(any(find_key(a, k) for k in c.keys) for a, c in zip(answers, checks, strict=True))
    return right / len(checks)
