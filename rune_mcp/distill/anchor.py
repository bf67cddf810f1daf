"""The anchor: a KL term that holds the adapter's distribution to the base's on general prompts.

Rehearsal trains the base model's own answers to general prompts by next-token loss, which
keeps only the single token the base chose at each position. Forgetting shows in the whole
distribution (how much probability ordinary text loses), so with `rehearsal_loss = "kl"` the
rehearsal examples are trained instead toward the base's own next-token distribution at every
answer position: the mean over positions of KL(base || adapter) over the base's
`ANCHOR_TOP_K` most likely tokens plus one bucket for all the rest (exact for that bucketing,
so probability the adapter moves onto other tokens counts in full, while a 49k-entry
distribution per position is not kept).

With `anchor_code_tokens`, the same term also holds the adapter to the base on plain Python
source: rehearsal answers are chat, while a coding agent's base also has to keep reading and
writing code, and the general guard found adapters making ordinary source less likely by
0.05-0.13 nats a token with rehearsal on (docs/results.md). The source is standard-library
code read from the running interpreter, from modules the guard never samples
(`rune_mcp.bench.corpus.ANCHOR_MODULES`), cut into `CODE_WINDOW`-token windows; each step adds
the KL on one window, in turn, on top of its lesson batch, so lessons get the same steps.

The base's distributions are computed once per training, before the first step, with the
adapter switched off, so they are the served base's even when training starts from another
adapter's weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rune_mcp.distill.collate import IGNORE, Rendered

ANCHOR_TOP_K = 32
CODE_WINDOW = 128  # tokens of source per window: one window a step


@dataclass
class Target:
    """The base's top-k next-token distribution at each trained position of one example."""

    positions: Any  # (P,) indices into the sequence whose logits predict a trained token
    ids: Any  # (P, k) token ids
    logp: Any  # (P, k + 1) log-probabilities of the k tokens and of all the rest


def code_windows(tokenizer: Any, tokens: int, window: int = CODE_WINDOW) -> list[Rendered]:
    """`tokens` tokens of the anchor's standard-library source (fewer if the sample is
    shorter) in windows of `window`, every position trained (no chat template: raw text)."""
    from rune_mcp.bench.corpus import ANCHOR_MODULES, ANCHOR_SEED, stdlib_sample

    if tokens <= 0:
        return []
    # about 3.8 characters a token on a byte-pair vocabulary; twice that leaves a margin
    sample = stdlib_sample(tokens * 8, ANCHOR_MODULES, ANCHOR_SEED)
    ids = list(tokenizer(sample.text, add_special_tokens=False)["input_ids"])[:tokens]
    out = []
    for start in range(0, len(ids) - 1, window):
        piece = ids[start:start + window]
        if len(piece) > 1:
            out.append(Rendered(piece, list(piece), kind="anchor"))
    return out


def with_rest(logp: Any) -> Any:
    """(P, k) log-probabilities -> (P, k + 1), the last column log(1 - their sum)."""
    import torch

    rest = torch.log1p(-logp.exp().sum(-1, keepdim=True).clamp(max=1 - 1e-6))
    return torch.cat([logp, rest], dim=-1)


def trained_positions(item: Rendered) -> list[int]:
    # the logits at position t - 1 predict the token at t
    return [t - 1 for t, label in enumerate(item.labels) if label != IGNORE and t > 0]


def base_targets(model: Any, items: Sequence[Rendered], device: str,
                 k: int = ANCHOR_TOP_K) -> dict[int, Target]:
    """The base's targets for `items`, by `id(item)`; `model` is the PEFT model."""
    import torch

    out: dict[int, Target] = {}
    with torch.no_grad(), model.disable_adapter():
        for item in items:
            positions = trained_positions(item)
            if not positions:
                continue
            ids = torch.tensor([item.input_ids], device=device)
            logp = torch.log_softmax(model(input_ids=ids).logits[0, positions].float(), dim=-1)
            top = torch.topk(logp, k, dim=-1)
            out[id(item)] = Target(torch.tensor(positions, device=device), top.indices,
                                   with_rest(top.values))
    return out


def anchor_loss(model: Any, items: Sequence[Rendered], targets: dict[int, Target], pad: int,
                device: str) -> Any:
    """Mean KL(base || model) over the trained positions of `items`, on the base's top-k."""
    import torch

    mine = [r for r in items if id(r) in targets]
    if not mine:
        return None
    width = max(len(r.input_ids) for r in mine)
    ids = torch.full((len(mine), width), pad, dtype=torch.long, device=device)
    mask = torch.zeros((len(mine), width), dtype=torch.long, device=device)
    for row, item in enumerate(mine):
        ids[row, : len(item.input_ids)] = torch.tensor(item.input_ids, device=device)
        mask[row, : len(item.input_ids)] = 1
    return kl_to_targets(model(input_ids=ids, attention_mask=mask).logits, mine, targets)


def kl_to_targets(logits: Any, items: Sequence[Rendered], targets: dict[int, Target]) -> Any:
    """Mean KL(target || model) over the target positions of the rows of `logits` (one row
    per item of `items`, in order; items without a target are skipped); None when none has."""
    import torch

    total, count = logits.new_zeros((), dtype=torch.float32), 0
    for row, item in enumerate(items):
        target = targets.get(id(item))
        if target is None:
            continue
        logq = torch.log_softmax(logits[row, target.positions].float(), dim=-1).gather(-1, target.ids)
        logq = with_rest(logq)
        total = total + (target.logp.exp() * (target.logp - logq)).sum()
        count += len(target.positions)
    return total / count if count else None
